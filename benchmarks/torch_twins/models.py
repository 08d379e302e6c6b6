"""The torch twins of jaxdl's models, layer for layer (NCHW here, NHWC in jaxdl): `cnn`, the
CIFAR and ImageNet ResNets, the char LSTM and the DCGAN. See the package doc for what each
mirrors and `MEMORY_FORMAT` for the measured layouts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# Chosen by measurement (benchmarks/LOG.md, "Side by side with PyTorch (CPU)"); override
# with step_throughput's --torch_memory_format or this module's --memory_format.
MEMORY_FORMAT = {"cnn": "contiguous", "cifar_resnet": "channels_last",
                 # not measured: taken from the CIFAR ResNets' result (module docstring)
                 "imagenet_resnet": "channels_last"}
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56,
                "resnet110": 110}
IMAGENET_STAGES = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3),
                   "resnet152": (3, 8, 36, 3)}
_ACTIVATIONS = {"relu": F.relu, "gelu": lambda x: F.gelu(x, approximate="tanh"),
                "tanh": torch.tanh, "sigmoid": torch.sigmoid}
# Flax's truncated-normal variance_scaling divides the stddev by this (the std of a
# standard normal truncated to [-2, 2]), so the truncated draws have the asked variance.
_TRUNCATED_STD = 0.87962566103423978


class UnsupportedConfig(ValueError):
    """The jaxdl config asks for something this reference does not mirror."""


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Flax's default kernel init: truncated normal, variance 1 / fan_in."""
    # in * kh * kw for a conv, in for a linear layer
    return _lecun_normal_fan_in_(weight, weight[0].numel())


def _lecun_normal_fan_in_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


# --- models -------------------------------------------------------------------------------


class CNN(nn.Module):
    """jaxdl's `cnn`: [conv -> (BatchNorm) -> act -> 2x2 pool] x len(features), dense."""

    def __init__(self, *, features, kernel_size: int, pooling: str, dense_width: int,
                 activation: str, dropout_rate: float, num_classes: int, in_channels: int,
                 image_hw: tuple[int, int], batch_norm: bool = False, bn_momentum: float = 0.9):
        super().__init__()
        if kernel_size % 2 == 0:
            raise UnsupportedConfig(f"cnn kernel_size={kernel_size}: SAME padding of an even "
                                    "kernel is asymmetric; only odd kernels are mirrored")
        if pooling not in ("avg", "max"):
            raise UnsupportedConfig(f"cnn pooling={pooling!r}")
        if activation not in _ACTIVATIONS:
            raise UnsupportedConfig(f"cnn activation={activation!r}; mirrored: "
                                    f"{', '.join(_ACTIVATIONS)}")
        self.act = _ACTIVATIONS[activation]
        self.pool = F.avg_pool2d if pooling == "avg" else F.max_pool2d
        self.dropout_rate = dropout_rate
        channels, (h, w) = in_channels, image_hw
        self.convs = nn.ModuleList()
        # Flax's BatchNorm: momentum = the old average's weight (torch's is 1 - that), eps 1e-5.
        self.norms = nn.ModuleList() if batch_norm else None
        for width in features:
            self.convs.append(nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2,
                                        bias=not batch_norm))
            if batch_norm:
                self.norms.append(nn.BatchNorm2d(width, eps=1e-5, momentum=1 - bn_momentum))
            channels, h, w = width, h // 2, w // 2
        self.dense = nn.Linear(channels * h * w, dense_width)
        self.logits = nn.Linear(dense_width, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = self.pool(self.act(x), 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # jaxdl's NHWC flatten order
        x = self.act(self.dense(x))
        x = F.dropout(x, self.dropout_rate, self.training)
        return self.logits(x)


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, option-A shortcut, add, ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int, *, momentum: float,
                 eps: float, zero_init_last_bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps, momentum=momentum)
        if zero_init_last_bn:
            nn.init.zeros_(self.bn2.weight)
        self.stride, self.extra = stride, width - in_channels

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.stride != 1 or self.extra:
            x = x[:, :, ::self.stride, ::self.stride]
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(x + y)


def _init_resnet(model: nn.Module) -> None:
    """jaxdl's ResNet initialisation: convs kaiming normal (fan_out, relu), the `head`
    dense Flax's lecun_normal with a zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    lecun_normal_(model.head.weight)
    nn.init.zeros_(model.head.bias)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. (2015) for 32x32 images, option-A shortcuts."""

    WIDTHS = (16, 32, 64)

    def __init__(self, depth: int, *, num_classes: int, bn_momentum: float, bn_epsilon: float,
                 zero_init_last_bn: bool, in_channels: int = 3):
        super().__init__()
        n = (depth - 2) // 6
        momentum = 1.0 - bn_momentum  # Flax weights the old average, torch the new batch
        self.stem_conv = nn.Conv2d(in_channels, self.WIDTHS[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(self.WIDTHS[0], eps=bn_epsilon, momentum=momentum)
        blocks, channels = [], self.WIDTHS[0]
        for i, width in enumerate(self.WIDTHS):
            for j in range(n):
                blocks.append(BasicBlock(channels, width, 2 if i > 0 and j == 0 else 1,
                                         momentum=momentum, eps=bn_epsilon,
                                         zero_init_last_bn=zero_init_last_bn))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


class Bottleneck(nn.Module):
    """conv1x1 -> BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv1x1(4x) -> BN, plus the
    shortcut (1x1 conv + BN where the shape changes), ReLU: ResNet v1.5, stride on the 3x3.
    Submodules are named as jaxdl's, so `load_flax_params` copies them by name."""

    EXPANSION = 4

    def __init__(self, in_channels: int, width: int, stride: int, *, momentum: float,
                 eps: float, zero_init_last_bn: bool):
        super().__init__()
        out = width * self.EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps, momentum=momentum)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps, momentum=momentum)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out, eps=eps, momentum=momentum)
        if zero_init_last_bn:
            nn.init.zeros_(self.bn3.weight)
        self.downsample_conv = self.downsample_bn = None
        if stride != 1 or in_channels != out:
            self.downsample_conv = nn.Conv2d(in_channels, out, 1, stride, bias=False)
            self.downsample_bn = nn.BatchNorm2d(out, eps=eps, momentum=momentum)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.downsample_conv is not None:
            x = self.downsample_bn(self.downsample_conv(x))
        return F.relu(x + y)


class ImageNetResNet(nn.Module):
    """ResNet-50/101/152 v1.5 as jaxdl (and torchvision) build it: 7x7/2 conv, BN, ReLU,
    3x3/2 max pool, four stages of bottlenecks (64, 128, 256, 512 wide), global average
    pool, dense. Written here so torchvision is not needed; the names are jaxdl's."""

    WIDTHS = (64, 128, 256, 512)

    def __init__(self, stage_sizes: tuple[int, ...], *, num_classes: int, bn_momentum: float,
                 bn_epsilon: float, zero_init_last_bn: bool, in_channels: int = 3):
        super().__init__()
        momentum = 1.0 - bn_momentum
        self.stem_conv = nn.Conv2d(in_channels, self.WIDTHS[0], 7, 2, 3, bias=False)
        self.stem_bn = nn.BatchNorm2d(self.WIDTHS[0], eps=bn_epsilon, momentum=momentum)
        self.block_names, channels = [], self.WIDTHS[0]
        for i, (width, size) in enumerate(zip(self.WIDTHS, stage_sizes)):
            for j in range(size):
                name = f"stage{i + 1}_block{j}"
                self.add_module(name, Bottleneck(channels, width, 2 if i > 0 and j == 0 else 1,
                                                 momentum=momentum, eps=bn_epsilon,
                                                 zero_init_last_bn=zero_init_last_bn))
                self.block_names.append(name)
                channels = width * Bottleneck.EXPANSION
        self.head = nn.Linear(channels, num_classes)
        _init_resnet(self)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.head(x.mean(dim=(2, 3)))


class CharLSTM(nn.Module):
    """jaxdl's `lstm_lm`: embedding -> `num_layers` LSTM layers (dropout between them) ->
    dropout -> dense logits over the vocabulary, on [B, T] token ids.

    Flax's LSTM cell has one bias per gate (on the hidden-to-hidden product); torch's
    `nn.LSTM` has two (b_ih and b_hh). To keep the same parameters, and torch's fused
    LSTM kernel, each b_ih is turned into a zero buffer: it adds nothing and is no
    parameter (the parameter counts are equal)."""

    def __init__(self, *, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int,
                 dropout_rate: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True,
                           dropout=dropout_rate if num_layers > 1 else 0.0)
        for layer in range(num_layers):
            name = f"bias_ih_l{layer}"
            zeros = torch.zeros_like(getattr(self.rnn, name).detach())
            del self.rnn._parameters[name]
            self.rnn.register_buffer(name, zeros)
        self.rnn._init_flat_weights()
        self.dropout_rate = dropout_rate
        self.logits = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens):
        x, _ = self.rnn(self.embed(tokens))
        return self.logits(F.dropout(x, self.dropout_rate, self.training))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's 'SAME' padding (low, high) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DCGANGenerator(nn.Module):
    """jaxdl's `dcgan_generator`: z -> dense (no bias) -> BN -> ReLU -> reshape to
    (h, w, c) as jaxdl lays it out -> stride-2 transposed convs with BN + ReLU -> the last
    one (with bias) -> sigmoid or tanh. Names as jaxdl's Flax modules (Dense_0, BatchNorm_i,
    ConvTranspose_i), so the weights copy by name."""

    def __init__(self, *, latent_dim: int, width: int, blocks: int, kernel_size: int,
                 output_height: int, output_width: int, output_channels: int,
                 output_activation: str, momentum: float):
        super().__init__()
        scale = 2 ** blocks
        if output_height % scale or output_width % scale:
            raise UnsupportedConfig(f"dcgan output {output_height}x{output_width} is not "
                                    f"divisible by 2^blocks = {scale}")
        # lax.conv_transpose 'SAME' at stride 2 pads (k + 2 - 2) split evenly for k >= 3:
        # that is torch's ConvTranspose2d with padding (k - 2) / 2, for even k only.
        if kernel_size % 2 or kernel_size < 2:
            raise UnsupportedConfig(f"dcgan kernel_size={kernel_size}: only even kernels "
                                    "have the symmetric 'SAME' padding torch can express")
        self.shape = (output_height // scale, output_width // scale, width * 2 ** (blocks - 1))
        self.output_activation = _ACTIVATIONS[output_activation]
        h, w, channels = self.shape
        self.add_module("Dense_0", nn.Linear(latent_dim, h * w * channels, bias=False))
        self.add_module("BatchNorm_0", nn.BatchNorm1d(h * w * channels, momentum=momentum))
        self.layers = []
        for i in range(blocks - 1):
            conv = nn.ConvTranspose2d(channels, channels // 2, kernel_size, 2,
                                      (kernel_size - 2) // 2, bias=False)
            channels //= 2
            self.add_module(f"ConvTranspose_{i}", conv)
            self.add_module(f"BatchNorm_{i + 1}", nn.BatchNorm2d(channels, momentum=momentum))
            self.layers.append((f"ConvTranspose_{i}", f"BatchNorm_{i + 1}"))
        self.last = f"ConvTranspose_{blocks - 1}"
        self.add_module(self.last, nn.ConvTranspose2d(channels, output_channels, kernel_size,
                                                      2, (kernel_size - 2) // 2))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
                fan_in = module.weight.shape[1] if isinstance(module, nn.Linear) else \
                    module.weight.shape[0] * kernel_size * kernel_size
                _lecun_normal_fan_in_(module.weight, fan_in)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, z):
        h, w, c = self.shape
        x = F.relu(self.BatchNorm_0(self.Dense_0(z)))
        x = x.view(z.shape[0], h, w, c).permute(0, 3, 1, 2)
        for conv, bn in self.layers:
            x = F.relu(getattr(self, bn)(getattr(self, conv)(x)))
        return self.output_activation(getattr(self, self.last)(x))


class DCGANDiscriminator(nn.Module):
    """jaxdl's `dcgan_discriminator`: stride-2 convs ('SAME' padding) of width * 2^i
    channels, BN after all but the first (with `batch_norm`), leaky ReLU, then a dense
    logit of the (h, w, c)-ordered features. Names as jaxdl's (Conv_i, BatchNorm_i,
    Dense_0)."""

    def __init__(self, *, width: int, blocks: int, kernel_size: int, leaky_relu_slope: float,
                 batch_norm: bool, momentum: float, input_shape: tuple[int, int, int]):
        super().__init__()
        h, w, channels = input_shape
        self.slope, self.layers, norms = leaky_relu_slope, [], 0
        for i in range(blocks):
            normed = batch_norm and i > 0
            pads = _same_padding(h, kernel_size, 2) + _same_padding(w, kernel_size, 2)
            conv = nn.Conv2d(channels, width * 2 ** i, kernel_size, 2, bias=not normed)
            self.add_module(f"Conv_{i}", conv)
            bn = None
            if normed:
                bn = f"BatchNorm_{norms}"
                self.add_module(bn, nn.BatchNorm2d(width * 2 ** i, momentum=momentum))
                norms += 1
            # F.pad takes (w_low, w_high, h_low, h_high)
            self.layers.append((f"Conv_{i}", bn, (pads[2], pads[3], pads[0], pads[1])))
            channels, h, w = width * 2 ** i, -(-h // 2), -(-w // 2)
        self.add_module("Dense_0", nn.Linear(channels * h * w, 1))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        for conv, bn, pads in self.layers:
            x = getattr(self, conv)(F.pad(x, pads))
            if bn is not None:
                x = getattr(self, bn)(x)
            x = F.leaky_relu(x, self.slope)
        return self.Dense_0(x.permute(0, 2, 3, 1).flatten(1))[:, 0]


class DCGAN(nn.Module):
    """jaxdl's `dcgan`: the two nets as submodules `generator` and `discriminator`."""

    def __init__(self, model: Mapping[str, Any], image_shape: tuple[int, int, int]):
        super().__init__()
        if model["output_activation"] not in ("sigmoid", "tanh"):
            raise UnsupportedConfig(f"dcgan output_activation={model['output_activation']!r}")
        momentum = 1.0 - model["bn_momentum"]
        self.latent_dim = model["latent_dim"]
        self.output_activation = model["output_activation"]
        self.generator = DCGANGenerator(
            latent_dim=model["latent_dim"], width=model["generator_width"],
            blocks=model["generator_blocks"], kernel_size=model["kernel_size"],
            output_height=model["output_height"], output_width=model["output_width"],
            output_channels=model["output_channels"],
            output_activation=model["output_activation"], momentum=momentum)
        self.discriminator = DCGANDiscriminator(
            width=model["discriminator_width"], blocks=model["discriminator_blocks"],
            kernel_size=model["kernel_size"], leaky_relu_slope=model["leaky_relu_slope"],
            batch_norm=model["discriminator_batch_norm"], momentum=momentum,
            input_shape=image_shape)


def build_model(model: Mapping[str, Any], input_shape: tuple[int, ...]) -> tuple[nn.Module, str]:
    """The torch twin of jaxdl's `config.model` for NHWC `input_shape` (H, W, C); and the
    family name that keys `MEMORY_FORMAT`."""
    name = model["name"]
    h, w, c = input_shape
    if name == "cnn":
        return CNN(features=tuple(model["features"]), kernel_size=model["kernel_size"],
                   pooling=model["pooling"], dense_width=model["dense_width"],
                   activation=model["activation"], dropout_rate=model["dropout_rate"],
                   num_classes=model["num_classes"], in_channels=c, image_hw=(h, w),
                   batch_norm=model["batch_norm"], bn_momentum=model["bn_momentum"]), "cnn"
    resnets = {**{k: (CifarResNet, v, "cifar_resnet") for k, v in CIFAR_DEPTHS.items()},
               **{k: (ImageNetResNet, v, "imagenet_resnet") for k, v in IMAGENET_STAGES.items()}}
    if name in resnets:
        if model.get("se_ratio", 0.0) > 0:
            raise UnsupportedConfig(f"{name} with se_ratio > 0 is not mirrored")
        cls, architecture, family = resnets[name]
        return cls(architecture, num_classes=model["num_classes"],
                   bn_momentum=model["bn_momentum"], bn_epsilon=model["bn_epsilon"],
                   zero_init_last_bn=model["zero_init_last_bn"], in_channels=c), family
    raise UnsupportedConfig(f"no torch reference for model {name!r}; mirrored: {MIRRORED}")


def build_lm(model: Mapping[str, Any]) -> CharLSTM:
    """The torch twin of jaxdl's `lstm_lm` config."""
    if model["name"] != "lstm_lm" or model["cell"] != "lstm":
        raise UnsupportedConfig(f"language model {model['name']!r} with cell "
                                f"{model.get('cell')!r}: only lstm_lm with cell 'lstm' is mirrored")
    return CharLSTM(vocab_size=model["vocab_size"], embed_dim=model["embed_dim"],
                    hidden_size=model["hidden_size"], num_layers=model["num_layers"],
                    dropout_rate=model["dropout_rate"])


MIRRORED = ", ".join(["cnn", *CIFAR_DEPTHS, *IMAGENET_STAGES, "lstm_lm", "dcgan"])

