"""Transfer learning by parameter path: which parameters train, at which rate, and when the
frozen ones thaw (`config.finetune`).

Paths are the '/'-joined names of the flax parameter tree ('stage1_block0/conv1/kernel');
patterns are globs over them: `*` stays within one name, `**` spans any number of names
('head/**', 'stage3_*/**'). Built on optax: `multi_transform` sends the frozen leaves to
`set_to_zero()`, so they get no update, no weight decay and no optimizer state; per-group
rates scale each leaf's update by its group's multiplier (as torch's parameter groups scale
the lr). BatchNorm layers whose parameters are frozen run in inference mode (Keras's
`trainable=False`): `flax.linen.intercept_methods` calls them with their running averages,
which then stay as they were. No model is edited for any of it.

A staged run (`unfreeze_at`) trains `trainable` alone until then, and everything after, the
newly thawed parameters ramping up over `unfreeze_warmup`; one state structure and one
compiled step serve both phases (the step picks the phase from its own counter with
`lax.cond`), so a run resumes exactly across the boundary.

The step still differentiates every parameter (the logged `grad_norm` covers them all); what
freezing saves is optimizer state and updates, not the backward pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax import lax

from jaxdl.schema import ConfigError, Field, duration, split_list

FROZEN, TRAIN = "frozen", "train"


def check_patterns(value) -> str | None:
    for pattern in split_list(value):
        if pattern.startswith("/") or pattern.endswith("/"):
            return f"pattern {pattern!r}: write names joined by '/', e.g. 'head/**'"
    return None


def _multipliers(value) -> str | None:
    try:
        parse_multipliers(value)
    except ConfigError as e:
        return str(e)
    return None


FIELDS: dict[str, Field] = {
    "trainable": Field(str, default="**", check=check_patterns,
                       help="comma-separated globs of the parameter paths that train, e.g. "
                            "'head/**'; the others are frozen ('**' = all train)"),
    "lr_multipliers": Field(str, default="", check=_multipliers,
                            help="'GLOB=FACTOR, ...': the learning rate of the matching "
                                 "parameters times FACTOR, e.g. 'stem_*/**=0.01, "
                                 "stage1_*/**=0.1' ('' = one rate for all)"),
    "freeze_batch_stats": Field(bool, default=True,
                                help="BatchNorm layers whose parameters are frozen run in "
                                     "inference mode and keep their statistics (Keras); "
                                     "False = they keep updating them"),
    "unfreeze_at": Field(str, default="", check=lambda v: duration(v) if v else None,
                         help="staged fine-tuning: the frozen parameters train too from this "
                              "point on, e.g. '5 epochs' ('' = never)"),
    "unfreeze_warmup": Field(str, default="0 steps", check=duration,
                             help="after unfreeze_at, the thawed parameters' rate ramps "
                                  "linearly from 0 to theirs over this"),
}


def parse_multipliers(text: str) -> dict[str, float]:
    """'stem/**=0.01, stage4/**=0.1' -> {'stem/**': 0.01, 'stage4/**': 0.1}."""
    out = {}
    for part in split_list(text):
        pattern, sep, factor = part.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = None
        if not sep or not pattern.strip() or value is None or value < 0:
            raise ConfigError(f"lr_multipliers entry {part!r}: write 'GLOB=FACTOR' with "
                              "FACTOR >= 0, e.g. 'stem/**=0.01'")
        out[pattern.strip()] = value
    return out


def _regex(pattern: str) -> re.Pattern:
    """A glob over '/'-joined paths: `*` and `?` stay within one name, `**` spans names."""
    names, out = pattern.split("/"), ""
    for i, name in enumerate(names):
        last = i == len(names) - 1
        if name == "**":
            out += ".*" if last else "(?:[^/]*/)*"
        else:
            out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                           for c in name) + ("" if last else "/")
    return re.compile(out + r"\Z")


def matches(pattern: str, path: str) -> bool:
    return _regex(pattern).match(path) is not None


def param_paths(params) -> list[str]:
    return list(traverse_util.flatten_dict(params, sep="/"))


def key_path(path: tuple) -> str:
    """'/'-joined names of a jax key path (dict keys of a flax tree)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def top_level_hint(params) -> str:
    return ", ".join(sorted(params)) if isinstance(params, Mapping) else "none"


def select(patterns: list[str], paths: list[str], params, what: str) -> set[str]:
    """The paths any pattern matches; a pattern that matches none is a ConfigError naming
    the model's top-level paths."""
    chosen = set()
    for pattern in patterns:
        hit = {p for p in paths if matches(pattern, p)}
        if not hit:
            raise ConfigError(f"{what} pattern {pattern!r} matches no parameter; the model's "
                              f"top-level paths: {top_level_hint(params)}")
        chosen |= hit
    return chosen


@dataclasses.dataclass(frozen=True)
class Finetune:
    """The finetune plan of one model: each parameter path's group and multiplier."""

    trainable: frozenset[str]  # train from the start
    staged: frozenset[str]  # frozen until `unfreeze_update`, then trained
    frozen: frozenset[str]  # never trained
    multipliers: Mapping[str, float]  # path -> factor of the learning rate (1 if absent)
    groups: Mapping[str, str]  # path -> the lr_multipliers pattern it matched ('' = none)
    unfreeze_update: int | None  # optimizer updates before the thaw; None = never
    unfreeze_step: int | None  # the same in train steps
    warmup_updates: int
    freeze_batch_stats: bool

    @property
    def active(self) -> bool:
        """False when every parameter trains at one rate from the start: the optimizer is
        then the plain one (no extra state, the checkpoints of older runs resume)."""
        return bool(self.staged or self.frozen or any(m != 1 for m in self.multipliers.values()))

    # --- the optimizer -------------------------------------------------------------------

    def labels(self, params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: FROZEN if key_path(path) in self.frozen else TRAIN, params)

    def gate_gradients(self) -> optax.GradientTransformation:
        """Zeros the gradients of staged parameters before the thaw, so they add nothing to
        a clipped norm, a moment or a decay while frozen."""
        staged, at = self.staged, self.unfreeze_update
        return _scale_by_path(lambda path, count: jnp.where(count < at, 0.0, 1.0)
                              if path in staged else None)

    def scale_updates(self) -> optax.GradientTransformation:
        """Each update times its group's multiplier; staged parameters' updates are 0 before
        the thaw, then ramp over the warmup (their moments start from zero then, so Adam's
        first steps would otherwise be large)."""
        staged, at, warmup = self.staged, self.unfreeze_update, self.warmup_updates
        multipliers = dict(self.multipliers)

        def factor(path, count):
            m = multipliers.get(path, 1.0)
            if path not in staged:
                return None if m == 1.0 else m
            ramp = (jnp.clip((count - at + 1) / warmup, 0.0, 1.0) if warmup
                    else jnp.where(count < at, 0.0, 1.0))
            return jnp.where(count < at, 0.0, ramp) * m

        return _scale_by_path(factor)

    def wrap(self, inner: optax.GradientTransformation) -> optax.GradientTransformation:
        """`inner` (the run's optimizer, gated and scaled) for the parameters that train;
        set_to_zero, with no state, for the frozen ones."""
        if not self.frozen:
            return inner
        return optax.multi_transform({TRAIN: inner, FROZEN: optax.set_to_zero()}, self.labels)

    # --- BatchNorm in inference mode -------------------------------------------------------

    def inference_modules(self, thawed: bool) -> frozenset[str]:
        """Module paths whose parameters are all frozen in this phase."""
        if not self.freeze_batch_stats:
            return frozenset()
        frozen = self.frozen | (frozenset() if thawed else self.staged)
        parent = lambda p: p.rpartition("/")[0]
        training = {parent(p) for p in self.trainable | (self.staged if thawed else set())}
        return frozenset({parent(p) for p in frozen} - training)

    def phased(self, learn: Callable[[], Any], step: jax.Array) -> Any:
        """`learn()` traced with the frozen BatchNorm layers of the current phase in
        inference mode; a staged run switches phase at `unfreeze_step` inside the step."""
        before, after = self.inference_modules(False), self.inference_modules(True)
        if before == after:
            with inference_batch_norm(before):
                return learn()

        kind = []

        def branch(modules):
            def run():  # lax.cond returns pytrees: the fields of the task's Learned
                with inference_batch_norm(modules):
                    learned = learn()
                kind[:] = [type(learned)]
                return [getattr(learned, f.name) for f in dataclasses.fields(learned)]
            return run

        fields = lax.cond(step < self.unfreeze_step, branch(before), branch(after))
        return kind[0](*fields)

    # --- the start log ---------------------------------------------------------------------

    def report(self, params, opt_bytes: int, opt_bytes_unfrozen: int) -> list[str]:
        """Lines for the start log: parameters per group and the optimizer-state size."""
        flat = traverse_util.flatten_dict(params, sep="/")
        rows: dict[tuple[str, str], int] = {}
        for path, leaf in flat.items():
            status = ("frozen" if path in self.frozen else
                      f"frozen until update {self.unfreeze_update}" if path in self.staged
                      else "trainable")
            group = self.groups.get(path, "")
            key = (status, f"{group} (lr x{self.multipliers.get(path, 1.0):g})" if group
                   else "")
            rows[key] = rows.get(key, 0) + int(np.prod(np.shape(leaf)))
        lines = [f"finetune: {count:,} parameters {status}" + (f", {group}" if group else "")
                 for (status, group), count in sorted(rows.items())]
        lines.append(f"finetune: optimizer state {opt_bytes / 2**20:.3f} MiB "
                     f"({opt_bytes_unfrozen / 2**20:.3f} MiB without freezing)")
        return lines


def plan(section, params, *, to_updates: Callable[[str], int], grad_accum_steps: int
         ) -> Finetune:
    """The finetune plan of `params` (a parameter tree, abstract or not) under the
    validated `config.finetune` section. ConfigError for a pattern that matches nothing."""
    paths = param_paths(params)
    trainable = select(split_list(section.trainable), paths, params, "finetune.trainable")
    groups, multipliers = {}, {}
    for pattern, factor in parse_multipliers(section.lr_multipliers).items():
        for path in select([pattern], paths, params, "finetune.lr_multipliers"):
            if path in groups:
                raise ConfigError(f"finetune.lr_multipliers: {path!r} matches both "
                                  f"{groups[path]!r} and {pattern!r}; make them disjoint")
            groups[path], multipliers[path] = pattern, factor
    rest = frozenset(paths) - trainable
    unfreeze_update = unfreeze_step = None
    if section.unfreeze_at:
        unfreeze_update = int(to_updates(section.unfreeze_at))
        if unfreeze_update <= 0:
            raise ConfigError(f"finetune.unfreeze_at={section.unfreeze_at!r} is zero updates; "
                              "leave trainable at '**' to train everything from the start")
        if not rest:
            raise ConfigError("finetune.unfreeze_at is set but finetune.trainable="
                              f"{section.trainable!r} leaves no parameter frozen")
        unfreeze_step = unfreeze_update * grad_accum_steps
    staged = rest if unfreeze_update else frozenset()
    return Finetune(trainable=frozenset(trainable), staged=frozenset(staged),
                    frozen=frozenset(rest - staged), multipliers=multipliers, groups=groups,
                    unfreeze_update=unfreeze_update, unfreeze_step=unfreeze_step,
                    warmup_updates=int(to_updates(section.unfreeze_warmup)),
                    freeze_batch_stats=section.freeze_batch_stats)


def _scale_by_path(factor: Callable[[str, jax.Array], Any]) -> optax.GradientTransformation:
    """Multiplies each leaf by `factor(path, count)` (None = leave it), count = the updates
    before this one. Paths of the leaves present, so it works inside multi_transform's
    masked subtrees too."""

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params

        def one(path, u):
            f = factor(key_path(path), state.count)
            return u if f is None else (u * f).astype(u.dtype)

        return (jax.tree_util.tree_map_with_path(one, updates),
                optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count)))

    return optax.GradientTransformation(init, update)


def inference_batch_norm(modules: frozenset[str]):
    """A context in which the BatchNorm layers at `modules` (module paths) run on their
    running averages, which they then leave as they were. Trace-time only, so it holds
    under jit, pmap and shard_map alike."""
    if not modules:
        return contextlib.nullcontext()

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (isinstance(module, nn.BatchNorm) and context.method_name == "__call__"
                and "/".join(module.path) in modules):
            if module.use_running_average is None:  # chosen per call
                return next_fun(*args, **{**kwargs, "use_running_average": True})
            if module.use_running_average is False:
                # The same layer in inference mode, on the same variables: gradients reach
                # its scale and bias (unused when they are frozen) and its input as usual.
                frozen = module.clone(parent=None, use_running_average=True)
                return frozen.apply(dict(module.variables), *args, **kwargs)
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def state_bytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))
