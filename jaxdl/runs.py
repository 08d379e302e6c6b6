"""A run's workdir: every name a run writes there, whether it is complete, and reading a
finished (or checkpointed) run's config and latest weights. Below training and tasks, so a
task may use another run's model (a classifier that scores generated samples, a teacher)
without importing the training package, and take its file names from here."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

# The items of every checkpoint step: the TrainState and the loop's progress.
STATE, PROGRESS = "state", "progress"

# What the loop writes.
CONFIG_FILENAME = "config.json"
ENV_FILENAME = "env.json"
METRICS_FILENAME = "metrics.jsonl"
METRICS_CSV_FILENAME = "metrics.csv"  # with logging.csv: metrics.jsonl as a table
METRICS_CSV_TMP_FILENAME = ".metrics.csv.tmp"  # written, then renamed to metrics.csv
# The completion marker: written last (atomically, through its temporary name), after the
# final checkpoint, plots and every task file, so a run killed before it is resumed.
SUMMARY_FILENAME = "summary.json"
SUMMARY_TMP_FILENAME = ".summary.json.tmp"
CURVES_FILENAME = "curves.png"
PREVIEW_FILENAME = "augmentation_preview.png"
TENSORBOARD_DIRNAME = "tensorboard"
CHECKPOINTS_DIRNAME = "checkpoints"
# jax.profiler traces (logging.profile_steps): TensorBoard's profile plugin and xprof list
# <this>/plugins/profile/<run>/<host>.xplane.pb; open with --logdir=<workdir>/profile.
PROFILE_DIRNAME = "profile"
# What tasks write after an evaluation (`Task.on_eval`).
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
# Classification with task.split_metrics / positive_class / operating_point.
CLASSIFICATION_REPORT_JSON = "classification_report.json"
ROC_PNG, PR_PNG = "roc.png", "precision_recall.png"
RELIABILITY_PNG = "reliability.png"
OPERATING_POINT_PNG = "confusion_at_operating_point.png"
HYDROGRAPH_PNG = "hydrograph.png"
# With logging.mlflow: the MLflow run this workdir logs to, so a resumed run continues it.
MLFLOW_RUN_FILENAME = "mlflow_run_id"
SAMPLES_TXT = "samples.txt"  # sequence models: generated text
SAMPLES_PNG = "samples.png"  # GANs: the latest grid of samples
SAMPLES_DIRNAME = "samples"  # GANs: every grid, by step
ATTENTION_PNG = "attention.png"  # seq2seq with attention: weights of a few test examples
TRANSLATIONS_TXT = "translations.txt"  # seq2seq: those examples decoded
IMAGES_DIRNAME = "images"  # autoencoders: reconstructions, samples, embeddings by step
# word2vec, after the final evaluation: the vectors (word2vec text format), the neighbours
# and analogies of the words asked about, and a PCA map of the most frequent words.
VECTORS_TXT, NEIGHBOURS_TXT, WORDS_PCA_PNG = "vectors.txt", "neighbours.txt", "words_pca.png"
# What `python -m jaxdl.analysis TOOL` writes (analysis/TOOL/): it describes this run's
# weights, so --overwrite removes it with them.
ANALYSIS_DIRNAME = "analysis"

# Every top-level name a jaxdl run may create in its workdir: --overwrite removes these and
# nothing else. A new file a run writes must be named here.
RUN_ENTRIES = frozenset({
    CONFIG_FILENAME, ENV_FILENAME, METRICS_FILENAME, METRICS_CSV_FILENAME,
    METRICS_CSV_TMP_FILENAME, SUMMARY_FILENAME, SUMMARY_TMP_FILENAME,
    CURVES_FILENAME, PREVIEW_FILENAME, TENSORBOARD_DIRNAME, CHECKPOINTS_DIRNAME, PROFILE_DIRNAME,
    CONFUSION_JSON, CONFUSION_PNG, MISCLASSIFIED_PNG, HYDROGRAPH_PNG, SAMPLES_TXT, SAMPLES_PNG,
    SAMPLES_DIRNAME, IMAGES_DIRNAME, CLASSIFICATION_REPORT_JSON, ROC_PNG, PR_PNG,
    RELIABILITY_PNG, OPERATING_POINT_PNG, ANALYSIS_DIRNAME, MLFLOW_RUN_FILENAME,
    VECTORS_TXT, NEIGHBOURS_TXT, WORDS_PCA_PNG, ATTENTION_PNG, TRANSLATIONS_TXT})


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The workdir of a run, by its file names."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILENAME

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILENAME

    @property
    def profile(self) -> Path:
        """Where jax.profiler writes its traces (the directory given to start_trace)."""
        return self.path / PROFILE_DIRNAME

    def looks_like_run(self) -> bool:
        """A run writes its config.json and metrics.jsonl first of all."""
        return self.config.is_file() or (self.path / METRICS_FILENAME).is_file()

    def is_complete(self) -> bool:
        """The run finished: its summary.json, written last of all its files, exists."""
        return self.summary.is_file()

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Marks the run complete: call it after every other final file is written. The
        rename is atomic, so summary.json is never seen half-written."""
        tmp = self.path / SUMMARY_TMP_FILENAME
        tmp.write_text(json.dumps(finite_or_null(summary), indent=2, allow_nan=False) + "\n")
        tmp.replace(self.summary)

    def mark_incomplete(self) -> None:
        """Removes the completion marker of a run that is about to train further."""
        self.summary.unlink(missing_ok=True)

    def foreign_entries(self) -> list[str]:
        """Names in the workdir that no jaxdl run writes, sorted."""
        return sorted(p.name for p in self.path.iterdir() if p.name not in RUN_ENTRIES)

    def clear(self) -> None:
        """Removes every entry a run writes, and only those: the directory stays. A link
        is removed, never followed."""
        for entry in sorted(self.path.iterdir()):
            if entry.name not in RUN_ENTRIES:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


def read_weights(path: str | Path, *, role: str = "init_from") -> tuple[dict[str, Any], int]:
    """(`params` and `model_state` as nested dicts of arrays, step) of the latest checkpoint
    of another run: `path` is its workdir or its checkpoints directory. `role` names the
    setting that pointed here, for the error message."""
    state, _, step = read_checkpoint(path, role=role)
    return {"params": state["params"], "model_state": state.get("model_state", {})}, step


def checkpoint_steps(path: str | Path, *, role: str = "init_from") -> list[int]:
    """The saved steps, ascending, of the run whose workdir (or checkpoints directory) is
    `path`; CheckpointError when it holds none."""
    directory = _checkpoints_dir(path)
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
        if directory.is_dir() else []
    if not steps:
        raise CheckpointError(f"{role}={str(Path(path).expanduser().absolute())!r} holds no "
                              "jaxdl checkpoint; give the --workdir of a finished or "
                              "checkpointed run")
    return steps


def read_checkpoint(path: str | Path, step: int | None = None, *, role: str = "init_from",
                    state: bool = True) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(the TrainState's fields as nested dicts of host arrays, the loop's progress record,
    step) of checkpoint `step` (None: the latest) of the run at `path`. With `state=False`
    only the progress record is read (the state comes back empty)."""
    steps = checkpoint_steps(path, role=role)
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(f"{role}={str(Path(path).expanduser().absolute())!r} has no "
                              f"checkpoint at step {step}; saved steps: "
                              f"{', '.join(map(str, steps))}")
    # save_interval_steps and create set as read_only implies, or orbax warns it sets them.
    manager = ocp.CheckpointManager(_checkpoints_dir(path), item_names=(STATE, PROGRESS),
                                    options=ocp.CheckpointManagerOptions(
                                        read_only=True, save_interval_steps=0, create=False))
    try:
        items = {PROGRESS: ocp.args.JsonRestore()}
        if state:
            items[STATE] = ocp.args.StandardRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    finally:
        manager.close()
    return (dict(restored[STATE]) if state else {}), dict(restored[PROGRESS] or {}), step


def best_step(path: str | Path, *, role: str = "init_from") -> int:
    """The step of the best checkpoint (the one `checkpoint.monitor` chose on validation,
    recorded in the latest checkpoint's progress) of the run at `path`; CheckpointError
    when it has none yet or did not keep it."""
    steps = checkpoint_steps(path, role=role)
    _, progress, _ = read_checkpoint(path, role=role, state=False)
    best = (progress.get("early_stopping") or {}).get("best_step")
    where = str(Path(path).expanduser().absolute())
    if best is None:
        raise CheckpointError(f"{role}={where!r}: the run has no best checkpoint yet (no "
                              "evaluation of its checkpoint.monitor)")
    if best not in steps:
        raise CheckpointError(f"{role}={where!r}: its best checkpoint (step {best}) was not "
                              "kept (checkpoint.keep_best=0); saved steps: "
                              f"{', '.join(map(str, steps))}")
    return best


def _checkpoints_dir(path: str | Path) -> Path:
    path = Path(path).expanduser().absolute()
    return path / CHECKPOINTS_DIRNAME if (path / CHECKPOINTS_DIRNAME).is_dir() else path


def read_config(path: str | Path, *, role: str) -> dict[str, Any]:
    """The resolved config (a nested dict) a run saved in its workdir `path`."""
    file = Path(path).expanduser().absolute() / CONFIG_FILENAME
    if not file.is_file():
        raise CheckpointError(f"{role}={str(file.parent)!r} holds no {CONFIG_FILENAME}; give "
                              "the --workdir of a jaxdl run")
    return json.loads(file.read_text())["config"]


def finite_or_null(tree):
    """`tree` with NaN and infinities as None: JSON has no NaN (Python writes a bare `NaN`
    that strict readers reject)."""
    if isinstance(tree, dict):
        return {k: finite_or_null(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite_or_null(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
