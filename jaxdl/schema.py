"""The config vocabulary: a key's type, default, choices and check, and the one-line error.

A leaf that imports nothing of jaxdl, so that what a config section is filled from (a
model's constructor fields, a task's fields) can declare its keys without importing the
validator in `jaxdl.config`, which reads those declarations.
"""

from __future__ import annotations

import dataclasses
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
