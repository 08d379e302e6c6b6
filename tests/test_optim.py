"""Tests for jaxdl.training.optim."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxdl.training import optim

STEPS_PER_EPOCH = 10
LR = 0.1
TOTAL = 100


def to_updates(text: str) -> int:
    number, unit = text.split()
    n = int(number)
    if unit in ('step', 'steps'):
        return n
    if unit in ('epoch', 'epochs'):
        return n * STEPS_PER_EPOCH
    raise AssertionError(f'bad duration {text!r}')


def make_opt(**kw) -> ml_collections.ConfigDict:
    cfg = dict(
        name='sgd',
        learning_rate=LR,
        momentum=0.9,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        rmsprop_decay=0.9,
        adagrad_initial_accumulator=0.1,
        weight_decay=0.0,
        weight_decay_mask='no_bias_no_norm',
        grad_clip_norm=0.0,
        grad_accum_steps=1,
    )
    assert set(kw) <= set(cfg), kw
    cfg.update(kw)
    return ml_collections.ConfigDict(cfg)


def make_sched(**kw) -> ml_collections.ConfigDict:
    cfg = dict(
        name='constant',
        warmup='0 steps',
        boundaries='',
        decay_factor=0.1,
        decay_every='1 epochs',
        final_lr_factor=0.0,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        plateau_factor=0.5,
        plateau_patience=3,
        plateau_cooldown=0,
        plateau_rtol=1e-4,
        plateau_accumulation=1,
    )
    assert set(kw) <= set(cfg), kw
    cfg.update(kw)
    return ml_collections.ConfigDict(cfg)


def build(opt=None, sched=None, total=TOTAL):
    return optim.make_optimizer(
        opt or make_opt(), sched or make_sched(), total_updates=total, to_updates=to_updates
    )


def check_schedule(sched_cfg, expected: dict, total=TOTAL):
    _, fn = build(sched=sched_cfg, total=total)
    for count, want in expected.items():
        np.testing.assert_allclose(
            float(fn(count)), want, rtol=1e-5, atol=1e-9, err_msg=f'count={count}'
        )


def cosine(t, length, start, end):
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t / length))


# --------------------------------------------------------------------------- schedules


def test_constant_schedule():
    check_schedule(make_sched(name='constant'), {0: LR, 50: LR, TOTAL: LR})


def test_constant_schedule_with_warmup():
    check_schedule(
        make_sched(name='constant', warmup='1 epochs'),
        {0: 0.0, 3: LR * 3 / 10, 9: LR * 9 / 10, 10: LR, 50: LR, TOTAL: LR},
    )


def test_piecewise_schedule():
    s = make_sched(name='piecewise', boundaries='3 epochs, 60 steps', decay_factor=0.1)
    check_schedule(s, {0: LR, 29: LR, 30: LR * 0.1, 59: LR * 0.1, 60: LR * 0.01, TOTAL: LR * 0.01})


def test_piecewise_schedule_with_warmup_keeps_absolute_boundaries():
    s = make_sched(
        name='piecewise', boundaries='30 steps,60 steps', decay_factor=0.2, warmup='5 steps'
    )
    check_schedule(
        s,
        {
            0: 0.0,
            2: LR * 2 / 5,
            5: LR,
            29: LR,
            30: LR * 0.2,
            59: LR * 0.2,
            60: LR * 0.04,
            TOTAL: LR * 0.04,
        },
    )


def test_piecewise_boundary_inside_warmup_raises():
    with pytest.raises(ValueError, match='warmup'):
        build(sched=make_sched(name='piecewise', boundaries='5 steps', warmup='1 epochs'))


def test_exponential_schedule():
    s = make_sched(name='exponential', decay_every='2 epochs', decay_factor=0.5)
    check_schedule(
        s,
        {
            0: LR,
            7: LR * 0.5 ** (7 / 20),
            20: LR * 0.5,
            55: LR * 0.5 ** (55 / 20),
            TOTAL: LR * 0.5 ** (TOTAL / 20),
        },
    )


def test_exponential_schedule_with_warmup():
    s = make_sched(name='exponential', decay_every='20 steps', decay_factor=0.5, warmup='1 epochs')
    check_schedule(
        s,
        {
            0: 0.0,
            5: LR / 2,
            10: LR,
            17: LR * 0.5 ** (7 / 20),
            30: LR * 0.5,
            TOTAL: LR * 0.5 ** (90 / 20),
        },
    )


def test_cosine_schedule():
    f = 0.01
    s = make_sched(name='cosine', final_lr_factor=f)
    check_schedule(
        s,
        {
            0: LR,
            25: cosine(25, 100, LR, LR * f),
            50: cosine(50, 100, LR, LR * f),
            99: cosine(99, 100, LR, LR * f),
            TOTAL: LR * f,
            TOTAL + 20: LR * f,
        },
    )


def test_cosine_schedule_with_warmup_ends_at_total():
    f = 0.05
    s = make_sched(name='cosine', final_lr_factor=f, warmup='1 epochs')
    check_schedule(
        s,
        {
            0: 0.0,
            4: LR * 0.4,
            10: LR,
            40: cosine(30, 90, LR, LR * f),
            55: cosine(45, 90, LR, LR * f),
            TOTAL: LR * f,
        },
    )


def test_warmup_cosine_schedule():
    f = 0.1
    s = make_sched(name='warmup_cosine', final_lr_factor=f, warmup='2 epochs')
    check_schedule(
        s,
        {
            0: 0.0,
            5: LR / 4,
            19: LR * 19 / 20,
            20: LR,
            60: cosine(40, 80, LR, LR * f),
            99: cosine(79, 80, LR, LR * f),
            TOTAL: LR * f,
        },
    )


def test_one_cycle_schedule():
    pct, div, fdiv = 0.3, 25.0, 1e4
    s = make_sched(name='one_cycle', pct_start=pct, div_factor=div, final_div_factor=fdiv)
    start, end = LR / div, LR / div / fdiv
    up = int(pct * TOTAL)  # 30

    def ann(t, length, a, b):  # cosine annealing from a to b
        return b + (a - b) * 0.5 * (1 + math.cos(math.pi * t / length))

    check_schedule(
        s,
        {
            0: start,
            15: ann(15, up, start, LR),
            29: ann(29, up, start, LR),
            up: LR,
            65: ann(35, TOTAL - up, LR, end),
            TOTAL: end,
        },
    )


def test_one_cycle_with_extra_warmup_raises():
    """one_cycle has its own ramp: a warmup pinned for it is refused by a message that names
    the fields it does read (pct_start among them), and the config without it validates."""
    from jaxdl.config import ConfigError, validate
    from experiments import digits_cnn
    config = digits_cnn.get_config()
    config.schedule = dict(name='one_cycle', warmup='3 steps')
    with pytest.raises(ConfigError, match=r"^config\.schedule\.warmup: schedule 'one_cycle' "
                                          r"does not read it; its fields: .*pct_start"):
        validate(config)
    config.schedule = dict(name='one_cycle')
    validate(config)


def test_plateau_schedule_fn_is_constant_with_warmup():
    s = make_sched(name='plateau', warmup='4 steps')
    check_schedule(s, {0: 0.0, 2: LR / 2, 4: LR, TOTAL: LR})


# one_cycle has its own ramp and rejects a separate warmup (tested above).
@pytest.mark.parametrize(
    'name, warmup',
    [
        (name, warmup)
        for name in optim.SCHEDULES
        for warmup in ('0 steps', '5 steps')  # 5 > total
        if not (name == 'one_cycle' and warmup != '0 steps')
    ],
)
@pytest.mark.parametrize('total', [1, 2])
def test_tiny_runs_give_finite_lr(name, total, warmup):
    s = make_sched(
        name=name, warmup=warmup, boundaries='1 epochs', decay_every='1 steps', final_lr_factor=0.01
    )
    tx, fn = build(sched=s, total=total)
    values = [float(fn(c)) for c in range(total + 3)]
    assert all(math.isfinite(v) and v >= 0 for v in values), values
    assert max(values) > 0, values
    params = {'w': jnp.ones((2, 2))}
    state = tx.init(params)
    for _ in range(total + 1):
        _, state = tx.update({'w': jnp.ones((2, 2))}, state, params, value=jnp.float32(1.0))
        assert math.isfinite(float(optim.current_learning_rate(state)))


# -------------------------------------------------------------------------- optimizers

HYPER = dict(learning_rate=0.1, momentum=0.7, b1=0.8, b2=0.9, eps=1e-3, rmsprop_decay=0.6,
             adagrad_initial_accumulator=0.3)


def _by_hand(name, grads, p, momentum=HYPER['momentum']):
    """Parameters after the steps with gradients `grads`, by each optimizer's formula
    (float64), with HYPER's values: the learning rate constant, no decay or clipping."""
    lr, eps = HYPER['learning_rate'], HYPER['eps']
    p = np.asarray(p, np.float64)
    trace = m = v = np.zeros_like(p)
    acc = np.full_like(p, HYPER['adagrad_initial_accumulator'])
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        if name == 'sgd':
            step = g
        elif name in ('momentum', 'nesterov'):
            trace = g + momentum * trace
            step = g + momentum * trace if name == 'nesterov' else trace
        elif name in ('adam', 'adamw'):
            b1, b2 = HYPER['b1'], HYPER['b2']
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g ** 2
            step = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        elif name == 'adagrad':
            acc = acc + g ** 2
            step = g / np.sqrt(acc + eps)
        elif name == 'rmsprop':
            decay = HYPER['rmsprop_decay']
            v = decay * v + (1 - decay) * g ** 2
            step = g / np.sqrt(v + eps)  # eps inside the root (optax's rmsprop)
            if momentum:
                trace = step + momentum * trace
                step = trace
        p = p - lr * step
    return p


@pytest.mark.parametrize('name, momentum', [(n, HYPER['momentum']) for n in optim.OPTIMIZERS]
                         + [('rmsprop', 0.0)])
def test_two_steps_match_the_hand_formula(name, momentum):
    """Each optimizer with its configured hyperparameters (none at its default), two steps
    against its formula: nesterov is not momentum, rmsprop and adagrad use their decay,
    accumulator and eps."""
    tx, _ = build(opt=make_opt(name=name, **{**HYPER, 'momentum': momentum}))
    params = {'w': jnp.array([1.0, -2.0, 0.5])}
    grads = [jnp.array([0.5, -1.0, 4.0]), jnp.array([-0.3, 2.0, 1.0])]
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({'w': g}, state, params, value=jnp.float32(0.0))
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], _by_hand(name, grads, [1.0, -2.0, 0.5], momentum),
                               rtol=1e-5, atol=1e-6)


VALUE_CASES = [(n, 'plateau', a) for n in optim.OPTIMIZERS for a in (1, 2)] + [
    ('adamw', s, a) for s in optim.SCHEDULES if s != 'plateau' for a in (1, 2)
]


@pytest.mark.parametrize('name, sched_name, accum', VALUE_CASES)
def test_update_accepts_value(name, sched_name, accum):
    tx, _ = build(
        opt=make_opt(name=name, grad_accum_steps=accum, weight_decay=0.01, grad_clip_norm=1.0),
        sched=make_sched(name=sched_name, boundaries='50 steps'),
    )
    params = {'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(tx.update)  # one compile is cheaper than eager MultiSteps/cond
    for _ in range(2):
        updates, state = update(grads, state, params, value=jnp.float32(2.0))
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_sgd_is_exact():
    tx, _ = build(opt=make_opt(name='sgd', learning_rate=0.1))
    params = {'w': jnp.array([1.0, 2.0, -3.0])}
    g = {'w': jnp.array([0.5, -1.0, 4.0])}
    updates, _ = tx.update(g, tx.init(params), params, value=jnp.float32(0.0))
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new['w'], params['w'] - 0.1 * g['w'], rtol=1e-6)


# ------------------------------------------------------------------------ weight decay


def decay_params():
    params = {
        'dense': {'kernel': jnp.array([[1.0, -2.0], [3.0, 0.5]]), 'bias': jnp.array([2.0, -1.0])},
        'norm': {'scale': jnp.array([1.5, 0.5])},
    }
    grads = {
        'dense': {'kernel': jnp.array([[0.1, 0.2], [-0.3, 0.4]]), 'bias': jnp.array([0.5, -0.5])},
        'norm': {'scale': jnp.array([0.25, -0.75])},
    }
    return params, grads


def test_sgd_l2_decay_skips_bias_and_norm():
    lr, wd = 0.1, 0.01
    tx, _ = build(
        opt=make_opt(
            name='sgd', learning_rate=lr, weight_decay=wd, weight_decay_mask='no_bias_no_norm'
        )
    )
    params, grads = decay_params()
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    k, b, s = params['dense']['kernel'], params['dense']['bias'], params['norm']['scale']
    gk, gb, gs = grads['dense']['kernel'], grads['dense']['bias'], grads['norm']['scale']
    np.testing.assert_allclose(u['dense']['kernel'], -lr * (gk + wd * k), rtol=1e-6)
    np.testing.assert_allclose(u['dense']['bias'], -lr * gb, rtol=1e-6)
    np.testing.assert_allclose(u['norm']['scale'], -lr * gs, rtol=1e-6)


def test_sgd_l2_decay_all_decays_bias():
    lr, wd = 0.1, 0.01
    tx, _ = build(
        opt=make_opt(name='sgd', learning_rate=lr, weight_decay=wd, weight_decay_mask='all')
    )
    params, grads = decay_params()
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    b, gb = params['dense']['bias'], grads['dense']['bias']
    np.testing.assert_allclose(u['dense']['bias'], -lr * (gb + wd * b), rtol=1e-6)


def test_adam_l2_decay_is_coupled():
    lr, wd, eps = 0.1, 0.5, 1e-8
    tx, _ = build(opt=make_opt(name='adam', learning_rate=lr, weight_decay=wd, eps=eps))
    params, grads = decay_params()
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    # First adam step is g/(|g|+eps) of the gradient it sees: g + wd*p on the kernel.
    gk = grads['dense']['kernel'] + wd * params['dense']['kernel']
    np.testing.assert_allclose(u['dense']['kernel'], -lr * gk / (jnp.abs(gk) + eps), rtol=1e-5)


def test_adamw_decay_is_decoupled_and_masked():
    lr, wd, eps = 0.1, 0.5, 1e-8
    tx, _ = build(opt=make_opt(name='adamw', learning_rate=lr, weight_decay=wd, eps=eps))
    params, grads = decay_params()
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    k, gk = params['dense']['kernel'], grads['dense']['kernel']
    gb = grads['dense']['bias']
    # atol: adam's sqrt(v) loses a few ulps where the decay cancels the step.
    np.testing.assert_allclose(
        u['dense']['kernel'], -lr * (gk / (jnp.abs(gk) + eps) + wd * k), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        u['dense']['bias'], -lr * gb / (jnp.abs(gb) + eps), rtol=1e-5, atol=1e-6
    )
    # Coupled decay would feed g + wd*p through adam instead: clearly different here.
    coupled = gk + wd * k
    assert not np.allclose(u['dense']['kernel'], -lr * coupled / jnp.abs(coupled), atol=1e-3)


# ---------------------------------------------------------------- clipping, accumulation


def test_clipping_limits_global_norm():
    lr = 0.1
    tx, _ = build(opt=make_opt(name='sgd', learning_rate=lr, grad_clip_norm=1.0))
    params = {'a': jnp.zeros(1), 'b': jnp.zeros((1, 1))}
    grads = {'a': jnp.array([6.0]), 'b': jnp.array([[8.0]])}  # global norm 10
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    np.testing.assert_allclose(float(optax.tree.norm(u)), lr * 1.0, rtol=1e-5)
    np.testing.assert_allclose(u['a'], -lr * grads['a'] / 10, rtol=1e-5)


def test_clipping_leaves_small_gradients():
    tx, _ = build(opt=make_opt(name='sgd', learning_rate=0.1, grad_clip_norm=100.0))
    params = {'a': jnp.zeros(2)}
    grads = {'a': jnp.array([6.0, 8.0])}
    u, _ = tx.update(grads, tx.init(params), params, value=jnp.float32(0.0))
    np.testing.assert_allclose(u['a'], -0.1 * grads['a'], rtol=1e-6)


def test_accumulation_updates_every_second_step_with_mean():
    lr = 0.1
    tx, _ = build(opt=make_opt(name='sgd', learning_rate=lr, grad_accum_steps=2))
    params = {'w': jnp.array([1.0, 2.0])}
    state = tx.init(params)
    gs = [
        jnp.array([1.0, 3.0]),
        jnp.array([5.0, -1.0]),
        jnp.array([2.0, 2.0]),
        jnp.array([0.0, 4.0]),
    ]
    history = []
    for g in gs:
        u, state = tx.update({'w': g}, state, params, value=jnp.float32(0.0))
        params = optax.apply_updates(params, u)
        history.append(np.asarray(params['w']))
    np.testing.assert_allclose(history[0], [1.0, 2.0])
    np.testing.assert_allclose(
        history[1], np.array([1.0, 2.0]) - lr * (gs[0] + gs[1]) / 2, rtol=1e-6
    )
    np.testing.assert_allclose(history[2], history[1])
    np.testing.assert_allclose(history[3], history[1] - lr * (gs[2] + gs[3]) / 2, rtol=1e-6)


# --------------------------------------------------------------- current_learning_rate


def make_step(tx):
    @jax.jit
    def step(params, state, g, value):
        u, state = tx.update({'w': g}, state, params, value=value)
        return optax.apply_updates(params, u), state, optim.current_learning_rate(state), u

    return step


@pytest.mark.parametrize('accum', [1, 3])
def test_current_lr_follows_schedule_in_jit(accum):
    total = 12
    s = make_sched(name='warmup_cosine', warmup='4 steps', final_lr_factor=0.1)
    tx, fn = build(opt=make_opt(name='momentum', grad_accum_steps=accum), sched=s, total=total)
    params = {'w': jnp.ones(2)}
    state = tx.init(params)
    np.testing.assert_allclose(
        float(jax.jit(optim.current_learning_rate)(state)), float(fn(0)), atol=1e-9
    )
    step = make_step(tx)
    done = 0
    seen = []
    for micro in range(total * accum):
        params, state, lr, _ = step(params, state, jnp.ones(2), jnp.float32(1.0))
        done += (micro + 1) % accum == 0
        # After n completed updates the state holds the lr of update n-1.
        want = float(fn(max(done - 1, 0)))
        np.testing.assert_allclose(float(lr), want, rtol=1e-5, atol=1e-9, err_msg=f'micro={micro}')
        seen.append(float(lr))
    assert len(set(seen)) > total // 2  # really moved along the schedule


@pytest.mark.parametrize('accumulation', [1, 2])
def test_plateau_reduces_lr_after_patience(accumulation):
    patience, factor = 3, 0.5
    s = make_sched(
        name='plateau',
        plateau_patience=patience,
        plateau_factor=factor,
        plateau_accumulation=accumulation,
        plateau_cooldown=0,
    )
    tx, _ = build(opt=make_opt(name='sgd', learning_rate=LR), sched=s)
    params = {'w': jnp.zeros(2)}
    state = tx.init(params)
    step = make_step(tx)
    # The first window sets the best value; `patience` non-improving windows follow.
    steps_to_reduce = accumulation * (patience + 1)
    for i in range(steps_to_reduce):
        np.testing.assert_allclose(float(optim.current_learning_rate(state)), LR, rtol=1e-6)
        params, state, lr, _ = step(params, state, jnp.ones(2), jnp.float32(1.0))
    np.testing.assert_allclose(float(lr), LR * factor, rtol=1e-6)


@pytest.mark.parametrize('name', ['sgd', 'adam'])
def test_plateau_through_multisteps_reports_applied_lr(name):
    patience, factor, k = 2, 0.5, 2
    s = make_sched(
        name='plateau', plateau_patience=patience, plateau_factor=factor, plateau_accumulation=1
    )
    tx, _ = build(opt=make_opt(name=name, learning_rate=LR, grad_accum_steps=k, eps=1e-8), sched=s)
    params = {'w': jnp.zeros(2)}
    state = tx.init(params)
    step = make_step(tx)
    g = jnp.array([1.0, -2.0])
    # Under a constant gradient adam's bias-corrected step is sign(g); sgd's is g.
    direction = g if name == 'sgd' else jnp.sign(g)
    lrs = []
    for micro in range(k * (patience + 2)):
        params, state, lr, u = step(params, state, g, jnp.float32(1.0))
        if (micro + 1) % k == 0:
            # The update really applied used the reported lr (plateau scales after adam).
            np.testing.assert_allclose(u['w'], -float(lr) * direction, rtol=1e-4)
            lrs.append(float(lr))
    # Plateau counts optimizer updates: best at update 1, reduced at update patience+1.
    np.testing.assert_allclose(lrs, [LR] * patience + [LR * factor] * 2, rtol=1e-6)


# ----------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    'kind, opt_kw, sched_kw, valid',
    [
        ('optimizer', dict(name='adamax'), {}, optim.OPTIMIZERS),
        ('schedule', {}, dict(name='linear'), optim.SCHEDULES),
        ('weight_decay_mask', dict(weight_decay_mask='bias_only'), {}, optim.WEIGHT_DECAY_MASKS),
    ],
)
def test_unknown_names_raise(kind, opt_kw, sched_kw, valid):
    with pytest.raises(ValueError, match=kind) as err:
        build(opt=make_opt(**opt_kw), sched=make_sched(**sched_kw))
    msg = str(err.value)
    assert kind in msg and '\n' not in msg
    for name in valid:
        assert name in msg


def test_public_name_lists():
    assert set(optim.OPTIMIZERS) == {
        'sgd',
        'momentum',
        'nesterov',
        'adam',
        'adamw',
        'adagrad',
        'rmsprop',
    }
    assert set(optim.SCHEDULES) == {
        'constant',
        'piecewise',
        'exponential',
        'cosine',
        'warmup_cosine',
        'one_cycle',
        'plateau',
    }
