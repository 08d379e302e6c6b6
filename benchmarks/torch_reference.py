"""PyTorch reference training steps for the models jaxdl's benchmarks compare against.

    python -m benchmarks.torch_reference --model mnist_cnn|resnet20 [--batch_size 128]
        [--steps 60] [--windows 6] [--compile] [--memory_format both|channels_last|contiguous]

Used by `python -m benchmarks.step_throughput --compare torch`, which builds the jaxdl side
through `jaxdl.config.validate` + `jaxdl.training.loop.build` and the torch side here, from
the SAME validated jaxdl config: `build_step(config, total_updates, input_shape)` reads the
model, task, optimizer, schedule and precision sections and refuses what it does not
mirror (`UnsupportedConfig`: it does not silently train something else). Run alone, this
module times the torch step only (its use: choosing the memory format, checking
torch.compile).

What is mirrored, layer for layer (NCHW here, NHWC in jaxdl; `load_flax_params` copies a
jaxdl state into the torch model, and the comparison checks that the parameter counts and
the first loss agree):

- `cnn` (jaxdl/models/cnn.py; mnist_cnn's config): per entry of `features`, conv kxk with
  bias and symmetric padding k // 2 (= SAME at stride 1) -> activation -> 2x2/2 pool; the
  feature map is flattened in jaxdl's (h, w, c) order, so the dense weights are the same
  matrix; dense -> activation -> dropout -> dense. Weights: Flax's default
  `lecun_normal` (truncated normal, fan_in) and zero biases, not torch's default
  kaiming-uniform.
- CIFAR `resnet20/32/44/56/110` (jaxdl/models/resnet.py): conv3x3(16) -> BN -> ReLU, three
  stages of basic blocks (16, 32, 64 channels, stride 2 entering stages 2 and 3), option-A
  shortcuts (x[:, :, ::2, ::2] zero-padded in channels, split (extra // 2, rest) as jaxdl
  pads), global average pool, dense. Convs without bias, `kaiming_normal_(fan_out, relu)`
  as in jaxdl; BN weight 1 / bias 0 (0 for the last BN of a block with
  `zero_init_last_bn`); the head dense is Flax's `lecun_normal`. BN momentum is converted
  (jaxdl/Flax 0.9 = torch 0.1), epsilon as configured. One difference, not affecting
  speed: torch updates its running variance with the unbiased batch variance, Flax with
  the biased one (so for every BatchNorm below).
- ImageNet `resnet50/101/152` v1.5 (`ImageNetResNet`, written here; torchvision is not
  needed): 7x7/2 conv, BN, ReLU, 3x3/2 max pool, bottlenecks with the stride on the 3x3
  conv and 1x1 conv + BN projection shortcuts, average pool, dense; module names as
  jaxdl's, so weights copy by name. 25,557,032 parameters at 1000 classes, as jaxdl's.
- `lstm_lm` (`CharLSTM`): embedding -> `nn.LSTM` (num_layers, dropout between layers) ->
  dropout -> dense over the vocabulary; gates i, f, g, o as Flax's LSTM cell. Flax's cell
  has one bias per gate, torch's two: each torch b_ih is a zero buffer (not a parameter),
  so both have the same parameters and torch keeps its fused LSTM kernel. Loss: the mean
  next-token cross-entropy over all positions (jaxdl's language_model task).
- `dcgan` (`DCGAN`: `DCGANGenerator`, `DCGANDiscriminator`; names as jaxdl's Flax
  modules): G = dense (no bias) -> BN -> ReLU -> reshape to jaxdl's (h, w, c) layout ->
  stride-2 transposed convs (BN + ReLU; the last with bias) -> sigmoid/tanh; D = stride-2
  convs with XLA's 'SAME' padding (BN after all but the first) -> leaky ReLU -> dense logit
  of the (h, w, c)-ordered features. A Flax ConvTranspose (transpose_kernel=False) is
  torch's ConvTranspose2d with the kernel flipped in space; its 'SAME' padding at stride
  2 is torch's padding (k - 2) / 2 for even k (odd kernels are refused). The step
  (`GanStep`) is jaxdl's gan task: `n_critic` D updates on the real batch and G's samples
  of fresh latents, then one G update through D, each net with its own optimizer, the
  non-saturating or hinge losses. Differences: the latents (torch's generator, not jaxdl's
  PRNG), so the first-loss check uses given latents (`GanStep.initial_loss`).
- Loss (classification): mean softmax cross-entropy (with `task.label_smoothing`).
- Optimizer: `sgd` / `momentum` / `nesterov` as optax builds them (trace = g + m * trace,
  update = -lr * trace, which is torch.optim.SGD with dampening 0), `adam` (optax's
  m_hat / (sqrt(v_hat) + eps) is torch's Adam) and `adamw`; coupled L2 weight decay added
  to the gradient before the optimizer (jaxdl's `add_decayed_weights`, torch's
  `weight_decay`) on the same parameters: `no_bias_no_norm` = tensors with ndim > 1, as
  jaxdl's mask. `grad_clip_norm`: clipping by the global norm of each optimizer's
  gradients before it (torch's clip_grad_norm_ adds 1e-6 to the norm, optax does not).
  The learning rate follows the config's schedule per step (constant, cosine,
  warmup_cosine, piecewise; linear warmup from 0 as jaxdl joins it), through LambdaLR
  stepped inside the step like the schedule inside jaxdl's compiled step.
- Precision: fp32, or for classification bf16 as `torch.autocast(bfloat16)` around the
  forward pass on float32 parameters (jaxdl: model dtype bfloat16, float32 parameters).
  Autocast picks its own ops for bfloat16 (convolutions and matmuls; BatchNorm runs on the
  bfloat16 activations), not exactly XLA's, so losses agree to about 1%, not 1e-3.
- Device: CPU, or CUDA when `build_step(device="cuda")` (step_throughput does so when
  jaxdl runs on a GPU).

`TorchStep(x, y)` is one training step: zero_grad, forward, cross-entropy, backward,
optimizer step, schedule step; it returns the detached loss without synchronising.
Threads: `torch.set_num_threads(os.cpu_count())` (`set_threads`).

Memory format: each model keeps the one measured faster on the 2-core AMD EPYC machine
(torch 2.13.0+cpu, batch 128, eager, this module's alternating windows): the CIFAR ResNets
run channels_last (ResNet-20: 577-582 vs 429-457 examples/s contiguous), the small CNN
contiguous (mnist_cnn: a tie within noise, 3019-3772 vs 3130-3382 over 3 runs, contiguous
ahead in 2). See `MEMORY_FORMAT` and benchmarks/README.md. The ImageNet ResNets use
channels_last by analogy with the CIFAR ResNets, not measured; the LSTM and the DCGAN run
contiguous (not measured either).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Chosen by measurement (benchmarks/README.md, "Side by side with PyTorch (CPU)"); override
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


def set_threads() -> int:
    """Intra-op threads = os.cpu_count(), as asked of every comparison; returns it."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Flax's default kernel init: truncated normal, variance 1 / fan_in."""
    # in * kh * kw for a conv, in for a linear layer
    return _lecun_normal_fan_in_(weight, weight[0].numel())


def _lecun_normal_fan_in_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


# --- models -------------------------------------------------------------------------------


class CNN(nn.Module):
    """jaxdl's `cnn` without BatchNorm: [conv -> act -> 2x2 pool] x len(features), dense."""

    def __init__(self, *, features, kernel_size: int, pooling: str, dense_width: int,
                 activation: str, dropout_rate: float, num_classes: int, in_channels: int,
                 image_hw: tuple[int, int]):
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
        for width in features:
            self.convs.append(nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2))
            channels, h, w = width, h // 2, w // 2
        self.dense = nn.Linear(channels * h * w, dense_width)
        self.logits = nn.Linear(dense_width, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                lecun_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        for conv in self.convs:
            x = self.pool(self.act(conv(x)), 2)
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
        if model.get("batch_norm"):
            raise UnsupportedConfig("cnn with batch_norm=True is not mirrored")
        return CNN(features=tuple(model["features"]), kernel_size=model["kernel_size"],
                   pooling=model["pooling"], dense_width=model["dense_width"],
                   activation=model["activation"], dropout_rate=model["dropout_rate"],
                   num_classes=model["num_classes"], in_channels=c, image_hw=(h, w)), "cnn"
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


# --- weights from jaxdl -------------------------------------------------------------------


def _conv(kernel) -> torch.Tensor:  # Flax (kh, kw, in, out) -> torch (out, in, kh, kw)
    return torch.from_numpy(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1).copy())


def _dense(kernel) -> torch.Tensor:  # Flax (in, out) -> torch (out, in)
    return torch.from_numpy(np.asarray(kernel, np.float32).T.copy())


def _vec(value) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value, np.float32).copy())


def _conv_transpose(kernel) -> torch.Tensor:
    """Flax ConvTranspose (kh, kw, in, out), applied unflipped to the dilated input (its
    default transpose_kernel=False) -> torch ConvTranspose2d (in, out, kh, kw), which
    flips it: the same map with the kernel flipped in space."""
    flipped = np.asarray(kernel, np.float32)[::-1, ::-1]
    return torch.from_numpy(flipped.transpose(2, 3, 0, 1).copy())


def _pairs_by_name(model: nn.Module, params: Mapping, batch_stats: Mapping) -> list:
    """(torch tensor, jaxdl value) for a model whose submodule paths are jaxdl's Flax
    module paths (`a.b` = params['a']['b'])."""

    def at(tree, dotted):
        for key in dotted.split("."):
            tree = tree.get(key, {}) if isinstance(tree, Mapping) else {}
        return tree

    pairs = []
    for name, module in model.named_modules():
        p, s = at(params, name), at(batch_stats, name)
        if isinstance(module, nn.ConvTranspose2d):
            pairs.append((module.weight, _conv_transpose(p["kernel"])))
        elif isinstance(module, nn.Conv2d):
            pairs.append((module.weight, _conv(p["kernel"])))
        elif isinstance(module, nn.Linear):
            pairs.append((module.weight, _dense(p["kernel"])))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            pairs += [(module.weight, _vec(p["scale"])), (module.bias, _vec(p["bias"]))]
            if s:
                pairs += [(module.running_mean, _vec(s["mean"])),
                          (module.running_var, _vec(s["var"]))]
            continue
        else:
            continue
        if module.bias is not None:
            pairs.append((module.bias, _vec(p["bias"])))
    return pairs


def load_flax_params(model: nn.Module, params: Mapping, batch_stats: Mapping | None = None):
    """Copies one host copy of jaxdl's parameters (and BatchNorm statistics) into `model`,
    so both frameworks start from the same numbers. Raises KeyError on a layout mismatch."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    if isinstance(model, CNN):
        for i, conv in enumerate(model.convs):
            p = params[f"Conv_{i}"]
            pairs += [(conv.weight, _conv(p["kernel"])), (conv.bias, _vec(p["bias"]))]
        for i, dense in enumerate((model.dense, model.logits)):
            p = params[f"Dense_{i}"]
            pairs += [(dense.weight, _dense(p["kernel"])), (dense.bias, _vec(p["bias"]))]
    elif isinstance(model, CifarResNet):
        stats = batch_stats or {}

        def bn(module: nn.BatchNorm2d, p, s):
            pairs.extend([(module.weight, _vec(p["scale"])), (module.bias, _vec(p["bias"]))])
            if s:
                pairs.extend([(module.running_mean, _vec(s["mean"])),
                              (module.running_var, _vec(s["var"]))])

        pairs.append((model.stem_conv.weight, _conv(params["stem_conv"]["kernel"])))
        bn(model.stem_bn, params["stem_bn"], stats.get("stem_bn"))
        n = len(model.blocks) // len(model.WIDTHS)
        for index, block in enumerate(model.blocks):
            key = f"stage{index // n + 1}_block{index % n}"
            p, s = params[key], stats.get(key, {})
            pairs += [(block.conv1.weight, _conv(p["conv1"]["kernel"])),
                      (block.conv2.weight, _conv(p["conv2"]["kernel"]))]
            bn(block.bn1, p["bn1"], s.get("bn1"))
            bn(block.bn2, p["bn2"], s.get("bn2"))
        pairs += [(model.head.weight, _dense(params["head"]["kernel"])),
                  (model.head.bias, _vec(params["head"]["bias"]))]
    elif isinstance(model, CharLSTM):
        pairs += [(model.embed.weight, _vec(params["embed"]["embedding"])),
                  (model.logits.weight, _dense(params["logits"]["kernel"])),
                  (model.logits.bias, _vec(params["logits"]["bias"]))]
        for layer in range(model.rnn.num_layers):
            p = params["rnn"][f"layer_{layer}"]
            # torch stacks the gates (i, f, g, o) along the output axis, as Flax names them
            pairs += [
                (getattr(model.rnn, f"weight_ih_l{layer}"),
                 torch.cat([_dense(p[f"i{g}"]["kernel"]) for g in "ifgo"])),
                (getattr(model.rnn, f"weight_hh_l{layer}"),
                 torch.cat([_dense(p[f"h{g}"]["kernel"]) for g in "ifgo"])),
                (getattr(model.rnn, f"bias_hh_l{layer}"),
                 torch.cat([_vec(p[f"h{g}"]["bias"]) for g in "ifgo"]))]
    elif isinstance(model, (ImageNetResNet, DCGAN)):
        pairs += _pairs_by_name(model, params, batch_stats or {})
    else:
        raise UnsupportedConfig(f"cannot load Flax parameters into {type(model).__name__}")
    with torch.no_grad():
        for target, value in pairs:
            if target.shape != value.shape:
                raise KeyError(f"shape {tuple(value.shape)} from jaxdl for a torch tensor of "
                               f"shape {tuple(target.shape)}")
            target.copy_(value)
    expected = sum(p.numel() for p in model.parameters())
    copied = sum(t.numel() for t, _ in pairs if any(t is p for p in model.parameters()))
    if copied != expected:
        raise KeyError(f"copied {copied} of the torch model's {expected} parameters")


# --- optimizer, schedule, step ------------------------------------------------------------


def make_schedule(schedule: Mapping[str, Any], total_updates: int, to_updates=None):
    """The config's learning-rate factor per update count (optax's formulas, as
    jaxdl.training.optim joins them): a linear warmup from 0, then the schedule on the
    count shifted by the warmup. Only the schedules the benchmark configs use."""
    name = schedule["name"]
    if to_updates is None:
        def to_updates(text: str) -> int:
            amount, unit = text.split()
            if unit not in ("step", "steps"):
                raise UnsupportedConfig(f"schedule duration {text!r}: give it in steps")
            return int(amount)
    warmup = to_updates(schedule["warmup"]) if "warmup" in schedule else 0  # one_cycle: none

    def cosine(decay: int, alpha: float):
        def factor(count: int) -> float:
            t = min(count, decay) / decay
            return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha
        return factor

    if name == "constant":
        def main(count: int) -> float:
            return 1.0
    elif name == "cosine":
        main = cosine(max(total_updates - warmup, 1), schedule["final_lr_factor"])
    elif name == "warmup_cosine":
        main = cosine(max(total_updates, warmup + 1) - warmup, schedule["final_lr_factor"])
    elif name == "piecewise":
        bounds = [to_updates(b.strip()) for b in schedule["boundaries"].split(",") if b.strip()]
        factor = schedule["decay_factor"]
        # optax.piecewise_constant_schedule: the scale applies from count == boundary on;
        # the boundaries are absolute update counts (jaxdl undoes the warmup shift).
        def main(count: int) -> float:
            return factor ** sum(count + warmup >= b for b in bounds)
    else:
        raise UnsupportedConfig(f"schedule {name!r} is not mirrored; mirrored: constant, "
                                "cosine, warmup_cosine, piecewise")
    if warmup <= 0:
        return main
    return lambda count: count / warmup if count < warmup else main(count - warmup)


def make_optimizer(model: nn.Module, optimizer: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW as jaxdl's config builds them with optax.
    Weight decay: coupled L2 (torch's `weight_decay`, jaxdl's `add_decayed_weights` before
    the optimizer) except for AdamW (decoupled in both); `no_bias_no_norm` decays only
    tensors with ndim > 1, as jaxdl's mask. Gradient clipping is `TorchStep`'s."""
    name = optimizer["name"]
    if name not in ("sgd", "momentum", "nesterov", "adam", "adamw"):
        raise UnsupportedConfig(f"optimizer {name!r} is not mirrored; mirrored: sgd, momentum, "
                                "nesterov, adam, adamw")
    if optimizer["grad_accum_steps"] != 1:
        raise UnsupportedConfig("gradient accumulation is not mirrored")
    decay = optimizer["weight_decay"]
    params = list(model.parameters())
    if optimizer["weight_decay_mask"] == "all":
        groups = [{"params": params, "weight_decay": decay}]
    else:  # no_bias_no_norm: jaxdl decays the leaves with ndim > 1 only
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    lr = optimizer["learning_rate"]
    if name in ("adam", "adamw"):
        kind = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        # optax: m_hat / (sqrt(v_hat) + eps), as torch's Adam
        return kind(groups, lr=lr, betas=(optimizer["b1"], optimizer["b2"]),
                    eps=optimizer["eps"])
    momentum = optimizer["momentum"] if name != "sgd" else 0.0
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.0,
                           nesterov=name == "nesterov")


def to_torch_batch(batch: Mapping[str, np.ndarray], memory_format: str = "contiguous",
                   device: str = "cpu"):
    """jaxdl's host batch as torch tensors (x, y): NHWC float32 images as NCHW in
    `memory_format`, token ids (or other integer inputs) as int64; targets int64."""
    inputs = np.asarray(batch["inputs"])
    if np.issubdtype(inputs.dtype, np.integer):
        x = torch.from_numpy(inputs.astype(np.int64))
    else:
        x = torch.from_numpy(np.ascontiguousarray(inputs, np.float32))
        if x.ndim == 4:
            x = x.permute(0, 3, 1, 2).contiguous(
                memory_format=torch.channels_last if memory_format == "channels_last"
                else torch.contiguous_format)
    y = torch.from_numpy(np.asarray(batch["targets"], np.int64))
    return x.to(device), y.to(device)


def classification_loss(label_smoothing: float):
    def loss(logits, y):
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return loss


def language_model_loss(logits, y):
    """Mean next-token cross-entropy over every position (jaxdl: over the window, then the
    batch: the same mean for equal windows)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class TorchStep:
    """One training step of a torch model, eager or torch.compile'd (the model's forward
    and its backward are compiled; the optimizer step runs eagerly)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr_factor, *,
                 loss_fn=None, label_smoothing: float = 0.0, grad_clip_norm: float = 0.0,
                 memory_format: str = "contiguous", compile: bool = False,
                 device: str = "cpu", precision: str = "fp32"):
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format {memory_format!r}")
        self.memory_format, self.device, self.precision = memory_format, device, precision
        if memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(device).train()
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        self.loss_fn = loss_fn or classification_loss(label_smoothing)
        self.grad_clip_norm = grad_clip_norm
        self.compiled = compile
        self.forward = torch.compile(self.model) if compile else self.model

    def autocast(self):
        """bf16: matmuls and convolutions in bfloat16 on float32 parameters (jaxdl's
        'bf16': model dtype bfloat16, parameters float32); fp32: nothing."""
        return torch.autocast(self.device.split(":")[0], torch.bfloat16,
                              enabled=self.precision == "bf16")

    def loss(self, x, y, forward=None):
        with self.autocast():
            out = (forward or self.forward)(x)
        return self.loss_fn(out.float(), y)

    def __call__(self, x, y) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        if self.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def batch(self, host_batch: Mapping[str, np.ndarray]):
        return to_torch_batch(host_batch, self.memory_format, self.device)

    def initial_loss(self, batch, latents=None) -> float:
        """The loss on `batch` in training mode (batch statistics) from the current
        weights, on a copy so the running statistics stay as they are."""
        del latents
        model = copy.deepcopy(self.model).train()
        with torch.no_grad():
            return float(self.loss(*batch, forward=model))


@contextlib.contextmanager
def frozen_statistics(module: nn.Module):
    """BatchNorm in training mode (batch statistics) that leaves its running averages as
    they are (momentum 0), for the passes in which jaxdl's GAN task drops them."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class GanStep:
    """jaxdl's GAN task step (jaxdl/tasks/gan.py) in torch: `n_critic` discriminator
    updates, each on the real batch and as many samples of G from fresh latents (G in
    training mode, its output detached), then one generator update through D; one optimizer
    per net (the config's, both with the same schedule). As in jaxdl, G's running
    statistics are left alone in D's update and D's in G's update (`frozen_statistics`),
    and D's parameters get no gradient in G's update. Returns d_loss + g_loss, as jaxdl's
    `loss` metric. The latents differ (torch's generator, not jaxdl's PRNG)."""

    def __init__(self, model: DCGAN, optimizers: dict, lr_factor, *, gan_loss: str,
                 n_critic: int, grad_clip_norm: float = 0.0, compile: bool = False,
                 device: str = "cpu"):
        if gan_loss not in ("non_saturating", "hinge"):
            raise UnsupportedConfig(f"gan_loss {gan_loss!r}")
        self.model = model.to(device).train()
        self.memory_format, self.device = "contiguous", device
        self.optimizers = optimizers
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor)
                           for o in optimizers.values()]
        self.gan_loss, self.n_critic = gan_loss, n_critic
        self.grad_clip_norm, self.compiled = grad_clip_norm, compile
        self.generate = torch.compile(model.generator) if compile else model.generator
        self.discriminate = torch.compile(model.discriminator) if compile else \
            model.discriminator

    def d_losses(self, real_logits, fake_logits):
        if self.gan_loss == "hinge":
            return F.relu(1.0 - real_logits) + F.relu(1.0 + fake_logits)
        return F.softplus(-real_logits) + F.softplus(fake_logits)

    def g_losses(self, fake_logits):
        return -fake_logits if self.gan_loss == "hinge" else F.softplus(-fake_logits)

    def to_model_range(self, images):
        return images * 2.0 - 1.0 if self.model.output_activation == "tanh" else images

    def latents(self, count: int):
        return torch.randn(count, self.model.latent_dim, device=self.device)

    def _update(self, net: str, loss) -> None:
        loss.backward()
        module = getattr(self.model, net)
        if self.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.grad_clip_norm)
        self.optimizers[net].step()

    def __call__(self, x) -> torch.Tensor:
        real = self.to_model_range(x)
        generator, discriminator = self.model.generator, self.model.discriminator
        for _ in range(self.n_critic):
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            with torch.no_grad(), frozen_statistics(generator):
                fake = self.generate(self.latents(real.shape[0]))
            d_loss = self.d_losses(self.discriminate(real), self.discriminate(fake)).mean()
            self._update("discriminator", d_loss)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)
        try:
            with frozen_statistics(discriminator):
                g_loss = self.g_losses(self.discriminate(
                    self.generate(self.latents(real.shape[0])))).mean()
            self._update("generator", g_loss)
        finally:
            discriminator.requires_grad_(True)
        for scheduler in self.schedulers:
            scheduler.step()
        return (d_loss + g_loss).detach()

    def batch(self, host_batch: Mapping[str, np.ndarray]):
        return (to_torch_batch(host_batch, self.memory_format, self.device)[0],)

    def initial_loss(self, batch, latents) -> float:
        """Mean D loss + G loss of the real `batch` and G(`latents`), every net in training
        mode (batch statistics) from the current weights, on a copy: what
        `gan_probe_loss` computes with jaxdl's task from the same latents."""
        model = copy.deepcopy(self.model).train()
        real = self.to_model_range(batch[0])
        with torch.no_grad():
            fake = model.generator(torch.as_tensor(np.asarray(latents), device=self.device))
            fake_logits = model.discriminator(fake)
            losses = self.d_losses(model.discriminator(real), fake_logits) + \
                self.g_losses(fake_logits)
        return float(losses.mean())


def build_step(config, total_updates: int, input_shape: tuple[int, ...], *,
               memory_format: str | None = None, compile: bool = False, to_updates=None,
               seed: int | None = None, device: str = "cpu"):
    """The torch twin of the train step jaxdl builds from `config` (a validated jaxdl
    config): model, loss, optimizer and schedule from its sections. `input_shape` is one
    example's (H, W, C) or (T,)."""
    task = config["task"]
    if config["precision"] != "fp32" and task["name"] != "classification":
        raise UnsupportedConfig(f"precision {config['precision']!r} is mirrored for "
                                "classification only")
    augmentation = (config.get("data") or {}).get("augmentation", "none")
    if augmentation not in ("", "none"):
        raise UnsupportedConfig(f"data augmentation {augmentation!r} is not mirrored; "
                                "set config.data.augmentation='none'")
    torch.manual_seed(config["seed"] if seed is None else seed)
    schedule = make_schedule(config["schedule"], total_updates, to_updates)
    clip = config["optimizer"]["grad_clip_norm"]
    if task["name"] == "classification":
        if task["loss"] != "softmax_cross_entropy":
            raise UnsupportedConfig("only classification with softmax_cross_entropy is "
                                    "mirrored")
        model, family = build_model(config["model"], tuple(input_shape))
        return TorchStep(model, make_optimizer(model, config["optimizer"]), schedule,
                         label_smoothing=task["label_smoothing"], grad_clip_norm=clip,
                         memory_format=memory_format or MEMORY_FORMAT[family],
                         compile=compile, device=device, precision=config["precision"])
    if task["name"] == "language_model":
        model = build_lm(config["model"])
        return TorchStep(model, make_optimizer(model, config["optimizer"]), schedule,
                         loss_fn=language_model_loss, grad_clip_norm=clip,
                         compile=compile, device=device)
    if task["name"] == "gan":
        if config["model"]["name"] != "dcgan":
            raise UnsupportedConfig(f"gan with model {config['model']['name']!r}: only dcgan "
                                    "is mirrored")
        model = DCGAN(config["model"], tuple(input_shape))
        optimizers = {net: make_optimizer(getattr(model, net), config["optimizer"])
                      for net in ("discriminator", "generator")}
        return GanStep(model, optimizers, schedule, gan_loss=task["gan_loss"],
                       n_critic=task["n_critic"], grad_clip_norm=clip, compile=compile,
                       device=device)
    raise UnsupportedConfig(f"task {task['name']!r} is not mirrored; mirrored: "
                            "classification, language_model, gan")


# --- standalone timing --------------------------------------------------------------------

# The jaxdl configs the comparison uses, reduced to what the torch side reads.
def _standalone_config(model: str, batch_size: int) -> dict:
    sgd = dict(name="momentum", learning_rate=0.1, momentum=0.9, weight_decay=0.0,
               weight_decay_mask="no_bias_no_norm", grad_clip_norm=0.0, grad_accum_steps=1)
    task = dict(name="classification", loss="softmax_cross_entropy", label_smoothing=0.0)
    if model == "mnist_cnn":
        return dict(seed=0, precision="fp32", task=task, optimizer=sgd,
                    model=dict(name="cnn", features=(32, 64), kernel_size=3, pooling="avg",
                               dense_width=256, activation="relu", dropout_rate=0.0,
                               batch_norm=False, num_classes=10),
                    schedule=dict(name="cosine", warmup="0 steps", final_lr_factor=0.0),
                    input_shape=(28, 28, 1), batch_size=batch_size)
    return dict(seed=0, precision="fp32", task=task, optimizer={**sgd, "weight_decay": 1e-4},
                model=dict(name=model, num_classes=10, bn_momentum=0.9, bn_epsilon=1e-5,
                           se_ratio=0.0, zero_init_last_bn=False),
                schedule=dict(name="piecewise", warmup="0 steps", decay_factor=0.1,
                              boundaries="32000 steps, 48000 steps"),
                input_shape=(32, 32, 3), batch_size=batch_size)


def time_step(step: TorchStep, batches, *, steps: int, windows: int, warmup: int) -> dict:
    """Per-window seconds per step of `step` cycling over pre-converted `batches`."""
    index = 0

    def run(count):
        nonlocal index
        loss = None
        for _ in range(count):
            loss = step(*batches[index % len(batches)])
            index += 1
        return loss

    start = time.perf_counter()
    loss = run(warmup)
    warm = time.perf_counter() - start
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        loss = run(max(1, steps // windows))
        per_step.append((time.perf_counter() - start) / max(1, steps // windows))
    return {"warmup_s": warm, "per_step": per_step,
            "loss": math.nan if loss is None else float(loss)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_reference",
                                     description="Time the torch reference step alone.")
    parser.add_argument("--model", choices=("mnist_cnn", *CIFAR_DEPTHS), default="mnist_cnn")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--memory_format", choices=("both", "contiguous", "channels_last"),
                        default="both")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    threads = set_threads()
    config = _standalone_config(args.model, args.batch_size)
    rng = np.random.default_rng(0)
    host = [{"inputs": rng.random((args.batch_size, *config["input_shape"]), np.float32),
             "targets": rng.integers(0, 10, args.batch_size).astype(np.int32)}
            for _ in range(4)]
    formats = (("contiguous", "channels_last") if args.memory_format == "both"
               else (args.memory_format,))
    variants = [(f, c) for c in ((False, True) if args.compile else (False,)) for f in formats]
    steps = {}
    for fmt, compiled in variants:
        steps[(fmt, compiled)] = build_step(config, 64000, config["input_shape"],
                                            memory_format=fmt, compile=compiled)
    print(f"# torch {torch.__version__}, {threads} threads, {args.model} batch "
          f"{args.batch_size}; windows alternate between the variants")
    results = {key: [] for key in steps}
    warm = {}
    for key, step in steps.items():  # warm-up (and compilation) first
        batches = [step.batch(b) for b in host]
        warm[key] = (batches, time_step(step, batches, steps=0, windows=0,
                                        warmup=args.warmup)["warmup_s"])
    for window in range(args.windows):
        order = list(steps) if window % 2 == 0 else list(steps)[::-1]
        for key in order:
            r = time_step(steps[key], warm[key][0], steps=max(1, args.steps // args.windows),
                          windows=1, warmup=0)
            results[key] += r["per_step"]
    for (fmt, compiled), per_step in results.items():
        median = statistics.median(per_step)
        print(f"{'compile' if compiled else 'eager':7s} {fmt:13s} warmup "
              f"{warm[(fmt, compiled)][1]:6.1f}s  {median * 1e3:8.2f} ms/step  "
              f"{args.batch_size / median:8.0f} examples/s  windows "
              + " ".join(f"{args.batch_size / s:.0f}" for s in per_step))


if __name__ == "__main__":
    main()
