"""PyTorch reference training steps for the models jaxdl's benchmarks compare against.

    python -m benchmarks.torch_reference --model mnist_cnn|resnet20 [--batch_size 128]
        [--steps 60] [--windows 6] [--compile] [--memory_format both|channels_last|contiguous]

Used by `python -m benchmarks.step_throughput --compare torch`, which builds the jaxdl side
through `jaxdl.config.validate` + `jaxdl.training.loop.build` and the torch side here, from
the SAME validated jaxdl config: `build_step(config, total_updates)` reads the model,
task, optimizer and schedule sections and refuses what it does not mirror (it does not
silently train something else). Run alone, this module times the torch step only (its
use: choosing the memory format, checking torch.compile).

What is mirrored, layer for layer (NCHW here, NHWC in jaxdl; `load_flax_params` copies a
jaxdl state into the torch model and the comparison checks that the first loss agrees):

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
  the biased one.
- Loss: mean softmax cross-entropy (with `task.label_smoothing`).
- Optimizer: `sgd` / `momentum` / `nesterov` as optax builds them (trace = g + m * trace,
  update = -lr * trace, which is torch.optim.SGD with dampening 0), coupled L2 weight
  decay added to the gradient before the momentum (jaxdl's `add_decayed_weights`, torch's
  `weight_decay`) on the same parameters: `no_bias_no_norm` = tensors with ndim > 1, as
  jaxdl's mask. The learning rate follows the config's schedule per step (LambdaLR,
  stepped inside `train_step` like the schedule inside jaxdl's compiled step).

`TorchStep(x, y)` is one training step: zero_grad, forward, cross-entropy, backward,
optimizer step, schedule step; it returns the detached loss without synchronising.
Threads: `torch.set_num_threads(os.cpu_count())` (`set_threads`).

Memory format: each model keeps the one measured faster on the 2-core AMD EPYC machine
(torch 2.13.0+cpu, batch 128, eager, this module's alternating windows): the CIFAR ResNets
run channels_last (ResNet-20: 577-582 vs 429-457 examples/s contiguous), the small CNN
contiguous (mnist_cnn: a tie within noise, 3019-3772 vs 3130-3382 over 3 runs, contiguous
ahead in 2). See `MEMORY_FORMAT` and benchmarks/README.md.
"""

from __future__ import annotations

import argparse
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
MEMORY_FORMAT = {"cnn": "contiguous", "cifar_resnet": "channels_last"}
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56,
                "resnet110": 110}
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
    fan_in = weight[0].numel()  # in * kh * kw for a conv, in for a linear layer
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
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        lecun_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


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
    if name in CIFAR_DEPTHS:
        if model.get("se_ratio", 0.0) > 0:
            raise UnsupportedConfig(f"{name} with se_ratio > 0 is not mirrored")
        return CifarResNet(CIFAR_DEPTHS[name], num_classes=model["num_classes"],
                           bn_momentum=model["bn_momentum"], bn_epsilon=model["bn_epsilon"],
                           zero_init_last_bn=model["zero_init_last_bn"],
                           in_channels=c), "cifar_resnet"
    raise UnsupportedConfig(f"no torch reference for model {name!r}; mirrored: cnn, "
                            f"{', '.join(CIFAR_DEPTHS)}")


# --- weights from jaxdl -------------------------------------------------------------------


def _conv(kernel) -> torch.Tensor:  # Flax (kh, kw, in, out) -> torch (out, in, kh, kw)
    return torch.from_numpy(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1).copy())


def _dense(kernel) -> torch.Tensor:  # Flax (in, out) -> torch (out, in)
    return torch.from_numpy(np.asarray(kernel, np.float32).T.copy())


def _vec(value) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value, np.float32).copy())


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
    """The config's learning-rate factor per update count (optax's formulas); only the
    schedules the benchmark configs use, without warmup."""
    name = schedule["name"]
    if to_updates is None:
        def to_updates(text: str) -> int:
            amount, unit = text.split()
            if unit not in ("step", "steps"):
                raise UnsupportedConfig(f"schedule duration {text!r}: give it in steps")
            return int(amount)
    if to_updates(schedule["warmup"]) != 0:
        raise UnsupportedConfig("schedules with warmup are not mirrored")
    if name == "constant":
        return lambda count: 1.0
    if name == "cosine":
        alpha, decay = schedule["final_lr_factor"], max(total_updates, 1)

        def cosine(count: int) -> float:
            t = min(count, decay) / decay
            return (1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha
        return cosine
    if name == "piecewise":
        bounds = [to_updates(b.strip()) for b in schedule["boundaries"].split(",") if b.strip()]
        factor = schedule["decay_factor"]
        # optax.piecewise_constant_schedule: the scale applies from count == boundary on.
        return lambda count: factor ** sum(count >= b for b in bounds)
    raise UnsupportedConfig(f"schedule {name!r} is not mirrored; mirrored: constant, cosine, "
                            "piecewise")


def make_optimizer(model: nn.Module, optimizer: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = optimizer["name"]
    if name not in ("sgd", "momentum", "nesterov"):
        raise UnsupportedConfig(f"optimizer {name!r} is not mirrored; mirrored: sgd, momentum, "
                                "nesterov")
    if optimizer["grad_clip_norm"] or optimizer["grad_accum_steps"] != 1:
        raise UnsupportedConfig("gradient clipping and accumulation are not mirrored")
    decay = optimizer["weight_decay"]
    if optimizer["weight_decay_mask"] == "all":
        groups = [{"params": list(model.parameters()), "weight_decay": decay}]
    else:  # no_bias_no_norm: jaxdl decays the leaves with ndim > 1 only
        params = list(model.parameters())
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    momentum = optimizer["momentum"] if name != "sgd" else 0.0
    return torch.optim.SGD(groups, lr=optimizer["learning_rate"], momentum=momentum,
                           dampening=0.0, nesterov=name == "nesterov")


def to_torch_batch(batch: Mapping[str, np.ndarray], memory_format: str):
    """jaxdl's host batch (NHWC float32 inputs, int targets) as torch (x NCHW, y int64)."""
    x = torch.from_numpy(np.ascontiguousarray(batch["inputs"], np.float32)).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=torch.channels_last if memory_format == "channels_last"
                     else torch.contiguous_format)
    return x, torch.from_numpy(np.asarray(batch["targets"], np.int64))


class TorchStep:
    """One training step of a torch model, eager or torch.compile'd (the model's forward
    and its backward are compiled; the optimizer step runs eagerly)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr_factor, *,
                 label_smoothing: float = 0.0, memory_format: str = "contiguous",
                 compile: bool = False):
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format {memory_format!r}")
        self.memory_format = memory_format
        if memory_format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        self.optimizer = optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        self.label_smoothing = label_smoothing
        self.compiled = compile
        self.forward = torch.compile(self.model) if compile else self.model

    def loss(self, x, y):
        return F.cross_entropy(self.forward(x), y, label_smoothing=self.label_smoothing)

    def __call__(self, x, y) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def batch(self, host_batch: Mapping[str, np.ndarray]):
        return to_torch_batch(host_batch, self.memory_format)


def build_step(config, total_updates: int, input_shape: tuple[int, ...], *,
               memory_format: str | None = None, compile: bool = False, to_updates=None,
               seed: int | None = None) -> TorchStep:
    """The torch twin of the train step jaxdl builds from `config` (a validated jaxdl
    config): model, loss, optimizer and schedule from its sections."""
    if config["precision"] != "fp32":
        raise UnsupportedConfig(f"precision {config['precision']!r}: the reference is fp32")
    if config["task"]["name"] != "classification" or \
            config["task"]["loss"] != "softmax_cross_entropy":
        raise UnsupportedConfig("only classification with softmax_cross_entropy is mirrored")
    torch.manual_seed(config["seed"] if seed is None else seed)
    model, family = build_model(config["model"], tuple(input_shape))
    return TorchStep(model, make_optimizer(model, config["optimizer"]),
                     make_schedule(config["schedule"], total_updates, to_updates),
                     label_smoothing=config["task"]["label_smoothing"],
                     memory_format=memory_format or MEMORY_FORMAT[family], compile=compile)


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
