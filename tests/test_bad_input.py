"""Bad input through the real CLI, one case per mistake: exit status 2, exactly one
`error:` line on stderr that names the problem, no traceback, and nothing written.

Every case runs `python -m experiments.<name>` in a subprocess on the 4 forced CPU devices
of conftest.cli_env(). The tmp directory of the case (which holds its --workdir and any
files it set up) is snapshotted before and after: a workdir that did not exist must still
not exist, and every file keeps its bytes. The disk-full cases are the exception: there
the workdir is written by design, and the test checks that a rerun resumes instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FORCED_DEVICES, REPO, cli_env

CNN, MLP = "experiments.digits_cnn", "experiments.digits_mlp"
SHORT = "--config.train.duration=1 epoch"
TIMEOUT = 240
# absl/XLA C++ log lines ("W1121 20:58:01.123 ..."): tolerated, reported as noise.
_NOISE = re.compile(r"^W\d")
# orbax may spread a checkpoint's arrays over several data files, grouped differently from run
# to run (a 5-epoch digits_cnn checkpoint: 463,816 + 120,075 bytes once, 332,790 + 250,336
# another time), so only a limit below the largest single array is sure to stop the write:
# Dense_0's kernel and its two Adam moments are 128 KiB each. With plots off (curves.png is
# 106 KB) every other run file is <= 11 KB (config.json, the checkpoint's _METADATA); a
# compilation-cache entry over the limit only costs JAX a warning.
FILE_SIZE_LIMIT = 64 * 1024
NO_PLOTS = "--config.logging.plot=False"

# The sklearn digits split (1,797 images) with digits_cnn's fractions and split_seed.
TRAIN_EXAMPLES = 1257
STEPS_PER_EPOCH = 19  # 1257 // 64


# --- running the CLI -----------------------------------------------------------------------


def _command(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run(module: str, args: list[str], *, env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(module, args), check=False, cwd=REPO, env=env or cli_env(),
                            capture_output=True, text=True, timeout=TIMEOUT,
                            preexec_fn=preexec_fn)
    _report_noise(result.stderr)
    return result


def _report_noise(stderr: str) -> None:
    """absl/XLA "W<digits>" lines are tolerated, but shown in pytest's warnings summary."""
    for line in stderr.splitlines():
        if _NOISE.match(line):
            warnings.warn(f"absl/XLA noise on stderr: {line[:300]}")


def common_args(workdir: Path | None, cache: Path, *extra: str) -> list[str]:
    """--workdir, the session's compilation cache, no progress bar, 1 epoch; then `extra`,
    whose keys replace the defaults (so a case may set its own train.duration)."""
    keys = {arg.split("=", 1)[0] for arg in extra}
    defaults = [f"--compilation_cache_dir={cache}", "--config.logging.progress=False", SHORT]
    if workdir is not None:
        defaults.insert(0, f"--workdir={workdir}")
    return [arg for arg in defaults if arg.split("=", 1)[0] not in keys] + list(extra)


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # A write past the limit then fails with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return preexec


# --- what a refusal looks like ----------------------------------------------------------

def _describe(result: subprocess.CompletedProcess) -> str:
    return (f"\ncommand: {' '.join(map(str, result.args))}\nexit status: {result.returncode}"
            f"\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}")


def _stderr_lines(result: subprocess.CompletedProcess) -> list[str]:
    lines = []
    for line in result.stderr.splitlines():
        if not line.strip():
            continue
        if not _NOISE.match(line):
            lines.append(line)
    return lines


Needle = str | tuple[str, ...] | re.Pattern


def _found(needle: Needle, line: str) -> bool:
    if isinstance(needle, re.Pattern):
        return needle.search(line) is not None
    if isinstance(needle, tuple):  # any one of the alternatives
        return any(_found(n, line) for n in needle)
    return needle in line


def assert_refused(result: subprocess.CompletedProcess, needles: list[Needle], *,
                   only_line: bool = True) -> str:
    """Exit status 2, no traceback, and one `error:` line holding every needle.

    `only_line`: that line is all of stderr (blank and W-noise lines aside); otherwise it
    is the only `error:` line and the last one (a run that trained printed progress first).
    """
    context = _describe(result)
    assert result.returncode == 2, f"expected exit status 2{context}"
    assert "Traceback" not in result.stderr, f"a traceback on stderr{context}"
    lines = _stderr_lines(result)
    if only_line:
        assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}{context}"
    else:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, f"expected one error: line, got {len(errors)}{context}"
        assert lines[-1] == errors[0], f"the error: line is not the last one{context}"
    line = lines[-1]
    assert line.startswith("error:"), f"the stderr line does not start with 'error:'{context}"
    missing = [n.pattern if isinstance(n, re.Pattern) else n for n in needles
               if not _found(n, line)]
    assert not missing, f"the error line does not name {missing}: {line!r}{context}"
    return line


def snapshot(path: Path) -> dict[str, Any] | None:
    """Every entry under `path`: relative path -> bytes (files), '<dir>', or mode for an
    unreadable dir; None when `path` does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = p.read_bytes() if p.is_file() else (f"<dir {oct(p.stat().st_mode)}>")
    return out


class Problems:
    """Every failed expectation of one case, so the report shows all of them at once."""

    def __init__(self):
        self.found: list[str] = []

    def check(self, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except AssertionError as e:
            self.found.append(str(e))
            return None

    def raise_any(self) -> None:
        if self.found:
            raise AssertionError("\n\n---\n\n".join(self.found))


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One compilation cache for every run of this module: the runs that train share it."""
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="session")
def cnn_reference(tmp_path_factory, cache) -> Path:
    """A complete 1-epoch digits_cnn run (the same command the cases use)."""
    workdir = tmp_path_factory.mktemp("cnn_reference") / "run"
    result = run(CNN, common_args(workdir, cache))
    assert result.returncode == 0, _describe(result)
    return workdir


@dataclasses.dataclass
class Ctx:
    tmp: Path
    workdir: Path
    cache: Path
    request: Any

    def reference(self) -> Path:
        return self.request.getfixturevalue("cnn_reference")


@dataclasses.dataclass
class Case:
    id: str
    extra: list[str] | Callable[[Ctx], list[str]]
    needles: list[Needle] | Callable[[Ctx], list[Needle]]
    module: str = CNN
    setup: Callable[[Ctx], None] | None = None
    env: dict[str, str] | None = None
    workdir_flag: bool = True
    custom: Callable[[Ctx], None] | None = None  # a case with its own flow


# --- set-ups and custom flows ------------------------------------------------------------


def _setup_finished_mlp_run(ctx: Ctx) -> None:
    result = run(MLP, common_args(ctx.workdir, ctx.cache))
    assert result.returncode == 0, "set-up run failed" + _describe(result)


def _setup_unrelated_files(ctx: Ctx) -> None:
    ctx.workdir.mkdir()
    (ctx.workdir / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.3}\n')
    (ctx.workdir / "notes.txt").write_text("keep me\n")


def _setup_workdir_is_file(ctx: Ctx) -> None:
    ctx.workdir.write_text("a regular file\n")


def _setup_parent_is_file(ctx: Ctx) -> None:
    (ctx.tmp / "afile").write_text("a regular file, not a directory\n")


def _setup_unwritable(ctx: Ctx) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root, which can write into a mode 0o500 directory anyway")
    ctx.workdir.mkdir()
    ctx.workdir.chmod(0o500)


def _setup_empty_dir(ctx: Ctx) -> None:
    (ctx.tmp / "empty_dir").mkdir()


def _setup_garbage_config(ctx: Ctx) -> None:
    ctx.workdir.mkdir()
    (ctx.workdir / "config.json").write_text("{ this is not json\n")


def _setup_other_model_checkpoint(ctx: Ctx) -> None:
    """B holds A's checkpoints/ under a config.json that says dense_width=64."""
    reference = ctx.reference()
    ctx.workdir.mkdir()
    shutil.copytree(reference / "checkpoints", ctx.workdir / "checkpoints")
    saved = json.loads((reference / "config.json").read_text())
    assert saved["config"]["model"]["dense_width"] == 128
    saved["config"]["model"]["dense_width"] = 64
    (ctx.workdir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")


def _disk_full_fresh(ctx: Ctx) -> None:
    """The first (and only) checkpoint, at the last step, cannot be written."""
    reference = ctx.reference()  # also warms the compilation cache for this config
    args = common_args(ctx.workdir, ctx.cache, NO_PLOTS)
    problems = Problems()
    result = run(CNN, args, preexec_fn=_limit_file_size(FILE_SIZE_LIMIT))
    problems.check(lambda: assert_refused(result, ["checkpoint", f"step {STEPS_PER_EPOCH}"],
                                          only_line=False))

    rerun = run(CNN, args)
    assert rerun.returncode == 0, "the rerun without the limit failed" + _describe(rerun)
    problems.check(lambda: _assert("resuming" not in rerun.stderr, (
        "no checkpoint was ever committed, yet the rerun resumed" + _describe(rerun))))
    final = json.loads((ctx.workdir / "summary.json").read_text())["final"]
    expected = json.loads((reference / "summary.json").read_text())["final"]
    problems.check(lambda: _assert(final == expected, (
        f"the rerun's final metrics {final} differ from an uninterrupted run's {expected}")))
    problems.raise_any()


def _assert(condition: bool, message: str) -> None:
    assert condition, message


def _disk_full_after_a_checkpoint(ctx: Ctx) -> None:
    """A run stopped (SIGTERM) after step s leaves a checkpoint at s; the resumed run then
    cannot write its next checkpoint; a third run, without the limit, resumes from s."""
    args = common_args(ctx.workdir, ctx.cache, "--config.train.duration=5 epochs", NO_PLOTS)
    total = 5 * STEPS_PER_EPOCH
    proc = subprocess.Popen(_command(CNN, args), cwd=REPO, env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stderr:  # the loop prints "... compiled in Xs" just before step 1
        seen.append(line)
        if "compiled in" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=TIMEOUT)
    stopped = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)
    _report_noise(stopped.stderr)
    assert proc.returncode == 128 + signal.SIGTERM, "set-up: SIGTERM did not stop the run" \
        + _describe(stopped)
    steps = sorted(int(p.name) for p in (ctx.workdir / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps and steps[-1] < total, f"set-up: checkpoints {steps}" + _describe(stopped)
    previous = steps[-1]

    problems = Problems()
    result = run(CNN, args, preexec_fn=_limit_file_size(FILE_SIZE_LIMIT))
    problems.check(lambda: assert_refused(
        result, ["checkpoint", f"step {total}", re.compile(rf"(step |checkpoints/){previous}\b")],
        only_line=False))

    rerun = run(CNN, args)
    assert rerun.returncode == 0, "the rerun without the limit failed" + _describe(rerun)
    problems.check(lambda: _assert(
        f"resuming from the checkpoint at step {previous}" in rerun.stderr,
        f"the rerun did not resume from the checkpoint at step {previous}" + _describe(rerun)))
    problems.raise_any()


# --- the cases -----------------------------------------------------------------------------


def _names(names) -> list[str]:
    return [str(name) for name in names]


def _optimizers():
    from jaxdl.training import optim
    return _names(optim.OPTIMIZERS)


def _schedules():
    from jaxdl.training import optim
    return _names(optim.SCHEDULES)


def _models():
    from jaxdl import models
    return _names(models.model_names())


def _sources():
    from jaxdl.data import registry
    # jaxdl's own: an experiment another test imported into this worker (imbalanced_mnist)
    # may have registered one, which the run in its own process does not know.
    return _names([name for name in registry.source_names()
                   if registry._loader(name).__module__.startswith("jaxdl.")])


def _losses():
    from jaxdl import losses
    return _names(losses.LOSSES)


def _tasks():
    from jaxdl import tasks
    return _names(tasks.task_names())


def _activations():
    from jaxdl.models import layers
    return _names(layers.ACTIVATIONS)


CASES = [
    # 1
    Case("missing_workdir", [], ["--workdir"], workdir_flag=False),
    # 2, 3
    Case("unknown_top_level_key", ["--config.nosuch=1"], ["nosuch"]),
    Case("unknown_nested_key", ["--config.optimizer.lr=0.1"], ["optimizer.lr", "learning_rate"]),
    # 4, 5, 6
    Case("wrong_type", ["--config.data.batch_size=abc"], ["batch_size", "abc"]),
    Case("float_for_int", ["--config.seed=1.5"], ["seed", "1.5"]),
    Case("negative_learning_rate", ["--config.optimizer.learning_rate=-1"],
         ["config.optimizer.learning_rate", "must be"]),
    # 7-11: unknown names list the valid ones
    Case("unknown_optimizer", ["--config.optimizer.name=adamax"],
         lambda ctx: ["config.optimizer.name", "adamax", *_optimizers()]),
    Case("unknown_schedule", ["--config.schedule.name=nosuch_schedule"],
         lambda ctx: ["config.schedule.name", "nosuch_schedule", *_schedules()]),
    Case("unknown_model", ["--config.model.name=resnet9000"],
         lambda ctx: ["config.model.name", "resnet9000", *_models()]),
    Case("unknown_dataset", ["--config.data.name=cifar1000"],
         lambda ctx: ["config.data.name", "cifar1000", *_sources()]),
    Case("unknown_loss", ["--config.task.loss=nosuch_loss"],
         lambda ctx: ["config.task.loss", "nosuch_loss", *_losses()]),
    # 12, 13: devices
    Case("batch_not_divisible_by_devices", ["--config.data.batch_size=66"],
         ["config.data.batch_size", "66", str(FORCED_DEVICES)]),
    Case("more_devices_than_exist", ["--config.parallel.num_devices=8"],
         ["num_devices", "8", str(FORCED_DEVICES)]),
    # 14, 15, 16
    Case("bad_duration", ["--config.train.duration=10 parsecs"],
         ["train.duration", "10 parsecs", "epochs"]),
    Case("eval_fractions_sum_to_one",
         ["--config.data.validation_fraction=0.5", "--config.data.test_fraction=0.5"],
         ["validation_fraction", "test_fraction", "< 1"]),
    Case("train_split_smaller_than_a_batch", ["--config.data.batch_size=4096"],
         [str(TRAIN_EXAMPLES), "4096"]),
    # 17, 18: the monitored split does not exist
    Case("no_eval_split",
         ["--config.data.validation_fraction=0.0", "--config.data.test_fraction=0.0"],
         ["checkpoint.monitor", "validation/accuracy"]),
    Case("monitor_names_an_empty_split", ["--config.data.validation_fraction=0.0"],
         ["checkpoint.monitor", "validation/accuracy", "test"]),
    # 19, 20
    Case("early_stopping_without_best_checkpoint",
         ["--config.early_stopping.patience=3", "--config.checkpoint.keep_best=0"],
         ["early_stopping.patience", "checkpoint.keep_best"]),
    Case("unknown_model_field", ["--config.model.widths=(3,)"], ["model.widths", "dense_width"]),
    # 21-24: the workdir
    Case("workdir_holds_another_run", ["--config.optimizer.learning_rate=0.5"],
         ["optimizer.learning_rate", "--overwrite"], module=MLP,
         setup=_setup_finished_mlp_run),
    # Not a run: --overwrite would not empty it, so the line must not suggest it.
    Case("workdir_holds_unrelated_files", [],
         lambda ctx: [str(ctx.workdir), "holds no jaxdl run", re.compile(r"^(?!.*--overwrite)")],
         setup=_setup_unrelated_files),
    Case("workdir_is_a_file", [], lambda ctx: [str(ctx.workdir), "file"],
         setup=_setup_workdir_is_file),
    Case("workdir_unwritable_mode_500", [], lambda ctx: [str(ctx.workdir)],
         setup=_setup_unwritable),
    Case("workdir_parent_is_a_file",
         lambda ctx: [f"--workdir={ctx.tmp / 'afile' / 'run'}"],
         lambda ctx: [str(ctx.tmp / "afile")], setup=_setup_parent_is_file),
    # 25, 26: weights from elsewhere
    Case("init_from_a_dir_without_a_run",
         lambda ctx: [f"--config.init_from={ctx.tmp / 'empty_dir'}"],
         lambda ctx: ["init_from", str(ctx.tmp / "empty_dir")], setup=_setup_empty_dir),
    Case("checkpoint_of_another_model", ["--config.model.dense_width=64"],
         lambda ctx: ["checkpoint", "shape",
                      (str(ctx.workdir / "checkpoints"), f"step {STEPS_PER_EPOCH}")],
         setup=_setup_other_model_checkpoint),
    # 27: disk full while saving a checkpoint
    Case("disk_full_first_checkpoint", [], [], custom=_disk_full_fresh),
    Case("disk_full_after_a_checkpoint", [], [], custom=_disk_full_after_a_checkpoint),
    # more
    Case("unknown_flag", ["--nosuchflag=1"], ["nosuchflag"]),
    Case("unexpected_positional_argument", ["stray_argument"], ["stray_argument"]),
    Case("not_a_bool", ["--config.logging.plot=maybe"], ["plot", "maybe"]),
    Case("unknown_task", ["--config.task.name=nosuch_task"],
         lambda ctx: ["config.task.name", "nosuch_task", *_tasks()]),
    Case("unknown_checkpoint_mode", ["--config.checkpoint.mode=maximum"],
         ["checkpoint.mode", "maximum", "max", "min"]),
    Case("monitor_without_split", ["--config.checkpoint.monitor=accuracy"],
         ["checkpoint.monitor", "accuracy"]),
    Case("label_smoothing_out_of_range", ["--config.task.label_smoothing=1.5"],
         ["label_smoothing", "1.5"]),
    Case("zero_duration", ["--config.train.duration=0 steps"], ["train.duration", "0 steps"]),
    Case("eval_batch_not_divisible_by_devices", ["--config.data.eval_batch_size=130"],
         ["config.data.eval_batch_size", "130", str(FORCED_DEVICES)]),
    Case("model_import_path_not_found", ["--config.model.name=no_such_pkg.mod:Net"],
         ["config.model.name", "no_such_pkg"]),
    Case("finetune_pattern_matches_no_parameter", ["--config.finetune.trainable=classifier/**"],
         ["finetune.trainable", "'classifier/**'", "matches no parameter", "Conv_0, Conv_1, "
          "Dense_0, Dense_1"]),
    Case("prune_start_after_end", ["--config.prune.final_sparsity=0.5",
                                   "--config.prune.start=8 steps", "--config.prune.end=4 steps",
                                   "--config.prune.every=2 steps"],
         ["config.prune.start", "'8 steps'", "is after prune.end", "'4 steps'"]),
    Case("init_from_a_missing_path",
         lambda ctx: [f"--config.init_from={ctx.tmp / 'no_such_run'}"],
         lambda ctx: ["init_from", str(ctx.tmp / "no_such_run")]),
    Case("workdir_with_unreadable_config_json", [], lambda ctx: [str(ctx.workdir), "config.json"],
         setup=_setup_garbage_config),
    # a metric the task does not report: refused before the workdir exists (it used to end
    # in a traceback at the first evaluation, and the corrected rerun was then refused)
    Case("monitor_names_an_unknown_metric", ["--config.checkpoint.monitor=validation/acc"],
         ["config.checkpoint.monitor", "'acc'", "validation/accuracy", "test/loss"]),
    Case("monitor_names_a_metric_that_needs_a_classifier", [],
         ["config.checkpoint.monitor", "frechet_distance", "config.task.fd_classifier",
          "validation/g_loss"], module="experiments.mnist_dcgan"),
    # model fields: choices, ranges and sequences
    Case("model_activation_unknown", ["--config.model.activation=swish"],
         lambda ctx: ["config.model.activation", "'swish'", *_activations()]),
    Case("model_pooling_unknown", ["--config.model.pooling=foo"],
         ["config.model.pooling", "'foo'", "avg", "max"]),
    Case("model_features_element_not_an_int", ["--config.model.features=[32,64,x]"],
         ["config.model.features", "'x'", "not an int"]),
    Case("model_dropout_rate_above_one", ["--config.model.dropout_rate=1.5"],
         ["config.model.dropout_rate", "1.5", "[0, 1)"]),
    Case("model_dropout_rate_negative", ["--config.model.dropout_rate=-0.5"],
         ["config.model.dropout_rate", "-0.5", "[0, 1)"]),
    Case("model_width_zero", ["--config.model.dense_width=0"],
         ["config.model.dense_width", "> 0"]),
    Case("one_cycle_with_a_warmup",
         ["--config.schedule.name=one_cycle", "--config.schedule.warmup=3 steps"],
         ["config.schedule.warmup", "'one_cycle' does not read it", "pct_start"]),
    Case("deterministic_conflicts_with_xla_flags", ["--deterministic"],
         ["--deterministic", "xla_gpu_deterministic_ops"],
         env={"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
              + " --xla_gpu_deterministic_ops=false"}),
    # seq2seq: sources wider than the model takes (the dates experiment's are 29 wide)
    Case("seq2seq_source_longer_than_the_model_maximum",
         ["--config.model.max_source_length=10"],
         ["sources of length 29", "config.model.max_source_length=10"],
         module="experiments.dates_seq2seq"),
]


# The cases that train to a checkpoint first are in the slow tier (each 10-30 s of CPU).
SLOW_CASES = {"disk_full_after_a_checkpoint", "disk_full_first_checkpoint",
              "checkpoint_of_another_model", "workdir_holds_another_run",
              "prune_start_after_end"}


@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.id in SLOW_CASES else [])
    for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, cache: Path, request):
    ctx = Ctx(tmp=tmp_path, workdir=tmp_path / "run", cache=cache, request=request)
    if case.custom is not None:
        case.custom(ctx)
        return
    if case.setup is not None:
        case.setup(ctx)
    extra = case.extra(ctx) if callable(case.extra) else case.extra
    needles = case.needles(ctx) if callable(case.needles) else case.needles
    # Without --workdir the command never sees tmp_path: where it could write is its cwd
    # (the repo) and the compilation cache.
    def where():
        if case.workdir_flag:
            return snapshot(tmp_path)
        return {"cwd": sorted(p.name for p in REPO.iterdir()), "cache": snapshot(cache)}

    before = where()
    env = {**cli_env(), **case.env} if case.env else None
    result = run(case.module, common_args(ctx.workdir if case.workdir_flag else None,
                                          cache, *extra), env=env)
    problems = Problems()
    problems.check(lambda: assert_refused(result, needles))
    after = where()
    if ctx.workdir.is_dir():
        ctx.workdir.chmod(0o700)  # let pytest clean up the mode-0o500 case
    problems.check(lambda: _assert(after == before, (
        "the refused run wrote or changed files: " + _changes(before, after)
        + _describe(result))))
    problems.raise_any()


def _changes(before, after) -> str:
    before, after = before or {}, after or {}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added[:10]}, removed {removed[:10]}, changed {changed[:10]}"
