"""Tests for jaxdl.losses against values worked out by hand on tiny inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import losses

RTOL = 1e-6


def _check(actual, expected, atol=0.0):
    actual = np.asarray(actual)
    assert actual.dtype == np.float32
    assert actual.shape == (len(expected),)
    np.testing.assert_allclose(actual, np.asarray(expected, np.float64), rtol=RTOL, atol=atol)


def _lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


# --- regression ---------------------------------------------------------------------------


def test_mse_by_hand():
    preds = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    targets = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    # ex0: (0^2 + 2^2 + 3^2) / 3 = 13/3 ; ex1: (1 + 1 + 1) / 3 = 1
    _check(losses.mse(preds, targets), [13.0 / 3.0, 1.0])


def test_mae_by_hand():
    preds = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    targets = np.array([[1.0, 0.0, 0.0], [1.0, -1.0, 1.0]], np.float32)
    # ex0: (0 + 2 + 3) / 3 = 5/3 ; ex1: (1 + 1 + 1) / 3 = 1
    _check(losses.mae(preds, targets), [5.0 / 3.0, 1.0])


def test_regression_means_over_all_non_batch_axes():
    preds = np.zeros((2, 2, 2), np.float32)
    targets = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, -2.0]]], np.float32)
    # mse ex0: (1 + 4 + 9 + 16) / 4 = 7.5 ; ex1: 4 / 4 = 1
    _check(losses.mse(preds, targets), [7.5, 1.0])
    # mae ex0: (1 + 2 + 3 + 4) / 4 = 2.5 ; ex1: 2 / 4 = 0.5
    _check(losses.mae(preds, targets), [2.5, 0.5])


def test_regression_on_batch_only_inputs():
    preds = np.array([1.0, -2.0], np.float32)
    targets = np.array([4.0, 0.0], np.float32)
    _check(losses.mse(preds, targets), [9.0, 4.0])
    _check(losses.mae(preds, targets), [3.0, 2.0])


# --- binary cross-entropy -----------------------------------------------------------------


def test_binary_cross_entropy_by_hand():
    logits = np.array([[0.0, 2.0], [-1.0, 3.0]], np.float32)
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    # label 1: -log(sigmoid(x)) = log(1 + e^-x) ; label 0: -log(1 - sigmoid(x)) = log(1 + e^x)
    ex0 = (math.log(1 + math.exp(-0.0)) + math.log(1 + math.exp(2.0))) / 2
    ex1 = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-3.0))) / 2
    _check(losses.binary_cross_entropy_with_logits(logits, labels), [ex0, ex1])


def test_binary_cross_entropy_stable_for_large_logits():
    logits = np.array([[100.0, -100.0], [100.0, -100.0]], np.float32)
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    # ex0: confidently right, loss = log(1 + e^-100) ~ 3.7e-44 ; ex1: confidently wrong,
    # each term log(1 + e^100) = 100 + log(1 + e^-100) ~ 100, mean 100.
    out = losses.binary_cross_entropy_with_logits(logits, labels)
    assert np.all(np.isfinite(np.asarray(out)))
    _check(out, [math.log1p(math.exp(-100.0)), 100.0], atol=1e-6)


# --- hinge --------------------------------------------------------------------------------


def test_hinge_by_hand():
    scores = np.array([[0.5, -2.0, 2.0], [0.3, 1.0, -0.5]], np.float32)
    labels_pm = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]], np.float32)
    # ex0: max(0, 1-0.5)=0.5, max(0, 1-2)=0, max(0, 1-2)=0 -> 0.5/3
    # ex1: max(0, 1+0.3)=1.3, max(0, 1-1)=0, max(0, 1+0.5)=1.5 -> 2.8/3
    _check(losses.hinge(scores, labels_pm), [0.5 / 3.0, 2.8 / 3.0])


def test_hinge_zero_one_labels_equal_plus_minus_one_labels():
    scores = np.array([[0.5, -2.0, 2.0], [0.3, 1.0, -0.5]], np.float32)
    labels_01 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], np.float32)
    labels_pm = 2.0 * labels_01 - 1.0
    out_01 = np.asarray(losses.hinge(scores, labels_01))
    out_pm = np.asarray(losses.hinge(scores, labels_pm))
    np.testing.assert_array_equal(out_01, out_pm)
    _check(out_01, [0.5 / 3.0, 2.8 / 3.0])


# --- softmax cross-entropy ----------------------------------------------------------------

LOGITS = [[1.0, 2.0, 3.0], [2.0, 0.0, -1.0]]
LABELS = [2, 0]


def _ce_by_hand(logits, labels, smoothing=0.0, weights=None):
    out = []
    for z, y in zip(logits, labels):
        k = len(z)
        target = [(1 - smoothing) * (i == y) + smoothing / k for i in range(k)]
        # -sum_i t_i * (z_i - lse(z)) = lse(z) - sum_i t_i z_i, since sum_i t_i = 1
        loss = _lse(z) - sum(t * zi for t, zi in zip(target, z))
        out.append(loss * (weights[y] if weights is not None else 1.0))
    return out


def test_softmax_cross_entropy_by_hand():
    expected = [_lse(LOGITS[0]) - 3.0, _lse(LOGITS[1]) - 2.0]
    assert expected == pytest.approx(_ce_by_hand(LOGITS, LABELS))
    _check(losses.softmax_cross_entropy(np.array(LOGITS, np.float32), np.array(LABELS)), expected)


def test_softmax_cross_entropy_label_smoothing():
    a = 0.1
    # targets: ex0 [a/3, a/3, 1 - a + a/3], ex1 [1 - a + a/3, a/3, a/3]
    ex0 = _lse(LOGITS[0]) - (a / 3 * 1.0 + a / 3 * 2.0 + (1 - a + a / 3) * 3.0)
    ex1 = _lse(LOGITS[1]) - ((1 - a + a / 3) * 2.0 + a / 3 * 0.0 + a / 3 * -1.0)
    assert [ex0, ex1] == pytest.approx(_ce_by_hand(LOGITS, LABELS, smoothing=a))
    out = losses.softmax_cross_entropy(np.array(LOGITS, np.float32), np.array(LABELS), label_smoothing=a)
    _check(out, [ex0, ex1])
    unsmoothed = np.asarray(losses.softmax_cross_entropy(np.array(LOGITS, np.float32), np.array(LABELS)))
    assert not np.allclose(np.asarray(out), unsmoothed)


def test_softmax_cross_entropy_class_weights():
    weights = [0.5, 1.0, 2.0]
    # ex0 has class 2 (weight 2.0), ex1 has class 0 (weight 0.5)
    expected = [2.0 * (_lse(LOGITS[0]) - 3.0), 0.5 * (_lse(LOGITS[1]) - 2.0)]
    out = losses.softmax_cross_entropy(
        np.array(LOGITS, np.float32), np.array(LABELS), class_weights=np.array(weights, np.float32)
    )
    _check(out, expected)


def test_softmax_cross_entropy_smoothing_and_weights_combine():
    a, weights = 0.2, [0.5, 1.0, 2.0]
    out = losses.softmax_cross_entropy(
        np.array(LOGITS, np.float32),
        np.array(LABELS),
        label_smoothing=a,
        class_weights=np.array(weights, np.float32),
    )
    _check(out, _ce_by_hand(LOGITS, LABELS, smoothing=a, weights=weights))


def test_softmax_cross_entropy_stable_for_large_logits():
    logits = np.array([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0]], np.float32)
    labels = np.array([0, 0])
    # lse = 100 + log(1 + e^-100 + e^-200) ~ 100: ex0 loss ~ e^-100 ~ 0, ex1 loss = 100 - (-100) = 200
    out = losses.softmax_cross_entropy(logits, labels)
    assert np.all(np.isfinite(np.asarray(out)))
    _check(out, [math.log1p(math.exp(-100.0)), 200.0], atol=1e-6)


# --- KL divergence ------------------------------------------------------------------------


def test_kl_of_identical_distributions_is_zero():
    log_p = np.log(np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], np.float32))
    _check(losses.kl_divergence(log_p, log_p), [0.0, 0.0], atol=1e-7)


def test_kl_by_hand():
    p = [[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]
    q = [[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]]
    # ex0: 0.5 ln(2) + 0.25 ln(1) + 0.25 ln(1/2) = 0.25 ln 2
    ex0 = 0.25 * math.log(2.0)
    # ex1: sum_i p_i ln(3 p_i)
    ex1 = 0.2 * math.log(0.6) + 0.3 * math.log(0.9) + 0.5 * math.log(1.5)
    out = losses.kl_divergence(np.log(np.array(p, np.float32)), np.log(np.array(q, np.float32)))
    _check(out, [ex0, ex1])
    assert np.all(np.asarray(out) > 0)


def test_kl_is_not_symmetric():
    p = np.log(np.array([[0.5, 0.25, 0.25]], np.float32))
    r = np.log(np.array([[0.7, 0.2, 0.1]], np.float32))
    # KL(r||p) = 0.7 ln(0.7/0.5) + 0.2 ln(0.2/0.25) + 0.1 ln(0.1/0.25)
    kl_rp = 0.7 * math.log(1.4) + 0.2 * math.log(0.8) + 0.1 * math.log(0.4)
    # KL(p||r) = 0.5 ln(0.5/0.7) + 0.25 ln(0.25/0.2) + 0.25 ln(0.25/0.1)
    kl_pr = 0.5 * math.log(5 / 7) + 0.25 * math.log(1.25) + 0.25 * math.log(2.5)
    assert abs(kl_rp - kl_pr) > 1e-3
    _check(losses.kl_divergence(r, p), [kl_rp])
    _check(losses.kl_divergence(p, r), [kl_pr])


def test_kl_with_zero_probability_entries_is_finite():
    log_p = jnp.array([[0.0, -jnp.inf, -jnp.inf]], jnp.float32)  # p = [1, 0, 0]
    log_q = jnp.log(jnp.full((1, 3), 1.0 / 3.0, jnp.float32))
    # KL = 1 * ln(1 / (1/3)) = ln 3
    _check(losses.kl_divergence(log_p, log_q), [math.log(3.0)])
    grad_q = jax.grad(lambda lq: losses.kl_divergence(log_p, lq).sum())(log_q)
    grad_p = jax.grad(lambda lp: losses.kl_divergence(lp, log_q).sum())(log_p)
    assert np.all(np.isfinite(np.asarray(grad_q)))
    assert np.all(np.isfinite(np.asarray(grad_p)))


# --- dtypes -------------------------------------------------------------------------------


def _bf16(x):
    return jnp.asarray(np.array(x, np.float32), jnp.bfloat16)


@pytest.mark.parametrize(
    "fn, args",
    [
        (losses.mse, ([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]], [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])),
        (losses.mae, ([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]], [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])),
        (losses.binary_cross_entropy_with_logits, ([[0.0, 2.0], [-1.0, 3.0]], [[1.0, 0.0], [0.0, 1.0]])),
        (losses.hinge, ([[0.5, -2.0, 2.0], [0.3, 1.0, -0.5]], [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])),
        (losses.kl_divergence, (np.log([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]), np.log([[0.25, 0.25, 0.5]] * 2))),
    ],
)
def test_bf16_inputs_give_float32_outputs(fn, args):
    bf = [_bf16(a) for a in args]
    out = fn(*bf)
    assert out.dtype == jnp.float32
    assert out.shape == (2,)
    # Same result as upcasting the (already rounded) bf16 inputs ourselves.
    ref = fn(*[b.astype(jnp.float32) for b in bf])
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=RTOL)


def test_bf16_softmax_cross_entropy_gives_float32():
    logits = _bf16(LOGITS)  # these small integers are exact in bf16
    out = losses.softmax_cross_entropy(logits, jnp.array(LABELS), label_smoothing=0.1)
    _check(out, _ce_by_hand(LOGITS, LABELS, smoothing=0.1))


# --- focal loss ---------------------------------------------------------------------------


def _focal_by_hand(logits, labels, gamma):
    out = []
    for row, y in zip(logits, labels):
        p = math.exp(row[y] - _lse(row))
        out.append(-((1 - p) ** gamma) * math.log(p))
    return out


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_loss_by_hand(gamma):
    out = losses.softmax_focal(jnp.array(LOGITS), jnp.array(LABELS), gamma=gamma)
    _check(out, _focal_by_hand(LOGITS, LABELS, gamma), atol=1e-7)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(32, 5)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, 32))
    np.testing.assert_array_equal(losses.softmax_focal(logits, labels, gamma=0.0),
                                  losses.softmax_cross_entropy(logits, labels))


def test_focal_loss_down_weights_easy_examples_and_has_finite_gradients():
    """A confident right answer loses far more of its loss than a wrong one; at p_t = 1
    (saturated logits) the gradient stays finite for gamma < 1 too."""
    logits = jnp.array([[6.0, 0.0], [0.0, 0.5], [200.0, 0.0]])
    labels = jnp.array([0, 0, 0])
    ce = losses.softmax_cross_entropy(logits, labels)
    focal = losses.softmax_focal(logits, labels, gamma=2.0)
    assert focal[0] / ce[0] < 1e-4 < 0.3 < focal[1] / ce[1]
    grads = jax.grad(lambda x: losses.softmax_focal(x, labels, gamma=0.5).sum())(logits)
    assert np.isfinite(np.asarray(grads)).all()


# --- registry -----------------------------------------------------------------------------


def test_get_loss_returns_registered_functions():
    expected = {
        "mse": losses.mse,
        "mae": losses.mae,
        "binary_cross_entropy": losses.binary_cross_entropy_with_logits,
        "hinge": losses.hinge,
        "softmax_cross_entropy": losses.softmax_cross_entropy,
        "softmax_focal": losses.softmax_focal,
        "kl_divergence": losses.kl_divergence,
    }
    assert dict(losses.LOSSES) == expected
    for name, fn in expected.items():
        assert losses.get_loss(name) is fn


def test_get_loss_unknown_name_raises_one_line_listing_valid_names():
    with pytest.raises(ValueError, match="'cross_entropy'") as excinfo:
        losses.get_loss("cross_entropy")
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert "'cross_entropy'" in msg
    valid = sorted(losses.LOSSES)
    assert ", ".join(valid) in msg


def test_losses_mapping_is_read_only():
    with pytest.raises(TypeError, match="does not support item assignment"):
        losses.LOSSES["mine"] = losses.mse
    assert "mine" not in losses.LOSSES
