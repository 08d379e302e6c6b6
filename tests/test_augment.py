"""jaxdl.data.augment: each op's exact behaviour, the spec parser, jit/pmap/sharding, preview."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdl.data import augment

# One jitted entry, ops static: each (spec, shape, dtype) compiles once for the whole file.
apply_jit = jax.jit(augment.apply, static_argnums=0)

RANDOM_SPECS = {
    "random_crop": "random_crop(pad=2,pad_mode=zeros)",
    "random_crop_reflect": "random_crop(pad=2,pad_mode=reflect)",
    "horizontal_flip": "horizontal_flip(p=0.5)",
    "translate": "translate(max_shift=2)",
    "rotate": "rotate(max_degrees=30)",
    "scale": "scale(min_scale=0.7,max_scale=1.3)",
    "gaussian_noise": "gaussian_noise(std=0.1)",
    "cutout": "cutout(size=3)",
}
NORMALIZE = "normalize(mean=(0.5,0.4,0.3),std=(0.2,0.25,0.3))"
ALL = "+".join([*RANDOM_SPECS.values(), NORMALIZE])


def images(shape=(8, 10, 10, 3), seed=0, dtype=jnp.float32):
    # Strictly positive and asymmetric, so any move, flip or zeroing shows. numpy, as a
    # jax.random draw would compile once per shape.
    values = np.random.default_rng(seed).uniform(0.1, 1.0, shape).astype(np.float32)
    return jnp.asarray(values, dtype)


rotate_by = jax.jit(augment._rotate_by)


def test_names_cover_every_op():
    assert set(augment.AUGMENTATIONS) == {
        "random_crop", "horizontal_flip", "translate", "rotate", "scale", "gaussian_noise",
        "cutout", "normalize"}
    assert {augment.parse(s)[0].name for s in [*RANDOM_SPECS.values(), NORMALIZE]} == set(
        augment.AUGMENTATIONS)


def test_every_op_keeps_shape_and_dtype():
    # float32 per op below (each test checks shape and dtype); here all chained in bfloat16.
    x = images((3, 7, 9, 3), dtype=jnp.bfloat16)
    out = apply_jit(augment.parse(ALL), jax.random.key(0), x)
    assert out.shape == x.shape and out.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


def test_none_is_the_input():
    x = images()
    assert augment.parse("none") == () and augment.parse("  none ") == ()
    assert augment.apply(augment.parse("none"), jax.random.key(0), x) is x


@pytest.mark.parametrize("name", list(RANDOM_SPECS))
def test_random_op_changes_and_is_deterministic(name):
    ops, x = augment.parse(RANDOM_SPECS[name]), images()
    first = np.asarray(apply_jit(ops, jax.random.key(1), x))
    again = np.asarray(apply_jit(ops, jax.random.key(1), x))
    other = np.asarray(apply_jit(ops, jax.random.key(2), x))
    assert first.shape == x.shape and first.dtype == x.dtype
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    changed = np.any(first != np.asarray(x), axis=(1, 2, 3))
    assert changed.any()
    if name != "horizontal_flip":  # every other op moves every example w.p. ~1
        assert changed.sum() >= len(changed) // 2


def test_zero_magnitude_is_exact_identity():
    # One chain, one compile: an op that moved anything would show in the result.
    spec = ("random_crop(pad=0,pad_mode=zeros)+random_crop(pad=0,pad_mode=reflect)+"
            "horizontal_flip(p=0)+translate(max_shift=0)+cutout(size=0)+gaussian_noise(std=0)")
    x = images()
    out = apply_jit(augment.parse(spec), jax.random.key(3), x)
    assert out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("spec", ["rotate(max_degrees=0)", "scale(min_scale=1,max_scale=1)"])
def test_zero_warp_is_identity(spec):
    x = images()
    out = apply_jit(augment.parse(spec), jax.random.key(3), x)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, x, rtol=0, atol=1e-6)


def test_flip_with_p_one_mirrors_every_example():
    x = images()
    out = apply_jit(augment.parse("horizontal_flip(p=1)"), jax.random.key(4), x)
    np.testing.assert_array_equal(out, x[:, :, ::-1])


def test_rotate_180_on_odd_image_is_both_flips():
    x = images((3, 7, 9, 2))
    out = rotate_by(x, jnp.full((3,), 180.0))
    np.testing.assert_allclose(out, x[:, ::-1, ::-1], rtol=0, atol=1e-5)


def test_rotate_90_is_counterclockwise_rot90():
    x = images((3, 6, 6, 1))
    out = rotate_by(x, jnp.array([90.0, -90.0, 270.0]))
    np.testing.assert_allclose(out[0], jnp.rot90(x[0], 1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[1], jnp.rot90(x[1], -1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[2], jnp.rot90(x[2], -1), rtol=0, atol=1e-5)


def test_normalize_matches_formula():
    x = images((4, 5, 6, 3))
    out = apply_jit(augment.parse(NORMALIZE), jax.random.key(0), x)
    assert out.shape == x.shape and out.dtype == x.dtype
    expected = (x - jnp.array([0.5, 0.4, 0.3])) / jnp.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="3 mean/std values for images with 1 channels"):
        augment.apply(augment.parse(NORMALIZE), jax.random.key(0), x[..., :1])


def test_eval_ops_keep_only_the_deterministic_ones():
    assert augment.eval_ops(augment.parse(ALL)) == augment.parse(NORMALIZE)
    assert augment.eval_ops(augment.parse("+".join(RANDOM_SPECS.values()))) == ()


@pytest.mark.parametrize("size", [3, 4])
def test_cutout_zeroes_one_clipped_square(size):
    h = w = 12
    x = images((32, h, w, 2))
    out = np.asarray(apply_jit(augment.parse(f"cutout(size={size})"), jax.random.key(6), x))
    zero = out == 0
    np.testing.assert_array_equal(zero[..., 0], zero[..., 1])  # every channel of a pixel
    np.testing.assert_array_equal(out[~zero], np.asarray(x)[~zero])  # the rest untouched
    inside = 0
    for square in zero[..., 0]:
        rows, cols = np.nonzero(square)
        assert 0 < len(rows) <= size * size
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # a rectangle, clipped by the border at most
        if rows.min() > 0 and cols.min() > 0 and rows.max() < h - 1 and cols.max() < w - 1:
            inside += 1
            assert (height, width) == (size, size) and len(rows) == size * size
    assert inside >= 8


@pytest.mark.parametrize("spec, pad, mode", [
    ("random_crop(pad=2,pad_mode=zeros)", 2, "constant"),
    ("random_crop(pad=2,pad_mode=reflect)", 2, "reflect"),
    ("translate(max_shift=2)", 2, "constant"),
])
def test_crop_and_translate_are_shifted_windows(spec, pad, mode):
    """Each output is the window of the input padded by `pad` (zeros, or numpy's reflect)
    at an offset of at most `pad` each way; over 64 examples both extremes occur."""
    x = images((64, 10, 10, 1))
    out = np.asarray(apply_jit(augment.parse(spec), jax.random.key(7), x))
    padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
    offsets = []
    for n in range(len(x)):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if np.array_equal(out[n], padded[n, dy:dy + 10, dx:dx + 10])]
        assert found, f"example {n} is no window of the {mode}-padded input"
        offsets.append(found[0])
    assert {0, 2 * pad} <= {dy for dy, _ in offsets} and {0, 2 * pad} <= {dx for _, dx in offsets}


def test_horizontal_flip_mirrors_about_a_share_p():
    x = images((512, 4, 5, 1))
    out = np.asarray(apply_jit(augment.parse("horizontal_flip(p=0.5)"), jax.random.key(11), x))
    flipped = np.all(out == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == np.asarray(x), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # each example whole: mirrored or untouched
    assert flipped.mean() == pytest.approx(0.5, abs=0.1)  # 4.5 standard deviations


def test_gaussian_noise_adds_independent_noise_of_std():
    x = images((512, 6, 6, 1))
    out = np.asarray(apply_jit(augment.parse("gaussian_noise(std=0.1)"), jax.random.key(12), x))
    residual = (out - np.asarray(x)).astype(np.float64)
    assert residual.std() == pytest.approx(0.1, rel=0.02)
    assert abs(residual.mean()) < 0.002
    assert abs(np.corrcoef(residual[0].ravel(), residual[1].ravel())[0, 1]) < 0.5


def test_scale_zooms_about_the_centre_within_its_range():
    """On an image whose centre row holds |column - centre|, the pixel next to the centre
    shows 1 / zoom (bilinear is exact on a linear ramp): every zoom lies in
    [min_scale, max_scale], and the draws spread over it."""
    size = 11
    centre = size // 2
    ramp = np.abs(np.arange(size) - centre)[None, :] + np.abs(np.arange(size) - centre)[:, None]
    x = jnp.asarray(np.broadcast_to(ramp[None, :, :, None], (64, size, size, 1)), jnp.float32)
    out = np.asarray(apply_jit(augment.parse("scale(min_scale=0.7,max_scale=1.3)"),
                               jax.random.key(13), x))
    zoom = 1.0 / out[:, centre, centre + 1, 0]
    np.testing.assert_allclose(out[:, centre, centre + 1, 0], out[:, centre, centre - 1, 0],
                               rtol=1e-5)
    assert np.all((zoom >= 0.7 - 1e-5) & (zoom <= 1.3 + 1e-5)), zoom
    assert zoom.min() < 0.8 and zoom.max() > 1.2, zoom
    np.testing.assert_allclose(out[:, centre, centre, 0], 0.0, atol=1e-6)  # the centre stays


@pytest.mark.parametrize("spec, expected", [
    ("randaugment", ["unknown augmentation op 'randaugment'", "valid:", *augment.AUGMENTATIONS]),
    ("rotate(max_degree=3)", ["unknown parameter 'max_degree'", "max_degrees"]),
    ("random_crop(pad=4)", ["missing parameter 'pad_mode'", "pad (int >= 0)"]),
    ("rotate", ["missing parameter 'max_degrees'"]),
    ("gaussian_noise(std=-0.1)", ["std=-0.1 must be float >= 0"]),
    ("translate(max_shift=-1)", ["max_shift=-1 must be int >= 0"]),
    ("cutout(size=2.5)", ["size=2.5 must be int >= 0"]),
    ("horizontal_flip(p=1.5)", ["p=1.5 must be float in [0, 1]"]),
    ("random_crop(pad=4,pad_mode=wrap)", ["'wrap' must be zeros|reflect"]),
    ("scale(min_scale=2,max_scale=1)", ["min_scale=2.0 must be <= max_scale=1.0"]),
    ("normalize(mean=(0.5,0.5),std=(0.2,))", ["mean has 2 values but std has 1"]),
    ("normalize(mean=(0.5,),std=(0,))", ["must be tuple of floats > 0"]),
    ("rotate(max_degrees=5,max_degrees=6)", ["given twice"]),
    ("rotate(max_degrees=5", ["unbalanced"]),
    ("", ["empty"]),
    ("none+cutout(size=2)", ["unknown augmentation op 'none'"]),
])
def test_parse_errors_are_one_line(spec, expected):
    with pytest.raises(ValueError, match=re.escape(expected[0])) as error:
        augment.parse(spec)
    message = str(error.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_parse_reads_the_documented_example_and_round_trips():
    spec = ("random_crop(pad=4,pad_mode=reflect)+horizontal_flip(p=0.5)+"
            "normalize(mean=(0.49,0.48,0.45),std=(0.25,0.24,0.26))")
    ops = augment.parse(spec)
    assert [op.name for op in ops] == ["random_crop", "horizontal_flip", "normalize"]
    assert ops[0].kwargs == {"pad": 4, "pad_mode": "reflect"}
    assert ops[2].kwargs["std"] == (0.25, 0.24, 0.26)
    assert augment.format_spec(ops) == spec
    assert augment.parse(" random_crop( pad = 4 , pad_mode = 'reflect' ) ") == ops[:1]
    assert augment.parse(augment.format_spec(augment.parse(ALL))) == augment.parse(ALL)
    assert augment.make_op("rotate", max_degrees=10) == augment.parse("rotate(max_degrees=10)")[0]


def test_ops_compose_in_order_with_their_own_keys():
    # Op i draws from fold_in(rng, i), example n from split(that)[n] (= fold_in(that, n)):
    # a chain equals the ops applied one by one.
    crop, flip = augment.parse("random_crop(pad=2,pad_mode=zeros)+horizontal_flip(p=0.5)")
    x, key = images(), jax.random.key(8)
    chained = apply_jit((crop, flip), key, x)

    def keys(k, i):
        return jax.random.split(jax.random.fold_in(k, i), x.shape[0])

    step_by_step = jax.jit(lambda k, batch: augment._OPS["horizontal_flip"].fn(
        keys(k, 1), augment._OPS["random_crop"].fn(
            keys(k, 0), batch, **crop.kwargs), **flip.kwargs))(key, x)
    np.testing.assert_array_equal(chained, step_by_step)


PMAP_OPS = augment.parse(
    "random_crop(pad=2,pad_mode=reflect)+horizontal_flip(p=0.5)+rotate(max_degrees=20)")
# Ops parsed outside jit and closed over, as the train step will hold them.
closed = jax.jit(lambda rng, batch: augment.apply(PMAP_OPS, rng, batch))


def test_pmap_with_each_devices_rows_matches_one_device():
    """Each device passes its examples' rows of the global batch and the same key: the
    pmap result is the one-device result, and examples still differ from each other."""
    assert jax.device_count() == 4, "tests/conftest.py forces 4 CPU devices"
    # A raw uint32 key, as TrainState.rng holds.
    x, key = images(), jax.random.PRNGKey(9)
    n = x.shape[0] // 4

    def per_device(rng, batch):
        rows = jax.lax.axis_index("data") * n + jnp.arange(n)
        return augment.apply(PMAP_OPS, rng, batch, rows=rows)

    out = np.asarray(jax.pmap(per_device, axis_name="data")(jnp.stack([key] * 4),
                                                            x.reshape(4, n, *x.shape[1:])))
    np.testing.assert_allclose(out.reshape(x.shape), closed(key, x), atol=1e-6)
    shuffled = np.asarray(closed(key, x[::-1]))[::-1]  # each image drawn with another key
    assert not np.allclose(shuffled, out.reshape(x.shape), atol=1e-3)


def test_sharded_batch_matches_one_device():
    x, key = images(), jax.random.PRNGKey(10)
    # The mesh the sharded backend builds (jaxdl/training/parallel.py).
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    np.testing.assert_allclose(closed(key, sharded), closed(key, x), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_preview_png_writes_a_png(tmp_path, channels):
    path = tmp_path / "sub" / "preview.png"
    ops = augment.parse("random_crop(pad=2,pad_mode=zeros)+cutout(size=3)")
    written = augment.preview_png(ops, jax.random.key(0), images((5, 8, 8, channels)), path,
                                  columns=3)
    assert written == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="1 or 3 channels"):
        augment.preview_png(ops, jax.random.key(0), images((2, 8, 8, 2)), path, columns=3)
