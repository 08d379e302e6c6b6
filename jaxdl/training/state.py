"""The whole train state as one pytree: what a checkpoint holds and a step transforms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Parameters, model state collections (batch_stats), optimizer state, step, rng and,
    with `optimizer.ema_decay` > 0, the exponential moving average of the parameters.

    Pure data: the model and the optimizer live in the step's closure, so this pytree can
    be saved, restored into `jax.eval_shape` targets and moved between device layouts.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array
    # None when EMA is off: no leaves, so such a run's checkpoints hold what they did before.
    ema_params: Any = None


def create_state(task, tx: optax.GradientTransformation, seed: int,
                 example_inputs: jax.Array, *, ema: bool = False) -> TrainState:
    """Initial state from the seed: one key for the parameters, one for the run's streams.
    With `ema`, the average starts at the initial parameters."""
    init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))

    def init(inputs):
        variables = task.init(init_rng, inputs)
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                          opt_state=task.init_optimizer(tx, params), rng=run_rng,
                          ema_params=params if ema else None)

    return jax.jit(init)(example_inputs)
