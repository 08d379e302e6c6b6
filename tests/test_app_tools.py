"""What jaxdl.app exports for tools (benchmarks, sweeps): the config an experiment runs with,
and the process set-up a run gets, without copying either."""

from __future__ import annotations

import pytest

from jaxdl import app
from jaxdl.schema import ConfigError


def test_load_config_is_the_experiments_validated_config_with_overrides():
    from experiments import digits_cnn

    config = app.load_config("digits_cnn", ["--config.data.batch_size=32",
                                            "--config.optimizer.learning_rate=0.5"])
    pinned = digits_cnn.get_config()
    assert config.data.batch_size == 32 and config.optimizer.learning_rate == 0.5
    assert all(config.model[key] == value for key, value in pinned.model.items())
    assert config.is_locked  # validated: validate() returns it locked
    # a config a tool built itself takes the same overrides
    built = app.load_config(pinned, ["--config.seed=7"])
    assert built.seed == 7 and built.data.batch_size == pinned.data.batch_size


@pytest.mark.parametrize("experiment, overrides, match", [
    ("no_such_experiment", [], "no experiment 'no_such_experiment'"),
    ("digits_cnn", ["--config.optimizer.no_such_key=1"],
     r"config.optimizer.no_such_key: unknown key; fields of optimizer 'adam': b1, b2, ema_decay, eps"),
    ("digits_cnn", ["--seed=1"], "--seed=1: overrides are --config.KEY=VALUE"),
    ("digits_cnn", ["--config.data.batch_size=0"], "batch_size"),
])
def test_load_config_refuses_bad_input_in_one_line(experiment, overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        app.load_config(experiment, overrides)
    assert "\n" not in str(info.value)


def test_prepare_process_splits_the_cpu_unless_xla_flags_says_otherwise(monkeypatch):
    config = app.load_config("mnist_cnn")  # pins parallel.host_devices=2
    assert config.parallel.host_devices == 2
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert app.prepare_process(config) is None  # no cache asked for: none, JAX untouched
    assert app.os.environ["XLA_FLAGS"] == ("--xla_cpu_enable_fast_math=false "
                                           "--xla_force_host_platform_device_count=2")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    app.prepare_process(config)
    assert app.os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def test_load_config_takes_an_experiments_variant():
    cpu = app.load_config("shakespeare_char_lstm", variant="cpu")
    assert cpu.parallel.host_devices == 2
    with pytest.raises(ConfigError, match="experiment 'digits_cnn', variant 'gpu'"):
        app.load_config("digits_cnn", variant="gpu")
