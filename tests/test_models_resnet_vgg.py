"""ResNets (CIFAR and ImageNet v1.5, optional SE) and VGG: parameter counts against
torchvision's, shapes, dtypes, zero-init, BatchNorm statistics and a few training steps.

Counts use jax.eval_shape (nothing is materialised: VGG's 138M parameters cost nothing);
forward passes run only on small models and inputs so the file stays fast on a CPU.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import models
from jaxdl.models import layers
from jaxdl.models import resnet, vgg

RESNET_FIELDS = {"num_classes", "bn_momentum", "bn_epsilon", "se_ratio", "zero_init_last_bn",
                 "axis_name", "dtype", "param_dtype"}
VGG_FIELDS = {"num_classes", "dropout_rate", "axis_name", "dtype", "param_dtype"}
VGG_BN_FIELDS = VGG_FIELDS | {"bn_momentum", "bn_epsilon"}
OPTIONAL = {"axis_name", "dtype", "param_dtype"}

# torchvision.models.<name>(num_classes=1000), trainable parameters.
IMAGENET_COUNTS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}
# He et al. (2015), option A, 10 classes. resnet20 by hand: stem 3*3*3*16 + 2*16 = 464;
# stage 1: 6 convs 16->16 (2,304 each) + 6 BN (32) = 14,016; stage 2: 16->32 (4,608) +
# 5 x 32->32 (9,216) + 6 BN (64) = 51,072; stage 3: 32->64 (18,432) + 5 x 64->64 (36,864)
# + 6 BN (128) = 203,520; head 64*10 + 10 = 650; total 269,722. Each further block per stage
# adds 2*(2,304+32) + 2*(9,216+64) + 2*(36,864+128) = 96,072, so 6n+2 -> 269,722 + 96,072(n-3).
CIFAR_COUNTS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
                "resnet56": 853_018, "resnet110": 1_727_962}


def make(name, **overrides):
    """The registered model with plain hyperparameters for whichever fields it has."""
    fields = models.model_fields(name)
    values = {"num_classes": 10, "bn_momentum": 0.9, "bn_epsilon": 1e-5, "se_ratio": 0.0,
              "zero_init_last_bn": False, "dropout_rate": 0.5}
    values = {k: v for k, v in values.items() if k in fields}
    values.update(overrides)
    return models.build_model(name, **values)


def key(seed: int) -> jax.Array:
    """An rbg key: XLA compiles a model's init 3-4x faster on CPU than under threefry."""
    return jax.random.key(seed, impl="rbg")


def images(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def init(model, x):
    return jax.jit(lambda rng: model.init(rng, x, train=False))(key(0))


@pytest.fixture(scope="module")
def resnet20():
    """resnet20 at 10 classes and its initial variables, shared by the forward tests."""
    model = make("resnet20")
    return model, init(model, jnp.zeros((2, 32, 32, 3)))


def param_shapes(model, size, batch=1):
    def init(rng):
        return model.init(rng, jnp.zeros((batch, size, size, 3)), train=False)
    return jax.eval_shape(init, jax.random.key(0))


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registered_with_required_hyperparameters():
    names = set(models.model_names())
    assert set(CIFAR_COUNTS) | set(IMAGENET_COUNTS) <= names
    for name in names & (set(CIFAR_COUNTS) | set(IMAGENET_COUNTS)):
        expected = (RESNET_FIELDS if name.startswith("resnet")
                    else VGG_BN_FIELDS if name.endswith("_bn") else VGG_FIELDS)
        assert models.model_fields(name) == expected, name
        for field in dataclasses.fields(models.get_model_class(name)):
            if field.name in expected:
                has_default = field.default is not dataclasses.MISSING
                assert has_default == (field.name in OPTIONAL), (name, field.name)


@pytest.mark.parametrize("name", sorted(IMAGENET_COUNTS))
def test_imagenet_counts_equal_torchvision(name):
    variables = param_shapes(make(name, num_classes=1000), 224)
    assert count(variables["params"]) == IMAGENET_COUNTS[name]


@pytest.mark.parametrize("name", sorted(CIFAR_COUNTS))
def test_cifar_counts_option_a(name):
    variables = param_shapes(make(name), 32)
    assert count(variables["params"]) == CIFAR_COUNTS[name]
    # Option A: no projection anywhere, the shortcuts are parameter-free.
    assert not any("downsample" in str(path) for path, _ in
                   jax.tree_util.tree_flatten_with_path(variables["params"])[0])


def test_se_adds_the_expected_parameters():
    ratio = 0.25
    base = count(param_shapes(make("resnet20"), 32)["params"])
    se = param_shapes(make("resnet20", se_ratio=ratio), 32)["params"]
    # Per block of C channels: Dense(C -> C*r) and Dense(C*r -> C), with biases.
    expected = sum(3 * (c * int(c * ratio) * 2 + int(c * ratio) + c) for c in (16, 32, 64))
    assert count(se) - base == expected
    assert "se" in se["stage3_block2"]
    # SE-ResNet-50 with ratio 1/16 (timm's seresnet50: 28,088,024).
    se50 = param_shapes(make("resnet50", num_classes=1000, se_ratio=1 / 16), 224)["params"]
    assert count(se50) == 28_088_024


def test_resnet20_forward_shape_and_finite(resnet20):
    model, variables = resnet20
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, images(1, (2, 32, 32, 3)))
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_resnet18_forward_shape():
    model = make("resnet18", num_classes=7)
    x = images(1, (1, 64, 64, 3))
    variables = init(model, x)
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    assert logits.shape == (1, 7)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_bfloat16_compute_float32_params(resnet20):
    model = make("resnet20", dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda rng: model.init(rng, x, train=False), key(0))
    assert {v.dtype for v in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    # Parameters do not depend on the compute dtype: the float32 model's variables fit.
    _, variables = resnet20
    assert jax.tree.structure(shapes) == jax.tree.structure(variables)
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 10)
    reference = resnet20[0].apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(logits, np.float32), reference, rtol=0.1, atol=0.1)


def test_zero_init_last_bn_starts_blocks_as_shortcuts(resnet20):
    x = images(1, (2, 32, 32, 3))

    def intermediates(model, variables):
        return jax.jit(lambda v: model.apply(v, x, train=False, capture_intermediates=True)
                       )(variables)[1]["intermediates"]

    model = make("resnet20", zero_init_last_bn=True, se_ratio=0.25)
    variables = init(model, x)
    for stage in (1, 2, 3):
        for block in range(3):
            p = variables["params"][f"stage{stage}_block{block}"]
            assert bool(jnp.all(p["bn2"]["scale"] == 0.0))
            assert bool(jnp.all(p["bn1"]["scale"] == 1.0))
    inter = intermediates(model, variables)
    # The residual branch (after SE) is exactly zero, so an identity block passes its input.
    assert float(jnp.max(jnp.abs(inter["stage1_block1"]["se"]["__call__"][0]))) == 0.0
    np.testing.assert_array_equal(inter["stage1_block1"]["__call__"][0],
                                  inter["stage1_block0"]["__call__"][0])
    # Without it the last BN starts at scale 1 and the branch is not zero.
    plain_model, plain = resnet20
    assert bool(jnp.all(plain["params"]["stage1_block1"]["bn2"]["scale"] == 1.0))
    branch = intermediates(plain_model, plain)["stage1_block1"]["bn2"]["__call__"][0]
    assert float(jnp.max(jnp.abs(branch))) > 0


def test_zero_init_bottleneck_last_bn_only():
    block = resnet.Bottleneck(8, 2, "projection", bn_momentum=0.9, bn_epsilon=1e-5,
                              se_ratio=0.0, zero_init_last_bn=True)
    variables = init(block, jnp.ones((1, 8, 8, 16)))
    params = variables["params"]
    assert params["conv3"]["kernel"].shape == (1, 1, 8, 32)
    assert bool(jnp.all(params["bn3"]["scale"] == 0.0))
    for name in ("bn1", "bn2", "downsample_bn"):
        assert bool(jnp.all(params[name]["scale"] == 1.0)), name
    # v1.5: the stride is on the 3x3 conv; the output is halved.
    out = block.apply(variables, jnp.ones((1, 8, 8, 16)), train=False)
    assert out.shape == (1, 4, 4, 32)


def test_train_mode_updates_batch_stats(resnet20):
    model, variables = resnet20
    x = images(1, (4, 32, 32, 3)) * 3 + 1
    old = variables["batch_stats"]
    logits, updates = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])
                              )(variables)
    new = updates["batch_stats"]
    assert logits.shape == (4, 10)
    assert jax.tree.structure(new) == jax.tree.structure(old)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new, old)
    assert all(jax.tree.leaves(changed))
    # Eval mode reads the statistics and leaves them alone.
    _, same = model.apply(variables, x, train=False, mutable=["batch_stats"])
    assert all(bool(jnp.all(a == b)) for a, b in
               zip(jax.tree.leaves(same["batch_stats"]), jax.tree.leaves(old)))


@pytest.mark.slow
def test_resnet20_trains_a_few_steps():
    model = make("resnet20", num_classes=4)
    x = images(1, (16, 32, 32, 3))
    y = jnp.asarray(np.random.default_rng(2).integers(0, 4, size=16))
    variables = init(model, x)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, stats, opt_state):
        def loss_fn(p):
            logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
        (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), upd["batch_stats"], opt_state, loss

    losses = []
    for _ in range(15):
        params, stats, opt_state, loss = step(params, stats, opt_state)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_adaptive_avg_pool_matches_torch_bins():
    x = images(0, (2, 10, 14, 3))
    out = layers.adaptive_avg_pool(x, (7, 7))
    # torch: bin i of n -> out covers [floor(i n / out), ceil((i + 1) n / out)).
    xn = np.asarray(x)
    ref = np.zeros((2, 7, 7, 3), np.float32)
    for i in range(7):
        for j in range(7):
            h0, h1 = (i * 10) // 7, -(-((i + 1) * 10) // 7)
            w0, w1 = (j * 14) // 7, -(-((j + 1) * 14) // 7)
            ref[:, i, j] = xn[:, h0:h1, w0:w1].mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-6)
    same = jnp.ones((1, 7, 7, 2))
    assert layers.adaptive_avg_pool(same, (7, 7)) is same   # 224 input: a no-op
    one = layers.adaptive_avg_pool(jnp.arange(2.0).reshape(1, 1, 1, 2), (7, 7))
    assert one.shape == (1, 7, 7, 2) and bool(jnp.all(one[..., 1] == 1.0))


class TinyVGGBN(vgg.VGGBN):
    """vgg's code path with small widths, so a real forward pass is cheap."""
    LAYERS = (8, "M", 16, "M")
    HIDDEN = 32
    POOLED_SIZE = (2, 2)


def test_vgg_bn_forward_dropout_and_stats():
    model = TinyVGGBN(num_classes=5, dropout_rate=0.5, bn_momentum=0.9, bn_epsilon=1e-5)
    x = images(1, (3, 16, 16, 3))
    variables = init(model, x)
    assert variables["params"]["Dense_0"]["kernel"].shape == (2 * 2 * 16, 32)
    evaluate = jax.jit(lambda v: model.apply(v, x, train=False))
    train = jax.jit(lambda v, rng: model.apply(v, x, train=True, rngs={"dropout": rng},
                                               mutable=["batch_stats"]))
    eval_logits = evaluate(variables)
    assert eval_logits.shape == (3, 5)
    np.testing.assert_array_equal(eval_logits, evaluate(variables))
    a, upd = train(variables, key(3))
    b, _ = train(variables, key(4))
    assert a.shape == (3, 5) and not bool(jnp.allclose(a, b))
    assert bool(jnp.any(upd["batch_stats"]["BatchNorm_0"]["mean"] != 0))


def test_vgg_input_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="input too small"):
        param_shapes(make("vgg11"), 16)
