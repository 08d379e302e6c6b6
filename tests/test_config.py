"""Tests for jaxdl.config: schema validation, device checks and durations."""

from __future__ import annotations

import copy
import re
import sys
import textwrap
import types

import ml_collections
import pytest

from experiments import digits_cnn
from jaxdl import losses, models, tasks
from jaxdl.models import layers
from jaxdl.config import Clock, ConfigError, check_devices, validate
from jaxdl.data import source_names
from jaxdl.training import optim


def base() -> dict:
    """The digits_cnn config as a plain (mutable, untyped) nested dict."""
    return digits_cnn.get_config().to_dict()


def error_of(config, names: str) -> str:
    """The message of the ConfigError `validate(config)` raises, which must contain `names`
    (the key at fault); asserts it is one line."""
    with pytest.raises(ConfigError, match=re.escape(names)) as info:
        validate(config)
    message = str(info.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message.strip(), f"multi-line error: {message!r}"
    return message


# --- the happy path --------------------------------------------------------------------------


def test_digits_cnn_config_validates_and_is_locked():
    config = validate(digits_cnn.get_config())
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.is_locked
    with pytest.raises((AttributeError, KeyError), match='"no_such_key" .*config is locked'):
        config.no_such_key = 1
    with pytest.raises((AttributeError, KeyError), match='"lr" .*config is locked'):
        config.optimizer.lr = 0.1
    assert config.seed == 0
    assert config.data.batch_size == 64
    assert config.optimizer.name == "adam"
    assert config.optimizer.learning_rate == pytest.approx(3e-3)
    assert config.model.name == "cnn"
    assert tuple(config.model.features) == (32, 64)


def test_validate_accepts_a_plain_mapping():
    config = validate(base())
    assert config.is_locked
    assert config.train.duration == "40 epochs"


def test_non_hyperparameter_defaults_are_filled_in():
    given = base()
    given["parallel"].pop("num_devices", None)  # digits_cnn leaves both to their defaults
    given.pop("logging", None)
    given["parallel"]["host_devices"] = 3
    config = validate(given)
    assert config.parallel.num_devices == 0
    assert config.parallel.host_devices == 3  # given values are kept
    assert config.logging.tensorboard is True
    assert config.logging.progress is True
    assert config.logging.plot is True


def test_given_defaults_are_not_overridden():
    given = base()
    given["logging"] = {"tensorboard": False}
    given["parallel"]["num_devices"] = 2
    config = validate(given)
    assert config.logging.tensorboard is False
    assert config.logging.progress is True
    assert config.parallel.num_devices == 2


def test_ints_are_accepted_for_floats():
    given = base()
    given["optimizer"]["learning_rate"] = 1
    given["task"]["label_smoothing"] = 0
    given["optimizer"]["weight_decay"] = 0
    config = validate(given)
    assert config.optimizer.learning_rate == 1.0
    assert isinstance(config.optimizer.learning_rate, float)
    assert isinstance(config.task.label_smoothing, float)


def test_validate_does_not_mutate_its_input():
    given = base()
    snapshot = copy.deepcopy(given)
    given["optimizer"]["learning_rate"] = 1
    snapshot["optimizer"]["learning_rate"] = 1
    validate(given)
    assert given == snapshot


# --- unknown and missing keys ----------------------------------------------------------------


def test_unknown_top_level_key():
    given = base()
    given["sed"] = 0
    message = error_of(given, "config.sed")
    assert "unknown key" in message
    assert "seed" in message  # the valid keys are listed


def test_unknown_nested_key():
    given = base()
    given["optimizer"]["lr"] = 0.1
    message = error_of(given, "config.optimizer.lr")
    assert "unknown key" in message
    assert "learning_rate" in message


def test_missing_required_key():
    given = base()
    del given["seed"]
    message = error_of(given, "config.seed")
    assert "missing" in message


def test_missing_required_nested_key():
    given = base()
    del given["data"]["batch_size"]
    message = error_of(given, "config.data.batch_size")
    assert "missing" in message


def test_missing_required_section():
    given = base()
    del given["optimizer"]
    message = error_of(given, "config.optimizer.")
    assert "missing" in message


def test_scalar_where_a_section_goes():
    given = base()
    given["data"] = 3
    message = error_of(given, "config.data")


# --- wrong types -----------------------------------------------------------------------------


@pytest.mark.parametrize("section, key, value, expected", [
    ("data", "batch_size", "64", "int"),
    (None, "seed", 1.5, "int"),
    (None, "seed", True, "int"),
    ("data", "batch_size", True, "int"),
    ("optimizer", "learning_rate", "0.1", "float"),
    ("optimizer", "learning_rate", True, "float"),
    ("train", "duration", 40, "str"),
    ("logging", "plot", 1, "bool"),
    ("optimizer", "name", 3, "str"),
])
def test_wrong_type(section, key, value, expected):
    given = base()
    (given.setdefault(section, {}) if section else given)[key] = value
    path = f"config.{section}.{key}" if section else f"config.{key}"
    message = error_of(given, path)
    assert f"expected {expected}" in message
    assert repr(value) in message


# --- impossible values -----------------------------------------------------------------------


@pytest.mark.parametrize("section, key, value", [
    ("optimizer", "learning_rate", -0.1),
    ("optimizer", "learning_rate", -1),
    ("data", "batch_size", 0),
    ("data", "batch_size", -64),
    ("data", "eval_batch_size", 0),
    ("task", "label_smoothing", 1.0),
    ("task", "label_smoothing", -0.1),
    ("data", "validation_fraction", 1.0),
    ("optimizer", "eps", 0.0),
    ("optimizer", "grad_accum_steps", 0),
    ("optimizer", "b2", 1.0),
    ("parallel", "num_devices", -1),
])
def test_impossible_value(section, key, value):
    given = base()
    given[section][key] = value
    message = error_of(given, f"config.{section}.{key}")
    assert "must be" in message


@pytest.mark.parametrize("validation, test", [(0.5, 0.5), (0.6, 0.5), (0.9, 0.2)])
def test_split_fractions_must_leave_training_data(validation, test):
    given = base()
    given["data"]["validation_fraction"] = validation
    given["data"]["test_fraction"] = test
    message = error_of(given, "config.data")
    assert "validation_fraction" in message and "test_fraction" in message


def test_split_fractions_just_below_one_are_fine():
    given = base()
    given["data"]["validation_fraction"] = 0.4
    given["data"]["test_fraction"] = 0.5
    validate(given)


# --- unknown names ---------------------------------------------------------------------------


@pytest.mark.parametrize("section, bad, valid_names", [
    ("optimizer", "adamax", lambda: optim.OPTIMIZERS),
    ("schedule", "linear_warmup_magic", lambda: optim.SCHEDULES),
    ("model", "resnet9000", models.model_names),
    ("data", "imagenet22k", source_names),
    ("task", "segmentation", tasks.task_names),
])
def test_unknown_name_lists_valid_names(section, bad, valid_names):
    given = base()
    given[section]["name"] = bad
    message = error_of(given, f"config.{section}.name")
    assert repr(bad) in message
    names = list(valid_names())
    assert names, "nothing registered"
    for name in names:
        assert name in message


def test_unknown_loss_lists_valid_losses():
    given = base()
    given["task"]["loss"] = "hinge_squared_magic"
    message = error_of(given, "config.task.loss")
    assert "'hinge_squared_magic'" in message
    for name in losses.LOSSES:
        assert name in message


@pytest.mark.parametrize("section, key, bad", [
    (None, "precision", "fp8"),
    ("parallel", "backend", "horovod"),
    ("optimizer", "weight_decay_mask", "some"),
    ("data", "augmentation", "randaugment"),
])
def test_unknown_choice(section, key, bad):
    given = base()
    (given[section] if section else given)[key] = bad
    path = f"config.{section}.{key}" if section else f"config.{key}"
    message = error_of(given, path)
    assert "valid:" in message


def test_unknown_model_field():
    given = base()
    given["model"]["widths"] = (32, 64)
    message = error_of(given, "config.model.widths")
    assert "'cnn'" in message
    for field in ("features", "kernel_size", "dense_width", "num_classes"):
        assert field in message


def test_missing_model_field():
    """The constructor needs `kernel_size`: a config without it cannot run."""
    given = base()
    del given["model"]["kernel_size"]
    message = error_of(given, "config.model.kernel_size")


# --- model field values (each model declares its fields' types, choices and ranges) ----------


# Fields jaxdl fills itself (the pmap axis, the compute dtype) or that take a dtype: not
# declared by the models, so their annotations alone are checked.
_UNDECLARED = {"axis_name", "dtype", "param_dtype"}


def _model_refusal(key, value, *needles):
    """validate() of digits_cnn with config.model.KEY=VALUE refuses it in one line that
    names the field and every needle (the valid choices or the range)."""
    given = base()
    given["model"][key] = value
    with pytest.raises(ConfigError, match=re.escape(f"config.model.{key}")) as info:
        validate(given)
    message = str(info.value)
    assert "\n" not in message.strip(), f"multi-line error: {message!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


@pytest.mark.parametrize("key, value, needles", [
    ("activation", "swish", ["'swish'", *layers.ACTIVATIONS]),
    ("pooling", "foo", ["'foo'", *layers.POOLS]),
    ("dropout_rate", 1.5, ["1.5", "[0, 1)"]),
    ("dropout_rate", -0.5, ["-0.5", "[0, 1)"]),
    ("dropout_rate", 1.0, ["1.0", "[0, 1)"]),
    ("bn_momentum", 1.5, ["1.5", "[0, 1)"]),
    ("dense_width", 0, ["0", "> 0"]),
    ("kernel_size", -3, ["-3", "> 0"]),
    ("num_classes", 2.5, ["2.5", "expected int"]),
    ("batch_norm", "yes", ["'yes'", "expected bool"]),
    # what --config.model.features=[32,64,x] delivers: the text, unparsed, in a 1-tuple
    ("features", ("[32,64,x]",), ["'x'", "is not an int", "list of ints"]),
    ("features", ("x",), ["'x'", "is not an int", "list of ints"]),
    ("features", (32, 64.5), ["64.5", "is not an int"]),
    ("features", (32, True), ["True", "is not an int"]),
    ("features", (32, 0), ["each element must be > 0", "got 0"]),
    ("features", 32, ["expected a list of ints", "32"]),
])
def test_bad_model_field_value(key, value, needles):
    _model_refusal(key, value, *needles)


def test_model_field_values_are_normalised():
    """A list for a sequence field becomes a tuple; an int for a float field a float."""
    given = base()
    given["model"]["features"] = [16, 32]
    given["model"]["dropout_rate"] = 0
    config = validate(given)
    assert config.model.features == (16, 32)
    assert config.model.dropout_rate == 0.0 and isinstance(config.model.dropout_rate, float)


@pytest.mark.parametrize("name", models.model_names())
def test_registered_model_declares_every_field_and_its_defaults_validate(name):
    """Every field a config may set is declared in FIELDS (nothing else is), with the type
    its annotation says, and every constructor default passes its declaration."""
    import dataclasses
    import typing

    from jaxdl import config as config_lib
    cls = models.get_model_class(name)
    settable = models.model_fields(name) - _UNDECLARED
    assert set(cls.FIELDS) == settable
    hints = typing.get_type_hints(cls)
    for key, spec in cls.FIELDS.items():
        hint = hints[key]
        origin = typing.get_origin(hint)
        if origin is tuple:
            assert spec.kind is tuple and spec.items is typing.get_args(hint)[0], key
        elif origin in (typing.Union, types.UnionType):
            assert set(spec.kind) == set(typing.get_args(hint)), key
        else:
            assert spec.kind is hint, key
    defaults = {f.name: f.default for f in dataclasses.fields(cls)
                if f.name in settable and f.default is not dataclasses.MISSING}
    for key, default in defaults.items():
        config_lib._check_value(f"model.{key}", cls.FIELDS[key], default)


def test_user_model_fields_are_checked_from_annotations(tmp_path, monkeypatch):
    """A model without FIELDS: its annotations still type-check, elements of sequences too."""
    (tmp_path / "jaxdl_test_annotated_model.py").write_text(textwrap.dedent("""
        import flax.linen as nn


        class Net(nn.Module):
            widths: tuple[int, ...]
            rate: float

            def __call__(self, x, *, train: bool):
                return x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    given = base()
    given["model"] = {"name": "jaxdl_test_annotated_model:Net", "widths": (8, 16), "rate": 0}
    assert validate(given).model.rate == 0.0
    given["model"]["widths"] = ("[8,y]",)
    with pytest.raises(ConfigError, match=r"config\.model\.widths='\[8,y\]': 'y' is not an int"):
        validate(given)


# --- checkpoint.monitor: an eval split and a metric the task reports ------------------------


def _monitor_refusal(given, monitor):
    given["checkpoint"]["monitor"] = monitor
    with pytest.raises(ConfigError, match=re.escape(f"config.checkpoint.monitor={monitor!r}")) \
            as info:
        validate(given)
    message = str(info.value)
    assert "\n" not in message.strip(), f"multi-line error: {message!r}"
    return message


@pytest.mark.parametrize("monitor", ["validation/acc", "test/bits_per_char", "train/loss",
                                     "accuracy", "validation/", "valid/accuracy"])
def test_monitor_must_name_an_eval_split_and_a_metric_the_task_reports(monitor):
    message = _monitor_refusal(base(), monitor)
    assert message.endswith("valid: validation/loss, validation/accuracy, test/loss, "
                            "test/accuracy"), message


@pytest.mark.parametrize("monitor", ["validation/accuracy", "test/loss", "validation/loss"])
def test_monitor_of_a_reported_metric_validates(monitor):
    given = base()
    given["checkpoint"]["monitor"] = monitor
    assert validate(given).checkpoint.monitor == monitor


def test_monitor_names_what_an_unavailable_metric_needs():
    """The GAN reports a Fréchet distance only with a classifier to score samples."""
    from experiments import mnist_dcgan
    given = mnist_dcgan.get_config().to_dict()
    given["task"]["fd_classifier"] = ""
    message = _monitor_refusal(given, "validation/frechet_distance")
    assert "config.task.fd_classifier" in message and "validation/g_loss" in message
    given["task"]["fd_classifier"] = "runs/classifier"
    assert validate(given).checkpoint.monitor == "validation/frechet_distance"


def _experiment_configs():
    import importlib
    import pkgutil

    import experiments
    for info in pkgutil.iter_modules(experiments.__path__):
        yield importlib.import_module(f"experiments.{info.name}")


# The experiment's FD needs a classifier run, named on the command line (its docstring).
_EXPERIMENT_OVERRIDES = {"mnist_dcgan": {"task": {"fd_classifier": "runs/mnist_cnn_1ep"}}}


@pytest.mark.parametrize("module", list(_experiment_configs()), ids=lambda m: m.__name__)
def test_every_experiment_validates(module):
    """The declared ranges and metric names accept what every experiment pins."""
    given = module.get_config().to_dict()
    for section, values in _EXPERIMENT_OVERRIDES.get(module.__name__.split(".")[-1],
                                                     {}).items():
        given[section].update(values)
    validate(given)


# Per task: an experiment that uses it (with overrides that put it on small data) and the
# metrics its on_eval adds to what apply reports.
_TASK_CASES = {
    "classification": ("digits_cnn", {}, set()),
    "autoencoder": ("mnist_autoencoder", {"data.name": "digits", "model.image_shape": (8, 8, 1)},
                    set()),
    "vae": ("mnist_vae", {"data.name": "digits", "model.image_shape": (8, 8, 1)}, set()),
    "gan": ("mnist_dcgan", {"data.name": "digits", "model.output_height": 8,
                            "model.output_width": 8, "checkpoint.monitor": "validation/g_loss"},
            set()),
    "sequence_regression": ("fulda_rainfall_runoff_lstm", {}, {"nse", "baseline_nse"}),
    "language_model": ("shakespeare_char_lstm", {}, set()),
    "word2vec": ("shakespeare_word2vec", {
        "data.name": "synthetic", "model.vocab_size": 20, "task.probe_words": (),
        "task.analogies": (), "data.options": {"kind": "words", "shape": [2],
                                               "num_classes": 20, "examples": 400,
                                               "validation_examples": 100, "seed": 0}},
                 set()),
    "seq2seq": ("dates_seq2seq", {"data.options.examples": 500}, set()),
    # The teacher (a finished run) is trained by the test: slow tier.
    "distillation": ("digits_cnn", {"task": {"name": "distillation", "teacher": "TEACHER",
                                             "alpha": 0.5, "temperature": 2.0}}, set()),
}


def _tiny_teacher(workdir):
    """A finished 2-step digits_cnn run, for the distillation task's case."""
    import io

    from conftest import make_config
    from jaxdl.training import loop
    loop.train_and_evaluate(make_config("digits_cnn", **{
        "model.features": (2,), "model.dense_width": 4, "train.duration": "2 steps",
        "train.eval_every": "2 steps", "train.log_every": "2 steps",
        "checkpoint.every": "2 steps", "logging.tensorboard": False, "logging.plot": False,
        "logging.progress": False}), workdir, stream=io.StringIO())
    return str(workdir)


def test_every_task_is_checked_below():
    assert set(_TASK_CASES) == set(tasks.task_names())


@pytest.mark.parametrize("task_name", [
    pytest.param(name, marks=pytest.mark.slow) if name == "distillation" else name
    for name in sorted(_TASK_CASES)])
def test_declared_metric_names_are_what_the_task_reports(task_name, tmp_path):
    """metric_names == the keys of the values `apply` returns at evaluation (traced, not
    run) plus what on_eval adds: a monitor that validates is found at every evaluation."""
    import jax
    import numpy as np

    from conftest import make_config
    from jaxdl import data as data_lib
    from jaxdl.training import loop
    experiment, overrides, on_eval = _TASK_CASES[task_name]
    if task_name == "distillation":
        overrides = {"task": {**overrides["task"],
                              "teacher": _tiny_teacher(tmp_path / "teacher")}}
    config = make_config(experiment, **overrides)
    assert config.task.name == task_name
    if data_lib.source_location(config.data.name) is None:
        pytest.skip(f"the {config.data.name} files are not on this machine "
                    "(set $JAXDL_DATA_DIR)")
    dataset, splits = loop.load_splits(config)
    task = tasks.build_task(config, dataset, axis_name=None, train_split=splits["train"])
    batch = data_lib.train_batch(splits["train"], 4, config.seed, 0)
    batch = {**batch, "mask": np.ones(len(batch["targets"]), np.float32)}
    rng = jax.random.PRNGKey(0)
    variables = jax.eval_shape(task.init, rng, batch["inputs"])
    values = jax.eval_shape(lambda v: task.apply(v, batch, train=False, rng=rng)[0], variables)
    declared = tasks.metric_names(task_name, config.task)
    assert len(set(declared)) == len(declared)
    assert set(declared) == set(values) | on_eval


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize("section, key", [
    ("train", "duration"), ("train", "log_every"), ("train", "eval_every"),
    ("schedule", "warmup"), ("schedule", "decay_every"),
])
@pytest.mark.parametrize("bad", ["10 parsecs", "1.5 steps", "ten epochs", "epochs", ""])
def test_bad_duration(section, key, bad):
    given = base()
    if key == "decay_every":  # a field of the exponential schedule
        given["schedule"] = {"name": "exponential", "decay_factor": 0.5}
    given[section][key] = bad
    message = error_of(given, f"config.{section}.{key}")
    assert repr(bad) in message


def test_bad_duration_in_a_list():
    given = base()
    given["schedule"] = {"name": "piecewise", "decay_factor": 0.1,
                         "boundaries": "2 epochs, 10 parsecs"}
    message = error_of(given, "config.schedule.boundaries")
    assert "10 parsecs" in message


@pytest.mark.parametrize("good, steps", [
    ("40 epochs", 40 * 19), ("1 epoch", 19), ("0.5 epochs", 10), ("100 steps", 100),
    ("1 step", 1), ("1000 examples", 16), ("1e3 steps", 1000), (" 3  EPOCHS ", 3 * 19)])
def test_good_durations(good, steps):
    """Accepted, kept as written, and counted by hand at 19 steps of 64 per epoch
    (0.5 epochs = round(9.5) = 10; 1000 examples = ceil(1000 / 64) = 16)."""
    given = base()
    given["train"]["duration"] = good
    assert validate(given).train.duration == good
    assert Clock(steps_per_epoch=19, batch_size=64).steps(good) == steps


# --- devices ---------------------------------------------------------------------------------


def test_check_devices_rejects_uneven_batch():
    config = validate(digits_cnn.get_config())
    with pytest.raises(ConfigError, match="config.data.batch_size=64 is not divisible by the 3 "
                                          "devices") as info:
        check_devices(config, 3)
    message = str(info.value)
    assert "\n" not in message.strip()
    assert "3" in message
    assert "config.data.batch_size" in message


@pytest.mark.parametrize("num_devices", [1, 2, 4])
def test_check_devices_accepts_even_batch(num_devices):
    check_devices(validate(digits_cnn.get_config()), num_devices)


def test_check_devices_checks_eval_batch_too():
    given = base()
    given["data"]["batch_size"] = 64
    given["data"]["eval_batch_size"] = 100
    with pytest.raises(ConfigError, match="eval_batch_size"):
        check_devices(validate(given), 8)


# --- Clock -----------------------------------------------------------------------------------


@pytest.fixture
def clock():
    return Clock(steps_per_epoch=19, batch_size=64)


@pytest.mark.parametrize("text, steps", [
    ("40 epochs", 760),
    ("1 epoch", 19),
    ("100 steps", 100),
    ("1 step", 1),
    ("1000 examples", 16),  # ceil(1000 / 64)
    ("64 examples", 1),
    ("65 examples", 2),
    ("0.5 epoch", 10),  # round(9.5)
    ("0.5 epochs", 10),
])
def test_clock_steps(clock, text, steps):
    assert clock.steps(text) == steps
    assert isinstance(clock.steps(text), int)


def test_clock_step_list(clock):
    assert clock.step_list("2 epochs, 100 steps") == [38, 100]
    assert clock.step_list("") == []


@pytest.mark.parametrize("bad", ["10 parsecs", "1.5 steps", "ten epochs"])
def test_clock_rejects_bad_durations(clock, bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        clock.steps(bad)


# --- a model given as an import path -----------------------------------------------------------


_HELPER_MODULE = "jaxdl_test_helper_models"


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    (tmp_path / f"{_HELPER_MODULE}.py").write_text(textwrap.dedent("""
        import flax.linen as nn


        class TinyNet(nn.Module):
            hidden: int
            num_classes: int = 10

            @nn.compact
            def __call__(self, x, *, train: bool):
                x = x.reshape((x.shape[0], -1))
                x = nn.relu(nn.Dense(self.hidden)(x))
                return nn.Dense(self.num_classes)(x)


        NOT_A_MODULE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, _HELPER_MODULE, raising=False)
    yield f"{_HELPER_MODULE}:TinyNet"
    sys.modules.pop(_HELPER_MODULE, None)


def test_import_path_model_validates(tiny_model):
    given = base()
    given["model"] = {"name": tiny_model, "hidden": 16, "num_classes": 10}
    config = validate(given)
    assert config.model.name == tiny_model
    assert config.model.hidden == 16


def test_import_path_model_fields_are_checked(tiny_model):
    given = base()
    given["model"] = {"name": tiny_model, "hidden": 16, "features": (32, 64)}
    message = error_of(given, "config.model.features")
    assert "hidden" in message and "num_classes" in message


@pytest.mark.parametrize("name", [f"{_HELPER_MODULE}:NoSuchNet",
                                  f"{_HELPER_MODULE}:NOT_A_MODULE",
                                  "jaxdl_no_such_module_xyz:Net"])
def test_bad_import_path_model(tiny_model, name):
    given = base()
    given["model"] = {"name": name, "hidden": 16}
    message = error_of(given, "config.model.name")
    assert name in message
