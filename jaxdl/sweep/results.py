"""A sweep's results: DIR/results.md and results.csv, one row per trial sorted by the
objective (a validation metric; the best finished trial marked), and two figures: the
objective against each hyperparameter, and parallel coordinates. Rewritten from the
trials' records whenever a trial finishes; `python -m jaxdl.sweep report DIR` prints it."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from jaxdl import plots
from jaxdl.sweep.space import TEST_SPLIT

RESULTS_MD, RESULTS_CSV = "results.md", "results.csv"
OBJECTIVE_PNG, PARALLEL_PNG = "objective_vs_params.png", "parallel_coordinates.png"
_STATUS_ORDER = ("complete", "pruned", "failed", "running")
# A numeric grid axis spanning this ratio or more is drawn on a log scale.
_LOG_RATIO = 100.0


def sort_records(records: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Finished trials best first, then pruned, failed and running ones (by id)."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r):
        value = r.get("objective")
        rank = _STATUS_ORDER.index(r["status"]) if r["status"] in _STATUS_ORDER else 9
        return (rank, sign * value if value is not None else math.inf, r["id"])

    return sorted(records, key=key)


def _metric_keys(records) -> list[str]:
    """Every metric of the runs: validation ones first, the test split's last."""
    keys = {k for r in records for k in r.get("metrics", {})}
    return sorted(keys, key=lambda k: (k.startswith(TEST_SPLIT), k))


def _mean_std(cell: dict[str, float] | None, runs: int) -> str:
    if not cell:
        return ""
    return f"{cell['mean']:.4f}" + (f" ± {cell['std']:.4f}" if runs > 1 else "")


def _short(value: str) -> str:
    """A long number (a sampled float) to 3 significant digits; results.csv keeps it exact."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 6 else f"{number:.3g}"


def table(spec: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The Markdown table of `records` (sorted), with a line saying what it shows."""
    records = sort_records(records, spec["direction"])
    keys = [k for k, _ in spec["grid"]] + [k for k, _ in spec["optuna"]]
    metrics = _metric_keys(records)
    objective = spec["objective"]
    metrics = [objective] + [m for m in metrics if m != objective]
    runs = max(1, spec["folds"] or 1) * spec["seeds"]
    header = ["", "trial", "status", *keys, *metrics, "steps", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(records):
        best = "best" if i == 0 and r["status"] == "complete" else ""
        values = [_mean_std(r.get("metrics", {}).get(m), runs) for m in metrics]
        if "pruned_at" in r:  # what the pruner saw
            values[0] = f"({r['pruned_at']['value']:.4f} at step {r['pruned_at']['step']})"
        cells = [best, r["id"], r["status"], *(_short(r["params"].get(k, "")) for k in keys),
                 *values,
                 str(r.get("steps", "")), f"{r.get('wall_seconds', 0.0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    what = (f"{runs} runs per trial (" + ", ".join(
        ([f"{spec['folds']}-fold stratified CV"] if spec["folds"] else []) +
        ([f"{spec['seeds']} seeds"] if spec["seeds"] > 1 else [])) + "): mean ± std (ddof=0)"
        if runs > 1 else "one run per trial")
    return (f"Sweep of `{spec['experiment']}`: {len(records)} trials, {what}, final "
            f"evaluation; sorted by {objective} ({spec['direction']}); the test split is "
            "shown, never used to sort.\n\n" + "\n".join(lines) + "\n")


def csv_text(spec: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """results.csv: the table's rows with exact floats (repr), one column per statistic."""
    records = sort_records(records, spec["direction"])
    keys = [k for k, _ in spec["grid"]] + [k for k, _ in spec["optuna"]]
    metrics = _metric_keys(records)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "status", "best", *keys,
                     *(f"{m} {s}" for m in metrics for s in ("mean", "std")),
                     "steps", "wall_seconds"])
    for i, r in enumerate(records):
        cells = r.get("metrics", {})
        writer.writerow([r["id"], r["status"], int(i == 0 and r["status"] == "complete"),
                         *(r["params"].get(k, "") for k in keys),
                         *(repr(cells[m][s]) if m in cells else "" for m in metrics
                           for s in ("mean", "std")),
                         r.get("steps", ""), f"{r.get('wall_seconds', 0.0):.1f}"])
    return out.getvalue()


def _is_log(spec: dict[str, Any], key: str, values: list[str]) -> bool:
    optuna = dict(spec["optuna"])
    if key in optuna:
        return dict(optuna[key])["kind"] == "log"
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return False
    return min(numbers) > 0 and max(numbers) / min(numbers) >= _LOG_RATIO


def write(directory: Path, spec: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Rewrites results.md, results.csv and the two figures (these from finished trials)."""
    (directory / RESULTS_MD).write_text(table(spec, records))
    (directory / RESULTS_CSV).write_text(csv_text(spec, records))
    done = [r for r in records if r["status"] == "complete"]
    keys = [k for k, _ in spec["grid"]] + [k for k, _ in spec["optuna"]]
    if not done or not keys:
        return
    objective = [r["objective"] for r in done]
    axes = [(k, [r["params"][k] for r in done],
             _is_log(spec, k, [r["params"][k] for r in done])) for k in keys]
    title = f"{spec['experiment']}: {len(done)} finished trials"
    plots.scatter_panels_png(axes, objective, directory / OBJECTIVE_PNG,
                             ylabel=spec["objective"], title=title)
    plots.parallel_coordinates_png(axes + [(spec["objective"], objective, False)], objective,
                                   directory / PARALLEL_PNG, color_label=spec["objective"],
                                   title=title)


def load(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(spec, records) of the sweep in `directory`."""
    from jaxdl.sweep import study
    spec = json.loads((directory / study.SPEC_FILENAME).read_text())
    records = [json.loads(p.read_text())
               for p in sorted((directory / study.TRIALS_DIRNAME).glob("*.json"))]
    return spec, records
