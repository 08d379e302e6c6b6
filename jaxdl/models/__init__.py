"""Pure Linen modules, registered by name so an experiment config can pick one.

A researcher's own module trains without editing jaxdl: decorate it with
`@jaxdl.models.register("my_net")` in any importable file, or name it in the config as
`model.name = "my_package.my_module:MyNet"` (an import path).
"""

from __future__ import annotations

import flax.linen as nn

from jaxdl.models.registry import get_model_class, model_fields, model_names, register
from jaxdl.models import cnn as _cnn  # noqa: F401  (registers its models)
from jaxdl.models import alexnet as _alexnet  # noqa: F401
from jaxdl.models import autoencoder as _autoencoder  # noqa: F401
from jaxdl.models import densenet as _densenet  # noqa: F401
from jaxdl.models import gan as _gan  # noqa: F401
from jaxdl.models import inception as _inception  # noqa: F401
from jaxdl.models import mlp as _mlp  # noqa: F401
from jaxdl.models import recurrent as _recurrent  # noqa: F401
from jaxdl.models import transformer as _transformer  # noqa: F401
from jaxdl.models import resnet as _resnet  # noqa: F401
from jaxdl.models import vgg as _vgg  # noqa: F401
from jaxdl.models import word2vec as _word2vec  # noqa: F401

__all__ = ["build_model", "get_model_class", "model_fields", "model_names", "register"]


def build_model(name: str, **fields) -> nn.Module:
    """The registered module `name` constructed with `fields` (the config's model section)."""
    cls = get_model_class(name)
    return cls(**fields)
