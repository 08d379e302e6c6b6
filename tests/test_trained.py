"""jaxdl.trained and the tools on it (python -m jaxdl.evaluate, jaxdl.predict): a run loaded
back at its best, latest or a given checkpoint gives the metrics the run reported, through
the run's own preprocessing; a workdir that is not a run, a checkpoint it lacks and inputs of
the wrong shape are one-line errors."""

import csv
import io
import json
import re

import numpy as np
import pytest
from conftest import make_config, run_cli

from jaxdl import evaluate as evaluate_tool, predict as predict_tool
from jaxdl.schema import ConfigError
from jaxdl.trained import load_run
from jaxdl.training import loop
from jaxdl.training.writers import read_metrics

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """30 steps of a narrow digits_cnn on one device, evaluated and saved at 10, 20 and 30
    (test accuracy about 0.57 at 10, 0.81 at 30). The monitor is the validation loss with
    mode 'max', so the checkpoint it keeps as best is the first one (the loss falls), not
    the latest; the normalisation (inputs mapped from 0..1 to -1..1) changes every
    prediction that skips the run's eval-time preprocessing. `data.eval_limit=1`: the
    evaluations at 10 and 20 read one batch of 128 of each split, the final one all."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = make_config("digits_cnn", **QUIET, **{
        "train.duration": "30 steps", "train.eval_every": "10 steps",
        "train.log_every": "10 steps", "checkpoint.every": "10 steps",
        "checkpoint.keep_last": 1, "checkpoint.keep_best": 1,
        "checkpoint.monitor": "validation/loss", "checkpoint.mode": "max",
        "data.augmentation": "normalize(mean=(0.5,),std=(0.5,))",
        "model.features": (8,), "model.dense_width": 32, "model.dropout_rate": 0.0,
        "optimizer.learning_rate": 0.01, "schedule.warmup": "0 steps",
        "parallel.num_devices": 1, "data.eval_limit": 1})
    summary = loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    return workdir, summary


def _accuracy(run, split):
    data = run.dataset(split)
    return float(np.mean(run.apply(data.inputs).argmax(-1) == data.targets))


def test_best_is_the_checkpoint_the_monitor_chose_and_predicts_its_reported_accuracy(
        digits_run):
    workdir, summary = digits_run
    run = load_run(workdir)
    assert run.step == summary["best"]["test"]["step"] == 10
    assert run.config.checkpoint.monitor == "validation/loss"
    assert run.model.dtype == np.float32  # the run's precision
    assert _accuracy(run, "test") == pytest.approx(summary["best"]["test"]["accuracy"],
                                                   abs=1e-9)


def test_latest_and_a_step_number_load_those_checkpoints(digits_run):
    workdir, summary = digits_run
    latest = load_run(workdir, "latest")
    assert latest.step == summary["steps"] == 30
    assert _accuracy(latest, "test") == pytest.approx(summary["final"]["test"]["accuracy"],
                                                      abs=1e-9)
    assert load_run(workdir, 10).step == load_run(workdir, "10").step == 10


def test_preprocess_is_the_runs_normalisation(digits_run):
    run = load_run(digits_run[0], "latest")
    x = run.dataset("test").inputs[:3]
    np.testing.assert_allclose(np.asarray(run.preprocess(x)), (x - 0.5) / 0.5, rtol=1e-6)
    # The splits are the run's own cut (the sizes config.json recorded).
    assert {k: len(v) for k, v in run.splits.items()} == {"train": 1257, "validation": 179,
                                                          "test": 361}


def test_a_workdir_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a jaxdl run: it holds no config\.json"):
        load_run(tmp_path)


@pytest.mark.parametrize("checkpoint, message", [
    (20, r"no checkpoint at step 20; saved steps: 10, 30"),
    ("final", r"checkpoint='final': give 'best', 'latest' or a step number")])
def test_a_checkpoint_the_run_lacks_is_one_line(digits_run, checkpoint, message):
    with pytest.raises(ConfigError, match=message):
        load_run(digits_run[0], checkpoint)


def test_inputs_of_the_wrong_shape_name_the_expected_shape_and_scale(digits_run):
    run = load_run(digits_run[0], "latest")
    with pytest.raises(ConfigError, match=r"inputs of shape \(2, 64\): .* takes \[N, 8, 8, 1\] "
                                          r"float32 examples, scaled like its train split "
                                          r"\(0 to 1\)"):
        run.apply(np.zeros((2, 64), np.float32))


def test_evaluate_gives_the_metrics_the_run_reported(digits_run):
    workdir, summary = digits_run
    best, latest = load_run(workdir), load_run(workdir, "latest")
    for key in ("accuracy", "loss", "examples"):
        assert best.evaluate("test")[key] == pytest.approx(summary["best"]["test"][key],
                                                           rel=1e-6)
        assert latest.evaluate("validation")[key] == pytest.approx(
            summary["final"]["validation"][key], rel=1e-6)


# --- python -m jaxdl.evaluate / jaxdl.predict, called in-process -----------------------------


def _error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (out, err)
    return err.strip()


def test_evaluate_tool_prints_the_best_checkpoints_reported_test_metrics(digits_run, tmp_path,
                                                                         capsys):
    workdir, summary = digits_run
    out = tmp_path / "metrics.json"
    assert evaluate_tool.main(["--run", str(workdir), "--json", str(out)]) == 0
    best = summary["best"]["test"]
    assert capsys.readouterr().out == (
        f"test at step 10 (best): accuracy {best['accuracy']:.4f}  loss {best['loss']:.4f}  "
        "(361 examples)\n")
    saved = json.loads(out.read_text())
    assert saved["step"] == 10 and saved["metrics"]["accuracy"] == pytest.approx(
        best["accuracy"], abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "20"], r"no checkpoint at step 20; saved steps: 10, 30"),
    (["--split", "holdout"], r"split 'holdout': the run in .* has test, train, validation"),
    (["--bogus"], r"unrecognized arguments: --bogus")])
def test_evaluate_tool_refuses_in_one_line(digits_run, capsys, args, message):
    assert evaluate_tool.main(["--run", str(digits_run[0]), *args]) == 2
    assert re.search(message, _error_line(capsys))


def test_evaluate_tool_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert evaluate_tool.main(["--run", str(tmp_path)]) == 2
    assert "is not a jaxdl run" in _error_line(capsys)


def test_predict_tool_writes_the_runs_outputs_for_an_array_and_for_images(digits_run,
                                                                          tmp_path, capsys):
    from PIL import Image

    run = load_run(digits_run[0])
    x = run.dataset("test").inputs[:5]
    np.save(tmp_path / "x.npy", x)
    assert predict_tool.main(["--run", str(digits_run[0]), "--input", str(tmp_path / "x.npy"),
                              "--output", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), run.apply(x), rtol=1e-6)
    # The same digits as 8-bit PNGs: read back into the train split's 0..1 range.
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(x):
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    assert predict_tool.main(["--run", str(digits_run[0]), "--input", str(folder),
                              "--output", str(tmp_path / "y.csv")]) == 0
    rows = list(csv.reader((tmp_path / "y.csv").open()))
    assert rows[0][:3] == ["input", "predicted", "output_0"] and len(rows[0]) == 12
    assert [r[0] for r in rows[1:]] == [f"{i}.png" for i in range(5)]
    assert [int(r[1]) for r in rows[1:]] == run.apply(x).argmax(-1).tolist()
    assert "5 outputs of shape [10] from step 10 (best)" in capsys.readouterr().out


def test_predict_tool_refuses_inputs_of_the_wrong_shape_naming_shape_and_scale(
        digits_run, tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.zeros((3, 64), np.float32))
    assert predict_tool.main(["--run", str(digits_run[0]), "--input",
                              str(tmp_path / "flat.npy"), "--output",
                              str(tmp_path / "y.npy")]) == 2
    assert re.search(r"takes \[N, 8, 8, 1\] float32 examples, scaled like its train split "
                     r"\(0 to 1\)", _error_line(capsys))
    assert not (tmp_path / "y.npy").exists()
    assert predict_tool.main(["--run", str(digits_run[0]), "--input", str(tmp_path),
                              "--output", str(tmp_path / "y.txt")]) == 2
    assert "give a .npy or .csv file name" in _error_line(capsys)


@pytest.mark.slow
def test_the_tools_run_as_modules(digits_run, tmp_path):
    result = run_cli("jaxdl.evaluate", "--run", str(digits_run[0]), "--checkpoint", "latest",
                     "--split", "validation", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("validation at step 30 (latest): accuracy ")
    result = run_cli("jaxdl.predict", "--run", str(tmp_path), "--input", "x.npy",
                     "--output", "y.npy", timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: ") and "is not a jaxdl run" in result.stderr


def test_eval_limit_reads_the_first_batches_during_training_and_all_at_the_end(digits_run):
    workdir, summary = digits_run
    examples = {(r["step"], r["split"]): r["examples"]
                for r in read_metrics(workdir / "metrics.jsonl") if "examples" in r}
    assert examples == {(10, "validation"): 128, (20, "validation"): 128,
                        (30, "validation"): 179, (30, "test"): 361}
    # The test at the best checkpoint (step 10) is an end-of-run report: the whole split.
    assert summary["best"]["test"]["examples"] == 361
