"""What the config asks of a model is honoured or refused, never silently lost (issue 12,
item 4): `precision` needs a `dtype` field, BatchNorm under pmap an `axis_name` field."""

import pytest

from experiments import digits_cnn
from jaxdl import config as config_lib
from jaxdl.training import loop


def _config(name, fields, **overrides):
    """digits_cnn's config training the model `user_models.<name>` with `fields`."""
    config = digits_cnn.get_config()
    config.model = {"name": f"user_models:{name}", **fields}
    for dotted, value in overrides.items():
        section, (*parents, leaf) = config, dotted.split(".")
        for part in parents:
            section = section[part]
        section[leaf] = value
    return config_lib.validate(config)


NO_DTYPE = ("DropoutMLP", {"width": 16, "num_classes": 10, "dropout_rate": 0.0})
NO_AXIS_NAME = ("BatchNormMLP", {"width": 16, "num_classes": 10})


def test_bf16_is_refused_for_a_model_without_dtype_before_anything_is_written(tmp_path):
    """Such a model computes in float32 whatever precision says: refused in one line."""
    config = _config(*NO_DTYPE, precision="bf16", **{"parallel.num_devices": 1})
    workdir = tmp_path / "run"
    with pytest.raises(config_lib.ConfigError,
                       match=r"^config\.precision='bf16' but model 'user_models:DropoutMLP' "
                             r"has no `dtype` field to compute in; .*precision='fp32'$"):
        next(loop.run(config, workdir))
    assert not workdir.exists()
    loop.build(_config(*NO_DTYPE, **{"parallel.num_devices": 1}))  # fp32 needs nothing


def test_batch_norm_without_axis_name_is_refused_under_pmap_over_devices(tmp_path):
    """Under pmap over 4 devices its statistics would stay per device: refused in one line,
    before anything is written."""
    config = _config(*NO_AXIS_NAME, **{"parallel.backend": "pmap"})
    workdir = tmp_path / "run"
    with pytest.raises(config_lib.ConfigError,
                       match=r"^model 'user_models:BatchNormMLP' keeps BatchNorm statistics "
                             r"but has no `axis_name` field, so under pmap over 4 devices "
                             r"each would keep its own; .*backend='sharded'$"):
        next(loop.run(config, workdir))
    assert not workdir.exists()


@pytest.mark.parametrize("overrides", [
    {"parallel.backend": "sharded"},  # statistics global by construction
    {"parallel.backend": "pmap", "parallel.num_devices": 1},  # one device: nothing to sync
    {"parallel.backend": "sharded", "precision": "bf16"},  # it has a dtype field
], ids=["sharded", "pmap-1-device", "bf16-with-dtype"])
@pytest.mark.slow
def test_the_same_model_trains_where_nothing_is_lost(overrides):
    trainer = loop.build(_config(*NO_AXIS_NAME, **overrides))
    state, metrics = trainer.train_step(trainer.state, trainer.backend.put_batch(
        trainer.train_batch(0)))
    assert "batch_stats" in trainer.backend.get_state(state).model_state
