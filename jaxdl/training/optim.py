"""Optimizers and learning-rate schedules: the config fields each one reads, and their
construction from the validated `optimizer` / `schedule` config sections.

Each optimizer and each schedule declares its own fields (`OPTIMIZER_FIELDS`,
`SCHEDULE_FIELDS`) beside the fields every one of them reads (`SHARED_OPTIMIZER_FIELDS`,
`SHARED_SCHEDULE_FIELDS`). Validation (`jaxdl.config`) requires or fills exactly those and
refuses a field the named optimizer or schedule does not read. A default here is optax's own
default of that argument (read from its signature, so no number is restated) or "off".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
import optax.contrib

from jaxdl.schema import Field, duration, durations, fraction, non_negative, positive

Schedule = Callable[[int], Any]

# Schedules whose shape is set by the run's length (they decay to its last update): a
# longer run would change the learning rate of every step already taken.
SCHEDULES_SHAPED_BY_TOTAL = ('cosine', 'warmup_cosine', 'one_cycle')
WEIGHT_DECAY_MASKS = ('no_bias_no_norm', 'all')


def _optax_default(fn: Callable[..., Any], argument: str) -> Any:
    """The default optax gives `argument` of `fn` (the published value, e.g. adam's b1)."""
    default = inspect.signature(fn).parameters[argument].default
    if default is inspect.Parameter.empty:  # an optax that no longer has one: say so at import
        raise TypeError(f'optax.{fn.__name__} has no default for {argument!r}')
    return default


# --- the fields each optimizer reads ---------------------------------------------------------

# Read by every optimizer. A new shared knob is one more entry here.
SHARED_OPTIMIZER_FIELDS: dict[str, Field] = {
    'name': Field(str, choices=lambda: OPTIMIZERS,
                  help='the optax optimizer; its own fields follow'),
    'learning_rate': Field(float, check=non_negative, help='peak learning rate of the schedule'),
    # Off unless asked for: "off" is no hyperparameter choice.
    'weight_decay': Field(float, default=0.0, check=non_negative,
                          help='coupled L2 before the optimizer (decoupled for adamw); 0 = off'),
    'weight_decay_mask': Field(str, default='no_bias_no_norm', choices=WEIGHT_DECAY_MASKS,
                               help="which parameters decay: 'no_bias_no_norm' (the leaves "
                                    "with ndim > 1) or 'all'"),
    'grad_clip_norm': Field(float, default=0.0, check=non_negative,
                            help='clip the global gradient norm to this; 0 = no clipping'),
    'grad_accum_steps': Field(int, default=1, check=positive,
                              help='micro-batches summed into one update; 1 = no accumulation'),
    'ema_decay': Field(float, default=0.0, check=fraction,
                       help="keep an exponential moving average of the weights with this decay "
                            "and evaluate it too (split '<name>_ema'); 0 = off"),
}


def _momentum(**default) -> Field:
    return Field(float, check=fraction, help='decay of the velocity trace', **default)


def _adam_fields(fn) -> dict[str, Field]:
    return {
        'b1': Field(float, default=_optax_default(fn, 'b1'), check=fraction,
                    help='decay of the first-moment average'),
        'b2': Field(float, default=_optax_default(fn, 'b2'), check=fraction,
                    help='decay of the second-moment average'),
        'eps': Field(float, default=_optax_default(fn, 'eps'), check=positive,
                     help='added to the root of the second moment'),
    }


# Each optimizer's own fields: what `_base_optimizer` reads besides the shared ones.
OPTIMIZER_FIELDS: dict[str, dict[str, Field]] = {
    'sgd': {},
    # optax has no default momentum (None = plain SGD): an experiment names its value.
    'momentum': {'momentum': _momentum()},
    'nesterov': {'momentum': _momentum()},
    'adam': _adam_fields(optax.adam),
    'adamw': _adam_fields(optax.adamw),
    'adagrad': {
        'adagrad_initial_accumulator': Field(
            float, default=_optax_default(optax.adagrad, 'initial_accumulator_value'),
            check=non_negative, help='starting value of the squared-gradient sum'),
        'eps': Field(float, default=_optax_default(optax.adagrad, 'eps'), check=positive,
                     help="added to the accumulated squares' root (optax's default)"),
    },
    'rmsprop': {
        'rmsprop_decay': Field(float, default=_optax_default(optax.rmsprop, 'decay'),
                               check=fraction, help='decay of the squared-gradient average'),
        'eps': Field(float, default=_optax_default(optax.rmsprop, 'eps'), check=positive,
                     help="added to the mean square's root (optax's default)"),
        'momentum': _momentum(default=0.0),  # 0 = plain RMSprop (optax's None)
    },
}
OPTIMIZERS = tuple(OPTIMIZER_FIELDS)

# --- the fields each schedule reads ----------------------------------------------------------

SHARED_SCHEDULE_FIELDS: dict[str, Field] = {
    'name': Field(str, choices=lambda: SCHEDULES,
                  help='the learning-rate schedule; its own fields follow'),
}
_WARMUP_HELP = 'linear ramp from 0 to the learning rate, e.g. "1 epoch"'
# A schedule that may start with a warmup has none unless asked for.
_WARMUP = Field(str, default='0 steps', check=duration, help=_WARMUP_HELP)
_FINAL_LR_FACTOR = Field(float, default=_optax_default(optax.cosine_decay_schedule, 'alpha'),
                         check=non_negative, help='the last learning rate, as a factor of the peak')
_DECAY_FACTOR = Field(float, check=non_negative, help='the learning rate is multiplied by this')
_PLATEAU = optax.contrib.reduce_on_plateau

# Each schedule's own fields: what `make_schedule` (and the plateau transform) reads.
SCHEDULE_FIELDS: dict[str, dict[str, Field]] = {
    'constant': {'warmup': _WARMUP},
    'piecewise': {
        'warmup': _WARMUP,
        'boundaries': Field(str, check=durations,
                            help="absolute update counts, e.g. '32000 steps, 48000 steps'"),
        'decay_factor': _DECAY_FACTOR,
    },
    'exponential': {
        'warmup': _WARMUP,
        'decay_every': Field(str, check=duration, help='the span of one decay_factor'),
        'decay_factor': _DECAY_FACTOR,
    },
    'cosine': {'warmup': _WARMUP, 'final_lr_factor': _FINAL_LR_FACTOR},
    # The warmup is what this schedule is named for: an experiment gives its length.
    'warmup_cosine': {'warmup': Field(str, check=duration, help=_WARMUP_HELP),
                      'final_lr_factor': _FINAL_LR_FACTOR},
    # one_cycle has its own ramp (pct_start), so no warmup.
    'one_cycle': {
        key: Field(float, default=_optax_default(optax.cosine_onecycle_schedule, key),
                   check=check, help=text)
        for key, check, text in (
            ('pct_start', fraction, 'share of the run spent rising to the peak'),
            ('div_factor', positive, 'the first learning rate is the peak / div_factor'),
            ('final_div_factor', positive, 'the last is the first / final_div_factor'))
    },
    'plateau': {
        'warmup': _WARMUP,
        'plateau_factor': Field(float, default=_optax_default(_PLATEAU, 'factor'),
                                check=fraction, help='the scale is multiplied by this'),
        'plateau_patience': Field(int, default=_optax_default(_PLATEAU, 'patience'),
                                  check=non_negative,
                                  help='evaluations without improvement before a reduction'),
        'plateau_cooldown': Field(int, default=_optax_default(_PLATEAU, 'cooldown'),
                                  check=non_negative,
                                  help='evaluations after a reduction before counting again'),
        'plateau_rtol': Field(float, default=_optax_default(_PLATEAU, 'rtol'),
                              check=non_negative, help='a smaller relative change is no improvement'),
        'plateau_accumulation': Field(int, default=_optax_default(_PLATEAU, 'accumulation_size'),
                                      check=positive, help='evaluations averaged per observation'),
    },
}
SCHEDULES = tuple(SCHEDULE_FIELDS)


def _check_name(kind: str, name: str, valid: tuple[str, ...]) -> None:
    if name not in valid:
        raise ValueError(f'unknown {kind} {name!r}; valid names: {", ".join(valid)}')


def _parse_durations(text: str, to_updates: Callable[[str], int]) -> list[int]:
    """'32000 steps, 48000 steps' -> [32000, 48000] optimizer updates."""
    return [int(to_updates(part.strip())) for part in text.split(',') if part.strip()]


def make_schedule(
    sched: ml_collections.ConfigDict,
    learning_rate: float,
    *,
    total_updates: int,
    to_updates: Callable[[str], int],
) -> Schedule:
    """Learning rate as a function of the optimizer-update count."""
    name = sched.name
    _check_name('schedule', name, SCHEDULES)
    lr = learning_rate
    warmup = int(to_updates(sched.warmup)) if 'warmup' in SCHEDULE_FIELDS[name] else 0

    if name == 'warmup_cosine':
        # optax raises when the warmup leaves no decay steps (tiny runs); keep one
        # decay step so the schedule stays defined.
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total_updates, warmup + 1),
            end_value=lr * sched.final_lr_factor,
        )
    if name == 'one_cycle':
        return optax.cosine_onecycle_schedule(
            transition_steps=total_updates,
            peak_value=lr,
            pct_start=sched.pct_start,
            div_factor=sched.div_factor,
            final_div_factor=sched.final_div_factor,
        )

    # The schedules below start after the warmup: their count is shifted by it.
    if name in ('constant', 'plateau'):
        main = optax.constant_schedule(lr)
    elif name == 'piecewise':
        boundaries = _parse_durations(sched.boundaries, to_updates)
        if sorted(set(boundaries)) != boundaries:
            raise ValueError(
                f'piecewise boundaries must be strictly increasing, got '
                f'{boundaries} updates from {sched.boundaries!r}'
            )
        if boundaries and boundaries[0] <= warmup:
            raise ValueError(
                f'piecewise boundary at {boundaries[0]} updates is not '
                f'after the warmup ({warmup} updates)'
            )
        # Boundaries are absolute update counts, so undo the warmup shift.
        main = optax.piecewise_constant_schedule(
            init_value=lr,
            boundaries_and_scales={b - warmup: sched.decay_factor for b in boundaries},
        )
    elif name == 'exponential':
        decay_every = int(to_updates(sched.decay_every))
        if decay_every <= 0:
            raise ValueError(
                f'exponential decay_every must be positive, got '
                f'{sched.decay_every!r} = {decay_every} updates'
            )
        main = optax.exponential_decay(
            init_value=lr,
            transition_steps=decay_every,
            decay_rate=sched.decay_factor,
            staircase=False,
        )
    else:  # cosine
        # Decay ends exactly at total_updates; at least one step so optax accepts
        # runs whose warmup covers everything.
        main = optax.cosine_decay_schedule(
            init_value=lr, decay_steps=max(total_updates - warmup, 1), alpha=sched.final_lr_factor
        )

    if warmup <= 0:
        # linear_schedule with zero steps would return its init value (0) forever.
        return main
    ramp = optax.linear_schedule(init_value=0.0, end_value=lr, transition_steps=warmup)
    return optax.join_schedules([ramp, main], [warmup])


def _decay_mask(mask_name: str) -> Callable[[Any], Any] | None:
    _check_name('weight_decay_mask', mask_name, WEIGHT_DECAY_MASKS)
    if mask_name == 'all':
        return None
    # Biases and normalisation scales/offsets are the 0/1-D leaves.
    return lambda params: jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def _base_optimizer(
    opt: ml_collections.ConfigDict, mask
) -> Callable[..., optax.GradientTransformation]:
    """Factory taking only `learning_rate`, so inject_hyperparams exposes just it."""
    name = opt.name
    _check_name('optimizer', name, OPTIMIZERS)

    def factory(learning_rate):
        if name == 'sgd':
            return optax.sgd(learning_rate)
        if name in ('momentum', 'nesterov'):
            return optax.sgd(learning_rate, momentum=opt.momentum, nesterov=name == 'nesterov')
        if name == 'adam':
            return optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
        if name == 'adamw':
            return optax.adamw(
                learning_rate,
                b1=opt.b1,
                b2=opt.b2,
                eps=opt.eps,
                weight_decay=opt.weight_decay,
                mask=mask,
            )
        if name == 'adagrad':
            return optax.adagrad(
                learning_rate,
                initial_accumulator_value=opt.adagrad_initial_accumulator,
                eps=opt.eps,
            )
        # rmsprop: momentum 0 means plain RMSprop (no trace state).
        return optax.rmsprop(
            learning_rate,
            decay=opt.rmsprop_decay,
            eps=opt.eps,
            momentum=opt.momentum if opt.momentum else None,
        )

    return factory


def observe_when_given(plateau: optax.GradientTransformationExtraArgs):
    """reduce_on_plateau that counts only real observations: `value=NaN` (no new evaluation
    since the last step) scales the updates by the current factor and leaves the plateau's
    state alone, so patience is counted in evaluations of the monitored metric, not in
    steps. `observed` hands it each monitored evaluation, at the next step."""

    def update(updates, state, params=None, *, value, **extra):
        del extra
        observed, new_state = plateau.update(updates, state, params, value=value)
        fresh = jnp.isfinite(value)
        kept = jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates)
        updates = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), observed, kept)
        state = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), new_state, state)
        return updates, state

    return optax.GradientTransformationExtraArgs(plateau.init, update)


class ObservedState(NamedTuple):
    """The state of `observed`: the last monitored value handed to the optimizer (NaN when
    none arrived since the last update) and the wrapped transformation's state."""

    value: jax.Array
    inner: Any


def observed(inner: optax.GradientTransformationExtraArgs) -> optax.GradientTransformationExtraArgs:
    """Feeds `inner` (reduce_on_plateau) the value `observe` put in the optimizer state,
    then clears it: the monitored metric reaches optax through the state, which is
    checkpointed with the rest, so neither the train state nor the task's update knows of it."""

    def init(params):
        return ObservedState(value=jnp.full((), jnp.nan, jnp.float32), inner=inner.init(params))

    def update(updates, state, params=None, **extra):
        # optax's own way, `tx.update(..., value=v)`, still works and wins.
        value = extra.get("value", state.value)
        updates, inner_state = inner.update(updates, state.inner, params, value=value)
        return updates, ObservedState(value=jnp.full_like(state.value, jnp.nan),
                                      inner=inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


def observe(opt_state, value, place: Callable[[Any], Any] = jnp.asarray):
    """`opt_state` with `value` (lower is better) waiting in every `observed`
    transformation for its next update. `place(value)` puts one copy where the state lives
    (the backend's `put_state` for a state on the devices), a new one for each."""
    is_observed = lambda x: isinstance(x, ObservedState)
    return jax.tree.map(lambda x: x._replace(value=place(value)) if is_observed(x) else x,
                        opt_state, is_leaf=is_observed)


def observes(opt_state) -> bool:
    """Whether `opt_state` holds an `observed` transformation (a plateau schedule)."""
    is_observed = lambda x: isinstance(x, ObservedState)
    return any(map(is_observed, jax.tree.leaves(opt_state, is_leaf=is_observed)))


def make_optimizer(
    opt: ml_collections.ConfigDict,
    sched: ml_collections.ConfigDict,
    *,
    total_updates: int,
    to_updates: Callable[[str], int],
    finetune=None,
    prune=None,
) -> tuple[optax.GradientTransformationExtraArgs, Schedule]:
    """Returns (tx, schedule_fn). A plateau schedule observes the value `observe` puts in
    the optimizer state. `finetune` (a `finetune.Finetune` plan, or None) freezes, gates and
    scales parameters by path around that optimizer; `prune` (a `prune.Prune` plan, or None)
    keeps pruned weights at zero around all of it."""
    _check_name('optimizer', opt.name, OPTIMIZERS)
    _check_name('schedule', sched.name, SCHEDULES)
    mask = _decay_mask(opt.weight_decay_mask)
    schedule = make_schedule(
        sched, opt.learning_rate, total_updates=total_updates, to_updates=to_updates
    )

    parts = [finetune.gate_gradients()] if finetune is not None and finetune.staged else []
    if opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.weight_decay > 0 and opt.name != 'adamw':
        # Coupled (L2) decay enters the gradient before the optimizer, as PyTorch's
        # `weight_decay` does; adamw decouples it inside optax.adamw instead.
        parts.append(optax.add_decayed_weights(opt.weight_decay, mask=mask))
    parts.append(optax.inject_hyperparams(_base_optimizer(opt, mask))(learning_rate=schedule))
    if sched.name == 'plateau':
        # After the optimizer so its scale multiplies the final update (i.e. the lr).
        parts.append(observed(
            observe_when_given(
                optax.contrib.reduce_on_plateau(
                    factor=sched.plateau_factor,
                    patience=sched.plateau_patience,
                    cooldown=sched.plateau_cooldown,
                    rtol=sched.plateau_rtol,
                    accumulation_size=sched.plateau_accumulation,
                )
            )
        ))
    if finetune is not None:  # after the optimizer: multipliers act as per-group rates
        parts.append(finetune.scale_updates())
    tx = optax.chain(*parts)

    if opt.grad_accum_steps > 1:
        multi = optax.MultiSteps(tx, every_k_schedule=opt.grad_accum_steps)
        # MultiSteps.gradient_transformation() is typed as a plain transformation,
        # although its update forwards extra args; keep the extra-args type.
        tx = optax.GradientTransformationExtraArgs(multi.init, multi.update)
    if finetune is not None:  # outermost: frozen leaves hold no state, accumulator included
        tx = optax.with_extra_args_support(finetune.wrap(tx))
    if prune is not None:  # outermost: no update of any part may revive a pruned weight
        tx = prune.wrap(tx)
    return tx, schedule


def _lr_states(opt_state) -> list:
    is_state = lambda x: isinstance(
        x,
        (
            optax.InjectHyperparamsState,
            optax.InjectStatefulHyperparamsState,
            optax.contrib.ReduceLROnPlateauState,
        ),
    )
    return [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]


def current_learning_rate(opt_state) -> jax.Array:
    """Effective lr of the last (or, before any update, the next) update; jit-safe.

    A task that optimizes several parts with one `tx` (a GAN: {"discriminator": ...,
    "generator": ...}) keeps a mapping of equal-structure states, each from the config's one
    schedule; the lr of its first part (in key order) is reported.
    """
    if isinstance(opt_state, Mapping) and len(opt_state) > 1:
        parts = [opt_state[key] for key in sorted(opt_state)]
        layouts = {tuple(type(s) for s in _lr_states(p)) for p in parts}
        if len(layouts) == 1 and layouts != {()}:  # the same chain in every part
            return current_learning_rate(parts[0])
    states = _lr_states(opt_state)
    lrs = [
        s.hyperparams['learning_rate']
        for s in states
        if not isinstance(s, optax.contrib.ReduceLROnPlateauState)
    ]
    if len(lrs) != 1:
        raise ValueError(f'expected one injected learning_rate in opt_state, found {len(lrs)}')
    lr = jnp.asarray(lrs[0])
    for s in states:
        if isinstance(s, optax.contrib.ReduceLROnPlateauState):
            lr = lr * s.scale
    return lr
