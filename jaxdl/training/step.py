"""The pure train and eval steps, written once for every task and both backends."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxdl.data import augment
from jaxdl.tasks.base import ROWS
from jaxdl.training import optim
from jaxdl.training.state import TrainState

# Stream id folded into the step's key for augmentation draws, so dropout (which uses the
# step key itself) draws the same masks with or without augmentation.
AUGMENT_STREAM = 1


def step_rng(state: TrainState) -> jax.Array:
    """This step's key, the same on every device: each random draw of the step is keyed
    by it and by the example's row in the global batch (`example_rows`), never by the
    device, so the numbers do not depend on how the batch is split."""
    return jax.random.fold_in(state.rng, state.step)


def example_rows(batch, axis_name: str | None) -> jax.Array:
    """Each example's row in the global batch: under pmap device i holds rows
    [i * n, (i + 1) * n) (how `Backend.put_batch` and the device feed lay a batch out);
    under `sharded` the step sees the whole global batch."""
    n = batch["mask"].shape[0]
    first = lax.axis_index(axis_name) * n if axis_name is not None else 0
    return first + jnp.arange(n, dtype=jnp.int32)


def global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree.leaves(tree)))


def all_finite(tree) -> jax.Array:
    """True when every element of every leaf is finite (a norm would overflow first)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _masked_sums(values: dict[str, jax.Array], mask: jax.Array) -> dict[str, jax.Array]:
    sums = {name: jnp.sum(v.astype(jnp.float32) * mask) for name, v in values.items()}
    sums["count"] = jnp.sum(mask)
    return sums


def ema_update(ema_params, params, decay: float):
    """One step of the exponential moving average: decay * ema + (1 - decay) * params."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype),
                        ema_params, params)


def make_train_step(task, tx: optax.GradientTransformation, *, axis_name: str | None,
                    skip_nonfinite: bool, augmentation: tuple = (),
                    ema_decay: float = 0.0, finetune=None) -> Callable:
    """`train_step(state, batch) -> (state, metrics)`.

    metrics: `sums` (per-example values summed, with `count`) to be merged over steps then
    divided, and `scalars` of this step: gradient, parameter and update norms, learning
    rate, and `finite` (1 when the loss, the gradient norm and the updated parameters are
    finite). With
    `skip_nonfinite` a non-finite step leaves parameters, optimizer and model state as they
    were (the step counter still advances, so the next batch is drawn). With `ema_decay`
    > 0 the state's `ema_params` follow the kept parameters (`ema_update`): the parameters
    are the same on every device, so the average is too. With a `finetune` plan the
    BatchNorm layers of frozen parts run in inference mode (`Finetune.phased`).
    """

    def train_step(state: TrainState, batch):
        rng = step_rng(state)
        rows = example_rows(batch, axis_name)
        if augmentation:  # on device, per example; 'none' traces the same step as before
            batch = {**batch, "inputs": augment.apply(
                augmentation, jax.random.fold_in(rng, AUGMENT_STREAM), batch["inputs"],
                rows=rows)}
        batch = {**batch, ROWS: rows}
        mask = batch["mask"].astype(jnp.float32)
        # Every device holds an equal share of the global batch, so the mean of the
        # per-device means is the global mean.
        reduce = ((lambda tree: lax.pmean(tree, axis_name)) if axis_name is not None
                  else (lambda tree: tree))
        learn = lambda: task.learn(tx, state.params, state.model_state, state.opt_state,
                                   batch, mask, rng, reduce=reduce)
        learned = learn() if finetune is None else finetune.phased(learn, state.step)
        values, updates = learned.values, learned.updates
        sums = _masked_sums(values, mask)
        if axis_name is not None:
            sums = lax.psum(sums, axis_name)
        # The global mean from the summed metrics: no all-reduce of its own.
        loss = sums["loss"] / sums["count"]
        grad_norm = global_norm(learned.grads)
        # Updated parameters too: a finite gradient times a huge learning rate can still
        # overflow the weights, and every later step would then be skipped.
        finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
                  & all_finite(learned.params))
        learned = (learned.params, learned.model_state, learned.opt_state)
        if skip_nonfinite:
            kept = (state.params, state.model_state, state.opt_state)
            learned = jax.tree.map(lambda new, old: jnp.where(finite, new, old), learned, kept)
        params, model_state, opt_state = learned
        new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                                  opt_state=opt_state)
        if ema_decay > 0:
            ema_params = ema_update(state.ema_params, params, ema_decay)
            if skip_nonfinite:  # a skipped step leaves the average where it was too
                ema_params = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                          ema_params, state.ema_params)
            new_state = new_state.replace(ema_params=ema_params)
        scalars = {
            "grad_norm": grad_norm,
            "param_norm": global_norm(params),
            "update_norm": global_norm(updates),
            "learning_rate": optim.current_learning_rate(opt_state),
            "finite": finite.astype(jnp.float32),
        }
        return new_state, {"sums": sums, "scalars": scalars}

    return train_step


def make_eval_sums(task, *, axis_name: str | None, augmentation: tuple = ()) -> Callable:
    """`eval_sums(state, batch) -> sums`: masked per-example sums, padding excluded. The
    deterministic part of the augmentation (normalisation) applies here too."""
    deterministic = augment.eval_ops(augmentation)

    def eval_sums(state: TrainState, batch):
        if deterministic:
            batch = {**batch, "inputs": augment.apply(deterministic, state.rng, batch["inputs"])}
        batch = {**batch, ROWS: example_rows(batch, axis_name)}
        variables = {"params": state.params, **state.model_state}
        values, _ = task.apply(variables, batch, train=False, rng=state.rng)
        sums = _masked_sums(values, batch["mask"].astype(jnp.float32))
        if axis_name is not None:
            sums = lax.psum(sums, axis_name)
        return sums

    return eval_sums


def make_eval_step(task, *, axis_name: str | None, augmentation: tuple = ()) -> Callable:
    """`eval_step(state, batch, totals) -> totals + sums` of the batch.

    Summing inside the step makes a batch one program, not a step and a sum, and chains a
    split's batches in order as train steps chain through the state."""
    eval_sums = make_eval_sums(task, axis_name=axis_name, augmentation=augmentation)

    def eval_step(state: TrainState, batch, totals):
        return jax.tree.map(jnp.add, totals, eval_sums(state, batch))

    return eval_step


def eval_totals_zeros(task, abstract_state, batch, *, augmentation: tuple = ()):
    """Zero running totals for `make_eval_step`: the structure of one batch's sums."""
    shapes = jax.eval_shape(make_eval_sums(task, axis_name=None, augmentation=augmentation),
                            abstract_state, batch)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
