"""The config's optimizer and learning-rate schedule, as optax builds them, in torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optax
import torch
import torch.nn as nn

from benchmarks.torch_twins.models import UnsupportedConfig

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
    elif name == "one_cycle":
        # optax's own formula, read point by point (a factor of the peak learning rate).
        one_cycle = optax.cosine_onecycle_schedule(
            max(total_updates, 1), 1.0, pct_start=schedule["pct_start"],
            div_factor=schedule["div_factor"], final_div_factor=schedule["final_div_factor"])

        def main(count: int) -> float:
            return float(one_cycle(count))
    else:
        raise UnsupportedConfig(f"schedule {name!r} is not mirrored; mirrored: constant, "
                                "cosine, warmup_cosine, piecewise, one_cycle")
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

