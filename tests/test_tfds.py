"""TFDS catalog datasets (`tfds:NAME[:VERSION]`): the CIFAR-10 and ImageNet experiments end
to end on `tfds.testing.mock_data`, and the one-line errors when a dataset is not prepared
or the machine is offline. Nothing here downloads: CIFAR-10 and ImageNet are not here."""

import json
import socket

import numpy as np
import pytest
from conftest import make_config, run_cli

from jaxdl import data
from jaxdl.data import __main__ as data_cli
from jaxdl.data import tfds_source
from jaxdl.training import loop

MOCK_EXAMPLES = 48  # per split
SHRINK = {"train.duration": "2 steps", "train.log_every": "1 steps",
          "train.eval_every": "2 steps", "checkpoint.every": "0 steps",
          "data.batch_size": 8, "data.eval_batch_size": 16, "task.misclassified_shown": 0,
          "logging.tensorboard": False, "logging.progress": False, "logging.plot": False}


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS reads random examples of each dataset's declared features. mock_data fakes the
    reading, not the files the loader checks first, so the check is told they are there."""
    from tensorflow_datasets import testing

    monkeypatch.setattr(tfds_source, "is_prepared", lambda builder: True)
    with testing.mock_data(num_examples=MOCK_EXAMPLES):
        yield


def test_loader_reads_splits_as_float_images_and_int_labels(mock_tfds):
    dataset = data.load_source("tfds:cifar10", test_split="test[:50%]")
    assert dataset.features.shape == (MOCK_EXAMPLES, 32, 32, 3)
    assert dataset.features.dtype == np.float32 and dataset.targets.dtype == np.int32
    assert 0.0 <= dataset.features.min() and dataset.features.max() <= 1.0
    assert dataset.features.max() > 0.5  # uint8 scaled by 1/255, not clipped to 0/1
    assert dataset.num_classes == 10 and dataset.targets.max() < 10
    assert set(dataset.predefined_splits) == {"test"}


def test_variable_size_images_are_resized_to_a_square(mock_tfds):
    # Mock ImageNet JPEGs come in random sizes of 5 to 50 pixels a side.
    dataset = data.load_source("tfds:imagenet2012", image_size=12, test_split="")
    assert dataset.features.shape == (MOCK_EXAMPLES, 12, 12, 3)
    assert dataset.num_classes == 1000 and dataset.predefined_splits is None


# Overrides on top of SHRINK. ImageNet: 32x32 images keep ResNet-50 small; validation and
# test come from the ILSVRC validation split (1000 classes in 48 mock examples leave too few
# per class to hold out 1% of train). mock_data fakes whole reads, not streaming.
IMAGENET_SHRINK = {"data.options.image_size": 32, "data.options.streaming": False,
                   "data.options.validation_split": "validation[:50%]",
                   "data.options.test_split": "validation[50%:]"}
EXPERIMENTS = {"cifar10_resnet20": {}, "cifar10_resnet56": {},
               "imagenet_resnet50": IMAGENET_SHRINK}
# Compiling the deep models costs far more CPU than the suite's budget for these tests
# (CPU seconds of the 2-step train_and_evaluate call, 2-core dev machine, 2026-11-21:
# ResNet-20 22, ResNet-56 40, ResNet-50 in bf16 61), so the deep two are in the slow tier.


def _train_on_mock_data(experiment, workdir):
    config = make_config(experiment, **SHRINK, **EXPERIMENTS[experiment])
    summary = loop.train_and_evaluate(config, workdir)
    written = json.loads((workdir / "summary.json").read_text())
    assert written["steps"] == summary["steps"] == 2
    assert set(written["final"]) >= {"validation", "test"}
    assert written["final"]["test"]["examples"] > 0
    assert np.isfinite(written["final"]["test"]["loss"])
    return written


@pytest.mark.slow
def test_cifar10_resnet20_trains_on_mock_data(mock_tfds, tmp_path):
    summary = _train_on_mock_data("cifar10_resnet20", tmp_path)
    assert summary["final"]["test"]["examples"] == MOCK_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["cifar10_resnet56", "imagenet_resnet50"])
def test_deep_experiment_trains_on_mock_data(experiment, mock_tfds, tmp_path):
    _train_on_mock_data(experiment, tmp_path)


def test_cifar10_resnet56_is_resnet20_recipe_with_56_layers():
    resnet20, resnet56 = (make_config(name).to_dict()
                          for name in ("cifar10_resnet20", "cifar10_resnet56"))
    assert resnet56["model"].pop("name") == "resnet56"
    assert resnet20["model"].pop("name") == "resnet20"
    assert resnet56 == resnet20


def test_imagenet_resnet50_data_on_mock_data(mock_tfds):
    """What only the ImageNet run needs from the data: variable-size JPEGs resized to the
    configured size, 1000 classes, fixed validation and test splits."""
    dataset, splits = loop.load_splits(make_config("imagenet_resnet50", **IMAGENET_SHRINK))
    assert dataset.num_classes == 1000
    assert set(splits) == {"train", "validation", "test"}
    assert {split.inputs.shape[1:] for split in splits.values()} == {(32, 32, 3)}


def test_unprepared_dataset_through_the_cli_is_one_error_line(tmp_path):
    empty = tmp_path / "tfds"
    result = run_cli("experiments.cifar10_resnet20", f"--workdir={tmp_path / 'run'}",
                     f"--config.data.data_dir={empty}")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "cifar10" in errors[0] and str(empty) in errors[0]
    assert f"python -m jaxdl.data prepare cifar10:3.0.2 --data_dir {empty}" in errors[0]
    assert not (tmp_path / "run").exists()


def test_unprepared_manual_dataset_names_the_manual_download(tmp_path):
    with pytest.raises(tfds_source.DatasetNotPreparedError,
                       match="ILSVRC2012_img_train.tar") as info:
        data.load_source("tfds:imagenet2012", data_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert "ILSVRC2012_img_train.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert f"python -m jaxdl.data prepare imagenet2012 --data_dir {tmp_path}" in message


@pytest.fixture
def offline(monkeypatch):
    """No name resolves, as on a machine without network, whatever this one has."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    for var in data_cli._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


def test_prepare_offline_is_one_line_and_exit_2(offline, tmp_path, capsys):
    assert data_cli.main(["prepare", "tfds:cifar10", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: prepare tfds:cifar10: no network")
    assert f"--data_dir {tmp_path}" in err
    assert not (tmp_path / "cifar10").exists()


def test_prepare_without_the_manual_download_is_one_line_and_exit_2(tmp_path, capsys):
    assert data_cli.main(["prepare", "imagenet2012", "--data_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "downloads" / "manual") in err
    assert "ILSVRC2012_img_val.tar" in err


def test_names_are_validated_against_the_catalog():
    assert data.registry.source_problem("tfds:cifar10") is None
    assert data.registry.source_problem("tfds:mnist:3.0.1") is None
    assert "cifar10" in data.registry.source_problem("tfds:cifar1O")  # a suggestion
    assert "tfds:NAME[:VERSION]" in data.registry.source_problem("cifar10")


def test_list_shows_prepared_tfds_datasets(tmp_path):
    for folder in ("cifar10/3.0.2", "imagenet2012/5.1.0", "cifar10/downloads/x"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "cifar10/3.0.2/dataset_info.json").write_text("{}")
    lines = data_cli.list_sources(str(tmp_path))
    tfds_lines = [line.split() for line in lines if line.startswith("tfds:")]
    assert tfds_lines == [["tfds:cifar10:3.0.2", "available", str(tmp_path / "cifar10/3.0.2")]]
