"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune", config.prune).

From step t0 = `start` to `end`, every `every` steps (and at `end`), the smallest-magnitude
prunable weights are set to zero until a share s_t of them is zero:

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^3

(the paper's n * dt is `end - start`). Masks are then fixed: the steps after `end` fine-tune
the pruned model. `scope='layer'` prunes every prunable leaf to s_t (the paper's choice);
'global' ranks all prunable weights together. Exactly round(s_t * n) weights are zero (ties
broken by position), and a weight once pruned stays pruned.

The masks live in the optimizer state (`PruneState`), wrapped around the run's optimizer as
an optax transformation: they are checkpointed and resumed with it, and neither the train
step nor the task knows of them. The wrapper replaces the update of a pruned weight by
`-param`, so `optax.apply_updates` gives exactly 0 whatever the optimizer (momentum, Adam's
moments, decoupled weight decay) proposed: the weight cannot come back. Hand-written because
optax ships no pruning and jaxpruner (google-research) is not served by the package registry
here; its masks would also need the same state handling. The schedule counts the wrapper's
own updates, one per train step (micro-steps of `grad_accum_steps` included); a step
skipped by `guard.skip_nonfinite` keeps the old optimizer state, so it is not counted.

Prunable parameters are chosen by path globs (`params`, the syntax of config.finetune):
'**/kernel' (the default) takes the weights of every Dense and Conv layer and leaves biases,
BatchNorm scales and offsets and embeddings alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxdl.schema import ConfigError, Field, duration, fraction, split_list
from jaxdl.training import finetune as finetune_lib

SCOPES = ("layer", "global")


def _optional_duration(value) -> str | None:
    return duration(value) if value else None


FIELDS: dict[str, Field] = {
    # Off unless asked for: "off" is no hyperparameter choice.
    "final_sparsity": Field(float, default=0.0, check=fraction,
                            help="s_f: the share of the prunable weights that are zero from "
                                 "`end` on; 0 = no pruning"),
    "initial_sparsity": Field(float, default=0.0, check=fraction,
                              help="s_i: the sparsity of the first pruning step (<= "
                                   "final_sparsity)"),
    "start": Field(str, default="0 steps", check=duration,
                   help="t0: the step count at which pruning begins, e.g. '2 epochs'"),
    "end": Field(str, default="", check=_optional_duration,
                 help="the last pruning step (before the run's end): masks are fixed after "
                      "it and the rest of the run fine-tunes; required with pruning"),
    "every": Field(str, default="", check=_optional_duration,
                   help="dt: the masks are recomputed this often between start and end, "
                        "e.g. '100 steps'; required with pruning"),
    "scope": Field(str, default="layer", choices=SCOPES,
                   help="'layer': every prunable parameter reaches the sparsity (Zhu & Gupta); "
                        "'global': one magnitude threshold over all of them"),
    "params": Field(str, default="**/kernel", check=finetune_lib.check_patterns,
                    help="comma-separated globs of the prunable parameter paths; the default "
                         "takes Dense and Conv kernels, not biases or normalisation"),
}


class PruneState(NamedTuple):
    """The optimizer state with pruning: the updates so far, one boolean mask per prunable
    parameter (True = kept, in `Prune.paths` order) and the wrapped optimizer's state."""

    count: jax.Array
    masks: tuple
    inner: Any


@dataclasses.dataclass(frozen=True)
class Prune:
    """The pruning plan of one model: which paths, how, and when (in optimizer updates, i.e.
    calls of the transformation's `update`: train steps)."""

    paths: tuple[str, ...]
    scope: str
    initial: float
    final: float
    start: int
    end: int
    every: int

    def target(self, count):
        """s_t after `count` updates (0 before start, s_f from end on); numpy or traced."""
        xp = jnp if isinstance(count, jax.Array) else np
        progress = xp.clip((count - self.start) / max(self.end - self.start, 1), 0.0, 1.0)
        sparsity = self.final + (self.initial - self.final) * (1.0 - progress) ** 3
        return xp.where(count < self.start, 0.0, sparsity)

    def due(self, count):
        """Whether the masks are recomputed at the update after `count` updates."""
        return ((count >= self.start) & (count <= self.end)
                & (((count - self.start) % self.every == 0) | (count == self.end)))

    def leaves(self, tree) -> list:
        """The prunable leaves of a tree shaped like the parameters, in `paths` order."""
        flat = {finetune_lib.key_path(path): leaf
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
        return [flat[path] for path in self.paths]

    def masks(self, weights: list, kept: tuple, sparsity) -> tuple:
        """Masks with round(sparsity * n) zeros per leaf ('layer') or over all ('global'),
        the smallest |weight| first; weights already pruned stay pruned (they rank lowest)."""
        scores = [jnp.where(m, jnp.abs(w.astype(jnp.float32)), -1.0).ravel()
                  for w, m in zip(weights, kept)]
        if self.scope == "global":
            flat = _keep_largest(jnp.concatenate(scores), sparsity)
            ends = np.cumsum([s.size for s in scores])
            flats = [flat[a - s.size:a] for s, a in zip(scores, ends)]
        else:
            flats = [_keep_largest(s, sparsity) for s in scores]
        return tuple(f.reshape(w.shape) for f, w in zip(flats, weights))

    def wrap(self, inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
        """`inner` whose updates leave every pruned weight exactly 0 (see the module doc)."""
        inner = optax.with_extra_args_support(inner)

        def init(params):
            return PruneState(count=jnp.zeros([], jnp.int32),
                              masks=tuple(jnp.ones(jnp.shape(w), jnp.bool_)
                                          for w in self.leaves(params)),
                              inner=inner.init(params))

        def update(updates, state, params=None, **extra):
            if params is None:
                raise ValueError("pruning needs the parameters in tx.update")
            updates, inner_state = inner.update(updates, state.inner, params, **extra)
            weights, proposed = self.leaves(params), self.leaves(updates)
            new = [(w + u).astype(w.dtype) for w, u in zip(weights, proposed)]
            masks = lax.cond(self.due(state.count),
                             lambda: self.masks(new, state.masks, self.target(state.count)),
                             lambda: state.masks)
            by_path = dict(zip(self.paths, zip(masks, weights)))

            def gate(path, u):
                hit = by_path.get(finetune_lib.key_path(path))
                return u if hit is None else jnp.where(hit[0], u, -hit[1]).astype(u.dtype)

            updates = jax.tree_util.tree_map_with_path(gate, updates)
            return updates, PruneState(count=optax.safe_int32_increment(state.count),
                                       masks=masks, inner=inner_state)

        return optax.GradientTransformationExtraArgs(init, update)


def _keep_largest(scores: jax.Array, sparsity) -> jax.Array:
    """True for all but the round(sparsity * n) lowest scores (a stable sort: exact counts
    whatever the ties)."""
    n = scores.size
    pruned = jnp.round(sparsity * n).astype(jnp.int32)
    order = jnp.argsort(scores, stable=True)
    return jnp.zeros(n, jnp.bool_).at[order].set(jnp.arange(n) >= pruned)


def plan(section, params, *, to_steps, total_steps: int) -> Prune | None:
    """The pruning plan of `params` (a parameter tree, abstract or not) under the validated
    `config.prune` section; None when pruning is off. ConfigError for a plan that cannot run."""
    if section.final_sparsity == 0:
        return None
    for key in ("end", "every"):
        if not section[key]:
            raise ConfigError(f"config.prune.{key} is required with prune.final_sparsity="
                              f"{section.final_sparsity}")
    if section.initial_sparsity > section.final_sparsity:
        raise ConfigError(f"config.prune.initial_sparsity={section.initial_sparsity} is above "
                          f"final_sparsity={section.final_sparsity}")
    start, end, every = (to_steps(section[k]) for k in ("start", "end", "every"))
    if every <= 0:
        raise ConfigError(f"config.prune.every={section.every!r} is zero steps")
    if start > end:
        raise ConfigError(f"config.prune.start={section.start!r} ({start} steps) is after "
                          f"prune.end={section.end!r} ({end} steps)")
    if end >= total_steps:
        raise ConfigError(f"config.prune.end={section.end!r} ({end} steps) leaves no "
                          f"fine-tuning: the run ends at step {total_steps}; end pruning "
                          "earlier")
    paths = finetune_lib.param_paths(params)
    chosen = finetune_lib.select(split_list(section.params), paths, params, "prune.params")
    return Prune(paths=tuple(p for p in paths if p in chosen), scope=section.scope,
                 initial=section.initial_sparsity, final=section.final_sparsity,
                 start=start, end=end, every=every)


def find_state(opt_state) -> PruneState | None:
    """The PruneState in an optimizer state (None without pruning)."""
    is_state = lambda x: isinstance(x, PruneState)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]
    return found[0] if found else None


def sparsity_report(prune: Prune, params) -> dict[str, Any]:
    """Zeros per prunable parameter of a host parameter tree, and the model's non-zeros."""
    layers = {path: float(np.mean(np.asarray(w) == 0))
              for path, w in zip(prune.paths, prune.leaves(params))}
    sizes = [int(np.size(w)) for w in prune.leaves(params)]
    every = [np.asarray(w) for w in jax.tree.leaves(params)]
    return {"layers": layers,
            "prunable": float(sum(s * layers[p] for s, p in zip(sizes, prune.paths))
                              / max(sum(sizes), 1)),
            "params": int(sum(w.size for w in every)),
            "nonzero_params": int(sum(np.count_nonzero(w) for w in every))}
