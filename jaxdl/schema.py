"""The config vocabulary: a key's type, default, choices and check, and the one-line error.

A leaf that imports nothing of jaxdl, so that what a config section is filled from (a
model's constructor fields, a task's fields) can declare its keys without importing the
validator in `jaxdl.config`, which reads those declarations. Durations ('30 epochs') and
the `Clock` that turns them into steps live here too: the loop needs them, and the loop
sits below the validator.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any


class ConfigError(ValueError):
    """A config that cannot run: the message is one line that names the problem."""


# The default of a Field that has none: the experiment must set the key.
REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Field:
    """One config key: its type, an optional default, and the check its value must pass.

    `choices`: the valid values (or a function returning them, for a registry filled at
    import). `items`: for a `tuple` key, the type of every element; `choices` and `check`
    then apply to each element (a list of widths: `Field(tuple, items=int, check=positive)`).
    """

    kind: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: Callable[[], Sequence[Any]] | Sequence[Any] | None = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""
    items: type | None = None

    def valid_choices(self) -> list[Any] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """`check`, letting None pass (a key whose None means 'not used')."""
    return lambda value: None if value is None else check(value)


# --- durations -----------------------------------------------------------------------------

_UNITS = {"step": "steps", "steps": "steps", "epoch": "epochs", "epochs": "epochs",
          "example": "examples", "examples": "examples"}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def split_list(text: str) -> list[str]:
    """The non-empty parts of a comma-separated list."""
    return [part for part in (p.strip() for p in text.split(",")) if part]


def parse_duration(text: str) -> tuple[float, str]:
    """(amount, 'steps' | 'epochs' | 'examples') of a duration such as '30 epochs'."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read duration {text!r}; write '<number> steps|epochs|examples'")
    amount, unit = float(match.group(1)), _UNITS[match.group(2).lower()]
    if unit == "steps" and amount != int(amount):
        raise ConfigError(f"duration {text!r}: steps must be a whole number")
    return amount, unit


def duration(value) -> str | None:
    """The check of a duration key."""
    try:
        parse_duration(value)
    except ConfigError as e:
        return str(e)
    return None


def durations(value) -> str | None:
    """The check of a comma-separated list of durations."""
    for part in split_list(value):
        if (problem := duration(part)) is not None:
            return problem
    return None


_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0, "minute": 60.0,
            "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def parse_interval(text: str) -> tuple[float, str]:
    """(amount, unit) of a cadence that may also be wall time: '10 minutes' -> (600.0,
    'seconds'), '30 s' -> (30.0, 'seconds'); anything else as `parse_duration`."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match and match.group(2).lower() in _SECONDS:
        return float(match.group(1)) * _SECONDS[match.group(2).lower()], "seconds"
    try:
        return parse_duration(text)
    except ConfigError:
        raise ConfigError(f"cannot read interval {text!r}; write '<number> steps|epochs|"
                          "examples' or wall time '<number> s|minutes|hours'") from None


def interval(value) -> str | None:
    """The check of a cadence key that also takes wall time ('10 minutes')."""
    try:
        parse_interval(value)
    except ConfigError as e:
        return str(e)
    return None


@dataclasses.dataclass(frozen=True)
class Clock:
    """Converts durations into steps once, from the epoch length and the global batch."""

    steps_per_epoch: int
    batch_size: int

    def steps(self, text: str) -> int:
        amount, unit = parse_duration(text)
        if unit == "steps":
            return int(amount)
        if unit == "epochs":
            return int(round(amount * self.steps_per_epoch))
        return int(math.ceil(amount / self.batch_size))

    def step_list(self, text: str) -> list[int]:
        return [self.steps(part) for part in split_list(text)]
