"""Checkpoints: one small API of ours over orbax-checkpoint.

A checkpoint holds the whole run: the TrainState (params, batch statistics, optimizer state
with its schedule count, step, rng) as host arrays, so it restores on any device count and
either parallel backend, and the loop's progress (partial metric sums since the last log,
best eval so far) as JSON. The data position needs no field: batch order is a pure
function of (seed, step). Saving is synchronous and atomic (orbax writes to a temporary
directory and renames it), so the latest step on disk is always a complete one. No pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

# Re-exported: the loop and the tests read them from here.
from jaxdl.runs import PROGRESS, STATE, CheckpointError, read_weights  # noqa: F401


class _OrbaxErrorsRaisedNotLogged(logging.Filter):
    """While saving, orbax's background threads log each failure with a traceback before
    the same error reaches us; we raise it as one line, so their log records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)

    def __enter__(self):
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc_info):
        for handler in self._handlers:
            handler.removeFilter(self)


def host_target(abstract_state) -> Any:
    """Zeros shaped like `abstract_state` (from jax.eval_shape): the restore target, so every
    container type (optax NamedTuples, the TrainState) comes back exactly."""
    return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)


class Checkpoints:
    """Keeps the last `keep_last` checkpoints plus the best `keep_best` by a monitored value."""

    def __init__(self, directory: str | Path, *, keep_last: int, keep_best: int,
                 best_mode: str):
        keep = [policies.LatestN(n=keep_last)]
        if keep_best:
            # Ties go to the earlier step, the one the run chose (early stopping and the
            # test-at-best report restore it); orbax's stable sort kept the later one.
            sign = 1 if best_mode == "min" else -1
            keep.append(policies.BestN(
                get_metric_fn=lambda m: (m["monitor"], sign * m.get("step", 0)),
                reverse=best_mode == "min", n=keep_best,
                keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=False, create=True)
        self.directory = Path(directory).absolute()  # orbax needs an absolute path
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=(STATE, PROGRESS))

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, host_state, progress: dict[str, Any], *,
             monitor: float | None = None) -> None:
        """Writes and commits step `step`; returns when it is complete on disk."""
        metrics = None if monitor is None else {"monitor": float(monitor), "step": step}
        with _OrbaxErrorsRaisedNotLogged():
            self._manager.save(step, args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(host_state),
                   PROGRESS: ocp.args.JsonSave(progress)}), metrics=metrics, force=True)
            self._manager.wait_until_finished()

    def restore(self, abstract_state, *, step: int | None = None):
        """(host state, progress, step) of `step`, or of the latest readable checkpoint.

        A truncated or corrupt latest checkpoint is reported once and the previous
        committed one is used instead.
        """
        candidates = [step] if step is not None else self.steps()[::-1]
        target = host_target(abstract_state)
        failures = []
        for candidate in candidates:
            try:
                restored = self._manager.restore(candidate, args=ocp.args.Composite(
                    **{STATE: ocp.args.StandardRestore(target),
                       PROGRESS: ocp.args.JsonRestore()}))
            except Exception as e:  # orbax raises many types for a damaged directory
                failures.append((candidate, f"{type(e).__name__}: {_first_line(e)}"))
                continue
            # orbax fills a numpy target with whatever shapes were saved: check them here.
            mismatch = _shape_mismatch(restored[STATE], abstract_state)
            if mismatch:
                failures.append((candidate, mismatch))
                continue
            if failures:  # said once, and only when an earlier checkpoint saved the run
                logging.warning("checkpoint(s) at step %s unreadable (%s); using step %d",
                                ", ".join(str(s) for s, _ in failures), failures[0][1],
                                candidate)
            return restored[STATE], restored[PROGRESS], candidate
        raise CheckpointError(
            f"no checkpoint in {self.directory} fits this run's state (a different model or "
            "a damaged directory): " + (f"step {failures[0][0]}: {failures[0][1]}"
                                        if failures else "none saved"))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _shape_mismatch(restored, abstract) -> str | None:
    """'path: saved (..) vs expected (..)' for the first leaf whose shape or dtype differs."""
    got = jax.tree_util.tree_flatten_with_path(restored)[0]
    want = jax.tree_util.tree_flatten_with_path(abstract)[0]
    if len(got) != len(want):
        return f"saved {len(got)} arrays, this run's state has {len(want)}"
    for (path, a), (_, b) in zip(got, want):
        if np.shape(a) != tuple(b.shape) or np.asarray(a).dtype != np.dtype(b.dtype):
            return (f"shape mismatch at {jax.tree_util.keystr(path)}: saved "
                    f"{np.asarray(a).dtype}{list(np.shape(a))}, this run expects "
                    f"{np.dtype(b.dtype)}{list(b.shape)}")
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else "")[:300]


def merge_by_path(target, source) -> tuple[Any, dict[str, Any]]:
    """`target` with every leaf that `source` has at the same path and shape replaced.

    Returns the merged tree and a report: how many arrays were loaded, and the paths that
    are missing from `source`, unexpected in it, or of another shape (those keep `target`'s).
    """
    from flax import traverse_util

    flat_target = traverse_util.flatten_dict(target, sep="/")
    flat_source = traverse_util.flatten_dict(source, sep="/") if source else {}
    merged, report = {}, {"loaded": 0, "missing": [], "unexpected": [], "mismatched": []}
    for key, value in flat_target.items():
        if key not in flat_source:
            report["missing"].append(key)
            merged[key] = value
        elif np.shape(flat_source[key]) != np.shape(value):
            report["mismatched"].append(
                f"{key} {np.shape(flat_source[key])} vs {np.shape(value)}")
            merged[key] = value
        else:
            merged[key] = np.asarray(flat_source[key], dtype=np.asarray(value).dtype)
            report["loaded"] += 1
    report["unexpected"] = sorted(set(flat_source) - set(flat_target))
    return traverse_util.unflatten_dict(merged, sep="/"), report
