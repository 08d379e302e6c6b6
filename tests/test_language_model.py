"""Shakespeare windows, the language_model task, --variant, and the experiment via the CLI."""

import json
import math
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import data_path, make_config, run_cli

from jaxdl import app, data, tasks
from jaxdl.data import files, mnist, text
from jaxdl.tasks.base import EvalContext
from jaxdl.tasks.sequence import SAMPLES

SHARED = data_path("shakespeare")
needs_text = pytest.mark.skipif(
    not (SHARED / text.FILENAME).is_file(),
    reason=f"Shakespeare texts absent ({SHARED}; set JAXDL_DATA_DIR)")
CORPUS = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind.\n" * 4


def test_windows_and_held_out_tail():
    ds = text.make_dataset("tiny", CORPUS, window=8, stride=3, validation_fraction=0.1,
                           test_fraction=0.2)
    vocab = ds.metadata["vocabulary"]
    assert vocab == "".join(sorted(set(CORPUS)))
    decode = lambda row: "".join(vocab[i] for i in row)
    chars = ds.metadata["characters"]
    assert sum(chars.values()) == len(CORPUS)
    assert ds.features.shape[1] == 8 and ds.features.dtype == np.int32
    # Targets are the inputs one character later; train windows start every `stride`.
    assert decode(ds.features[2]) == CORPUS[6:14] and decode(ds.targets[2]) == CORPUS[7:15]
    assert len(ds) == (chars["train"] - 1 - 8) // 3 + 1
    # Held-out windows come from the tail, in order and without overlap.
    test_x, test_y = ds.predefined_splits["test"]
    tail = CORPUS[-chars["test"]:]
    assert decode(test_x[0]) + decode(test_x[1]) == tail[:16]
    assert decode(test_y[0]) == tail[1:9]
    val_x, _ = ds.predefined_splits["validation"]
    assert decode(val_x[0]) == CORPUS[chars["train"]:chars["train"] + 8]
    assert ds.num_classes is None


def test_missing_text_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(files, "fixed_dirs", lambda fs: [])
    monkeypatch.delenv("JAXDL_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set JAXDL_DATA_DIR") as info:
        data.load_source("shakespeare_char", window=8, stride=8, validation_fraction=0.1,
                         test_fraction=0.1, data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and text.FILENAME in message
    assert "set JAXDL_DATA_DIR" in message


def test_wrong_checksum_rejected(tmp_path):
    import gzip
    (tmp_path / text.FILENAME).write_bytes(gzip.compress(b"not the texts"))
    with pytest.raises(mnist.ChecksumError, match="SHA-256 mismatch"):
        text.read_text(tmp_path)


@pytest.fixture(scope="module")
def lm_task():
    ds = text.make_dataset("tiny", CORPUS, window=8, stride=4, validation_fraction=0.1,
                           test_fraction=0.1)
    config = make_config("shakespeare_char_lstm", **{
        "model.vocab_size": ds.metadata["vocabulary_size"], "model.embed_dim": 4,
        "model.hidden_size": 8, "task.sample_length": 12, "task.sample_prompt": "To be"})
    task = tasks.build_task(config, ds, axis_name=None)
    return task, ds, task.init(jax.random.key(0), ds.features[:2])


def test_loss_is_mean_cross_entropy_and_bits_per_char(lm_task):
    task, ds, variables = lm_task
    batch = {"inputs": ds.features[:3], "targets": ds.targets[:3]}
    values, _ = task.apply(variables, batch, train=False, rng=jax.random.key(1))
    logits = np.asarray(task.model.apply(variables, batch["inputs"], train=False), np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -np.take_along_axis(log_probs, batch["targets"][..., None], -1)[..., 0].mean(-1)
    np.testing.assert_allclose(values["loss"], nats, rtol=1e-5)
    np.testing.assert_allclose(values["bits_per_char"], values["loss"] / math.log(2), rtol=1e-6)
    assert values["accuracy"].shape == (3,) and 0 <= float(values["accuracy"].min()) <= 1
    assert task.monitor == "bits_per_char" and task.monitor_mode == "min"


def test_samples_deterministic_per_key_and_replaced_on_resume(lm_task, tmp_path):
    task, ds, variables = lm_task
    first = task.sample(variables, jax.random.key(1))
    assert first == task.sample(variables, jax.random.key(1))
    assert first != task.sample(variables, jax.random.key(2))
    assert len(first) == 12 and set(first) <= set(ds.metadata["vocabulary"])

    def evaluate(step):
        return task.on_eval(EvalContext(
            step=step, final=False, workdir=tmp_path, write_files=True, splits={},
            eval_splits=(), rng=jax.random.key(1), variables_fn=lambda: variables))

    for step in (5, 10, 15, 10, 15):  # a resume from step 5 repeats steps 10 and 15
        assert evaluate(step) == {}
    written = (tmp_path / SAMPLES).read_text()
    assert written.count("=== step") == 3 and written.count("=== step 10 ===") == 1
    assert f"=== step 15 ===\nTo be{first}\n" in written


def test_variant_flag(capsys):
    from experiments import shakespeare_char_lstm as experiment
    gpu = app._variant_of(experiment.get_config, ["prog", "--variant", "gpu"])()
    assert gpu.model.num_layers == 2 and gpu.parallel.backend == "sharded"
    assert make_config("shakespeare_char_lstm").model.num_layers == 1  # the default: cpu
    with pytest.raises(SystemExit, match="^2$"):  # bad input
        app._variant_of(experiment.get_config, ["prog", "--variant=tpu"])
    assert "unknown variant 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^2$"):
        app._variant_of(lambda: None, ["prog", "--variant=gpu"])
    assert "takes no variant" in capsys.readouterr().err


@needs_text
def test_experiment_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    result = run_cli("experiments.shakespeare_char_lstm", f"--workdir={workdir}",
                     "--variant=cpu", "--config.train.duration=4 steps",
                     "--config.train.eval_every=2 steps", "--config.model.hidden_size=16",
                     "--config.model.embed_dim=8", "--config.data.batch_size=8",
                     "--config.data.options.window=16", "--config.task.sample_length=20",
                     "--config.logging.plot=False", "--config.logging.tensorboard=False",
                     "--compilation_cache_dir=")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    final = summary["final"]["validation"]
    assert final["bits_per_char"] == pytest.approx(final["loss"] / math.log(2), rel=1e-5)
    # Barely trained: well above a good model, at most the uniform guess over 84 characters.
    assert 2.5 < final["bits_per_char"] < math.log2(text_vocabulary_size(workdir)) + 0.5
    samples = (workdir / SAMPLES).read_text()
    assert samples.count("=== step") == 2 and "=== step 4 ===\nROMEO.\n" in samples


def text_vocabulary_size(workdir: Path) -> int:
    return json.loads((workdir / "config.json").read_text())["config"]["model"]["vocab_size"]
