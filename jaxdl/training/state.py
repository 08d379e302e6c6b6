"""The whole train state as one pytree: what a checkpoint holds and a step transforms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Parameters, model state collections (batch_stats), optimizer state, step, rng and a
    pending monitored value.

    Pure data: the model and the optimizer live in the step's closure, so this pytree can
    be saved, restored into `jax.eval_shape` targets and moved between device layouts.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array
    # The monitored eval metric waiting for the next step's optimizer (reduce-on-plateau),
    # sign-flipped so lower is better; NaN when no evaluation happened since the last step.
    monitor: jax.Array


def create_state(task, tx: optax.GradientTransformation, seed: int,
                 example_inputs: jax.Array) -> TrainState:
    """Initial state from the seed: one key for the parameters, one for the run's streams."""
    init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))

    def init(inputs):
        variables = task.init(init_rng, inputs)
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                          opt_state=task.init_optimizer(tx, params), rng=run_rng,
                          monitor=jnp.full((), jnp.nan, jnp.float32))

    return jax.jit(init)(example_inputs)
