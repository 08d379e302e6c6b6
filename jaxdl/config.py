"""The experiment schema: what a config may hold, validation, and durations.

An experiment's `get_config()` pins the hyperparameters of what it names: the model, the
task, the optimizer and the schedule (each declares its own fields, and a field the named one
does not read is refused). The schema here only says what each key means, its type and which
values are possible; the defaults it holds are for keys that are not hyperparameters (logging
switches, the device count, "off") and, for an optimizer or schedule, optax's own defaults.
`validate` turns every mistake into one `ConfigError` line, before anything is written, and
returns the complete resolved config (what config.json records).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

# The vocabulary (Field, checks, ConfigError, durations, Clock) lives in the leaf `schema`,
# which models, tasks and training import; it is re-exported here for callers above them.
from jaxdl.schema import (REQUIRED, Clock, ConfigError, Field, fraction,  # noqa: F401
                          non_negative, optional, positive)
from jaxdl.schema import duration as _duration
from jaxdl.schema import interval as _interval

_REQUIRED = REQUIRED

# The splits a run may evaluate (each exists when its fraction, a k-fold or the source
# gives it rows); `checkpoint.monitor` names one of them.
EVAL_SPLITS = ("validation", "test")


def _choices_from(names: Sequence[str]) -> Callable[[], Sequence[str]]:
    return lambda: names


def _augmentation(value) -> str | None:
    from jaxdl.data import augment
    try:
        augment.parse(value)
    except ValueError as e:
        return str(e)
    return None


def _known_model(name) -> str | None:
    from jaxdl import models
    try:
        models.get_model_class(name)
    except ValueError as e:
        return str(e)
    return None


def _known_source(name) -> str | None:
    """A registered source, or a family name such as 'tfds:cifar10' that its family accepts
    (TFDS imported only for such names)."""
    from jaxdl.data import registry
    return registry.source_problem(name)


def _pipelines():
    from jaxdl.training import feeding
    return feeding.PIPELINES


def _samplings():
    from jaxdl.data import pipeline
    return pipeline.SAMPLINGS


def _task_names():
    from jaxdl import tasks
    return tasks.task_names()


def _finetune():
    from jaxdl.training import finetune
    return finetune


def _prune():
    from jaxdl.training import prune
    return prune


def _members() -> dict[str, tuple[dict[str, Field], dict[str, dict[str, Field]]]]:
    """Sections filled from what their `name` picks: section -> (the fields every member
    reads, each member's own fields)."""
    from jaxdl.training import optim
    return {"optimizer": (optim.SHARED_OPTIMIZER_FIELDS, optim.OPTIMIZER_FIELDS),
            "schedule": (optim.SHARED_SCHEDULE_FIELDS, optim.SCHEDULE_FIELDS)}


def schema() -> dict[str, Any]:
    """Every key an experiment config may hold (nested dicts mirror the ConfigDict)."""
    return {
        "seed": Field(int, help="seed of parameters, dropout and data order"),
        "model": {
            # Other keys of `model` are the constructor's own fields, checked against it.
            "name": Field(str, check=_known_model, help="a registered name or 'pkg.module:Class'"),
        },
        "task": {
            # Other keys of `task` are the ones the named task declares (`task_fields`).
            "name": Field(str, choices=_task_names,
                          help="what the model learns: the loss and metrics; its own fields "
                               "follow"),
        },
        "data": {
            "name": Field(str, check=_known_source,
                          help="a registered source or tfds:NAME[:VERSION]"),
            "split_seed": Field(int, help="seed of the stratified train/validation/test split"),
            "validation_fraction": Field(float, check=fraction,
                                         help="share of the examples held out for validation "
                                              "(0 when the source ships one, or with folds)"),
            "test_fraction": Field(float, check=fraction,
                                   help="share held out for the test split (0 when the "
                                        "source ships one); it never chooses anything"),
            # k-fold cross-validation is off unless asked for: "off" is no hyperparameter.
            "folds": Field(int, default=0, check=non_negative,
                           help="k >= 2: validation is fold `fold` of a stratified k-fold of "
                                "what the test split leaves, train the other folds; 0 = off"),
            "fold": Field(int, default=0, check=non_negative,
                          help="which of the `folds` folds validates (0-based)"),
            "classes": Field(tuple, items=int, default=(), check=non_negative,
                             help="keep only these classes (every split), relabelled 0, 1, "
                                  "... in this order, e.g. (5, 6, 7, 8, 9); () = all"),
            "examples_per_class": Field(int, default=0, check=non_negative,
                                        help="train on this many examples of each class, "
                                             "drawn by split_seed from the train split "
                                             "(nested: 10 of them are among 50); 0 = all"),
            "sampling": Field(str, default="shuffle", choices=_samplings,
                              help="training order: 'shuffle' each epoch, or 'balanced' "
                                   "(every class oversampled to the largest class's count)"),
            "batch_size": Field(int, check=positive, help="global batch, over all devices"),
            "eval_batch_size": Field(int, check=positive,
                                     help="global batch of evaluations; the last is padded "
                                          "and masked"),
            "augmentation": Field(str, check=_augmentation,
                                  help="ops joined by '+', e.g. 'random_crop(pad=4,"
                                       "pad_mode=reflect)+horizontal_flip(p=0.5)', or 'none'"),
            "data_dir": Field(str, default="", help="where file datasets are looked for first "
                                                    "('' = the documented search order)"),
            "pipeline": Field(str, default="auto", choices=_pipelines,
                              help="'device': every split kept on the devices, batches "
                                   "gathered there; 'host': batches gathered on the host and "
                                   "prefetched (data too large for device memory, or read "
                                   "lazily); 'auto': 'device' unless a split is read lazily. "
                                   "All give the same batches"),
            "prefetch": Field(int, default=2, check=positive,
                              help="host pipeline: batches placed on the devices ahead"),
            # Whole splits unless asked: "no limit" is no hyperparameter.
            "eval_limit": Field(int, default=0, check=non_negative,
                                help="evaluate only the first N eval batches of each split "
                                     "during training (a quick run on big splits); the "
                                     "final evaluation still reads the whole split. 0 = all"),
            "eval_limit_at_end": Field(bool, default=False,
                                       help="apply eval_limit to the final evaluation (and "
                                            "the test at the best checkpoint) as well: smoke "
                                            "runs only, its final metrics are of a part"),
            "preview": Field(bool, default=False,
                             help="write augmentation_preview.png (the train split's first "
                                  "examples before and after config.data.augmentation) at "
                                  "the start"),
            # Keys of `options` are the source loader's own keyword arguments (a window
            # length, a vocabulary size); the loader checks them.
            "options": {},
        },
        "train": {
            "duration": Field(str, check=_duration, help="e.g. '30 epochs', '5000 steps'"),
            "log_every": Field(str, check=_duration,
                               help="how often train metrics are logged and shown"),
            "eval_every": Field(str, check=_duration,
                                help="how often the eval splits are evaluated (and the end)"),
            "test_every_eval": Field(bool, default=False,
                                     help="also evaluate the test split at every evaluation, "
                                          "for curves only; it never chooses anything "
                                          "(default: once, at the end)"),
        },
        "checkpoint": {
            "every": Field(str, check=_interval,
                           help="steps, epochs, or wall time ('10 minutes'); '0 steps' = only "
                                "at the end and on a signal"),
            "keep_last": Field(int, check=positive, help="the latest checkpoints kept"),
            "keep_best": Field(int, check=non_negative,
                               help="the best checkpoints by `monitor` kept besides; 0 = none "
                                    "(then no test at the best checkpoint)"),
            "monitor": Field(str, help="'<split>/<metric>' that ranks the best checkpoints"),
            "mode": Field(str, choices=_choices_from(("max", "min")),
                          help="whether a higher or a lower `monitor` is better"),
        },
        # Off unless asked for: "off" is no hyperparameter choice.
        "early_stopping": {
            "patience": Field(int, default=0, check=non_negative,
                              help="evaluations without improvement of checkpoint.monitor "
                                   "before stopping; 0 = never stop early"),
            "min_delta": Field(float, default=0.0, check=non_negative,
                               help="a smaller change of the monitor is no improvement"),
        },
        "guard": {
            "skip_nonfinite": Field(bool, default=False,
                                    help="skip a step with a non-finite loss, gradient or "
                                         "updated parameters instead of stopping the run"),
            "max_skipped_fraction": Field(float, default=0.5, check=fraction,
                                          help="with skip_nonfinite: stop the run when more "
                                               "than this share of a log window's steps "
                                               "was skipped"),
        },
        "init_from": Field(str, default="", help="a run's workdir whose latest weights start "
                                                 "this run ('' = initialise from the seed)"),
        "init_from_reinit": Field(str, default="", check=lambda v: _finetune().check_patterns(v),
                                  help="with init_from: comma-separated globs of parameter "
                                       "paths that keep their fresh initialisation, e.g. "
                                       "'head/**' for another number of classes"),
        "finetune": dict(_finetune().FIELDS),
        "prune": dict(_prune().FIELDS),
        # The fields every optimizer (schedule) reads; the one `name` picks adds its own.
        **{section: dict(shared) for section, (shared, _) in _members().items()},
        "precision": Field(str, choices=_choices_from(("fp32", "bf16")),
                           help="what the model computes in (the model's `dtype`); "
                                "parameters stay float32"),
        "parallel": {
            "backend": Field(str, choices=_choices_from(("pmap", "sharded")),
                             help="data parallelism: 'sharded' (jit over a device mesh) or "
                                  "'pmap'; the same numbers"),
            "num_devices": Field(int, default=0, check=non_negative,
                                 help="local devices to use; 0 = all"),
            "host_devices": Field(int, default=0, check=non_negative,
                                  help="split a CPU host into this many devices; 0 = leave as is"),
            "max_in_flight": Field(int, default=8, check=positive,
                                   help="train steps dispatched ahead of the device at most"),
        },
        "logging": {
            "tensorboard": Field(bool, default=True,
                                 help="write TensorBoard event files in <workdir>/tensorboard"),
            "progress": Field(bool, default=True, help="show the progress bar on stderr"),
            "csv": Field(bool, default=False,
                         help="also write metrics.csv (metrics.jsonl as one table: step, "
                              "split, a column per metric), at the end of each segment"),
            "plot": Field(bool, default=True,
                          help="draw curves.png and the task's figures"),
            "mlflow": Field(str, default="", check=_mlflow_uri,
                            help="also log params and metrics to this MLflow tracking URI "
                                 "('sqlite:///mlflow.db', 'http://host:5000'); '' = off. "
                                 "Needs the `mlflow` extra"),
            "mlflow_experiment": Field(str, default="jaxdl",
                                       help="the MLflow experiment the run is logged under "
                                            "(with logging.mlflow)"),
            "profile_steps": Field(str, default="", check=_profile_steps,
                                   help="'START:END': a jax.profiler trace of train steps "
                                        "START..END in <workdir>/profile, and profile/ops.md: "
                                        "where their time went, per op; '' = off"),
        },
    }


def _kind_name(kind) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _typed(kind, value) -> tuple[bool, Any]:
    """(does `value` have type `kind`, the value): an int is taken for a float, a bool is
    never taken for a number."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return not (kind is not bool and isinstance(value, bool)) and isinstance(value, kind), value


def _check_value(path: str, field: Field, value: Any) -> Any:
    if field.items is not None:
        return _check_items(path, field, value)
    ok, value = _typed(field.kind, value)
    if not ok:
        raise ConfigError(f"config.{path}: expected {_kind_name(field.kind)}, got "
                          f"{type(value).__name__} {value!r}")
    _check_one(path, field, value, value)
    return value


def _check_one(path: str, field: Field, value: Any, whole: Any) -> None:
    """`value` (all of `whole`, or one element of it) against the field's choices and check."""
    names = field.valid_choices()
    if names is not None and value not in names:
        raise ConfigError(f"config.{path}: unknown {value!r}; valid: "
                          f"{', '.join(map(str, names))}")
    if field.check is not None and (problem := field.check(value)) is not None:
        if value is whole:
            raise ConfigError(f"config.{path}={whole!r}: {problem}")
        raise ConfigError(f"config.{path}={whole!r}: each element {problem}, got {value!r}")


def _check_items(path: str, field: Field, value: Any) -> tuple:
    """A sequence key: a tuple (or list) whose every element has type `field.items`."""
    kind, noun = field.items, f"a list of {field.items.__name__}s"
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple):
        raise ConfigError(f"config.{path}: expected {noun}, got {type(value).__name__} "
                          f"{value!r}")
    if kind is not str and len(value) == 1 and isinstance(value[0], str):
        # A --config override that does not parse as a literal arrives as its text.
        _refuse_text(path, value[0], kind, noun)
    out = []
    for element in value:
        ok, element = _typed(kind, element)
        if not ok:
            raise ConfigError(f"config.{path}={value!r}: element {element!r} is not "
                              f"{_article(kind)}; expected {noun}")
        _check_one(path, field, element, value)
        out.append(element)
    return tuple(out)


def _refuse_text(path: str, text: str, kind: type, noun: str) -> None:
    """The one-line error for `text` given where a list of `kind` goes, naming the first
    part that is not one."""
    parts = [p.strip() for p in text.strip().strip("[]()").split(",")]
    for part in parts:
        try:
            kind(part)
        except ValueError:
            raise ConfigError(f"config.{path}={text!r}: {part!r} is not {_article(kind)}; "
                              f"expected {noun}, e.g. [1,2]") from None
    raise ConfigError(f"config.{path}={text!r}: expected {noun}, e.g. [1,2]")


def _article(kind: type) -> str:
    return f"an {kind.__name__}" if kind.__name__[0] in "aeiou" else f"a {kind.__name__}"


# Sections whose other keys belong to what they name (the model's, the task's, the
# optimizer's or the schedule's fields, the data source loader's keyword arguments).
_OPEN = ("model", "task", "optimizer", "schedule", "data.options")


def _check_task_fields(task: dict[str, Any]) -> None:
    """config.task holds exactly the fields its task declares, each of the right type."""
    from jaxdl import tasks
    spec = tasks.task_fields(task["name"])
    for key in task:
        if key != "name" and key not in spec:
            raise ConfigError(f"config.task.{key}: unknown field of task {task['name']!r}; "
                              f"valid: {', '.join(sorted(spec)) or 'none'}")
    _fill_declared("task", task, spec)


def _fill_declared(section: str, given: dict[str, Any], spec: Mapping[str, Field]) -> None:
    """Checks each field of `spec` that `given` holds, fills the default of each it leaves
    out, and names a missing required one. None stands for a field not pinned (what
    `with_defaults` leaves where a --config override may set a required field)."""
    for key, field in spec.items():
        if key in given and not (given[key] is None and field.default is _REQUIRED):
            given[key] = _check_value(f"{section}.{key}", field, given[key])
        elif field.default is _REQUIRED:
            raise ConfigError(f"config.{section}.{key}: missing; {section} "
                              f"{given['name']!r} requires it")
        else:
            given[key] = field.default


def not_read(section: str, name: str, key: str) -> str | None:
    """The one-line error for `config.<section>.<key>` where `section` (optimizer or
    schedule) names `name`, naming the fields it reads; None when `name` reads `key` or is
    unknown (the name's own error says so)."""
    shared, own = _members()[section]
    if name not in own or key in shared or key in own[name]:
        return None
    fields = ", ".join(sorted({*shared, *own[name]}))
    if any(key in spec for spec in own.values()):
        return (f"config.{section}.{key}: {section} {name!r} does not read it; its fields: "
                f"{fields}")
    return f"config.{section}.{key}: unknown key; fields of {section} {name!r}: {fields}"


def _check_member_fields(section: str, given: dict[str, Any]) -> None:
    """config.optimizer (schedule) holds the shared fields (checked by the schema) and the
    fields of the one it names: each pinned one checked, each left out filled."""
    _, own = _members()[section]
    for key in given:
        if (problem := not_read(section, given["name"], key)) is not None:
            raise ConfigError(problem)
    _fill_declared(section, given, own[given["name"]])


def _validate_section(spec: Mapping[str, Any], given: Mapping[str, Any], prefix: str,
                      *, open_keys: bool = False) -> dict[str, Any]:
    out = {}
    for key, value in given.items():
        path = prefix + key
        if key not in spec:
            if open_keys:
                out[key] = value
                continue
            raise ConfigError(f"config.{path}: unknown key; valid keys of "
                              f"config.{prefix.rstrip('.') or ''}: {', '.join(sorted(spec))}"
                              .replace("of config.:", "of config:"))
        sub = spec[key]
        if isinstance(sub, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config.{path}: expected a section, got {value!r}")
            out[key] = _validate_section(sub, value, path + ".", open_keys=path in _OPEN)
        else:
            out[key] = _check_value(path, sub, value)
    for key, sub in spec.items():
        if key in out:
            continue
        path = prefix + key
        if isinstance(sub, dict):
            out[key] = _validate_section(sub, {}, path + ".", open_keys=path in _OPEN)
        elif sub.default is _REQUIRED:
            raise ConfigError(f"config.{path}: missing; the experiment's get_config() must set it")
        else:
            out[key] = sub.default
    return out


_SIMPLE_TYPES = (int, float, str, bool)


def _field_from_hint(hint) -> Field | None:
    """What a constructor annotation alone says of a value, for a field its model does not
    declare: plain types and tuples (of one plain type); None for anything else."""
    import typing
    if hint in _SIMPLE_TYPES:
        return Field(hint)
    if hint is tuple or typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SIMPLE_TYPES:
            return Field(tuple, items=args[0])
        return Field(tuple)
    return None


def model_field_specs(name: str) -> dict[str, Field]:
    """The Field of every constructor field a config may set for model `name`: the model's
    own declaration (its `FIELDS` class attribute), else what its annotation says."""
    import typing

    from jaxdl import models
    cls = models.get_model_class(name)
    declared = dict(getattr(cls, "FIELDS", None) or {})
    hints = typing.get_type_hints(cls)
    specs = {}
    for key in sorted(models.model_fields(name)):
        spec = declared.get(key) or _field_from_hint(hints.get(key))
        if spec is not None:
            specs[key] = spec
    return specs


def _check_model_fields(model: dict[str, Any]) -> None:
    """Every key is a constructor field, every field without a default is set, and every
    value passes the field's declared type, choices and range (see `model_field_specs`)."""
    from jaxdl import models
    cls = models.get_model_class(model["name"])
    fields = models.model_fields(model["name"])
    for key in model:
        if key != "name" and key not in fields:
            raise ConfigError(f"config.model.{key}: unknown field of model {model['name']!r}; "
                              f"valid: {', '.join(sorted(fields))}")
    specs = model_field_specs(model["name"])
    for field in dataclasses.fields(cls):
        if field.name not in fields:
            continue
        required = (field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING)
        if field.name not in model:
            if required:
                raise ConfigError(f"config.model.{field.name}: missing; model "
                                  f"{model['name']!r} requires it")
            continue
        if field.name in specs:
            model[field.name] = _check_value(f"model.{field.name}", specs[field.name],
                                             model[field.name])


def _mlflow_uri(value) -> str | None:
    """'' or a tracking URI, refused up front when the mlflow package is not installed."""
    if value and importlib.util.find_spec("mlflow") is None:
        return ("needs the mlflow package: pip install -e '.[mlflow]' (or '' to log without "
                "MLflow)")
    return None


def _profile_steps(value) -> str | None:
    """'' or 'START:END', 1 <= START <= END (the run's length is checked once known)."""
    if value == "":
        return None
    start, colon, end = value.partition(":")
    if not (colon and start.strip().isdigit() and end.strip().isdigit()):
        return "write 'START:END' (train steps, e.g. '10:20') or '' for no profile"
    if not 1 <= int(start) <= int(end):
        return "needs 1 <= START <= END"
    return None


# The eval splits of the EMA weights are named '<split>_ema' (validation_ema, test_ema).
EMA_SUFFIX = "_ema"


def _check_monitor(config: Mapping[str, Any]) -> None:
    """`checkpoint.monitor` names an eval split and a metric the task reports there. (Whether
    the split has rows is known once the data is loaded: the run checks that before it
    writes anything.)"""
    from jaxdl import tasks
    monitor = config["checkpoint"]["monitor"]
    task = config["task"]
    names = tasks.metric_names(task["name"], task)
    valid = ", ".join(f"{split}/{name}" for split in EVAL_SPLITS for name in names)
    split, _, metric = monitor.partition("/")
    if split.endswith(EMA_SUFFIX) and split[:-len(EMA_SUFFIX)] in EVAL_SPLITS:
        if not config["optimizer"]["ema_decay"] > 0:
            raise ConfigError(f"config.checkpoint.monitor={monitor!r} names the EMA weights, "
                              "which config.optimizer.ema_decay=0.0 turns off; set ema_decay "
                              f"> 0 or monitor {split[:-len(EMA_SUFFIX)]}/{metric}")
        split = split[:-len(EMA_SUFFIX)]
    if split not in EVAL_SPLITS or not metric:
        raise ConfigError(f"config.checkpoint.monitor={monitor!r}: write '<eval split>/"
                          f"<metric>'; valid: {valid}")
    if metric not in names:
        needs = tasks.unavailable_metrics(task["name"], task).get(metric)
        why = f" without {needs}" if needs else ""
        raise ConfigError(f"config.checkpoint.monitor={monitor!r}: task {task['name']!r} "
                          f"reports no metric {metric!r}{why}; valid: {valid}")


def validate(config: ml_collections.ConfigDict | Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Checks every key, type and value; fills the defaults (the schema's, and those of the
    task, optimizer and schedule it names); returns the complete config, locked."""
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    resolved = _validate_section(schema(), given, "")
    _check_model_fields(resolved["model"])
    _check_task_fields(resolved["task"])
    for section in _members():
        _check_member_fields(section, resolved[section])
    _check_monitor(resolved)
    data = resolved["data"]
    if data["validation_fraction"] + data["test_fraction"] >= 1:
        raise ConfigError("config.data: validation_fraction + test_fraction must be < 1, got "
                          f"{data['validation_fraction']} + {data['test_fraction']}")
    _check_folds(data)
    if resolved["init_from_reinit"] and not resolved["init_from"]:
        raise ConfigError("config.init_from_reinit is set but config.init_from is not: name "
                          "the run whose weights start this one")
    if resolved["schedule"]["name"] == "plateau" and resolved["optimizer"]["grad_accum_steps"] > 1:
        raise ConfigError("config.schedule.name='plateau' observes each evaluation in the next "
                          "step, which gradient accumulation may skip; use grad_accum_steps=1")
    if resolved["early_stopping"]["patience"] and not resolved["checkpoint"]["keep_best"]:
        raise ConfigError("config.early_stopping.patience > 0 restores the best checkpoint, so "
                          "config.checkpoint.keep_best must be >= 1")
    out = ml_collections.ConfigDict(resolved)
    out.lock()
    return out


def _check_folds(data: Mapping[str, Any]) -> None:
    folds, fold = data["folds"], data["fold"]
    if folds == 1:
        raise ConfigError("config.data.folds=1: use 0 (no k-fold) or k >= 2 folds")
    if folds and fold >= folds:
        raise ConfigError(f"config.data.fold={fold} must be < config.data.folds={folds}")
    if not folds and fold:
        raise ConfigError(f"config.data.fold={fold} needs config.data.folds >= 2 (k-fold is off)")
    if folds and data["validation_fraction"]:
        raise ConfigError(f"config.data.validation_fraction must be 0.0 with folds={folds}: "
                          "the validation split is fold `fold`, got "
                          f"{data['validation_fraction']}")


def switch(config: ml_collections.ConfigDict | Mapping[str, Any], section: str, name: str
           ) -> ml_collections.ConfigDict:
    """`config` with `config.<section>.name = name` (section: optimizer or schedule). Where
    that changes the name, the fields the experiment pinned for the one it named are dropped
    (the shared ones stay), so the new one starts from its own defaults, not from values
    chosen for another (an Adam's betas, a momentum that would turn RMSprop into something
    else)."""
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    pinned = dict(given.get(section) or {})
    if pinned.get("name") != name:
        shared, _ = _members()[section]
        pinned = {key: value for key, value in pinned.items() if key in shared}
    given[section] = {**pinned, "name": name}
    return ml_collections.ConfigDict(given)


def experiment_module(reference: str):
    """The experiment module `reference` names: 'NAME' (experiments/NAME.py, found as `-m`
    finds it, so this module imports no experiment), a dotted module ('experiments.NAME',
    'my_lab.exp1') or the path of a .py file. Raises ConfigError (one line) when there is
    none or it has no get_config()."""
    if reference.endswith(".py") or os.sep in reference:
        path = Path(reference).expanduser()
        if not path.is_file():
            raise ConfigError(f"no experiment {reference!r}: no such file")
        # A name of its own, so two files with one stem never share a module.
        name = f"_jaxdl_experiment_{abs(hash(str(path.resolve())))}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up there
        spec.loader.exec_module(module)
    else:
        name = reference if "." in reference else f"experiments.{reference}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if not name.startswith(f"{e.name}.") and e.name != name:
                raise
            where = (f"there is no module experiments/{reference}.py (run from the repository "
                     "root, or give a file path)" if name != reference else
                     f"module {e.name!r} is not importable from here")
            raise ConfigError(f"no experiment {reference!r}: {where}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"experiment {reference!r} ({module.__file__}) has no "
                          "get_config() returning its config")
    return module


def apply_overrides(config: ml_collections.ConfigDict | Mapping[str, Any],
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """`config` with dotted-key overrides ({"optimizer.learning_rate": 1e-3}), unchecked
    (`validate` checks them): the Python form of `--config.KEY=VALUE`. A new optimizer or
    schedule name switches that section first (`switch`), as on the command line."""
    for section in _members():
        if f"{section}.name" in overrides:
            config = switch(config, section, overrides[f"{section}.name"])
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    for dotted, value in overrides.items():
        section = given
        *parents, leaf = dotted.split(".")
        for name in parents:
            if not isinstance(section.get(name, {}), dict):
                raise ConfigError(f"config.{dotted}: config.{name} is a value, not a section")
            section = section.setdefault(name, {})  # a section the experiment left default
        section[leaf] = value
    return ml_collections.ConfigDict(given)


def fast_dev_run(config: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
    """The validated `config` cut to a smoke run (Lightning's fast_dev_run): `steps` train
    steps, then one log, one evaluation of one eval batch per split (`data.eval_limit`,
    at the end too) and one checkpoint; no early stopping, no profile. Everything else,
    the model, data, task and optimizer, is the experiment's."""
    every = f"{steps} steps"
    # Pruning, if on, over the smoke run's steps but the last (its fine-tuning).
    prune = ({"prune.start": "0 steps", "prune.end": f"{steps - 1} steps",
              "prune.every": "1 steps"} if config.prune.final_sparsity else {})
    return validate(apply_overrides(config, {
        "train.duration": every, "train.log_every": every, "train.eval_every": every,
        "checkpoint.every": every, "data.eval_limit": 1, "data.eval_limit_at_end": True,
        "early_stopping.patience": 0, "logging.profile_steps": "", **prune}))


def _named_in(overrides: Sequence[str], section: str) -> str | None:
    """The last `--config.<section>.name=X` (or `... X`) of command-line `overrides`."""
    name, flag = None, f"--config.{section}.name"
    for i, arg in enumerate(overrides):
        if arg.startswith(flag + "="):
            name = arg.partition("=")[2]
        elif arg == flag and i + 1 < len(overrides):
            name = overrides[i + 1]
    return name


def with_defaults(config: ml_collections.ConfigDict | Mapping[str, Any],
                  overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """`config` plus every key it leaves out that has a default (the schema's, and the
    fields of its task, optimizer and schedule), unchecked: so `--config.KEY=VALUE` can set a
    key the experiment did not pin. `overrides`: the command line's `--config.*` arguments;
    a `--config.optimizer.name=X` (or schedule) there switches the section to X first (see
    `switch`), so X's fields are the ones filled and settable. A required field of the
    optimizer or schedule is left as None of its type, for an override to set (`validate`
    names it when none does)."""
    for section in _members():
        if (name := _named_in(overrides, section)) is not None:
            config = switch(config, section, name)
    given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)

    def fill(spec: Mapping[str, Any], section: dict[str, Any]) -> None:
        for key, sub in spec.items():
            if isinstance(sub, dict):
                if isinstance(section.setdefault(key, {}), dict):
                    fill(sub, section[key])
            elif key not in section and sub.default is not _REQUIRED:
                section[key] = sub.default

    fill(schema(), given)
    task = given.get("task", {})
    try:
        from jaxdl import tasks
        spec = tasks.task_fields(task.get("name"))
    except (ValueError, KeyError, TypeError):  # an unknown task: validate says so later
        spec = {}
    for key, field in spec.items():
        if key not in task and field.default is not _REQUIRED:
            task[key] = field.default
    for section, (_, own) in _members().items():
        pinned = given.get(section)
        if not isinstance(pinned, dict) or pinned.get("name") not in own:
            continue  # an unknown name: validate says so later
        for key, field in own[pinned["name"]].items():
            if key not in pinned:
                typed = field.kind if isinstance(field.kind, type) else object
                pinned[key] = (ml_collections.FieldReference(None, field_type=typed)
                               if field.default is _REQUIRED else field.default)
    return ml_collections.ConfigDict(given)


def check_devices(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """The global batches must split evenly over the devices."""
    for key in ("batch_size", "eval_batch_size"):
        value = config.data[key]
        if value % num_devices:
            raise ConfigError(f"config.data.{key}={value} is not divisible by the "
                              f"{num_devices} devices in use; use a multiple of {num_devices}")


# What a resumed run may change: where it runs, how batches reach the devices (the same
# batches either way) and what it prints, not what it learns.
RESUMABLE_CHANGES = ("parallel", "logging", "data.pipeline", "data.prefetch", "data.preview")


def differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "",
                ) -> list[str]:
    """'key: saved -> current' for every value that differs, outside RESUMABLE_CHANGES."""
    out = []
    for key in sorted(set(saved) | set(current)):
        path = prefix + key
        if path in RESUMABLE_CHANGES:
            continue
        a, b = saved.get(key), current.get(key)
        if key not in current and prefix in ("optimizer.", "schedule."):
            continue  # a field the old flat layout recorded though the optimizer never read it
        if key not in saved and _schema_default(path) == b:
            continue  # a key added to the schema since that run, at its default: no change
        if key not in saved and isinstance(b, Mapping):
            a = {}  # a section added since that run: each key compared with its default
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, path + ".")
        elif _jsonable(a) != _jsonable(b):
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def _schema_default(path: str) -> Any:
    """The schema's default of the dotted key `path` (REQUIRED when it has none)."""
    spec: Any = schema()
    for part in path.split("."):
        if not isinstance(spec, Mapping) or part not in spec:
            return REQUIRED
        spec = spec[part]
    return spec.default if isinstance(spec, Field) else REQUIRED


def _jsonable(value):
    """Tuples become lists in config.json; compare the saved form."""
    return list(value) if isinstance(value, tuple) else value
