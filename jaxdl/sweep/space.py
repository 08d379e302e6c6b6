"""What a sweep runs: the grid or Optuna search space, the folds and seeds of every trial,
and the objective; parsed from the command's strings, checked before anything is written.

A grid is the product of `KEY=v1,v2,...` lists (commas inside brackets belong to a value:
`model.widths=(64,32),(128,64)`). An Optuna space names one distribution per key:
`KEY=log:LOW:HIGH` (log-uniform float), `float:LOW:HIGH`, `int:LOW:HIGH`, `choice:a,b,c`;
or a JSON file of {KEY: "log:LOW:HIGH", ...}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from jaxdl.schema import ConfigError

KINDS = ("log", "float", "int", "choice")
TEST_SPLIT = "test"


def split_values(text: str) -> list[str]:
    """`text` split at the commas that are outside brackets and parentheses."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def _key_and_rest(item: str, flag: str) -> tuple[str, str]:
    key, sep, rest = item.partition("=")
    key = key.strip().removeprefix("config.")
    if not sep or not key:
        raise ConfigError(f"{flag} {item!r}: expected KEY=...")
    return key, rest


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """[(key, values)] of `--grid KEY=v1,v2` items, in the order given."""
    grid = []
    for item in items:
        key, rest = _key_and_rest(item, "--grid")
        values = split_values(rest)
        if not rest.strip() or any(not v for v in values):
            raise ConfigError(f"--grid {item!r}: empty value list; give KEY=v1,v2,...")
        if key in dict(grid):
            raise ConfigError(f"--grid {key}: given twice; list every value in one --grid")
        grid.append((key, values))
    return grid


def _number(text: str, kind: str, item: str) -> float | int:
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise ConfigError(f"--optuna {item!r}: {text!r} is not a{'n int' if kind == 'int' else ' number'}"
                          ) from None


def parse_distribution(key: str, spec: str) -> dict[str, Any]:
    """{'kind', 'low', 'high'} or {'kind': 'choice', 'choices'} of one `--optuna` entry."""
    item = f"{key}={spec}"
    kind, sep, rest = spec.partition(":")
    if kind not in KINDS or not sep:
        raise ConfigError(f"--optuna {item!r}: expected KEY=KIND:..., KIND one of "
                          f"{', '.join(KINDS)} (e.g. optimizer.learning_rate=log:1e-4:1e-1)")
    if kind == "choice":
        choices = split_values(rest)
        if not rest or any(not c for c in choices) or len(set(choices)) < len(choices):
            raise ConfigError(f"--optuna {item!r}: choice needs distinct values, choice:a,b,c")
        return {"kind": kind, "choices": choices}
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise ConfigError(f"--optuna {item!r}: expected {kind}:LOW:HIGH")
    low, high = (_number(b, kind, item) for b in bounds)
    if not low < high or (kind == "log" and low <= 0):
        raise ConfigError(f"--optuna {item!r}: needs LOW < HIGH{' and LOW > 0' * (kind == 'log')}")
    return {"kind": kind, "low": low, "high": high}


def parse_optuna(items: list[str]) -> dict[str, dict[str, Any]]:
    """{key: distribution} of `--optuna` items, each KEY=KIND:... or a JSON file of them."""
    space: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item and item.endswith(".json"):
            try:
                entries = json.loads(Path(item).read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"--optuna {item}: cannot read the space ({e})") from None
            if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
                raise ConfigError(f"--optuna {item}: expected a JSON object "
                                  '{"KEY": "KIND:...", ...}')
            pairs = list(entries.items())
        else:
            pairs = [_key_and_rest(item, "--optuna")]
        for key, spec in pairs:
            key = key.removeprefix("config.")
            if key in space:
                raise ConfigError(f"--optuna {key}: given twice")
            space[key] = parse_distribution(key, spec)
    return space


def format_value(value: Any) -> str:
    """An Optuna parameter as a --config override value (floats exactly, as repr)."""
    return repr(value) if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that decides which runs a sweep makes: its identity in DIR/sweep.json.
    The trial budget, workers and storage are not in it: they may change on a rerun."""

    experiment: str
    variant: str | None
    overrides: tuple[str, ...]  # --config.KEY=VALUE for every trial
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    optuna: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    folds: int
    seeds: int
    objective: str  # split/metric, never the test split
    direction: str  # 'maximize' or 'minimize'
    pruner: str

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Spec":
        return cls(**{key: _tuples(value) for key, value in data.items()})

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid] + [k for k, _ in self.optuna]

    def distributions(self) -> dict[str, dict[str, Any]]:
        return {key: dict(dist) for key, dist in self.optuna}

    def grid_points(self) -> list[dict[str, str]]:
        """Every grid point as {key: value}, the last key varying fastest."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, values))
                for values in itertools.product(*(v for _, v in self.grid))]

    def members(self) -> list[dict[str, int]]:
        """The runs of one trial: {'fold', 'seed'} per run (fold -1: no k-fold)."""
        folds = range(self.folds) if self.folds else [-1]
        return [{"fold": f, "seed": s} for f in folds for s in range(self.seeds)]


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def make_spec(experiment: str, variant: str | None, overrides: list[str], grid: list[str],
              optuna: list[str], folds: int, seeds: int, objective: str | None,
              mode: str | None, monitor: str, monitor_mode: str, pruner: str) -> Spec:
    """The checked Spec of a sweep command; raises ConfigError with one line. The objective
    and its mode default to the experiment's checkpoint.monitor and checkpoint.mode."""
    if grid and optuna:
        raise ConfigError("--grid and --optuna are two kinds of sweep; give one")
    if folds == 1 or folds < 0:
        raise ConfigError(f"--folds={folds}: use 0 (no k-fold) or K >= 2")
    if seeds < 1:
        raise ConfigError(f"--seeds={seeds}: needs at least 1")
    objective = objective or monitor
    if mode is None and objective != monitor:
        raise ConfigError(f"--objective={objective}: give --mode=max or --mode=min (only the "
                          f"experiment's own monitor, {monitor}, has a known mode)")
    mode = mode or monitor_mode
    split, sep, metric = objective.partition("/")
    if not sep or not metric:
        raise ConfigError(f"--objective={objective}: expected SPLIT/METRIC, e.g. validation/accuracy")
    if split.startswith(TEST_SPLIT):
        raise ConfigError(f"--objective={objective}: the test split never chooses a "
                          "hyperparameter; use a validation metric")
    grid_items = parse_grid(grid)
    space = parse_optuna(optuna)
    if pruner != "none" and not space:
        raise ConfigError(f"--pruner={pruner} stops Optuna trials early; it needs --optuna")
    return Spec(experiment=experiment, variant=variant, overrides=tuple(overrides),
                grid=tuple((k, tuple(v)) for k, v in grid_items),
                optuna=tuple((k, tuple(sorted(d.items()))) for k, d in space.items()),
                folds=folds, seeds=seeds, objective=objective,
                direction="maximize" if mode == "max" else "minimize", pruner=pruner)
