"""Learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3; fastai's
`lr_find`, Lightning's `LearningRateFinder`): one short ordinary run of the experiment's
own model, data and optimizer whose rate grows exponentially from `min_lr` to `max_lr`,
the train loss logged at every step; the suggestion is the rate where the smoothed loss
falls fastest (Lightning's), with fastai's "minimum / 10" beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl import plots, runs

# fastai's choices: the loss is smoothed by an exponential moving average with this
# factor (bias-corrected), and the test counts as diverged past this multiple of the best.
SMOOTHING = 0.98
DIVERGED = 4.0
RUN_DIRNAME, PLOT_FILENAME, RESULT_FILENAME = "run", "lr_find.png", "lr_find.json"


def overrides(steps: int, min_lr: float, max_lr: float) -> list[str]:
    """--config overrides that turn an experiment's run into the range test: `steps`
    steps, the rate multiplied by max_lr / min_lr over them, the loss logged every step,
    one evaluation and one checkpoint at the end, no early stop."""
    return [f"--config.train.duration={steps} steps", "--config.train.log_every=1 step",
            f"--config.train.eval_every={steps} steps", f"--config.checkpoint.every={steps} steps",
            "--config.early_stopping.patience=0", "--config.schedule.name=exponential",
            "--config.schedule.warmup=0 steps", f"--config.schedule.decay_every={steps} steps",
            f"--config.schedule.decay_factor={max_lr / min_lr!r}",
            f"--config.optimizer.learning_rate={min_lr!r}"]


def read_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(learning rates, train losses) per logged step of the run in `run_dir`."""
    rows = [json.loads(line) for line in (run_dir / runs.METRICS_FILENAME).read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if r.get("split") == "train" and "learning_rate" in r]
    return (np.array([r["learning_rate"] for r in rows], np.float64),
            np.array([np.nan if r["loss"] is None else r["loss"] for r in rows], np.float64))


def suggest(rates: np.ndarray, losses: np.ndarray) -> dict[str, Any]:
    """The smoothed curve up to divergence, and the steepest-descent and minimum/10 rates."""
    smoothed, average = [], 0.0
    for i, loss in enumerate(losses):
        if not np.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        if smoothed[-1] > DIVERGED * min(smoothed):
            break
    smoothed = np.array(smoothed)
    if len(smoothed) < 3:
        raise ValueError(f"the loss diverged within {len(smoothed)} steps; lower the minimum "
                         "learning rate")
    kept = rates[:len(smoothed)]
    slope = np.gradient(smoothed, np.log(kept))
    return {"steepest": float(kept[int(np.argmin(slope))]),
            "minimum_over_10": float(kept[int(np.argmin(smoothed))] / 10),
            "rates": kept.tolist(), "smoothed_loss": smoothed.tolist()}


def report(directory: Path, experiment: str) -> dict[str, Any]:
    """Writes the plot and lr_find.json in `directory` from its finished range-test run."""
    rates, losses = read_curve(directory / RUN_DIRNAME)
    found = suggest(rates, losses)
    plots.curve_png(found["rates"], found["smoothed_loss"], directory / PLOT_FILENAME,
                    xlabel="learning rate", ylabel="train loss (smoothed)", log_x=True,
                    marks=[(found["steepest"], "steepest"),
                           (found["minimum_over_10"], "min/10")],
                    title=f"{experiment}: learning-rate range test")
    (directory / RESULT_FILENAME).write_text(json.dumps(found, indent=2) + "\n")
    return found
