"""Streamed TFDS splits (`config.data.options.streaming=True`): rows read lazily from
ArrayRecord files equal the in-memory path's, only the rows asked for are read, batches stay a
pure function of (seed, step), and a run trains on them. A tiny TFDS dataset of random-size
JPEGs is prepared offline, once as tfrecord (the in-memory path) and once as ArrayRecord
(through `python -m jaxdl.data prepare --file_format array_record`)."""

import json

import numpy as np
import pytest
from conftest import make_config

from jaxdl import data
from jaxdl.config import ConfigError
from jaxdl.data import __main__ as data_cli
from jaxdl.data import tfds_source
from jaxdl.data.streaming import RecordSplit
from jaxdl.training import loop
from jaxdl.training.writers import read_metrics

NAME = "jaxdl_tiny_jpegs"  # a TFDS builder defined here, prepared offline
TRAIN_ROWS, TEST_ROWS, CLASSES = 32, 8, 3
IMAGE_SIZE = 8  # the JPEGs are 6..20 pixels a side: resized to one square


def _define_builder():
    import tensorflow_datasets as tfds

    try:
        return tfds.builder_cls(NAME)
    except tfds.core.registered.DatasetNotFoundError:
        pass

    class JaxdlTinyJpegs(tfds.core.GeneratorBasedBuilder):
        """Random-size random JPEGs with a label each; nothing downloaded."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, supervised_keys=("image", "label"),
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=CLASSES)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(TRAIN_ROWS, 0),
                    "test": self._generate_examples(TEST_ROWS, 1)}

        def _generate_examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for key in range(count):
                height, width = rng.integers(6, 21, 2)
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                yield key, {"image": image, "label": key % CLASSES}

    return JaxdlTinyJpegs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """{'tfrecord': dir, 'array_record': dir}, the same dataset prepared in each format."""
    _define_builder()
    root = tmp_path_factory.mktemp("tfds")
    dirs = {"tfrecord": root / "tfrecord", "array_record": root / "array_record"}
    tfds_source.prepare(NAME, dirs["tfrecord"])
    with pytest.MonkeyPatch.context() as patch:  # nothing to download: no network needed
        patch.setattr(data_cli, "network_problem", lambda: None)
        assert data_cli.main(["prepare", f"tfds:{NAME}", "--data_dir",
                              str(dirs["array_record"]), "--file_format", "array_record"]) == 0
    return {name: str(path) for name, path in dirs.items()}


def _load(prepared, file_format, **options):
    return data.load_source(f"tfds:{NAME}", data_dir=prepared[file_format],
                            image_size=IMAGE_SIZE, **options)


def test_streamed_rows_equal_the_in_memory_rows(prepared):
    in_memory = _load(prepared, "tfrecord")
    streamed = _load(prepared, "array_record", streaming=True, num_workers=3)
    train = streamed.predefined_splits["train"]
    assert isinstance(train, RecordSplit) and len(train) == TRAIN_ROWS
    assert len(streamed) == 0 and streamed.features.shape == (0, IMAGE_SIZE, IMAGE_SIZE, 3)
    rows = np.array([5, 0, 31, 5, 17, 2, 9])  # any order, repeats allowed
    batch = train.take(rows)
    assert batch["inputs"].dtype == np.float32 and batch["targets"].dtype == np.int32
    assert batch["inputs"].max() > 0.5  # scaled by 1/255, not clipped
    np.testing.assert_array_equal(batch["inputs"], in_memory.features[rows])
    np.testing.assert_array_equal(batch["targets"], in_memory.targets[rows])
    np.testing.assert_array_equal(train.targets, in_memory.targets)
    test_x, test_y = in_memory.predefined_splits["test"]
    streamed_test = streamed.predefined_splits["test"].take(np.arange(TEST_ROWS))
    np.testing.assert_array_equal(streamed_test["inputs"], test_x)
    np.testing.assert_array_equal(streamed_test["targets"], test_y)
    assert train.take(np.array([], np.int64))["inputs"].shape == (0, IMAGE_SIZE, IMAGE_SIZE, 3)
    # Not streaming, ArrayRecord files (which tf.data cannot read) are read whole the same way.
    whole = _load(prepared, "array_record")
    np.testing.assert_array_equal(whole.features, in_memory.features)


def test_take_reads_only_the_rows_asked_for(prepared, monkeypatch):
    from array_record.python import array_record_data_source as records

    read = []
    original = records.ArrayRecordDataSource.__getitems__

    def spy(self, keys):
        read.extend(keys)
        return original(self, keys)

    monkeypatch.setattr(records.ArrayRecordDataSource, "__getitems__", spy)
    monkeypatch.setattr(records.ArrayRecordDataSource, "__getitem__",
                        lambda self, key: pytest.fail("one record read outside take"))
    train = _load(prepared, "array_record", streaming=True, num_workers=2).predefined_splits[
        "train"]
    read.clear()  # loading decodes row 0 for the element shape
    train.take(np.array([7, 3, 30]))
    assert sorted(read) == [3, 7, 30]


def test_streamed_batches_are_deterministic_resume_exactly_and_match_arrays(prepared):
    in_memory = _load(prepared, "tfrecord")
    train = _load(prepared, "array_record", streaming=True, num_workers=2).predefined_splits[
        "train"]
    arrays = data.ArraySplit(in_memory.features, in_memory.targets)
    steps, batch_size, seed = 6, 8, 3  # 4 steps per epoch: crosses an epoch boundary
    streamed = data.train_batches(train, batch_size, seed)
    first = [next(streamed) for _ in range(steps)]
    resumed = data.train_batches(train, batch_size, seed, start_step=2)
    expected = data.train_batches(arrays, batch_size, seed)
    for step in range(steps):
        want = next(expected)
        np.testing.assert_array_equal(first[step]["inputs"], want["inputs"])
        np.testing.assert_array_equal(first[step]["targets"], want["targets"])
        if step >= 2:
            np.testing.assert_array_equal(next(resumed)["inputs"], first[step]["inputs"])
    assert not np.array_equal(first[0]["targets"], first[4]["targets"])  # reshuffled
    padded = list(data.eval_batches(train, 12))[-1]  # 32 rows: last batch 8 real + 4 padding
    assert padded["mask"].tolist() == [1.0] * 8 + [0.0] * 4


def _config(prepared, file_format, **options):
    return make_config(
        "digits_cnn", **{
            "data.name": f"tfds:{NAME}", "data.data_dir": prepared[file_format],
            "data.options": dict(train_split="train[8:]", validation_split="train[:8]",
                                 test_split="test", image_size=IMAGE_SIZE, **options),
            "data.validation_fraction": 0.0, "data.test_fraction": 0.0,
            "data.batch_size": 8, "data.eval_batch_size": 8,
            "model.features": (4,), "model.dense_width": 8, "model.num_classes": CLASSES,
            "train.duration": "3 steps", "train.log_every": "1 steps",
            "train.eval_every": "3 steps", "checkpoint.every": "0 steps",
            "task.misclassified_shown": 0, "logging.tensorboard": False,
            "logging.progress": False, "logging.plot": False})


@pytest.mark.slow
def test_a_run_trains_on_streamed_splits(prepared, tmp_path):
    config = _config(prepared, "array_record", streaming=True)
    dataset, splits = loop.load_splits(config)
    assert dataset.num_classes == CLASSES and "streamed" in dataset.description
    assert set(splits) == {"train", "validation", "test"}
    assert all(isinstance(split, RecordSplit) for split in splits.values())
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [24, 8, 8]
    summary = loop.train_and_evaluate(config, tmp_path)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["steps"] == summary["steps"] == 3
    assert written["final"]["test"]["examples"] == TEST_ROWS
    assert written["final"]["validation"]["examples"] == 8
    assert np.isfinite(written["final"]["test"]["loss"])
    confusion = json.loads((tmp_path / "confusion_matrix.json").read_text())  # labels via targets
    assert confusion["examples"] == TEST_ROWS
    # The same config in memory (the tfrecord copy): streaming never changes a number.
    loop.train_and_evaluate(_config(prepared, "tfrecord"), tmp_path / "in_memory")
    streamed, in_memory = ([{k: v for k, v in r.items() if k != "time"}
                            for r in read_metrics(path / "metrics.jsonl")]
                           for path in (tmp_path, tmp_path / "in_memory"))
    assert len(streamed) == 3 + 2 and streamed == in_memory
    assert confusion == json.loads((tmp_path / "in_memory" / "confusion_matrix.json").read_text())


def test_fractions_of_a_streamed_dataset_are_one_config_error(prepared):
    config = _config(prepared, "array_record", streaming=True)
    config.data.validation_fraction = 0.1
    config.data.options.validation_split = ""
    with pytest.raises(ConfigError, match="validation_fraction must be 0.0") as info:
        loop.load_splits(config)
    assert "\n" not in str(info.value) and "streamed" in str(info.value)


def test_unprepared_or_tfrecord_dataset_cannot_stream_and_says_why_in_one_line(
        prepared, tmp_path):
    with pytest.raises(ConfigError, match=f"prepare {NAME} --data_dir") as info:
        loop.load_splits(_config({"empty": str(tmp_path)}, "empty", streaming=True))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"prepare {NAME} --data_dir {tmp_path} --file_format array_record" in message
    with pytest.raises(tfds_source.DatasetNotPreparedError,
                       match="as tfrecord, not array_record") as info:
        _load(prepared, "tfrecord", streaming=True)
    message = str(info.value)
    assert "\n" not in message and "as tfrecord, not array_record" in message


def test_prepare_in_another_format_or_offline_is_one_line_and_exit_2(prepared, tmp_path,
                                                                     capsys, monkeypatch):
    argv = ["prepare", NAME, "--data_dir", prepared["tfrecord"], "--file_format",
            "array_record"]
    assert data_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "as tfrecord, not array_record" in err
    monkeypatch.setattr(data_cli, "network_problem", lambda: "no network: test")
    assert data_cli.main(["prepare", "cifar10", "--data_dir", str(tmp_path),
                          "--file_format", "array_record"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: prepare cifar10: no network")
    assert f"--data_dir {tmp_path} --file_format array_record" in err
