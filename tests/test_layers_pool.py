"""layers.max_pool is nn.max_pool: the same output everywhere, the same gradient where each
window has one maximum; non-overlapping windows go through a reshape (speed: benchmarks/)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models import layers


@pytest.mark.parametrize("shape,window,strides,padding", [
    ((2, 8, 8, 3), (2, 2), (2, 2), "VALID"),
    ((2, 7, 9, 3), (2, 2), (2, 2), "VALID"),    # odd sizes: VALID drops the last row/column
    ((2, 5, 5, 3), (2, 2), None, "VALID"),      # flax's default strides: 1, overlapping
    ((1, 9, 9, 2), (3, 3), (3, 3), "VALID"),
    ((2, 10, 4), (2,), (2,), "VALID"),            # 1-D
    ((1, 9, 9, 2), (3, 3), (2, 2), "VALID"),      # overlapping: nn.max_pool itself
    ((1, 8, 8, 2), (2, 2), (2, 2), "SAME"),
])
def test_same_output_and_gradient_as_nn_max_pool(shape, window, strides, padding):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    weights = np.random.default_rng(1).standard_normal(
        jax.eval_shape(lambda x: nn.max_pool(x, window, strides, padding), x).shape)

    def run(pool):
        return jax.jit(jax.value_and_grad(
            lambda x: jnp.sum(weights * pool(x, window, strides, padding))))(x)

    (expected, expected_grad), (got, got_grad) = run(nn.max_pool), run(layers.max_pool)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_grad, expected_grad)


def test_tied_maxima_share_the_gradient():
    """After a ReLU a window is often all zeros: its gradient is shared, not given to the
    first zero, and the window's total is the same."""
    x = jnp.zeros((1, 2, 2, 1))
    grad = jax.grad(lambda x: jnp.sum(layers.max_pool(x, (2, 2), (2, 2))))(x)
    np.testing.assert_allclose(grad, np.full((1, 2, 2, 1), 0.25))
    reference = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), (2, 2))))(x)
    assert float(reference.sum()) == float(grad.sum()) == 1.0
