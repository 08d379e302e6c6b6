"""Sequence regression: squared error on a normalised target, skill in original units.

`sequence_regression` trains on the per-example squared error of the normalised target
(what the data source stores) and reports `mse` in the target's original units, using the
source's `metadata['target_mean']` / `['target_std']` (a source without them is taken as
unnormalised). After each evaluation it scores every eval split as a whole with the
Nash-Sutcliffe efficiency (`nse`, 1 = perfect, 0 = no better than the split's own mean),
and next to it `baseline_nse`: ordinary least squares on the same flattened input
windows, fitted on the training split, the yardstick a recurrent model has to beat. The
final evaluation draws `hydrograph.png`: observed and simulated target over the test
split (the last eval split when there is no test split).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import runs
from jaxdl.tasks.base import Task, build_model_from_config, example_rows, register_task

HYDROGRAPH = runs.HYDROGRAPH_PNG
_FIGURE_INCHES = (11, 4)


def nash_sutcliffe(simulated: np.ndarray, observed: np.ndarray) -> float:
    """NSE = 1 - sum((sim - obs)^2) / sum((obs - mean(obs))^2)."""
    simulated = np.asarray(simulated, np.float64)
    observed = np.asarray(observed, np.float64)
    return float(1.0 - np.sum((simulated - observed) ** 2)
                 / np.sum((observed - observed.mean()) ** 2))


def _flat_with_bias(inputs: np.ndarray) -> np.ndarray:
    flat = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    return np.concatenate([flat, np.ones((len(flat), 1))], axis=1)


def fit_linear(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Least-squares weights (bias last) of targets on the flattened inputs; the
    minimum-norm solution where the inputs are collinear."""
    weights, *_ = np.linalg.lstsq(_flat_with_bias(inputs), np.asarray(targets, np.float64),
                                  rcond=None)
    return weights


def predict_linear(weights: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    return _flat_with_bias(inputs) @ weights


# eq=False: identity hash and no elementwise comparison of the cached arrays.
@dataclasses.dataclass(frozen=True, eq=False)
class SequenceRegressionTask(Task):
    model: nn.Module
    target_mean: float
    target_std: float
    target_label: str  # axis label of the hydrograph, e.g. "Q (m3/s)"
    eval_batch_size: int
    dates: dict[str, np.ndarray]  # split -> the date of each target (may be empty)
    monitor: str = "nse"
    monitor_mode: str = "max"
    # Linear-baseline NSE per split, computed on the first evaluation (the splits are
    # fixed for a run, so it is the same at every evaluation and after a resume).
    _baseline: dict[str, float] = dataclasses.field(default_factory=dict)
    _baseline_fit: dict[str, Any] = dataclasses.field(default_factory=dict)  # "weights"

    @classmethod
    def metric_names(cls, task_config):
        return ("loss", "mse", "nse", "baseline_nse")  # the last two from on_eval

    def apply(self, variables, batch, *, train, rng):
        predicted, new_state = self.run_model(variables, batch["inputs"], train=train, rng=rng,
                                              rows=example_rows(batch))
        error = predicted - batch["targets"]
        values = {"loss": jnp.square(error), "mse": jnp.square(error * self.target_std)}
        return values, new_state

    def to_original(self, normalised: np.ndarray) -> np.ndarray:
        return np.asarray(normalised, np.float64) * self.target_std + self.target_mean

    @functools.cached_property
    def _predict_batch(self):
        return jax.jit(lambda variables, inputs: self.model.apply(variables, inputs,
                                                                  train=False))

    def predict(self, variables, inputs: np.ndarray) -> np.ndarray:
        """Normalised predictions for all rows, on the host CPU in batches of
        `eval_batch_size` (the last one padded, so one shape compiles)."""
        host = jax.devices("cpu")[0]
        variables = jax.device_put(variables, host)
        out = []
        for start in range(0, len(inputs), self.eval_batch_size):
            chunk = inputs[start:start + self.eval_batch_size]
            padded = np.concatenate([chunk, np.zeros((self.eval_batch_size - len(chunk),
                                                       *chunk.shape[1:]), chunk.dtype)])
            predicted = self._predict_batch(variables, jax.device_put(padded, host))
            out.append(np.asarray(predicted)[:len(chunk)])
        return np.concatenate(out)

    def baseline_nse(self, splits, eval_splits) -> dict[str, float]:
        """The linear baseline's NSE of each split asked for, fitted once on train (an
        evaluation may ask for a split the earlier ones did not: the test split comes at
        the end)."""
        missing = [name for name in eval_splits if name not in self._baseline]
        if missing:
            if "weights" not in self._baseline_fit:
                self._baseline_fit["weights"] = fit_linear(splits["train"].inputs,
                                                           splits["train"].targets)
            for name in missing:
                observed = self.to_original(splits[name].targets)
                simulated = self.to_original(predict_linear(self._baseline_fit["weights"],
                                                            splits[name].inputs))
                self._baseline[name] = nash_sutcliffe(simulated, observed)
        return self._baseline

    def on_eval(self, context):
        baseline = self.baseline_nse(context.splits, context.eval_splits)
        results, series = {}, {}
        for name in context.eval_splits:
            split = context.splits[name]
            observed = self.to_original(split.targets)
            simulated = self.to_original(self.predict(context.variables, split.inputs))
            series[name] = (observed, simulated)
            results[name] = {"nse": nash_sutcliffe(simulated, observed),
                             "baseline_nse": baseline[name]}
        if context.final and context.write_files and context.eval_splits:
            name = "test" if "test" in series else context.eval_splits[-1]
            plot_hydrograph(context.workdir / HYDROGRAPH, *series[name],
                            dates=self.dates.get(name), label=self.target_label,
                            title=f"{name} split, step {context.step}: NSE "
                                  f"{results[name]['nse']:.3f} (linear baseline "
                                  f"{results[name]['baseline_nse']:.3f})")
        return results


def plot_hydrograph(path: Path, observed: np.ndarray, simulated: np.ndarray, *,
                    dates: np.ndarray | None, label: str, title: str) -> Path:
    """Observed and simulated series against date (or index) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_FIGURE_INCHES, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = dates if dates is not None and len(dates) == len(observed) else np.arange(len(observed))
    ax.plot(x, observed, label="observed", color="black", linewidth=1.0)
    ax.plot(x, simulated, label="simulated", color="tab:blue", linewidth=1.0)
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


@register_task("sequence_regression", task=SequenceRegressionTask)
def build_sequence_regression(config, dataset, *, axis_name) -> Task:
    if dataset.num_classes is not None:
        raise ValueError(f"config.task.name='sequence_regression' needs real-valued targets, "
                         f"but dataset {dataset.name!r} has {dataset.num_classes} classes")
    if config.data.augmentation != "none":
        # on_eval predicts from the stored inputs, as the data source normalised them.
        raise ValueError(f"config.task.name='sequence_regression' takes its inputs as the "
                         f"source stores them; set config.data.augmentation='none', not "
                         f"{config.data.augmentation!r}")
    metadata: dict[str, Any] = dict(getattr(dataset, "metadata", None) or {})
    unit = metadata.get("target_unit")
    name = metadata.get("target_name", "target")
    return SequenceRegressionTask(
        model=build_model_from_config(config, axis_name=axis_name),
        target_mean=float(metadata.get("target_mean", 0.0)),
        target_std=float(metadata.get("target_std", 1.0)),
        target_label=f"{name} ({unit})" if unit else name,
        eval_batch_size=config.data.eval_batch_size,
        dates=dict(metadata.get("dates", {})))
