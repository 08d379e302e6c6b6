"""DenseNet-121/161/169/201, AlexNet and Inception v3: parameter counts equal to torchvision's
(and MXNet's DenseNet-121 count with BatchNorm statistics), output shapes and dtypes, the
Inception auxiliary head, and the config conventions (required hyperparameters only).

The big models are traced with jax.eval_shape, never materialised; one real forward of
DenseNet-121 runs at 32x32 in bfloat16, and a tiny DenseNet subclass runs a train step
(BatchNorm statistics, dropout) for real.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import make_config
from jaxdl import models
from jaxdl.config import ConfigError
from jaxdl.models.layers import adaptive_avg_pool
from jaxdl.models.densenet import DenseNet

HYPER = {
    "alexnet": dict(dropout_rate=0.5),
    "densenet121": dict(bn_momentum=0.9, dropout_rate=0.0),
    "densenet161": dict(bn_momentum=0.9, dropout_rate=0.0),
    "densenet169": dict(bn_momentum=0.9, dropout_rate=0.0),
    "densenet201": dict(bn_momentum=0.9, dropout_rate=0.0),
    "inception_v3": dict(bn_momentum=0.9, dropout_rate=0.5, aux_logits=True),
}

# torchvision: sum(p.numel() for p in model.parameters()), num_classes=1000.
TORCHVISION_PARAMS = [
    ("alexnet", {}, 61_100_840),
    ("densenet121", {}, 7_978_856),
    ("densenet161", {}, 28_681_000),
    ("densenet169", {}, 14_149_480),
    ("densenet201", {}, 20_013_928),
    ("inception_v3", {"aux_logits": True}, 27_161_264),
    ("inception_v3", {"aux_logits": False}, 23_834_568),
]


def build(name, num_classes=1000, **fields):
    return models.build_model(name, num_classes=num_classes, **{**HYPER[name], **fields})


def shapes(model, input_shape):
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("name,fields,expected", TORCHVISION_PARAMS,
                         ids=[f"{n}-{f}" if f else n for n, f, _ in TORCHVISION_PARAMS])
@pytest.mark.slow
def test_params_equal_torchvision(name, fields, expected):
    model = build(name, **fields)
    variables = shapes(model, type(model).default_input_shape)
    assert count(variables["params"]) == expected


def test_densenet121_with_batch_stats_equals_mxnet():
    variables = shapes(build("densenet121"), (224, 224, 3))
    assert sorted(variables) == ["batch_stats", "params"]
    assert count(variables) == 8_062_504          # MXNet counts the moving mean and variance


def test_default_input_shapes():
    assert models.get_model_class("alexnet").default_input_shape == (224, 224, 3)
    assert models.get_model_class("inception_v3").default_input_shape == (299, 299, 3)
    for depth in (121, 161, 169, 201):
        assert models.get_model_class(f"densenet{depth}").default_input_shape == (224, 224, 3)


@pytest.mark.parametrize("name,input_shape", [("alexnet", (224, 224, 3)), ("alexnet", (63, 63, 3)),
                                              ("alexnet", (100, 80, 3)),
                                              ("densenet161", (224, 224, 3)),
                                              ("inception_v3", (299, 299, 3))])
def test_forward_shape_and_bf16_logits(name, input_shape):
    """Logits (batch, num_classes) in the compute dtype; parameters stay float32."""
    model = build(name, num_classes=7, dtype=jnp.bfloat16)
    variables = shapes(model, input_shape)
    assert {jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(variables)} == {
        jnp.dtype(jnp.float32)}
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    out = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    assert out.shape == (2, 7) and out.dtype == jnp.bfloat16


@pytest.mark.parametrize("name,fields,smallest,message", [
    ("alexnet", {}, 63, "at least 63x63"),
    ("densenet121", {}, 29, "at least 29x29"),
    ("inception_v3", {"aux_logits": False}, 75, "at least 75x75"),
    ("inception_v3", {"aux_logits": True}, 299, "at least 299x299; set aux_logits=False"),
])
@pytest.mark.slow
def test_smallest_input(name, fields, smallest, message):
    """The smallest input works; one pixel less is an error, not NaN logits from an empty
    feature map."""
    model = build(name, num_classes=3, **fields)
    assert jax.eval_shape(functools.partial(model.apply, train=False),
                          shapes(model, (smallest, smallest, 3)),
                          jax.ShapeDtypeStruct((1, smallest, smallest, 3), jnp.float32)
                          ).shape == (1, 3)
    with pytest.raises(ValueError, match=message):
        shapes(model, (smallest - 1, smallest - 1, 3))


def test_adaptive_avg_pool_matches_pytorch_bins():
    """Output i averages inputs floor(i*n/out) .. ceil((i+1)*n/out)-1 (overlapping bins)."""
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    out = np.asarray(adaptive_avg_pool(jnp.asarray(x), (3, 6)))
    expected = np.zeros((2, 3, 6, 3), np.float32)
    for i in range(3):
        for j in range(6):
            h0, h1 = (i * 5) // 3, -(-((i + 1) * 5) // 3)
            w0, w1 = (j * 7) // 6, -(-((j + 1) * 7) // 6)
            expected[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    one = jnp.arange(3.0).reshape(1, 1, 1, 3)               # 1x1 -> 6x6 replicates
    np.testing.assert_array_equal(adaptive_avg_pool(one, (6, 6)),
                                  jnp.broadcast_to(one, (1, 6, 6, 3)))
    np.testing.assert_array_equal(adaptive_avg_pool(jnp.asarray(x), (5, 7)), x)  # same size


def random_variables(model, input_shape):
    """Float32 variables of the eval_shape'd structure filled from numpy: a compiled init
    costs more on the CPU than the forward it enables. Batch statistics are made >= 0."""
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.05, s.dtype),
                             shapes(model, input_shape))
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
    return variables


@pytest.mark.slow
def test_densenet121_real_forward_bf16():
    """A real bfloat16 forward of DenseNet-121 at 32x32 with float32 variables."""
    model = build("densenet121", num_classes=10, dtype=jnp.bfloat16)
    variables = random_variables(model, (32, 32, 3))
    forward = jax.jit(functools.partial(model.apply, train=False))
    logits = forward(variables, jnp.ones((1, 32, 32, 3)))
    assert logits.shape == (1, 10) and logits.dtype == jnp.bfloat16
    assert bool(jnp.isfinite(logits.astype(jnp.float32)).all())


class _TinyDenseNet(DenseNet):        # not registered: the registry stays as jaxdl made it
    growth_rate = 4
    block_config = (2, 3)
    num_init_features = 8


def test_tiny_densenet_train_step():
    model = _TinyDenseNet(num_classes=3, bn_momentum=0.9, dropout_rate=0.2)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, 16, 3)), jnp.float32)
    variables = random_variables(model, (16, 16, 3))
    # conv0 -> 8 channels; block1: 8 + 2*4 = 16, transition -> 8; block2: 8 + 3*4 = 20.
    assert variables["params"]["transition1"]["conv"]["kernel"].shape == (1, 1, 16, 8)
    assert variables["params"]["classifier"]["kernel"].shape == (20, 3)
    block2 = variables["params"]["denseblock2"]
    assert block2["denselayer3"]["conv1"]["kernel"].shape == (1, 1, 16, 16)
    train_step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                  rngs={"dropout": jax.random.key(1)}))
    logits, state = train_step(variables, x)
    assert logits.shape == (4, 3)
    before = variables["batch_stats"]["norm5"]["mean"]
    assert not np.allclose(state["batch_stats"]["norm5"]["mean"], before)
    eval_logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
    assert eval_logits.shape == (4, 3) and bool(jnp.isfinite(eval_logits).all())


def test_inception_aux_logits_sown_in_training_only():
    model = build("inception_v3", num_classes=5)
    variables = shapes(model, (299, 299, 3))
    assert sorted(variables) == ["batch_stats", "params"]   # init sows nothing
    assert "AuxLogits" in variables["params"]
    x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)

    def run(model, v, x, train):
        return model.apply(v, x, train=train, mutable=["batch_stats", "intermediates"],
                           rngs={"dropout": jax.random.key(0)})

    logits, state = jax.eval_shape(functools.partial(run, model, train=True), variables, x)
    assert logits.shape == (2, 5)
    (aux,) = state["intermediates"]["aux_logits"]
    assert aux.shape == (2, 5)
    _, state = jax.eval_shape(functools.partial(run, model, train=False), variables, x)
    assert not state.get("intermediates")

    no_aux = build("inception_v3", num_classes=5, aux_logits=False)
    variables = shapes(no_aux, (299, 299, 3))
    assert "AuxLogits" not in variables["params"]
    _, state = jax.eval_shape(functools.partial(run, no_aux, train=True), variables, x)
    assert not state.get("intermediates")


@pytest.mark.parametrize("name", sorted(HYPER))
def test_fields_are_hyperparameters_only(name):
    """Architecture constants are class attributes, not constructor fields; every
    hyperparameter is required; the config validates the model section."""
    fields = models.model_fields(name)
    assert {"num_classes", "axis_name", "dtype", "param_dtype"} <= fields
    assert not fields & {"growth_rate", "block_config", "num_init_features", "bn_size",
                         "default_input_shape", "conv_config"}
    required = {"num_classes", *HYPER[name]}
    assert required <= fields
    section = {"name": name, "num_classes": 10, **HYPER[name]}
    make_config("digits_cnn", model=section)
    missing = min(required - {"num_classes"})
    with pytest.raises(ConfigError, match=f"config.model.{missing}: missing"):
        make_config("digits_cnn", model={k: v for k, v in section.items() if k != missing})
