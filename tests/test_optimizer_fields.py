"""Each optimizer and schedule declares its own fields: an experiment pins those of the ones
it names, validation fills the rest with their defaults and refuses a field they do not
read, and a --config.optimizer.name (schedule) override brings in the new one's fields."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import jax.numpy as jnp
import optax
import pytest
from absl import flags
from ml_collections import config_flags

import experiments
from conftest import run_cli, stderr_tail
from experiments import digits_cnn, mnist_dcgan
from jaxdl import config as config_lib
from jaxdl.config import Clock, ConfigError, validate
from jaxdl.schema import REQUIRED
from jaxdl.training import optim


def command_line(get_config, *args: str):
    """The validated config the app makes of `get_config` and these --config.* arguments
    (the same calls as jaxdl.app.run, without a run)."""
    flag_values = flags.FlagValues()
    argv = ["experiment", *args]
    config_flags.DEFINE_config_dict("config", config_lib.with_defaults(get_config(), args),
                                    "experiment config", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    flag_values(argv)
    return validate(flag_values.config)


def defaults(fields) -> dict:
    return {key: field.default for key, field in fields.items() if field.default is not REQUIRED}


# --- switching on the command line ---------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("--config.optimizer.name=rmsprop", "--config.optimizer.rmsprop_decay=0.8"),
    ("--config.optimizer.rmsprop_decay=0.8", "--config.optimizer.name=rmsprop"),
], ids=["name_first", "field_first"])
def test_switching_the_optimizer_fills_its_defaults_and_takes_its_fields(args):
    config = command_line(digits_cnn.get_config, *args)
    assert config.optimizer.to_dict() == {
        **defaults(optim.SHARED_OPTIMIZER_FIELDS), **defaults(optim.OPTIMIZER_FIELDS["rmsprop"]),
        "name": "rmsprop", "learning_rate": 3e-3, "rmsprop_decay": 0.8}
    # The defaults are optax's own.
    assert config.optimizer.eps == inspect.signature(optax.rmsprop).parameters["eps"].default


def test_switching_drops_what_the_experiment_pinned_for_the_old_optimizer():
    """mnist_dcgan pins Adam's b1=0.5: AdamW from the command line starts from its own b1,
    while the shared learning rate stays; naming the same optimizer again keeps the pins."""
    switched = command_line(mnist_dcgan.get_config, "--config.optimizer.name=adamw",
                            "--config.task.fd_classifier=runs/x")
    assert switched.optimizer.b1 == optim.OPTIMIZER_FIELDS["adamw"]["b1"].default != 0.5
    assert switched.optimizer.learning_rate == 2e-4
    same = command_line(mnist_dcgan.get_config, "--config.optimizer.name=adam",
                        "--config.task.fd_classifier=runs/x")
    assert same.optimizer.b1 == 0.5


def test_a_switched_schedule_takes_its_required_fields_from_the_command_line():
    with pytest.raises(ConfigError, match=r"^config\.schedule\.boundaries: missing; schedule "
                                          r"'piecewise' requires it$"):
        command_line(digits_cnn.get_config, "--config.schedule.name=piecewise",
                     "--config.schedule.decay_factor=0.5")
    config = command_line(digits_cnn.get_config, "--config.schedule.name=piecewise",
                          "--config.schedule.boundaries=10 epochs, 20 epochs",
                          "--config.schedule.decay_factor=0.5")
    assert config.schedule.to_dict() == {"name": "piecewise", "warmup": "0 steps",
                                         "boundaries": "10 epochs, 20 epochs",
                                         "decay_factor": 0.5}


# --- a field the named one does not read ---------------------------------------------------


@pytest.mark.parametrize("section, key, value, message", [
    ("optimizer", "rmsprop_decay", 0.9,
     r"^config\.optimizer\.rmsprop_decay: optimizer 'adam' does not read it; its fields: b1, "
     r"b2, ema_decay, eps, grad_accum_steps, grad_clip_norm, learning_rate, name, weight_decay, "
     r"weight_decay_mask$"),
    ("schedule", "plateau_patience", 10,
     r"^config\.schedule\.plateau_patience: schedule 'warmup_cosine' does not read it; its "
     r"fields: final_lr_factor, name, warmup$"),
    ("optimizer", "lr", 0.1,
     r"^config\.optimizer\.lr: unknown key; fields of optimizer 'adam': b1, b2, ema_decay, eps, "),
])
def test_a_field_the_named_one_does_not_read_is_refused(section, key, value, message):
    config = digits_cnn.get_config()
    config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_the_command_line_refuses_an_unread_field_in_one_line(tmp_path):
    """Through the real CLI, before anything is written."""
    workdir = tmp_path / "run"
    result = run_cli("experiments.digits_cnn", f"--workdir={workdir}",
                     "--config.optimizer.name=sgd", "--config.optimizer.b1=0.5", timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("error: config.optimizer.b1: optimizer 'sgd' does not read it; its fields: "
                    "ema_decay, grad_accum_steps, grad_clip_norm, learning_rate, name, weight_decay, "
                    "weight_decay_mask")
    assert not workdir.exists()


def test_config_json_records_the_complete_resolved_config(tmp_path):
    """A two-step run switched to RMSprop on the command line: config.json holds every
    field of the optimizer and schedule it used, defaults included."""
    workdir = tmp_path / "run"
    result = run_cli("experiments.digits_cnn", f"--workdir={workdir}",
                     "--config.optimizer.name=rmsprop", "--config.optimizer.rmsprop_decay=0.8",
                     "--config.train.duration=2 steps", "--config.train.log_every=1 steps",
                     "--config.train.eval_every=2 steps", "--config.checkpoint.every=0 steps",
                     "--config.logging.progress=False", "--config.logging.plot=False",
                     "--config.logging.tensorboard=False",
                     f"--compilation_cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, stderr_tail(result.stderr)
    saved = json.loads((workdir / "config.json").read_text())["config"]
    assert saved["optimizer"] == {
        **defaults(optim.SHARED_OPTIMIZER_FIELDS), **defaults(optim.OPTIMIZER_FIELDS["rmsprop"]),
        "name": "rmsprop", "learning_rate": 3e-3, "rmsprop_decay": 0.8}
    assert saved["schedule"] == {"name": "warmup_cosine", "warmup": "1 epoch",
                                 "final_lr_factor": 0.01}
    assert saved["early_stopping"] == {"patience": 0, "min_delta": 0.0}


# --- every experiment, every optimizer and schedule ----------------------------------------


def _experiment_configs():
    """(id, config) of every experiment and each of its variants."""
    for info in pkgutil.iter_modules(experiments.__path__):
        module = importlib.import_module(f"experiments.{info.name}")
        if not inspect.signature(module.get_config).parameters:
            yield info.name, module.get_config()
            continue
        for variant in module.VARIANTS:
            yield f"{info.name}:{variant}", module.get_config(variant)


@pytest.mark.parametrize("name, config", list(_experiment_configs()),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_experiment_pins_only_what_it_names_and_validates(name, config):
    for section, shared, own in (("optimizer", optim.SHARED_OPTIMIZER_FIELDS,
                                  optim.OPTIMIZER_FIELDS),
                                 ("schedule", optim.SHARED_SCHEDULE_FIELDS,
                                  optim.SCHEDULE_FIELDS)):
        pinned = set(config[section])
        assert pinned <= {*shared, *own[config[section].name]}, (name, section, pinned)
    if name == "mnist_dcgan":  # its FD needs a classifier run, named on the command line
        config.task.fd_classifier = "runs/mnist_cnn_1ep"
    validate(config)


# A value for each field that has no default; the set of such fields is checked too, so a
# new required field is seen here.
REQUIRED_VALUES = {"learning_rate": 0.1, "momentum": 0.9, "boundaries": "5 steps, 8 steps",
                   "decay_factor": 0.5, "decay_every": "4 steps", "warmup": "2 steps"}


def _build_with_defaults(optimizer: str, schedule: str):
    config = digits_cnn.get_config()
    config.optimizer = {"name": optimizer}
    config.schedule = {"name": schedule}
    for section, fields in (("optimizer", {**optim.SHARED_OPTIMIZER_FIELDS,
                                           **optim.OPTIMIZER_FIELDS[optimizer]}),
                            ("schedule", optim.SCHEDULE_FIELDS[schedule])):
        for key, field in fields.items():
            if field.default is REQUIRED and key != "name":
                assert key in REQUIRED_VALUES, (section, key)
                config[section][key] = REQUIRED_VALUES[key]
    config = validate(config)
    clock = Clock(steps_per_epoch=5, batch_size=config.data.batch_size)
    tx, schedule_fn = optim.make_optimizer(config.optimizer, config.schedule, total_updates=10,
                                           to_updates=clock.steps)
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    updates, _ = tx.update({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, tx.init(params), params,
                           value=jnp.float32(1.0))
    assert all(bool(jnp.isfinite(u).all()) for u in updates.values())
    assert float(schedule_fn(3)) >= 0
    return config


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_each_optimizer_builds_with_its_own_defaults(name):
    config = _build_with_defaults(name, "constant")
    assert set(config.optimizer) == {*optim.SHARED_OPTIMIZER_FIELDS, *optim.OPTIMIZER_FIELDS[name]}
    for key, value in defaults(optim.OPTIMIZER_FIELDS[name]).items():
        assert config.optimizer[key] == value


@pytest.mark.parametrize("name", optim.SCHEDULES)
def test_each_schedule_builds_with_its_own_defaults(name):
    config = _build_with_defaults("sgd", name)
    assert set(config.schedule) == {*optim.SHARED_SCHEDULE_FIELDS, *optim.SCHEDULE_FIELDS[name]}
    for key, value in defaults(optim.SCHEDULE_FIELDS[name]).items():
        assert config.schedule[key] == value


# --- runs saved before this layout ---------------------------------------------------------


def test_a_run_saved_with_every_flat_field_resumes_without_a_difference():
    """config.json of a run from the flat layout also holds fields its optimizer never read:
    they are no change; a field it reads still is."""
    current = validate(digits_cnn.get_config()).to_dict()
    saved = json.loads(json.dumps(current))
    saved["optimizer"].update(momentum=0.0, rmsprop_decay=0.9, adagrad_initial_accumulator=0.1)
    saved["schedule"].update(plateau_patience=10, boundaries="", pct_start=0.3)
    assert config_lib.differences(saved, current) == []
    saved["optimizer"]["b1"] = 0.5
    assert config_lib.differences(saved, current) == ["optimizer.b1: 0.5 -> 0.9"]


def test_the_readme_tables_name_the_declared_fields(repo):
    """README.md's optimizer and schedule tables list each one's own fields, no more."""
    import re
    rows = {}
    for line in (repo / "README.md").read_text().splitlines():
        if match := re.match(r"^\| (`[a-z0-9_]+`(?:, `[a-z0-9_]+`)*) \| (.*) \|$", line):
            for name in re.findall(r"`([a-z0-9_]+)`", match.group(1)):
                rows[name] = set(re.findall(r"`([a-z0-9_]+)`", match.group(2)))
    for name, fields in {**optim.OPTIMIZER_FIELDS, **optim.SCHEDULE_FIELDS}.items():
        assert rows.get(name) == set(fields), name
