"""What the tests of a fast-gradient layer (layers.Conv, layers.ConvTransposeFastGrad)
share: comparing it with the Flax layer it replaces on the same parameters and input."""

import jax
import jax.numpy as jnp
import numpy as np


def close(got, expected, **tolerance):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, **tolerance)


def random_params(module, x, seed=0):
    """Parameters of `module` (shapes from eval_shape) drawn on the host: compiling the
    initialisers costs seconds per module."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def outputs_and_gradients(modules, params, x):
    """[(output, gradients w.r.t. (params, x))] of each module on the same `params` and
    `x`, for the loss sum(w * sin(output)) with fixed random w; one compilation."""
    weights = np.random.default_rng(2).standard_normal(
        jax.eval_shape(modules[0].apply, params, x).shape).astype(np.float32)

    @jax.jit
    def run(params, x):
        results = []
        for module in modules:
            def loss(p, x, module=module):
                return jnp.sum(weights * jnp.sin(module.apply(p, x)))
            results.append((module.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)))
        return results
    return run(params, x)
