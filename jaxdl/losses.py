"""Loss functions returning per-example float32 values of shape [batch].

Callers weight the result by a padding mask and accumulate (sum, count), so no
function here reduces over the batch axis.
"""

import types

import jax
import jax.numpy as jnp
import optax


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def _mean_per_example(x):
    """Mean over all non-batch axes; a [batch] input is returned unchanged."""
    return x.reshape(x.shape[0], -1).mean(axis=1)


def mse(predictions, targets):
    """Mean squared error per example."""
    return _mean_per_example(jnp.square(_f32(predictions) - _f32(targets)))


def mae(predictions, targets):
    """Mean absolute error per example."""
    return _mean_per_example(jnp.abs(_f32(predictions) - _f32(targets)))


def binary_cross_entropy_with_logits(logits, labels):
    """Sigmoid cross-entropy per example; labels are floats in {0, 1}."""
    return _mean_per_example(optax.sigmoid_binary_cross_entropy(_f32(logits), _f32(labels)))


def hinge(scores, labels):
    """Hinge loss max(0, 1 - y*s) per example; labels in {0, 1} or {-1, +1}."""
    # labels > 0 maps both 0 and -1 to -1, so either convention works unchanged.
    y = jnp.where(_f32(labels) > 0, 1.0, -1.0)
    return _mean_per_example(jax.nn.relu(1.0 - y * _f32(scores)))


def softmax_cross_entropy(logits, labels, *, label_smoothing=0.0, class_weights=None):
    """Softmax cross-entropy per example from integer class ids [batch].

    Smoothed target is (1 - label_smoothing) * onehot + label_smoothing / K;
    class_weights, if given, is a [K] array scaling each example by the weight
    of its true class.
    """
    logits = _f32(logits)
    labels = jnp.asarray(labels)
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes, dtype=jnp.float32), label_smoothing)
    loss = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    if class_weights is not None:
        loss = loss * _f32(class_weights)[labels]
    return loss


def softmax_focal(logits, labels, *, gamma=0.0):
    """Focal loss per example (Lin et al. 2017, eq. 4, softmax over K classes, alpha left to
    class weights): -(1 - p_t)^gamma * log p_t with p_t the true class's probability.
    gamma = 0 is softmax cross-entropy; larger gamma down-weights well-classified
    examples, so the many easy ones of a frequent class stop dominating the gradient."""
    log_pt = jnp.take_along_axis(jax.nn.log_softmax(_f32(logits), axis=-1),
                                 jnp.asarray(labels)[:, None], axis=-1)[:, 0]
    if gamma == 0:
        return -log_pt
    # 1 - p_t floored at the smallest normal float: the factor's gradient at p_t = 1 is
    # 0 * inf for gamma < 1 otherwise.
    easy = jnp.maximum(-jnp.expm1(log_pt), jnp.finfo(jnp.float32).tiny)
    return -jnp.power(easy, gamma) * log_pt


def kl_divergence(log_p, log_q):
    """KL(p || q) per example from log-probabilities over the last axis."""
    log_p = _f32(log_p)
    log_q = _f32(log_q)
    p = jnp.exp(log_p)
    # Zero-probability entries contribute 0; masking the log-ratio (not the product)
    # keeps both the value and the gradient free of 0 * (-inf) = NaN.
    log_ratio = jnp.where(p > 0, log_p - log_q, 0.0)
    return _mean_per_example(jnp.sum(p * log_ratio, axis=-1))


LOSSES = types.MappingProxyType(
    {
        "mse": mse,
        "mae": mae,
        "binary_cross_entropy": binary_cross_entropy_with_logits,
        "hinge": hinge,
        "softmax_cross_entropy": softmax_cross_entropy,
        "softmax_focal": softmax_focal,
        "kl_divergence": kl_divergence,
    }
)


def get_loss(name):
    """Return the loss function registered under `name`."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}") from None
