"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), under
an L-infinity or L2 bound, untargeted or targeted, in pixel space. Pure and traceable:
`pgd` runs its steps in a `lax.fori_loop`, so one jit covers a whole attack and `eps` may
be a traced value (a sweep of epsilons compiles once). Below the analysis tools, so the
classification task can train on PGD examples inside its compiled step (adversarial
training, `task.adversarial_epsilon`).

`logits_fn(x) -> logits` is the model as it sees x; the attack clips every adversarial
input back to `pixel_range`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

NORMS = ("linf", "l2")
# Guards the L2 normalisations against a zero gradient or a zero perturbation (at eps 0
# the perturbation must come out exactly zero, not NaN).
_TINY = 1e-12


def _per_example_norm(x: jax.Array) -> jax.Array:
    """L2 norm of each example, shaped to broadcast against x."""
    flat = x.reshape(x.shape[0], -1)
    return jnp.sqrt(jnp.sum(flat * flat, axis=1)).reshape((-1,) + (1,) * (x.ndim - 1))


def project(delta: jax.Array, eps, norm: str) -> jax.Array:
    """`delta` moved into the `norm` ball of radius `eps` around 0 (per example)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    scale = jnp.minimum(1.0, eps / jnp.maximum(_per_example_norm(delta), _TINY))
    return delta * scale


def _ascent_direction(grad: jax.Array, norm: str) -> jax.Array:
    """The steepest-ascent step of unit `norm` size: sign(g) for L-inf, g/||g||_2 for L2."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / jnp.maximum(_per_example_norm(grad), _TINY)


def random_start(rng: jax.Array, shape, eps, norm: str, rows: jax.Array | None = None
                 ) -> jax.Array:
    """A uniform draw from the `norm` ball of radius `eps` per example (Madry et al.'s
    random start), example n from `fold_in(rng, rows[n])` (default rows 0..N-1), so a draw
    does not depend on how a batch is split over devices."""
    rows = jnp.arange(shape[0]) if rows is None else rows
    dims = math.prod(shape[1:])

    def one(key):
        if norm == "linf":
            return jax.random.uniform(key, shape[1:], minval=-1.0, maxval=1.0)
        direction_key, radius_key = jax.random.split(key)
        direction = jax.random.normal(direction_key, shape[1:])
        direction = direction / jnp.maximum(jnp.sqrt(jnp.sum(direction * direction)), _TINY)
        return direction * jax.random.uniform(radius_key) ** (1 / dims)

    keys = jax.vmap(lambda row: jax.random.fold_in(rng, row))(rows)
    return jax.vmap(one)(keys) * eps


def pgd(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: jax.Array, *,
        eps, step_size, steps: int, norm: str, pixel_range: tuple[float, float],
        rng: jax.Array | None = None, targets: jax.Array | None = None,
        rows: jax.Array | None = None) -> jax.Array:
    """Adversarial inputs within `eps` of `x` (in `norm`) and inside `pixel_range`.

    Each of `steps` steps moves by `step_size` along the sign (L-inf) or the normalised
    direction (L2) of the cross-entropy gradient, up the loss of the true `labels`
    (untargeted) or down the loss of `targets` (targeted), then projects back onto the
    ball and the pixel range. With `rng` the attack starts at a uniform point of the ball
    (clipped to the pixel range; `rows` key each example's draw, see `random_start`);
    without, at `x`. FGSM is one step of size eps from `x`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    low, high = pixel_range
    x = x.astype(jnp.float32)
    goal, sign = (labels, 1.0) if targets is None else (targets, -1.0)

    def loss(x_adv):
        logits = logits_fn(x_adv).astype(jnp.float32)
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, goal))

    def step(_, x_adv):
        grad = jax.grad(loss)(x_adv)
        x_adv = x_adv + sign * step_size * _ascent_direction(grad, norm)
        return jnp.clip(x + project(x_adv - x, eps, norm), low, high)

    start = x if rng is None else jnp.clip(x + random_start(rng, x.shape, eps, norm, rows),
                                           low, high)
    return lax.fori_loop(0, steps, step, start)


def fgsm(logits_fn, x, labels, *, eps, norm: str, pixel_range, targets=None) -> jax.Array:
    """The fast gradient (sign) method: one step of size `eps`, no random start. At eps 0 it
    returns `x` itself."""
    return pgd(logits_fn, x, labels, eps=eps, step_size=eps, steps=1, norm=norm,
               pixel_range=pixel_range, targets=targets)
