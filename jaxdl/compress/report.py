"""One table of a trained classifier at fp32, bf16 (weights cast) and int8 (Qwix PTQ):
parameter count, non-zero count, bytes, accuracy on a split and the latency of one batch on
this machine's first device."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import qwix

from jaxdl import runs
from jaxdl.compress import quantize as quantize_lib
from jaxdl.schema import ConfigError
from jaxdl.trained import TrainedRun

VARIANTS = ("fp32", "bf16", "int8")
TOOL = "compress"  # WORKDIR/analysis/compress/ holds the report by default
JSON_NAME, MARKDOWN_NAME = "report.json", "report.md"


def _values(leaf) -> np.ndarray:
    """A parameter's stored values: a quantized kernel (Qwix's WithAux holding a QArray)
    by its int8 values, anything else as it is."""
    leaf = getattr(leaf, "array", leaf)
    return np.asarray(getattr(leaf, "qvalue", leaf))


def footprint(variables: dict[str, Any], params: dict[str, Any]) -> dict[str, int]:
    """`parameters`: the elements of the trained `params`; `nonzero`: how many of them are
    non-zero as `variables` store them (a pruned run's zeros, and the weights int8 rounds
    to 0); `bytes`: every array `variables` holds (params, int8 scales, activation scales,
    BatchNorm statistics): what serving the model needs."""
    stored = flax.traverse_util.flatten_dict(dict(variables["params"]))
    counted = nonzero = 0
    for path, original in flax.traverse_util.flatten_dict(dict(params)).items():
        counted += np.size(original)
        nonzero += int(np.count_nonzero(_values(stored[path])))
    size = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(variables))
    return {"parameters": int(counted), "nonzero": nonzero, "bytes": int(size)}


def latency(run: TrainedRun, inputs: np.ndarray, repeats: int) -> float:
    """Median seconds of one compiled eval-mode forward pass over `inputs` (one batch, the
    run's preprocessing included) on the first local device, after one untimed call that
    compiles and warms up; each call waits for its result."""
    forward = jax.jit(lambda v, x: run.task.run_model(v, run.preprocess(x), train=False,
                                                      rng=run.rng)[0])
    device = jax.local_devices()[0]
    variables, batch = jax.device_put((run.variables, inputs), device)
    jax.block_until_ready(forward(variables, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(variables, batch))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def require_finished(workdir) -> None:
    """ConfigError (one line) unless the run in `workdir` finished (its summary written)."""
    if not runs.RunDir(Path(workdir).expanduser()).is_complete():
        raise ConfigError(f"{workdir} is not a finished run (it has no "
                          f"{runs.SUMMARY_FILENAME}); compress a finished run")


def check(run: TrainedRun, *, split: str, batch: int, repeats: int) -> np.ndarray:
    """The latency batch (the split's first `batch` examples), or ConfigError (one line)
    for a run or setting the report cannot take."""
    require_finished(run.workdir)
    if run.config.task.name != "classification":
        raise ConfigError(f"the compression report needs a classification run (it reports "
                          f"accuracy); the run in {run.workdir} is a "
                          f"{run.config.task.name!r} run")
    if batch < 1 or repeats < 1:
        raise ConfigError(f"batch={batch}, repeats={repeats}: give at least 1 of each")
    data = run.dataset(split)
    if len(data) < batch:
        raise ConfigError(f"batch={batch}: the {split} split of the run in {run.workdir} has "
                          f"{len(data)} examples; give a batch of at most that many")
    return np.asarray(data.take(np.arange(batch))["inputs"])


def report(run: TrainedRun, *, split: str, batch: int, repeats: int,
           calibration_examples: int, seed: int) -> dict[str, Any]:
    """The table's rows (one per VARIANTS) and what they were measured on. int8 is
    calibrated on a seeded subset of `calibration_examples` TRAIN examples (in batches of
    the run's data.eval_batch_size: Qwix averages per-example statistics, so the grouping
    changes nothing but memory and speed); latency is timed on batches of `batch`."""
    inputs = check(run, split=split, batch=batch, repeats=repeats)
    calibration = quantize_lib.calibration_batches(run, calibration_examples,
                                                   run.config.data.eval_batch_size, seed)
    start = time.perf_counter()
    int8 = quantize_lib.quantize(run, calibration)
    quantize_seconds = time.perf_counter() - start
    variants = {"fp32": quantize_lib.cast(run, np.float32),
                "bf16": quantize_lib.cast(run, jnp.bfloat16), "int8": int8}
    rows = []
    for name in VARIANTS:
        variant = variants[name]
        metrics = variant.evaluate(split)
        rows.append({"variant": name,
                     **footprint(variant.variables, run.variables["params"]),
                     "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                     "latency_ms": 1e3 * latency(variant, inputs, repeats)})
    device = jax.local_devices()[0]
    return {"run": str(run.workdir), "checkpoint": run.checkpoint, "step": int(run.step),
            "split": split, "examples": int(len(run.dataset(split))), "batch": batch,
            "repeats": repeats, "seed": seed,
            "calibration": {"split": "train",
                            "examples": int(sum(len(b) for b in calibration)),
                            "batches": len(calibration)},
            "quantize_seconds": quantize_seconds,  # calibration + weight quantization
            "machine": {"device": device.device_kind, "platform": device.platform,
                        "cpus": os.cpu_count(), "system": platform.platform(),
                        "jax": jax.__version__, "qwix": qwix.__version__},
            "rows": rows}


def markdown(table: dict[str, Any]) -> str:
    """The report as a Markdown table with a line that says what it measured."""
    fp32 = next(r["bytes"] for r in table["rows"] if r["variant"] == "fp32")
    lines = [f"| variant | parameters | non-zero | bytes | vs fp32 | {table['split']} accuracy "
             f"| latency, batch {table['batch']} (ms) |",
             "|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['variant']} | {r['parameters']:,} | {r['nonzero']:,} | "
                     f"{r['bytes']:,} | {r['bytes'] / fp32:.3f} | {r['accuracy']:.4f} | "
                     f"{r['latency_ms']:.2f} |")
    m, c = table["machine"], table["calibration"]
    lines.append("")
    lines.append(f"Run {table['run']} ({table['checkpoint']} checkpoint, step {table['step']}); "
                 f"{table['examples']:,} {table['split']} examples; int8 calibrated on "
                 f"{c['examples']:,} train examples; latency: median of {table['repeats']} "
                 f"calls after a warm-up, on {m['platform']} ({m['device']}, {m['cpus']} "
                 f"CPUs), jax {m['jax']}, qwix {m['qwix']}.")
    return "\n".join(lines) + "\n"


def write(table: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """report.json and report.md in `folder` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    as_json, as_md = folder / JSON_NAME, folder / MARKDOWN_NAME
    as_json.write_text(json.dumps(runs.finite_or_null(table), indent=2, allow_nan=False)
                       + "\n")
    as_md.write_text(markdown(table))
    return as_json, as_md


def default_folder(run: TrainedRun) -> Path:
    """WORKDIR/analysis/compress: inside the run's own entries (--overwrite removes it)."""
    return Path(run.workdir) / runs.ANALYSIS_DIRNAME / TOOL
