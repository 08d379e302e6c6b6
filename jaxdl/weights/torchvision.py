"""torchvision's classification networks -> jaxdl's twins of them, tensor by tensor.

Every supported name is both torchvision's builder and jaxdl's registered model: `resnet18`
.. `resnet152`, `vgg11` .. `vgg19` and their `_bn` variants, `densenet121/161/169/201`,
`alexnet` and `inception_v3`. jaxdl builds these networks as torchvision does (symmetric
padding k // 2 of every strided convolution rather than XLA's 'SAME', max pools padded with
-inf, average pools and adaptive average pools with PyTorch's windows, BatchNorm epsilon
1e-5, 1e-3 in Inception v3), so a state_dict maps onto them with no model option:

- a convolution's weight (out, in, kh, kw) becomes the kernel (kh, kw, in, out), a linear
  layer's (out, in) the kernel (in, out); BatchNorm weight/bias/running_mean/running_var
  become scale/bias and the batch_stats mean/var; `num_batches_tracked` (used by torch only
  when momentum=None) is dropped;
- VGG's and AlexNet's first classifier layer reads the pooled features flattened in
  torchvision's (c, h, w) order, jaxdl's in NHWC's (h, w, c): its input columns are
  permuted accordingly. That is an exact re-indexing of the same matrix, so the layer
  computes the same function (a model option transposing the activations instead would
  cost a transpose each step and give the same numbers).

Every tensor's name and shape is checked before anything is converted; the first that does
not fit is named with both shapes (`ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxdl import models
from jaxdl.models import alexnet, densenet, inception, resnet, vgg
from jaxdl.schema import ConfigError

# The jaxdl fields that make each family torchvision's network: torchvision's own defaults
# (BatchNorm momentum 0.1, which is Flax's 0.9; epsilon 1e-5; dropout p=0.5 in the VGG,
# AlexNet and Inception classifiers, drop_rate 0 in DenseNet; no SE blocks; the last BN of a
# block initialised to one). They describe the source network, not a training choice; only
# bn_epsilon changes an evaluated output, the rest matter when the imported model trains.
_TORCH_BN_MOMENTUM = 0.9
_TORCH_BN_EPSILON = 1e-5
_TORCH_CLASSIFIER_DROPOUT = 0.5
FAMILY_FIELDS: dict[str, dict[str, Any]] = {
    "resnet": dict(bn_momentum=_TORCH_BN_MOMENTUM, bn_epsilon=_TORCH_BN_EPSILON, se_ratio=0.0,
                   zero_init_last_bn=False),
    "vgg": dict(dropout_rate=_TORCH_CLASSIFIER_DROPOUT),
    "vgg_bn": dict(dropout_rate=_TORCH_CLASSIFIER_DROPOUT, bn_momentum=_TORCH_BN_MOMENTUM,
                   bn_epsilon=_TORCH_BN_EPSILON),
    "densenet": dict(bn_momentum=_TORCH_BN_MOMENTUM, dropout_rate=0.0),
    "alexnet": dict(dropout_rate=_TORCH_CLASSIFIER_DROPOUT),
    "inception": dict(bn_momentum=_TORCH_BN_MOMENTUM, dropout_rate=_TORCH_CLASSIFIER_DROPOUT),
}
# jaxdl's classes of each family (VGGBN before VGG: a subclass test, first match wins).
_FAMILY_CLASSES = ((resnet.ImageNetResNet, "resnet"), (vgg.VGGBN, "vgg_bn"), (vgg.VGG, "vgg"),
                   (densenet.DenseNet, "densenet"), (alexnet.AlexNet, "alexnet"),
                   (inception.InceptionV3, "inception"))
# The state_dict entry whose first axis is the number of classes, per family.
_HEADS = {"resnet": "fc.weight", "vgg": "classifier.6.weight", "vgg_bn": "classifier.6.weight",
          "densenet": "classifier.weight", "alexnet": "classifier.6.weight",
          "inception": "fc.weight"}
# torchvision's default, used only when the state_dict lacks its head (then it is reported
# missing anyway).
_TORCHVISION_NUM_CLASSES = 1000
# Parameter shapes do not depend on the image size (every head pools to a fixed size), so
# any size the network accepts works for the shape-only trace; this one is torchvision's.
_TRACE_IMAGE = (224, 224, 3)


def _family_of(name: str) -> str | None:
    cls = models.get_model_class(name) if name in models.model_names() else None
    for base, fam in _FAMILY_CLASSES:
        if cls is not None and issubclass(cls, base):
            return fam
    return None


def family(name: str) -> str:
    """The family of torchvision model `name`; ConfigError for an unsupported name."""
    fam = _family_of(name)
    if fam is None:
        raise ConfigError(f"model {name!r}: no torchvision twin in jaxdl; supported: "
                          f"{', '.join(supported_models())}")
    return fam


def supported_models() -> list[str]:
    """The names (torchvision's builders, jaxdl's registered models) that import."""
    return [name for name in models.model_names() if _family_of(name) is not None]


# --- where each jaxdl module lives in torchvision's state_dict --------------------------------


def _resnet_prefix(path: tuple[str, ...], name: str) -> str:
    top = {"stem_conv": "conv1", "stem_bn": "bn1", "head": "fc"}.get(path[0])
    if top is not None:
        return top
    stage, block = re.fullmatch(r"stage(\d+)_block(\d+)", path[0]).groups()
    inner = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(
        path[1], path[1])
    return f"layer{stage}.{block}.{inner}"


def _vgg_prefix(path: tuple[str, ...], name: str) -> str:
    # torchvision's `features` is one nn.Sequential: conv, (BatchNorm), ReLU per entry, one
    # MaxPool per "M"; its classifier is Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
    batch_norm = name.endswith("_bn")
    index, convs, norms = 0, [], []
    for entry in vgg.CONFIGS[name.removesuffix("_bn")]:
        if entry == "M":
            index += 1
            continue
        convs.append(index)
        if batch_norm:
            norms.append(index + 1)
        index += 3 if batch_norm else 2
    kind, number = path[0].rsplit("_", 1)
    table = {"Conv": convs, "BatchNorm": norms, "Dense": None}[kind]
    if table is None:
        return f"classifier.{(0, 3, 6)[int(number)]}"
    return f"features.{table[int(number)]}"


def _alexnet_prefix(path: tuple[str, ...], name: str) -> str:
    return {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
            "conv4": "features.8", "conv5": "features.10", "fc1": "classifier.1",
            "fc2": "classifier.4", "fc3": "classifier.6"}[path[0]]


def _densenet_prefix(path: tuple[str, ...], name: str) -> str:
    return ".".join(path) if path[0] == "classifier" else "features." + ".".join(path)


def _inception_prefix(path: tuple[str, ...], name: str) -> str:
    return ".".join(path)  # jaxdl's Inception v3 keeps torchvision's module names


_PREFIX: dict[str, Callable[[tuple[str, ...], str], str]] = {
    "resnet": _resnet_prefix, "vgg": _vgg_prefix, "vgg_bn": _vgg_prefix,
    "densenet": _densenet_prefix, "alexnet": _alexnet_prefix, "inception": _inception_prefix}
# jaxdl leaf name (per collection) -> torchvision's.
# ... and their order within a module in a state_dict.
_LEAF_ORDER = {"kernel": 0, "scale": 0, "bias": 1, "mean": 2, "var": 3}
_LEAVES = {("params", "kernel"): "weight", ("params", "bias"): "bias",
           ("params", "scale"): "weight", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}
# The one dense layer whose input is the flattened pooled features, and that pooled size.
_FLATTENED = {"vgg": ("Dense_0", vgg._VGGBase.POOLED_SIZE),
              "vgg_bn": ("Dense_0", vgg._VGGBase.POOLED_SIZE),
              "alexnet": ("fc1", alexnet.AlexNet.pooled_size)}


class Tensor:
    """How one state_dict entry becomes one jaxdl array: where it goes, the shape torch
    gives it, and the conversion."""

    def __init__(self, collection: str, path: tuple[str, ...], jax_shape: tuple[int, ...],
                 flatten_hw: tuple[int, int] | None = None):
        self.collection, self.path, self.jax_shape = collection, path, tuple(jax_shape)
        self.flatten_hw = flatten_hw
        if len(jax_shape) == 4:  # conv kernel (kh, kw, in, out) <- (out, in, kh, kw)
            kh, kw, cin, cout = jax_shape
            self.torch_shape = (cout, cin, kh, kw)
        elif len(jax_shape) == 2:  # dense kernel (in, out) <- (out, in)
            self.torch_shape = (jax_shape[1], jax_shape[0])
        else:
            self.torch_shape = self.jax_shape

    def convert(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, np.float32)
        if value.ndim == 4:
            return value.transpose(2, 3, 1, 0)
        if value.ndim == 2 and self.flatten_hw is not None:
            h, w = self.flatten_hw
            out, flat = value.shape
            # columns (c, h, w) -> rows (h, w, c)
            return value.reshape(out, flat // (h * w), h, w).transpose(2, 3, 1, 0).reshape(
                flat, out)
        if value.ndim == 2:
            return value.T
        return value


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# torchvision's DenseNet weights files predate its module names: `denselayer1.norm.1.weight`
# for `denselayer1.norm1.weight` (torchvision renames them the same way when it loads them).
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var))$")


def renamed(name: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tensors` with old torchvision key names replaced by today's (DenseNet only)."""
    if family(name) != "densenet":
        return dict(tensors)
    return {_OLD_DENSENET_KEY.sub(lambda m: m[1] + m[2], key): value
            for key, value in tensors.items()}


def model_config(name: str, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The jaxdl model section (name and fields) of torchvision's `name` with the classes
    and auxiliary head this state_dict has."""
    fam = family(name)
    head = tensors.get(_HEADS[fam])
    num_classes = int(np.shape(head)[0]) if head is not None and np.ndim(head) == 2 else \
        _TORCHVISION_NUM_CLASSES
    config = {"name": name, "num_classes": num_classes, **FAMILY_FIELDS[fam]}
    if fam == "inception":
        config["aux_logits"] = any(key.startswith("AuxLogits.") for key in tensors)
    return config


def expected_tensors(config: Mapping[str, Any]) -> dict[str, Tensor]:
    """torchvision state_dict key -> `Tensor`, for the jaxdl model `config` (a model
    section from `model_config`), in the order its modules run, which is the order of
    torchvision's state_dict (jax sorts dict keys, so the traced shapes alone would not
    say it)."""
    name = config["name"]
    fam = family(name)
    model = models.build_model(name, **{k: v for k, v in config.items() if k != "name"})
    cls = type(model)
    image = getattr(cls, "default_input_shape", _TRACE_IMAGE)
    order: dict[tuple[str, ...], int] = {}

    def record(next_fun, args, kwargs, context):  # module paths in the order they first run
        order.setdefault(tuple(context.module.scope.path), len(order))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                                jax.ShapeDtypeStruct((1, *image), np.float32))
    flatten_layer, pooled = _FLATTENED.get(fam, (None, None))
    tensors = []
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(shapes.get(collection, {}))
        for path, leaf in flat.items():
            *modules, leaf_name = path
            key = f"{_PREFIX[fam](tuple(modules), name)}.{_LEAVES[collection, leaf_name]}"
            flatten = pooled if (modules[0] == flatten_layer and leaf_name == "kernel") else None
            rank = (order.get(tuple(modules), len(order)), _LEAF_ORDER[leaf_name])
            tensors.append((rank, key, Tensor(collection, tuple(path), leaf.shape, flatten)))
    expected = {key: tensor for _, key, tensor in sorted(tensors, key=lambda t: t[0])}
    return expected


def check(name: str, tensors: Mapping[str, np.ndarray], expected: Mapping[str, Tensor],
          source: str) -> None:
    """ConfigError naming the first entry of `tensors` (in the file's order) that torchvision's
    `name` does not have or has in another shape, else the first one it lacks."""
    for key, value in tensors.items():
        shape = tuple(np.shape(value))
        if key.endswith(".num_batches_tracked") and \
                key.removesuffix("num_batches_tracked") + "running_mean" in expected:
            continue
        if key not in expected:
            first = next(iter(expected))
            raise ConfigError(
                f"{source}: unexpected tensor {key} {_shape(shape)}: torchvision's {name} has "
                f"no such entry (its first is {first} {_shape(expected[first].torch_shape)}); "
                "is it another architecture?")
        if shape != expected[key].torch_shape:
            raise ConfigError(f"{source}: {key} is {_shape(shape)}, torchvision's {name} has "
                              f"{_shape(expected[key].torch_shape)}")
    for key, tensor in expected.items():
        if key not in tensors:
            raise ConfigError(f"{source}: missing tensor {key} {_shape(tensor.torch_shape)} of "
                              f"torchvision's {name} ({len(expected)} expected, "
                              f"{sum(k in tensors for k in expected)} present)")


def convert(name: str, tensors: Mapping[str, np.ndarray], *, source: str = "state_dict"
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(jaxdl variables {'params', 'batch_stats'?}, jaxdl model section) of torchvision's
    `name` with the weights `tensors` (state_dict key -> array). ConfigError naming the first
    mismatching key and both shapes when the state_dict is not that network's."""
    tensors = renamed(name, tensors)
    config = model_config(name, tensors)
    expected = expected_tensors(config)
    check(name, tensors, expected, source)
    flat: dict[str, dict[tuple[str, ...], np.ndarray]] = {}
    for key, tensor in expected.items():
        flat.setdefault(tensor.collection, {})[tensor.path] = tensor.convert(tensors[key])
    variables = {collection: traverse_util.unflatten_dict(leaves)
                 for collection, leaves in flat.items()}
    return variables, config
