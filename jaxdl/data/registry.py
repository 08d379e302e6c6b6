"""Name -> loader registry for datasets.

The table is filled only by `@register_source` at import time of the modules
that define sources; nothing mutates it afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jaxdl.data.sources import Dataset

Loader = Callable[..., "Dataset"]

_LOADERS: dict[str, Loader] = {}


def register_source(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering `loader` under `name`; duplicate names are an error."""

    def decorate(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"Data source {name!r} is already registered.")
        _LOADERS[name] = loader
        return loader

    return decorate


def source_names() -> list[str]:
    """Sorted names of all registered sources."""
    return sorted(_LOADERS)


def load_source(name: str, **kwargs) -> "Dataset":
    """Loads the source `name`; `kwargs` go to its loader."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(
                f"Unknown data source {name!r}; valid names: {', '.join(source_names())}."
        ) from None
    return loader(**kwargs)
