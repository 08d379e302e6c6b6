"""Name -> Linen module class. Import paths 'package.module:Class' resolve on demand."""

from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn

# The registry is filled at import by the decorators of the model files; it maps names to
# classes and is never mutated after that except by a researcher's own `register`.
_MODELS: dict[str, type[nn.Module]] = {}

# Fields every Linen module has that are not constructor arguments of the model.
_LINEN_INTERNALS = {"parent", "name"}


def register(name: str):
    """Class decorator: makes a Linen module trainable by `model.name = name`."""
    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name]}")
        _MODELS[name] = cls
        return cls
    return wrap


def model_names() -> list[str]:
    return sorted(_MODELS)


def get_model_class(name: str) -> type[nn.Module]:
    if name in _MODELS:
        return _MODELS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"model {name!r}: cannot import it ({e})") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"model {name!r} is not a flax.linen.Module class")
        return cls
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(model_names())} "
                     "(or an import path 'package.module:Class')")


def model_fields(name: str) -> set[str]:
    """The constructor fields a config may set for model `name`."""
    cls = get_model_class(name)
    return {f.name for f in dataclasses.fields(cls) if f.init} - _LINEN_INTERNALS
