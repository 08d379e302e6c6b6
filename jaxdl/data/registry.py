"""Name -> loader registry for datasets.

The tables are filled only by `@register_source` at import time of the modules
that define sources; nothing mutates them afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jaxdl.data.sources import Dataset

Loader = Callable[..., "Dataset"]
# Where a source's data would come from ("scikit-learn bundle", a directory), or None
# when it is not available on this machine. Must be cheap: it reads no data.
Locator = Callable[[], "str | None"]

_LOADERS: dict[str, Loader] = {}
_LOCATORS: dict[str, Locator] = {}


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


def source_names() -> list[str]:
    """Sorted names of all registered sources."""
    return sorted(_LOADERS)


def _loader(name: str) -> Loader:
    try:
        return _LOADERS[name]
    except KeyError:
        raise ValueError(
                f"Unknown data source {name!r}; valid names: {', '.join(source_names())}."
        ) from None


def load_source(name: str, **kwargs) -> "Dataset":
    """Loads the source `name`; `kwargs` go to its loader."""
    return _loader(name)(**kwargs)


# Reported for sources registered without a locator.
UNREPORTED = "location not reported"


def source_location(name: str) -> str | None:
    """Where source `name` would load from, or None if it is not available locally."""
    _loader(name)  # unknown names fail as in load_source
    locate = _LOCATORS.get(name)
    return locate() if locate is not None else UNREPORTED
