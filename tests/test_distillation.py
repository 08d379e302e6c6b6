"""Knowledge distillation (task.name='distillation', jaxdl/tasks/distillation.py): the loss
is Hinton et al.'s, computed here by hand in numpy; the teacher (a finished run) is never
trained, optimised or checkpointed with the student and stays bitwise as it was; both
backends give the same run; an interrupted run resumes bitwise; a teacher that is missing,
no run, unfinished, or sees other classes, inputs or normalisation is refused (one line)
before anything is written."""

from __future__ import annotations

import io
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_config

from jaxdl import config as config_lib, losses, runs
from jaxdl.models import build_model
from jaxdl.schema import ConfigError
from jaxdl.tasks import distillation as kd

QUIET = {"logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_kd_loss_equals_a_numpy_reference_on_fixed_logits():
    student = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.0, 1.0]], np.float32)
    teacher = np.array([[3.0, 0.0, -1.0], [1.0, 1.0, 1.0], [0.0, 4.0, -3.0]], np.float32)
    labels = np.array([0, 2, 1])
    alpha, t = 0.3, 2.5
    p_s, p_t = _softmax(student.astype(np.float64) / t), _softmax(teacher.astype(np.float64) / t)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)
    ce = -np.log(_softmax(student.astype(np.float64))[np.arange(3), labels])
    expected = alpha * ce + (1 - alpha) * t * t * kl
    got = kd.distillation_loss(student, teacher, labels, alpha=alpha, temperature=t)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(kd.kd_loss(student, teacher, t)), t * t * kl,
                               rtol=1e-5)
    # The same logits for both: no soft term, whatever T.
    np.testing.assert_allclose(np.asarray(kd.kd_loss(student, student, 7.0)), 0.0, atol=1e-6)


def _cnn(features, width, classes=4):
    return build_model("cnn", features=features, kernel_size=3, pooling="max",
                       dense_width=width, activation="relu", dropout_rate=0.0,
                       batch_norm=False, bn_momentum=0.9, num_classes=classes)


def test_the_training_loss_weighs_the_three_terms_and_only_the_student_learns():
    """An in-memory teacher: train loss = alpha * CE + (1 - alpha) * KD + beta * the mean
    squared difference of the projected features; the gradient reaches the student and the
    projection, and there is no teacher entry to reach; evaluation reports the CE."""
    # numpy inputs and a jitted init: every eager jax op would compile a program of its own
    x = np.random.default_rng(0).uniform(size=(6, 6, 6, 1)).astype(np.float32)
    labels = np.arange(6) % 4
    t_model = _cnn((3,), 8)
    teacher = kd.Teacher(model=t_model, variables=jax.device_get(jax.jit(
        lambda: t_model.init(jax.random.PRNGKey(1), x, train=False))()), workdir="memory",
        step=0)
    task = kd.DistillationTask(
        model=_cnn((2,), 5), loss_fn=losses.get_loss("softmax_cross_entropy"),
        eval_batch_size=8, misclassified_shown=0, draw_figures=False, teacher=teacher,
        alpha=0.25, temperature=3.0, feature_pairs=(("Dense_0", "Dense_0"),),
        feature_weight=0.5, projections=(("Dense_0", 8),))
    batch = {"inputs": x, "targets": labels}
    rng = jax.random.PRNGKey(3)

    @jax.jit  # one program: compiling each part apart costs seconds of CPU
    def everything():
        params = task.init(jax.random.PRNGKey(2), x)["params"]
        run = lambda p, train: task.apply({"params": p}, batch, train=train, rng=rng)[0]
        grads = jax.grad(lambda p: jnp.mean(run(p, True)["loss"]))(params)
        # Logits and Dense_0 outputs of both models, by Flax's own capture.
        student = {"params": {k: v for k, v in params.items() if k != kd.PROJECTION}}
        parts = []
        for model, v in ((task.model, student), (t_model, teacher.variables)):
            logits, state = model.apply(v, x, train=False, capture_intermediates=True,
                                        mutable=["intermediates"])
            parts.append((logits, state["intermediates"]["Dense_0"]["__call__"][0]))
        return params, run(params, True), run(params, False), grads, parts

    params, values, evaluated, grads, parts = everything()
    assert set(params) == {"Conv_0", "Dense_0", "Dense_1", kd.PROJECTION}
    assert params[kd.PROJECTION]["Dense_0"]["kernel"].shape == (5, 8)
    (s_logits, s_feat), (t_logits, t_feat) = jax.tree.map(
        lambda a: np.asarray(a, np.float64), parts)
    proj = params[kd.PROJECTION]["Dense_0"]
    projected = s_feat @ np.asarray(proj["kernel"]) + np.asarray(proj["bias"])
    p_s, p_t = _softmax(s_logits / 3.0), _softmax(t_logits / 3.0)
    soft = 9.0 * np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)
    ce = -np.log(_softmax(s_logits)[np.arange(6), np.asarray(labels)])
    feat = np.mean((projected - t_feat) ** 2, axis=-1)
    np.testing.assert_allclose(np.asarray(values["loss"]),
                               0.25 * ce + 0.75 * soft + 0.5 * feat, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(values["kd_loss"]), soft, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(values["teacher_agreement"]),
                                  s_logits.argmax(-1) == t_logits.argmax(-1))
    np.testing.assert_allclose(np.asarray(evaluated["loss"]), ce, rtol=1e-5)
    flat = flax.traverse_util.flatten_dict(grads, sep="/")
    assert all(np.any(np.asarray(g) != 0) for g in flat.values()), "a student part got no grad"


def _student_config(teacher, **overrides):
    """digits_cnn shrunk to a tiny student of the tiny teacher at `teacher`."""
    config = make_config("digits_cnn", **QUIET, **{
        "model.features": (2,), "model.dense_width": 4, "model.dropout_rate": 0.0,
        "train.duration": "6 steps", "train.eval_every": "6 steps",
        "train.log_every": "6 steps", "checkpoint.every": "6 steps"})
    config = config_lib.apply_overrides(config, {"task": {
        "name": "distillation", "teacher": str(teacher), "alpha": 0.5, "temperature": 2.0}})
    return config_lib.validate(config_lib.apply_overrides(config, overrides))


def _refused(config, workdir, match):
    from jaxdl.training import loop
    with pytest.raises(ConfigError, match=match):
        loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    assert not workdir.exists(), "the refused run wrote its workdir"


def _unfinished(tmp_path):
    """A workdir that is a run (config.json) but never finished (no summary.json)."""
    teacher = tmp_path / "unfinished"
    teacher.mkdir()
    (teacher / runs.CONFIG_FILENAME).write_text(json.dumps({"config": {}}))
    return teacher


def _finished_without_checkpoint(tmp_path):
    teacher = _unfinished(tmp_path)
    (teacher / runs.SUMMARY_FILENAME).write_text("{}")
    return teacher


@pytest.mark.parametrize("make_teacher, match", [
    (lambda tmp: tmp / "no_such_run", r"config.task.teacher=.*no_such_run'?: no such directory"),
    (lambda tmp: tmp, r"config.task.teacher=.* is not a jaxdl run \(no config.json\)"),
    (_unfinished, r"config.task.teacher=.*unfinished'?: the run has not finished"),
    (_finished_without_checkpoint, r"config.task.teacher=.* holds no jaxdl checkpoint"),
], ids=["missing", "not_a_run", "unfinished", "no_checkpoint"])
def test_a_teacher_that_is_no_finished_run_is_refused_and_nothing_is_written(
        make_teacher, match, tmp_path):
    config = _student_config(make_teacher(tmp_path))
    _refused(config, tmp_path / "run", match)


def test_feature_pairs_need_a_weight_and_known_modules():
    with pytest.raises(ConfigError, match="task.features and config.task.feature_weight go "
                                          "together"):
        from jaxdl.training.build import build
        build(_student_config("unused", **{"task.features": "Dense_0=Dense_0"}))
    with pytest.raises(ConfigError, match="write 'STUDENT_MODULE=TEACHER_MODULE"):
        kd.parse_pairs("Dense_0")


# --- end to end on a tiny finished teacher (slow tier) ----------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished tiny digits_cnn run (4 steps): the teacher."""
    from jaxdl.training import loop
    workdir = tmp_path_factory.mktemp("teacher") / "run"
    config = make_config("digits_cnn", **QUIET, **{
        "model.features": (4,), "model.dense_width": 8, "model.dropout_rate": 0.0,
        "train.duration": "4 steps", "train.eval_every": "4 steps",
        "train.log_every": "4 steps", "checkpoint.every": "4 steps"})
    loop.train_and_evaluate(config, workdir, stream=io.StringIO())
    return workdir


def _flat(tree):
    return flax.traverse_util.flatten_dict(tree, sep="/")


def _feature_config(teacher, backend):
    """The student with feature distillation, on 2 devices, checkpointed every 2 steps."""
    return _student_config(teacher, **{
        "task.features": "Dense_0=Dense_0", "task.feature_weight": 0.5,
        "checkpoint.every": "2 steps", "parallel.backend": backend, "parallel.num_devices": 2})


@pytest.fixture(scope="module")
def pmap_run(teacher, tmp_path_factory):
    """(the teacher's weights and files before, the workdir of a whole 6-step pmap run)."""
    from jaxdl.training import loop
    before = runs.read_weights(teacher)[0]
    files = {p: p.read_bytes() for p in teacher.rglob("*") if p.is_file()}
    workdir = tmp_path_factory.mktemp("pmap") / "run"
    loop.train_and_evaluate(_feature_config(teacher, "pmap"), workdir, stream=io.StringIO())
    return before, files, workdir


def _records(workdir):
    from jaxdl.training.writers import read_metrics
    return [{k: v for k, v in r.items() if k != "time"}
            for r in read_metrics(workdir / "metrics.jsonl")]


@pytest.mark.slow
def test_the_teacher_stays_bitwise_unchanged_and_both_backends_agree(teacher, pmap_run,
                                                                     tmp_path):
    """With feature distillation on, under pmap and sharded over 2 devices: the teacher's
    weights are bitwise what they were, the student's checkpoint holds the student and its
    projection only, and the two backends log the same numbers."""
    from jaxdl.training import loop
    before, files_before, pmap_dir = pmap_run
    summary = loop.train_and_evaluate(_feature_config(teacher, "sharded"), tmp_path / "sharded",
                                      stream=io.StringIO())
    assert summary["steps"] == 6
    for workdir in (pmap_dir, tmp_path / "sharded"):
        student, _ = runs.read_weights(workdir)
        assert set(student["params"]) == {"Conv_0", "Dense_0", "Dense_1", kd.PROJECTION}
        assert student["params"]["Conv_0"]["kernel"].shape[-1] == 2  # the student's, not 4
        assert student["params"][kd.PROJECTION]["Dense_0"]["kernel"].shape == (4, 8)
    after, _ = runs.read_weights(teacher)
    for part in ("params", "model_state"):
        b, a = _flat(before[part]), _flat(after[part])
        assert b.keys() == a.keys()
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert {p: p.read_bytes() for p in teacher.rglob("*") if p.is_file()} == files_before
    pmap, sharded = _records(pmap_dir), _records(tmp_path / "sharded")
    assert [r.keys() for r in pmap] == [r.keys() for r in sharded]
    for p, s in zip(pmap, sharded):
        for key in p:
            if isinstance(p[key], float):
                assert p[key] == pytest.approx(s[key], rel=1e-5, abs=1e-6), key
    final = [r for r in pmap if r["split"] == "test"][-1]
    assert 0 <= final["teacher_agreement"] <= 1 and final["kd_loss"] >= 0


@pytest.mark.slow
def test_an_interrupted_distillation_resumes_bitwise(teacher, pmap_run, tmp_path):
    from jaxdl.training import loop
    from jaxdl.training.errors import RunInterrupted
    config = _feature_config(teacher, "pmap")
    calls = []
    with pytest.raises(RunInterrupted):
        loop.train_and_evaluate(config, tmp_path / "split", stream=io.StringIO(),
                                should_stop=lambda: calls.append(1) or len(calls) == 3)
    assert runs.read_weights(tmp_path / "split")[1] == 3
    loop.train_and_evaluate(config, tmp_path / "split", stream=io.StringIO())
    whole, _ = runs.read_weights(pmap_run[2])
    split, step = runs.read_weights(tmp_path / "split")
    assert step == 6
    w, s = _flat(whole["params"]), _flat(split["params"])
    assert w.keys() == s.keys()
    for key in w:
        np.testing.assert_array_equal(s[key], w[key], err_msg=key)
    # the optimizer state too: read from the checkpoints' full state
    w_state = runs.read_checkpoint(pmap_run[2])[0]["opt_state"]
    s_state = runs.read_checkpoint(tmp_path / "split")[0]["opt_state"]
    for a, b in zip(jax.tree.leaves(w_state), jax.tree.leaves(s_state)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


@pytest.mark.slow
@pytest.mark.parametrize("overrides, match", [
    ({"data.classes": (0, 1, 2, 3, 4), "model.num_classes": 5},
     r"was trained on data.classes=all, the student on \(0, 1, 2, 3, 4\)"),
    ({"data.name": "synthetic", "data.validation_fraction": 0.0, "data.test_fraction": 0.2,
      "data.options": {"kind": "images", "shape": (10, 10, 1), "num_classes": 10,
                       "examples": 200, "validation_examples": 50, "seed": 0}},
     r"its model cannot take the student's inputs of shape \[10, 10, 1\]"),
    ({"data.augmentation": "normalize(mean=(0.5,),std=(0.25,))"},
     "saw its inputs preprocessed by 'none'"),
    ({"task.features": "Dense_0=Dense_9", "task.feature_weight": 0.5},
     "the teacher has no module 'Dense_9'; its modules: Conv_0, Dense_0, "),
], ids=["other_classes", "other_input_shape", "other_normalisation", "unknown_feature"])
def test_a_teacher_of_other_data_is_refused_and_nothing_is_written(teacher, overrides, match,
                                                                    tmp_path):
    _refused(_student_config(teacher, **overrides), tmp_path / "run", match)
