"""jaxdl.compress: int8 post-training quantization through Qwix and the fp32 / bf16 / int8
report. The quantized outputs stay within the error int8 rounding allows (a bound computed
from the scales, independently of Qwix), sizes in bytes are exact for a known model, and
`python -m jaxdl.compress report` tabulates a tiny real run; bad input is one line."""

import io
import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from jaxdl.compress import __main__ as compress_cli, quantize as quantize_lib, report
from jaxdl.schema import ConfigError
from jaxdl.trained import load_run
from jaxdl.training import loop

# Qwix's symmetric int8: scale = absmax / (127 + 0.5) (numerics.get_symmetric_bound: the
# top bucket is [126.5, 127.5)), values rounded to the nearest step, so every quantized
# value is within half a scale step of the original.
INT8_BOUND = 127.5


class _Linear(nn.Module):
    """A model as jaxdl calls them (`train` keyword) around one quantizable layer."""

    layer: nn.Module

    def __call__(self, x, *, train: bool):
        del train
        return self.layer(x)


def _inputs(shape, seed=0):
    """Uniform in [-1, 1] with one entry of each example set to 1: every example's absmax
    is 1, so the static activation scale (Qwix: the mean of per-example absmaxes) is 1 /
    127.5 and nothing is clipped."""
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    x.reshape(len(x), -1)[:, 0] = 1.0
    return jnp.asarray(x)


def _quantized(layer, x):
    model = _Linear(layer)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    ptq_model, qvariables = quantize_lib.quantize_model(model, variables, [x])
    return (model.apply(variables, x, train=False), ptq_model.apply(qvariables, x, train=False),
            variables["params"]["layer"]["kernel"], qvariables)


def test_int8_dense_outputs_within_the_rounding_bound_of_the_int8_scales():
    x = _inputs((32, 16))
    exact, quantized, kernel, qvariables = _quantized(nn.Dense(5), x)
    assert qvariables["params"]["layer"]["kernel"].array.qvalue.dtype == jnp.int8
    # |x w - x' w'| <= sum_k |x_k| dw_j + dx |w_kj| + dx dw_j, with dx = sx / 2 and
    # dw_j = sw_j / 2 (per output channel j) the largest rounding errors.
    dx = 1.0 / INT8_BOUND / 2
    dw = np.abs(kernel).max(axis=0) / INT8_BOUND / 2
    bound = (np.abs(x).sum(1, keepdims=True) * dw + dx * np.abs(kernel).sum(0)
             + x.shape[1] * dx * dw)
    error = np.abs(np.asarray(quantized) - np.asarray(exact))
    assert np.all(error <= bound * (1 + 1e-4) + 1e-6), (error / bound).max()
    assert error.max() > 0  # int8 arithmetic, not the float path
    assert (error / bound).max() < 0.5  # rounding errors partly cancel; the bound holds


def test_int8_conv_outputs_within_the_rounding_bound_of_per_channel_scales():
    x = _inputs((4, 6, 6, 2), seed=1)
    exact, quantized, kernel, qvariables = _quantized(nn.Conv(3, (3, 3), padding="SAME"), x)
    scale = qvariables["params"]["layer"]["kernel"].array.scale
    assert scale.shape == (1, 1, 1, 3)  # one scale per output channel
    dx = 1.0 / INT8_BOUND / 2
    dw = np.abs(kernel).max(axis=(0, 1, 2)) / INT8_BOUND / 2

    def conv(a, k):
        return jax.lax.conv_general_dilated(a, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ones_kernel = jnp.ones_like(kernel)
    # The same three terms as for a dense layer, summed over each output's window (zero
    # padding quantizes exactly; counting it anyway only loosens the bound).
    bound = (conv(jnp.abs(x), ones_kernel) * dw + dx * conv(jnp.ones_like(x), jnp.abs(kernel))
             + dx * conv(jnp.ones_like(x), ones_kernel) * dw)
    error = np.abs(np.asarray(quantized) - np.asarray(exact))
    assert np.all(error <= np.asarray(bound) * (1 + 1e-4) + 1e-6)
    assert error.max() > 0


def test_sizes_in_bytes_of_a_known_model_at_fp32_bf16_and_int8():
    # Dense 4 -> 3: a 4 x 3 kernel and 3 biases. One weight pruned to 0, one so small that
    # int8 rounds it to 0 (0.001 of its channel's absmax 1.0: 0.13 of a step).
    kernel = np.array([[1.0, -0.5, 0.25], [0.0, 1.0, -1.0], [0.001, 0.3, 0.7],
                       [-0.2, 0.1, 0.4]], np.float32)
    params = {"layer": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray([0.1, 0.0, -0.3])}}
    model = _Linear(nn.Dense(3))
    ptq_model, qvariables = quantize_lib.quantize_model(model, {"params": params},
                                                        [_inputs((8, 4))])
    fp32 = report.footprint({"params": params}, params)
    bf16 = report.footprint(jax.tree.map(lambda a: a.astype(jnp.bfloat16), {"params": params}),
                            params)
    int8 = report.footprint(qvariables, params)
    assert fp32 == {"parameters": 15, "nonzero": 13, "bytes": 15 * 4}
    assert bf16 == {"parameters": 15, "nonzero": 13, "bytes": 15 * 2}
    # int8 kernel (12 B) + its float32 scale per output channel (3 x 4 B) + float32 biases
    # (3 x 4 B) + the input activation's static float32 scale (4 B).
    assert int8 == {"parameters": 15, "nonzero": 12, "bytes": 12 + 12 + 12 + 4}
    assert ptq_model.apply(qvariables, _inputs((2, 4)), train=False).shape == (2, 3)


def test_a_model_with_nothing_to_quantize_is_one_line():
    class Shift(nn.Module):
        @nn.compact
        def __call__(self, x, *, train: bool):
            return nn.relu(x) + self.param("b", nn.initializers.zeros, (3,))
    x = jnp.ones((2, 3))
    variables = Shift().init(jax.random.PRNGKey(0), x, train=False)
    with pytest.raises(ConfigError, match="Shift has no convolution or dense layer"):
        quantize_lib.quantize_model(Shift(), variables, [x])


# --- the command ------------------------------------------------------------------------


def _cli(*args):
    import contextlib
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compress_cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def _one_error(code, out, err, *phrases):
    assert code == compress_cli.EXIT_BAD_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert out == ""


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error(*_cli("report", "--run", str(empty)), "is not a jaxdl run")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    _one_error(*_cli("report", "--run", str(unfinished)), "is not a finished run",
               "summary.json")
    _one_error(*_cli("report", "--run", str(empty), "--repeats", "0"),
               "--repeats", "positive integer")
    _one_error(*_cli("report", "--run", str(empty), "--output", str(tmp_path / "a" / "b")),
               "parent folder does not exist")
    _one_error(*_cli("squash", "--run", str(empty)), "invalid choice")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "empty",
                                                          "unfinished"]


def test_report_refuses_a_run_that_is_not_a_classifier(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    run = types.SimpleNamespace(workdir=tmp_path, config=make_config("mnist_autoencoder"))
    with pytest.raises(ConfigError, match="needs a classification run.*'autoencoder' run"):
        report.check(run, split="test", batch=1, repeats=1)


QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """40 steps of a narrow digits CNN with BatchNorm (state that the bytes count), saved
    and evaluated at the end."""
    workdir = tmp_path_factory.mktemp("compress") / "run"
    config = make_config("digits_cnn", **QUIET, **{
        "train.duration": "40 steps", "train.eval_every": "40 steps",
        "train.log_every": "40 steps", "checkpoint.every": "40 steps",
        "checkpoint.keep_last": 1, "checkpoint.keep_best": 1,
        "model.features": (8,), "model.dense_width": 16, "model.batch_norm": True,
        "optimizer.learning_rate": 0.01, "schedule.warmup": "0 steps",
        "parallel.num_devices": 1})
    summary = loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    return workdir, summary


@pytest.mark.slow
def test_report_tabulates_a_tiny_run_at_fp32_bf16_and_int8(tiny_run):
    workdir, summary = tiny_run
    code, out, err = _cli("report", "--run", str(workdir), "--repeats", "3",
                          "--calibration_examples", "200", "--batch", "64")
    assert code == 0, err
    table = json.loads((workdir / "analysis" / "compress" / "report.json").read_text())
    assert (workdir / "analysis" / "compress" / "report.md").read_text() in out
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["fp32", "bf16", "int8"]
    run = load_run(workdir)
    count = sum(np.size(a) for a in jax.tree.leaves(run.variables["params"]))
    stored = sum(np.size(a) for a in jax.tree.leaves(run.variables))  # + BatchNorm stats
    assert {r["parameters"] for r in rows.values()} == {count}
    assert rows["fp32"]["bytes"] == 4 * stored and rows["bf16"]["bytes"] == 2 * stored
    assert rows["int8"]["bytes"] < 0.4 * rows["fp32"]["bytes"]
    # fp32 is the run itself: the accuracy its summary reports for the best checkpoint.
    assert rows["fp32"]["accuracy"] == pytest.approx(summary["best"]["test"]["accuracy"],
                                                     abs=1e-9)
    assert abs(rows["int8"]["accuracy"] - rows["fp32"]["accuracy"]) < 0.05
    assert all(r["latency_ms"] > 0 for r in rows.values())
    # Calibration read the TRAIN split: 200 of its examples, in batches of at most the
    # run's eval batch (128).
    assert table["calibration"] == {**table["calibration"], "split": "train",
                                    "examples": 200, "batches": 2}
    assert f"| int8 | {count:,} |" in out


@pytest.mark.slow
def test_report_refuses_a_split_or_batch_the_run_lacks_before_writing(tiny_run, tmp_path):
    workdir, _ = tiny_run
    before = sorted(p.name for p in workdir.iterdir())
    _one_error(*_cli("report", "--run", str(workdir), "--split", "holdout"),
               "split 'holdout'")
    _one_error(*_cli("report", "--run", str(workdir), "--batch", "5000"),
               "batch=5000", "361 examples")
    assert sorted(p.name for p in workdir.iterdir()) == before
