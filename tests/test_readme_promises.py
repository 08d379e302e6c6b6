"""README promises that had no test: exit 1 on a non-finite step through the CLI, the norms
in the metrics log, --deterministic seeding Python's and numpy's global generators, a batch
of another dtype refused, and class weights reaching the compiled train step."""

import json
import random
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import REPO, cli_env, make_config, run_cli, stderr_tail
from jaxdl.training import checkpoints, loop
from jaxdl.training.writers import read_metrics

QUIET = ["--config.logging.progress=False", "--config.logging.plot=False",
         "--config.logging.tensorboard=False"]


# --- exit status 1 on a non-finite step ------------------------------------------------------

DIVERGE = {"optimizer.name": "sgd", "optimizer.learning_rate": 1e30,
           "schedule.name": "constant", "schedule.warmup": "0 steps",
           "train.duration": "2 epochs", "checkpoint.every": "1 steps"}


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_a_non_finite_step_exits_1_with_one_line_naming_it(tmp_path):
    workdir = tmp_path / "run"
    result = run_cli("experiments.digits_cnn", f"--workdir={workdir}", *QUIET,
                     f"--compilation_cache_dir={tmp_path / 'cache'}",
                     *(f"--config.{k}={v}" for k, v in DIVERGE.items()))
    assert result.returncode == 1, stderr_tail(result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr_tail(result.stderr)
    assert result.stderr.rstrip().splitlines()[-1] == errors[0]  # the last word
    # The first non-finite step, found by replaying the run's steps one by one (step n
    # trains on batch n - 1).
    trainer = loop.build(make_config(**DIVERGE))
    state, bad_step = trainer.state, None
    for index in range(trainer.plan.total_steps):
        state, metrics = trainer.train_step(state, trainer.backend.put_batch(
            trainer.train_batch(index)))
        if not trainer.backend.get_metrics(metrics)["scalars"]["finite"]:
            bad_step = index + 1
            break
    assert bad_step is not None and bad_step > 1
    assert errors[0].startswith(f"error: non-finite training at step {bad_step}: loss ")
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] == bad_step - 1  # none from the bad step on
    assert f"the last good checkpoint is step {saved[-1]}, where a rerun resumes" in errors[0]
    assert "guard.skip_nonfinite=True" in errors[0]
    assert not (workdir / "summary.json").exists()


# --- gradient, parameter and update norms in the log -----------------------------------------


def _global_norm(tree):
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                             for x in jax.tree.leaves(tree))))


@pytest.mark.slow  # 18-35 s on 2 cores (--durations of a fresh clone): slow tier
def test_gradient_parameter_and_update_norms_are_logged_and_true(tmp_path):
    """Every train record carries finite grad/param/update norms; the last step's parameter
    norm is that of the final weights, and its update norm that of the last change to them
    (Adam, no weight decay: the update is the parameters' difference)."""
    config = make_config(**{"logging.progress": False, "logging.plot": False,
                            "logging.tensorboard": False, "train.duration": "1 epoch",
                            "train.log_every": "1 steps", "checkpoint.every": "1 steps",
                            "checkpoint.keep_last": 2, "checkpoint.keep_best": 0})
    summary = loop.train_and_evaluate(config, tmp_path)
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == summary["steps"]
    for record in train:
        for name in ("grad_norm", "param_norm", "update_norm"):
            assert np.isfinite(record[name]), (name, record)
        assert record["grad_norm"] > 0 and record["param_norm"] > 0
        # The warm-up's first learning rate is 0: no update at step 1, one at every other.
        assert (record["update_norm"] > 0) == (record["learning_rate"] > 0), record
    trainer = loop.build(config)
    saved = checkpoints.Checkpoints(tmp_path / "checkpoints", keep_last=2, keep_best=0,
                                    best_mode="max")
    previous_step, last_step = saved.steps()
    assert last_step == summary["steps"] == previous_step + 1
    previous, _, _ = saved.restore(trainer.abstract_state, step=previous_step)
    last, _, _ = saved.restore(trainer.abstract_state, step=last_step)
    saved.close()
    final = train[-1]
    assert final["param_norm"] == pytest.approx(_global_norm(last.params), rel=1e-5)
    assert final["update_norm"] == pytest.approx(_global_norm(jax.tree.map(
        lambda a, b: np.asarray(a, np.float64) - b, last.params, previous.params)), rel=1e-3)


# --- --deterministic seeds Python's and numpy's global generators ----------------------------

# The CLI up to the training loop, which draws from the global generators instead of
# training: what user code would get after the set-up.
DRAW = textwrap.dedent("""
    import json, random, sys
    import numpy as np
    from experiments import digits_mlp
    from jaxdl import app
    from jaxdl.training import loop

    def draw(config, workdir, should_stop):
        print("DRAWN " + json.dumps([random.random(), float(np.random.rand())]))
        sys.exit(0)

    loop.train_and_evaluate = draw
    app.run(digits_mlp.get_config)
""")


def _drawn(tmp_path, *flags):
    result = subprocess.run([sys.executable, "-c", DRAW, f"--workdir={tmp_path / 'run'}",
                             "--compilation_cache_dir=", *flags], cwd=REPO, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, stderr_tail(result.stderr)
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("DRAWN ")]
    return json.loads(line[len("DRAWN "):])


@pytest.mark.parametrize("seed", [0, 2**32 + 7])  # numpy's legacy seed takes 32 bits
def test_deterministic_seeds_python_and_numpy_global_generators(tmp_path, seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    expected = [random.random(), float(np.random.rand())]
    assert _drawn(tmp_path, "--deterministic", f"--config.seed={seed}") == expected
    # Without the flag the generators are left alone (seeded from the OS).
    plain = _drawn(tmp_path, f"--config.seed={seed}")
    assert plain[0] != expected[0] and plain[1] != expected[1]


# --- a batch of another dtype ----------------------------------------------------------------


def test_a_batch_of_another_dtype_is_refused_naming_both():
    trainer = loop.build(make_config(**{"parallel.num_devices": 1}))
    batch = trainer.train_batch(0)
    batch["inputs"] = batch["inputs"].astype(np.int32)
    with pytest.raises(ValueError, match=r"compiled once for the batch .*'inputs': "
                                         r"'float32\[64, 8, 8, 1\]'.* got .*'inputs': "
                                         r"'int32\[64, 8, 8, 1\]'"):
        trainer.train_step(trainer.state, trainer.backend.put_batch(batch))


# --- class weights reach the compiled step ---------------------------------------------------


def test_class_weights_reach_the_compiled_train_step():
    """breast_cancer_mlp weighs its 212 malignant / 357 benign examples ('balanced'): the
    compiled step's loss is the hand-weighted cross-entropy of its batch, not the plain one."""
    # No dropout: the hand computation runs the model in training mode (batch statistics
    # of its input normaliser), as the step does.
    overrides = {"parallel.num_devices": 1, "data.fold": 0, "model.dropout_rate": 0.0}
    trainer = loop.build(make_config("breast_cancer_mlp", **overrides))
    assert trainer.config.task.class_weighting == "balanced"
    train_labels = np.asarray(trainer.splits["train"].targets)
    counts = np.bincount(train_labels, minlength=2)
    weights = len(train_labels) / (2 * counts)  # n / (classes * n_c)
    assert weights[0] > 1.2 * weights[1]
    batch = trainer.train_batch(0)
    host = trainer.backend.get_state(trainer.state)
    logits, _ = trainer.task.model.apply({"params": host.params, **host.model_state},
                                         batch["inputs"], train=True,
                                         mutable=list(host.model_state))
    logits = np.asarray(logits, np.float64)
    labels = batch["targets"]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    cross_entropy = -log_p[np.arange(len(labels)), labels]
    _, metrics = trainer.train_step(trainer.state, trainer.backend.put_batch(batch))
    sums = trainer.backend.get_metrics(metrics)["sums"]
    loss = float(sums["loss"] / sums["count"])
    assert loss == pytest.approx(float(np.mean(weights[labels] * cross_entropy)), rel=1e-5)
    assert loss != pytest.approx(float(np.mean(cross_entropy)), rel=1e-3)
