"""torchvision's classification model definitions, for the weight-import proofs
(tests/test_weights.py), importable beside a CPU-only torch.

Why not `import torchvision`: the torchvision wheel matching torch 2.13.0 on the package
registry is a CUDA build, and its package __init__ loads the C extension and then registers
fake kernels for `torchvision::nms` and the other detection operators; beside CPU torch the
extension does not load, and `import torchvision` fails with `RuntimeError: operator
torchvision::nms does not exist`. The classification models (ResNet, VGG, DenseNet,
AlexNet, Inception v3) are plain torch.nn code that never calls those operators, so we
import their submodules without running the two package __init__ files that pull the
operators in (`torchvision` and `torchvision.models`, which also imports detection and
video models): each is replaced by an empty package object whose __path__ is the real
directory, so `torchvision.models.resnet` and what it imports (`torchvision.utils`,
`torchvision.transforms._presets`, `torchvision.models._api`) load from the installed
files unchanged. A torchvision that imports cleanly (a CPU build, or a GPU machine) is used
as it is.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

FAMILIES = ("resnet", "vgg", "densenet", "alexnet", "inception")


def _package_stub(name: str, directory: Path) -> None:
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    stub.__spec__.submodule_search_locations = [str(directory)]
    stub.__path__ = [str(directory)]
    stub.__package__ = name
    sys.modules[name] = stub
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, stub)


@functools.cache
def classification_models() -> types.SimpleNamespace | None:
    """The builders (`resnet18`, `vgg11_bn`, `densenet121`, `alexnet`, `inception_v3`, ...)
    of torchvision's classification families, or None without torch or torchvision."""
    if importlib.util.find_spec("torch") is None:
        return None
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return None
    if "torchvision" not in sys.modules:
        root = Path(spec.submodule_search_locations[0])
        _package_stub("torchvision", root)
        _package_stub("torchvision.models", root / "models")
    builders = {}
    for family in FAMILIES:
        module = importlib.import_module(f"torchvision.models.{family}")
        builders.update({name: getattr(module, name) for name in module.__all__
                         if name[0].islower()})
    return types.SimpleNamespace(**builders)
