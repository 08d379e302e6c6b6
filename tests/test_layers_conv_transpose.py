"""ConvTransposeFastGrad is nn.ConvTranspose: same parameters, output and gradients (only
its kernel gradient takes another, faster route on CPU)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.gan import Generator
from jaxdl.models.layers import ConvTransposeFastGrad
from layer_checks import close, outputs_and_gradients, random_params

CASES = [  # (input shape, features, kernel, strides, padding, use_bias)
    ((2, 7, 7, 6), 4, (4, 4), (2, 2), "SAME", False),
    ((2, 4, 5, 3), 2, (3, 3), (2, 2), "SAME", True),
    ((1, 5, 4, 2), 3, (4, 3), (2, 3), "VALID", True),
    ((2, 6, 6, 3), 2, (5, 5), (1, 1), "SAME", True),
    ((1, 4, 4, 2), 3, (4, 4), (2, 2), ((1, 2), (0, 1)), True),
    ((2, 9, 3), 2, (4,), (3,), "SAME", True),
]


@pytest.mark.parametrize("shape,features,kernel_size,strides,padding,use_bias", CASES)
def test_same_output_and_gradients_as_nn_conv_transpose(
        shape, features, kernel_size, strides, padding, use_bias):
    kwargs = {"features": features, "kernel_size": kernel_size, "strides": strides,
              "padding": padding, "use_bias": use_bias}
    modules = nn.ConvTranspose(**kwargs), ConvTransposeFastGrad(**kwargs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    params = random_params(modules[0], x)
    assert jax.tree.structure(random_params(modules[1], x)) == jax.tree.structure(params)
    (out, grads), (fast_out, fast_grads) = outputs_and_gradients(modules, params, x)
    close(fast_out, out, rtol=1e-5, atol=1e-5)
    close(fast_grads, grads, rtol=1e-4, atol=1e-4)


def test_same_parameters_and_initialisers_as_nn_conv_transpose():
    kwargs = {"features": 3, "kernel_size": (4, 4), "strides": (2, 2), "padding": "SAME"}
    x = jnp.ones((1, 3, 3, 2))
    expected, got = jax.jit(lambda key: [module(**kwargs).init(key, x) for module in (
        nn.ConvTranspose, ConvTransposeFastGrad)])(jax.random.PRNGKey(0))
    close(got, expected, rtol=0, atol=0)


def test_second_order_gradient_matches():
    """The backward pass is made of JAX ops, so it differentiates again."""
    kwargs = {"features": 2, "kernel_size": (4, 4), "strides": (2, 2), "padding": "SAME"}
    x = np.random.default_rng(1).standard_normal((1, 3, 3, 2)).astype(np.float32)
    params = random_params(nn.ConvTranspose(**kwargs), x)

    def input_gradient_norm(module, params):
        dx = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(params, x))))(x)
        return jnp.sum(dx ** 2)

    @jax.jit
    def second_order(params):
        return [jax.grad(functools.partial(input_gradient_norm, module(**kwargs)))(params)
                for module in (nn.ConvTranspose, ConvTransposeFastGrad)]

    expected, got = second_order(params)
    close(got, expected, rtol=1e-4, atol=1e-5)


def test_dcgan_generator_keeps_nn_conv_transpose_names():
    generator = Generator(width=4, blocks=2, kernel_size=4, output_height=8, output_width=8,
                          output_channels=1, output_activation="tanh", bn_momentum=0.9)
    shapes = jax.eval_shape(lambda z: generator.init(jax.random.PRNGKey(0), z, train=False),
                            jnp.zeros((1, 3)))["params"]
    assert shapes["ConvTranspose_0"]["kernel"].shape == (4, 4, 8, 4)
    assert "bias" not in shapes["ConvTranspose_0"]
    assert shapes["ConvTranspose_1"]["kernel"].shape == (4, 4, 4, 1)
    assert shapes["ConvTranspose_1"]["bias"].shape == (1,)


def test_a_wrong_input_rank_is_one_line():
    fast = ConvTransposeFastGrad(features=2, kernel_size=(3, 3), strides=(2, 2))
    with pytest.raises(ValueError, match="one batch axis"):
        fast.init(jax.random.PRNGKey(0), jnp.zeros((4, 4, 2)))
