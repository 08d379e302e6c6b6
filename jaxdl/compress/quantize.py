"""Post-training int8 quantization of a trained run, through Qwix (google/qwix).

Why Qwix and not AQT (aqtp): Qwix's providers intercept `jax.lax.conv_general_dilated` and
`dot_general` inside an unchanged Flax Linen module (`qwix.quantize_model`), so every jaxdl
model, registered or a user's own, is quantized as it is; AQT's Flax integration has the
model take its `dot_general` (`AqtDotGeneral`, `AqtConvGeneralDilated`) as a field, i.e. an
edit of every model, and its interception helper replaces `dot_general` only (its own CNN
example leaves the convolutions in float).

The recipe is Qwix's documented static-range PTQ for Linen:

1. calibration: the model wrapped by `QtProvider` runs over training batches (never the
   test split) and accumulates `quant_stats` (the mean over batches of each quantized
   op's per-example input absmax);
2. `PtqProvider`: the kernels of every Conv and Dense become int8 with one float32 scale
   per output channel (symmetric absmax), each op's input activation an int8 tensor with
   the static per-tensor scale from (1); `qwix.quantize_params` converts the weights;
   biases, normalisation parameters and statistics stay float32.

The quantized run is a `jaxdl.trained.TrainedRun` whose task holds the PTQ model and whose
variables hold the quantized weights, so `evaluate(split)` is the run's own compiled eval
step on it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix

from jaxdl.schema import ConfigError
from jaxdl.tasks.base import model_rngs
from jaxdl.trained import TrainedRun

STATS = "quant_stats"  # the collection QtProvider records calibration statistics in


def int8_rules() -> list[qwix.QuantizationRule]:
    """Every Conv and Dense: int8 weights (per output channel: Qwix's channelwise axes for
    conv and dot_general kernels) and int8 input activations with a static scale."""
    return [qwix.QuantizationRule(module_path=".*", weight_qtype=jnp.int8,
                                  act_qtype=jnp.int8, act_static_scale=True)]


def calibration_batches(run: TrainedRun, examples: int, batch_size: int,
                        seed: int) -> list[np.ndarray]:
    """A seeded subset of `examples` rows (all when the split is smaller) of the run's
    TRAIN split, in near-equal batches of at most `batch_size` (no padding: a repeated row
    would weigh in the statistics)."""
    if examples < 1 or batch_size < 1:
        raise ConfigError(f"calibration needs at least one example and a batch of at least "
                          f"one (got {examples} examples, batches of {batch_size})")
    train = run.dataset("train")
    n = min(examples, len(train))
    rows = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
    inputs = np.asarray(train.take(rows)["inputs"])
    return np.array_split(inputs, math.ceil(n / batch_size))


def calibrate_model(model, variables: dict[str, Any], batches: list, *, rngs=None,
                    rules=None) -> dict[str, Any]:
    """Qwix's quant_stats of the Linen `model` (called as `model(x, train=False)`) with
    `variables` over `batches` of model inputs."""
    qt_model = qwix.quantize_model(model, qwix.QtProvider(rules or int8_rules()))

    # Not under jax.jit: Qwix records the statistics as a side effect inside its
    # custom_vjp ops, which a jit of the forward pass alone turns into a leaked tracer.
    def observe(variables, x):
        _, updated = qt_model.apply(variables, x, train=False, rngs=rngs or {},
                                    mutable=[STATS])
        return updated.get(STATS, {})  # none when no op was quantized

    stats = None
    for batch in batches:
        stats = observe(dict(variables) if stats is None else {**variables, STATS: stats},
                        batch)
    if not stats:
        raise ConfigError(f"{type(model).__name__} has no convolution or dense layer for "
                          "int8 quantization")
    return stats


def quantize_model(model, variables: dict[str, Any], batches: list, *, rngs=None,
                   rules=None) -> tuple[Any, dict[str, Any]]:
    """(the PTQ model, its variables): `model` with int8 weights and statically scaled
    int8 activations, calibrated on `batches` of model inputs (Qwix's static-range PTQ)."""
    rules = rules or int8_rules()
    # Qwix tells weights from activations by type (jax.Array), and a checkpoint's
    # variables are numpy arrays.
    variables = jax.tree.map(jnp.asarray, dict(variables))
    stats = calibrate_model(model, variables, batches, rngs=rngs, rules=rules)
    ptq_model = qwix.quantize_model(model, qwix.PtqProvider(rules))
    # Qwix reads how to quantize each weight from the PTQ model's abstract variables
    # (shapes only: the init key's values are never computed).
    abstract = jax.eval_shape(lambda: ptq_model.init(
        {"params": jax.random.PRNGKey(0), **(rngs or {})}, batches[0][:1], train=False))
    params = qwix.quantize_params(variables["params"], abstract["params"], stats)
    return ptq_model, {**variables, "params": params}


def quantize(run: TrainedRun, batches: list[np.ndarray], rules=None) -> TrainedRun:
    """The run with int8 weights and statically scaled int8 activations, calibrated on
    `batches` of raw training inputs (see `calibration_batches`) after the run's eval-time
    preprocessing."""
    ptq_model, variables = quantize_model(
        run.model, run.variables, [run.preprocess(b) for b in batches],
        rngs=model_rngs(run.model, run.rng), rules=rules)
    return dataclasses.replace(run, task=dataclasses.replace(run.task, model=ptq_model),
                               variables=variables)


def cast(run: TrainedRun, dtype) -> TrainedRun:
    """The run with every floating variable stored as `dtype` (the model still computes in
    the run's precision: Flax promotes the weights to its dtype)."""
    def to(x):
        x = np.asarray(x)
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x
    return dataclasses.replace(run, variables=jax.tree.map(to, run.variables))
