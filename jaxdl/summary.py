"""Per-layer parameter table of a model, from shapes alone:

    python -m jaxdl.summary MODEL [--num_classes N] [--input_shape H,W,C] [--field NAME=VALUE ...]
    python -m jaxdl.summary --experiment NAME|MODULE|FILE.py

With `--experiment`, the model is the experiment's, exactly as its run builds it (its
fields, number of classes and precision), on one example of its own data (so the data must
be there), and the table is Keras' `model.summary()`: flax's `tabulate`, one row per module
call with its input and output shapes and its parameters, then the same two closing lines.

MODEL is a registered name (or an import path 'package.module:Class'). The variables are
never materialised: `jax.eval_shape(model.init, ...)` gives their shapes, so vgg16 (138M
parameters) takes as little memory and time as the digits CNN. One row per layer (module
path): its parameter shapes, its parameter count and its state count (BatchNorm moving
mean and variance). The output ends with exactly two lines:

    total params: N        the `params` collection (trainable), plain digits
    total variables: M     every collection (params + batch statistics)

The input is one example of `--input_shape`, by default the class's `default_input_shape`
attribute, else the fallback table below. `--field` sets any constructor field (a Python
literal, or a bare string), e.g. `--field aux_logits=False`. Bad input (unknown model or
field, a shape the model cannot take) is one `error:` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

EXIT_BAD_INPUT = 2

# Required hyperparameters that change no variable's shape. The summary only traces shapes
# (jax.eval_shape), so their values cannot change a count; it fills them with these neutral
# values instead of asking for them. (The experiment config must still set them: a training
# run never gets these.)
NEUTRAL_FIELDS: dict[str, Any] = {
    "bn_momentum": 0.9,
    "bn_epsilon": 1e-5,
    "dropout_rate": 0.0,
    "zero_init_last_bn": False,   # an initialiser choice only
}

# Required fields that do change shapes: the reference architecture's values (the torchvision
# model, or the experiment that uses the small models). Override them with --field.
ARCHITECTURE_FIELDS: dict[str, dict[str, Any]] = {
    "cnn": dict(features=(32, 64), kernel_size=3, pooling="max", dense_width=128,
                activation="relu", batch_norm=False),          # experiments.digits_cnn
    "mlp": dict(widths=(128, 64), activation="relu"),           # experiments.digits_mlp
    "inception_v3": dict(aux_logits=True),                      # torchvision's default
}
# Every ResNet: se_ratio 0 (no squeeze-and-excitation) is the plain, torchvision network.
_ANY_MODEL_FIELDS: dict[str, Any] = {"se_ratio": 0.0}

# Input shapes (H, W, C) of models whose class has no `default_input_shape` attribute.
DEFAULT_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "cnn": (8, 8, 1), "mlp": (8, 8, 1),                         # sklearn digits
    **{f"resnet{d}": (32, 32, 3) for d in (20, 32, 44, 56, 110)},   # CIFAR ResNets
    **{f"resnet{d}": (224, 224, 3) for d in (18, 34, 50, 101, 152)},
    **{f"vgg{d}{bn}": (224, 224, 3) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
}

# Linen internals, not constructor arguments of a model.
_NOT_HYPERPARAMETERS = {"parent", "name"}


class _Fail(Exception):
    """Bad input: reported as one `error:` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage + message
        raise _Fail(message)


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W,C integers, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return shape


def _field(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value     # a bare string such as relu


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m jaxdl.summary",
                     description="Per-layer parameter table of a model (shapes only).")
    parser.add_argument("model", nargs="?",
                        help="a registered model name or 'package.module:Class'")
    parser.add_argument("--experiment", default=None,
                        help="instead of MODEL: the model and input of this experiment")
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--input_shape", type=_positive_ints, default=None,
                        help="H,W,C of one example (default: the model's usual input)")
    parser.add_argument("--field", type=_field, action="append", default=[],
                        metavar="NAME=VALUE", help="set a constructor field of the model")
    return parser.parse_args(argv)


def build_summary_model(name: str, num_classes: int, overrides: dict[str, Any] | None = None):
    """(model, input shape or None): the model with neutral / reference values for its
    required fields, as described above."""
    from jaxdl import models
    try:
        cls = models.get_model_class(name)
    except ValueError as e:
        raise _Fail(str(e)) from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    fields = {k: f for k, f in fields.items() if k not in _NOT_HYPERPARAMETERS}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise _Fail(f"--field {unknown[0]}: unknown field of model {name!r}; valid: "
                    f"{', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    if "num_classes" in fields:
        values["num_classes"] = num_classes
    reference = {**_ANY_MODEL_FIELDS, **ARCHITECTURE_FIELDS.get(name, {})}
    for key, field in fields.items():
        required = (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING)
        if key in overrides:
            values[key] = overrides[key]
        elif required and key not in values:
            if key in reference:
                values[key] = reference[key]
            elif key in NEUTRAL_FIELDS:
                values[key] = NEUTRAL_FIELDS[key]
    missing = sorted(k for k, f in fields.items()
                     if k not in values and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise _Fail(f"model {name!r} needs field(s) {', '.join(missing)}; "
                    f"pass --field {missing[0]}=VALUE")
    try:
        model = cls(**values)
    except (TypeError, ValueError) as e:
        raise _Fail(f"model {name!r}: {e}") from None
    shape = getattr(cls, "default_input_shape", None) or DEFAULT_INPUT_SHAPES.get(name)
    return model, (tuple(shape) if shape is not None else None)


def variable_shapes(model, input_shape: tuple[int, ...], dtype="float32"
                    ) -> tuple[dict[str, Any], list[str]]:
    """(the model's variables as jax.ShapeDtypeStructs, their layer paths in creation
    order). Nothing is allocated or computed. eval_shape returns dicts with sorted keys, so
    the order is read from the traced init's own dicts."""
    import jax
    import jax.numpy as jnp
    order: list[str] = []

    def init(rng, x):
        variables = model.init(rng, x, train=False)
        for collection in variables.values():
            _walk(collection, (), lambda path, _leaf: order.append(_layer_path(path)))
        return variables

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.dtype(dtype))
    return dict(jax.eval_shape(init, jax.random.key(0), x)), list(dict.fromkeys(order))


def _walk(tree, path: tuple[str, ...], visit) -> None:
    """visit(path, leaf) for every leaf of nested mappings, in their own key order."""
    if hasattr(tree, "items"):
        for key, sub in tree.items():
            _walk(sub, (*path, str(key)), visit)
    else:
        visit(path, tree)


def _layer_path(path: tuple[str, ...]) -> str:
    return "/".join(path[:-1]) or "(top)"


def _rows(variables: dict[str, Any], order: list[str]) -> list[tuple[str, str, int, int]]:
    """(layer path, its parameter shapes, parameter count, state count), layers in `order`."""
    layers = {path: {"shapes": [], "params": 0, "state": 0} for path in order}

    def adder(collection: str):
        def add(path, leaf):
            layer = layers.setdefault(_layer_path(path), {"shapes": [], "params": 0, "state": 0})
            size = math.prod(leaf.shape)
            if collection == "params":
                layer["shapes"].append(f"{path[-1]} {'x'.join(map(str, leaf.shape)) or '()'}")
                layer["params"] += size
            else:
                layer["state"] += size
        return add

    for collection, tree in variables.items():
        _walk(tree, (), adder(collection))
    return [(path, ", ".join(v["shapes"]), v["params"], v["state"])
            for path, v in layers.items()]


def format_table(rows: list[tuple[str, str, int, int]]) -> list[str]:
    header = ("layer", "param shapes", "params", "state")
    cells = [header] + [(p, s, str(n), str(m)) for p, s, n, m in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = []
    for i, (path, shapes, n, m) in enumerate(cells):
        lines.append(f"{path:<{widths[0]}}  {shapes:<{widths[1]}}  {n:>{widths[2]}}  "
                     f"{m:>{widths[3]}}".rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    return lines


def summarize(name: str, *, num_classes: int = 1000, input_shape=None,
              fields: dict[str, Any] | None = None) -> tuple[list[str], int, int]:
    """(table lines, total params, total variables) of model `name`."""
    model, default_shape = build_summary_model(name, num_classes, fields)
    shape = tuple(input_shape) if input_shape else default_shape
    if shape is None:
        raise _Fail(f"model {name!r} has no default_input_shape; pass --input_shape H,W,C")
    try:
        variables, order = variable_shapes(model, shape)
    except Exception as e:  # whatever a model raises on this input becomes one error line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Fail(f"model {name!r} on input {shape}: {type(e).__name__}: {first}") from None
    rows = _rows(variables, order)
    total_params = sum(r[2] for r in rows)
    total = total_params + sum(r[3] for r in rows)
    title = (f"{name} ({type(model).__name__}), input 1x{'x'.join(map(str, shape))}, "
             f"collections: {', '.join(sorted(variables))}")
    return [title, *format_table(rows)], total_params, total


TABLE_WIDTH = 140  # characters: the rich table flax draws wraps its cells to fit


def summarize_experiment(reference: str) -> tuple[list[str], int, int]:
    """(lines: a title and flax's tabulate table, total params, total variables) of the
    model experiment `reference` trains, on one example of its train split."""
    import jax
    import numpy as np
    from jaxdl import config as config_lib
    from jaxdl.schema import ConfigError
    from jaxdl.tasks.base import build_model_from_config, model_rngs
    from jaxdl.training.build import TRAIN, load_splits
    try:
        config = config_lib.validate(config_lib.experiment_module(reference).get_config())
        model = build_model_from_config(config, axis_name=None)
        _, splits = load_splits(config)
    except (ConfigError, ValueError) as e:
        raise _Fail(str(e)) from None
    example = np.asarray(splits[TRAIN].take(np.arange(1))["inputs"])
    params_key, streams_key = jax.random.split(jax.random.key(config.seed))
    try:
        table = model.tabulate({"params": params_key, **model_rngs(model, streams_key)},
                               example, train=False,
                               console_kwargs={"width": TABLE_WIDTH, "force_terminal": False,
                                               "no_color": True})
        variables, order = variable_shapes(model, example.shape[1:], example.dtype)
    except Exception as e:  # whatever a model raises on this input becomes one error line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Fail(f"experiment {reference!r}: {type(e).__name__}: {first}") from None
    rows = _rows(variables, order)
    total_params = sum(r[2] for r in rows)
    title = (f"{reference}: model {config.model.name!r} ({type(model).__name__}) in "
             f"{config.precision}, input 1x{'x'.join(map(str, example.shape[1:]))} "
             f"{example.dtype} ({config.data.name})")
    return ([title, *table.rstrip().splitlines()], total_params,
            total_params + sum(r[3] for r in rows))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
        if (args.model is None) == (args.experiment is None):
            raise _Fail("give a MODEL or --experiment NAME, not both or neither")
        if args.experiment is not None:
            lines, total_params, total = summarize_experiment(args.experiment)
        else:
            lines, total_params, total = summarize(args.model, num_classes=args.num_classes,
                                                   input_shape=args.input_shape,
                                                   fields=dict(args.field))
    except _Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print("\n".join(lines))
        print(f"total params: {total_params}")
        print(f"total variables: {total}")
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left early; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
