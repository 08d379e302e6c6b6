"""layers.Conv is nn.Conv: same parameters, names, output and gradients (XLA's own); only,
on CPU, its weight gradient reads the layer input from a buffer of its own, the output of a
conditional XLA does not fuse through. Speed is measured by benchmarks/, not here."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models import layers
from jaxdl.models.cnn import CNN
from layer_checks import close, outputs_and_gradients, random_params

CASES = [  # (input shape, features, kernel, strides, padding, extra Conv fields)
    ((2, 7, 7, 3), 4, (3, 3), (1, 1), "SAME", {}),
    ((2, 9, 7, 3), 5, (3, 3), (2, 2), "SAME", {}),
    ((1, 8, 9, 4), 6, (5, 3), (2, 1), "VALID", {}),
    ((2, 8, 8, 4), 3, (1, 1), (2, 2), "SAME", {"use_bias": False}),
    ((1, 11, 10, 3), 4, (7, 7), (2, 2), ((3, 2), (1, 3)), {}),
    ((2, 6, 6, 1), 2, (2, 2), (3, 3), "CIRCULAR", {}),
    # dilation, groups (depthwise), 1-D
    ((1, 9, 9, 2), 3, (3, 3), (1, 1), "SAME", {"kernel_dilation": (2, 2)}),
    ((2, 6, 6, 4), 4, (3, 3), (1, 1), "SAME", {"feature_group_count": 4}),
    ((2, 9, 3), 2, (3,), (2,), "SAME", {}),
]


@pytest.mark.parametrize("shape,features,kernel_size,strides,padding,extra", CASES)
def test_same_output_and_gradients_as_nn_conv(shape, features, kernel_size, strides, padding,
                                              extra):
    kwargs = {"features": features, "kernel_size": kernel_size, "strides": strides,
              "padding": padding, **extra}
    modules = nn.Conv(**kwargs), layers.Conv(**kwargs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    params = random_params(modules[0], x)
    (out, grads), (fast_out, fast_grads) = outputs_and_gradients(modules, params, x)
    close(fast_out, out, rtol=0, atol=0)  # the forward is lax's convolution itself
    close(fast_grads, grads, rtol=0, atol=0)  # so are both gradients, on the same values


def _kernel_gradient_hlo(module, x, platform):
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x))))
    return grad.trace(params, x).lower(lowering_platforms=(platform,)).as_text()


def _compiled_cpu_gradient(module, x):
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    return jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x)))).lower(
        params, x).compile().as_text()


def test_the_own_buffer_route_runs_on_cpu_only():
    """Compiled for the CPU, the weight gradient reads the input through a conditional that
    XLA keeps after optimising (what stops the fusion); nn.Conv and `plain_convolutions()`
    (the benchmarks' --conv_grad xla) have none. Lowered for a GPU, the conditional's other
    branch (the select) is absent: nothing changes there."""
    module = layers.Conv(features=4, kernel_size=(3, 3), padding="SAME")
    x = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32)
    assert _compiled_cpu_gradient(module, x).count(" conditional(") == 1
    assert " conditional(" not in _compiled_cpu_gradient(nn.Conv(4, (3, 3)), x)
    with layers.plain_convolutions():
        assert " conditional(" not in _compiled_cpu_gradient(module, x)
    assert _kernel_gradient_hlo(module, x, "cpu").count("stablehlo.select") == 1
    assert "stablehlo.select" not in _kernel_gradient_hlo(module, x, "cuda")


def test_models_keep_nn_conv_parameter_names():
    """A Conv subclass named Conv is auto-named Conv_i, as nn.Conv: checkpoints and
    converted torchvision weights keep their keys."""
    model = CNN(features=(4, 8), kernel_size=3, pooling="max", dense_width=16, activation="relu",
                dropout_rate=0.0, batch_norm=False, bn_momentum=0.9, num_classes=10)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                            jnp.zeros((1, 8, 8, 1)))["params"]
    assert shapes["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
    assert shapes["Conv_1"]["kernel"].shape == (3, 3, 4, 8)


def test_second_order_gradient_matches():
    """The backward pass is made of JAX ops, so it differentiates again (an input-gradient
    penalty, as in WGAN-GP, goes through it)."""
    kwargs = {"features": 2, "kernel_size": (3, 3), "strides": (2, 2), "padding": "SAME"}
    x = np.random.default_rng(1).standard_normal((1, 5, 5, 2)).astype(np.float32)
    params = random_params(nn.Conv(**kwargs), x)

    def input_gradient_norm(module, params):
        dx = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(params, x))))(x)
        return jnp.sum(dx ** 2)

    @jax.jit
    def second_order(params):
        return [jax.grad(lambda p, m=m: input_gradient_norm(m(**kwargs), p))(params)
                for m in (nn.Conv, layers.Conv)]

    expected, got = second_order(params)
    close(got, expected, rtol=1e-4, atol=1e-5)
