"""Name -> loader registry for datasets.

The tables are filled only by `@register_source` and `@register_source_family` (a prefix
such as `tfds:` for a whole catalog) at import time of the modules
that define sources; nothing mutates them afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jaxdl.data.dataset import Dataset

Loader = Callable[..., "Dataset"]
# Where a source's data would come from ("scikit-learn bundle", a directory), or None
# when it is not available on this machine. Must be cheap: it reads no data.
Locator = Callable[[], "str | None"]

_LOADERS: dict[str, Loader] = {}
_LOCATORS: dict[str, Locator] = {}


@dataclasses.dataclass(frozen=True)
class _Family:
    """Every name `prefix + spec` (e.g. 'tfds:cifar10'): a catalog too large to list."""

    loader: Loader  # loader(spec, **kwargs)
    usage: str  # e.g. 'tfds:NAME[:VERSION]', shown with the valid names
    check: Callable[[str], str | None] | None  # spec -> problem, cheap, reads no data
    locate: Callable[[str], str | None] | None  # spec -> where, or None if missing


_FAMILIES: dict[str, _Family] = {}


def register_source(name: str, *, locate: Locator | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering `loader` under `name`; duplicate names are an error.

    `locate` (optional) tells `source_location` where the data is found.
    """

    def decorate(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"Data source {name!r} is already registered.")
        _LOADERS[name] = loader
        if locate is not None:
            _LOCATORS[name] = locate
        return loader

    return decorate


def register_source_family(prefix: str, *, usage: str,
                           check: Callable[[str], str | None] | None = None,
                           locate: Callable[[str], str | None] | None = None,
                           ) -> Callable[[Loader], Loader]:
    """Decorator registering `loader(spec, **kwargs)` for every name `prefix + spec`.

    `check(spec)` returns a problem (one line) or None; `locate(spec)` is as `locate` of
    `register_source`. Exact names registered by `register_source` win over a prefix.
    """

    def decorate(loader: Loader) -> Loader:
        if prefix in _FAMILIES:
            raise ValueError(f"Data source family {prefix!r} is already registered.")
        _FAMILIES[prefix] = _Family(loader, usage, check, locate)
        return loader

    return decorate


def source_names() -> list[str]:
    """Sorted names of all registered sources (families not included: see `source_usage`)."""
    return sorted(_LOADERS)


def source_usage() -> list[str]:
    """The sources' names followed by the forms of each family's names."""
    return source_names() + [family.usage for family in _FAMILIES.values()]


def _family(name: str) -> tuple[_Family, str] | None:
    for prefix, family in _FAMILIES.items():
        if name.startswith(prefix) and name not in _LOADERS:
            return family, name[len(prefix):]
    return None


def source_problem(name: str) -> str | None:
    """Why `name` cannot name a source (one line), or None when it can; reads no data."""
    if name in _LOADERS:
        return None
    if (found := _family(name)) is not None:
        family, spec = found
        return family.check(spec) if family.check is not None else None
    return f"unknown {name!r}; valid: {', '.join(source_usage())}"


def _loader(name: str) -> Loader:
    if name in _LOADERS:
        return _LOADERS[name]
    if (found := _family(name)) is not None:
        family, spec = found
        return functools.partial(family.loader, spec)
    raise ValueError(
            f"Unknown data source {name!r}; valid names: {', '.join(source_usage())}.")


def load_source(name: str, **kwargs) -> "Dataset":
    """Loads the source `name`; `kwargs` go to its loader."""
    return _loader(name)(**kwargs)


# Reported for sources registered without a locator.
UNREPORTED = "location not reported"


def source_location(name: str) -> str | None:
    """Where source `name` would load from, or None if it is not available locally."""
    _loader(name)  # unknown names fail as in load_source
    if (found := _family(name)) is not None:
        family, spec = found
        return family.locate(spec) if family.locate is not None else UNREPORTED
    locate = _LOCATORS.get(name)
    return locate() if locate is not None else UNREPORTED
