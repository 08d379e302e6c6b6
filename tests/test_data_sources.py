"""Tests for the IDX reader and the MNIST / Fashion-MNIST file sources."""

import gzip
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from jaxdl import data
from jaxdl.data import __main__ as data_cli
from jaxdl.data import files, idx, mnist

REPO = Path(__file__).resolve().parents[1]
SHARED = data_path()
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _write(path: Path, content: bytes, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def _fake_set(directory: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """Valid tiny MNIST-format files; returns the arrays written, by file name."""
    rng = np.random.default_rng(0)
    arrays = {}
    for (images, labels), n in ((TRAIN_FILES, n_train), (TEST_FILES, n_test)):
        arrays[images] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[labels] = (np.arange(n) % 10).astype(np.uint8)
        _write(directory / images, _idx_bytes(arrays[images], 0x08))
        _write(directory / labels, _idx_bytes(arrays[labels], 0x08))
    return arrays


@pytest.fixture
def no_default_dirs(monkeypatch, tmp_path):
    """Lookup steps 2-4 point at empty places, so only what a test gives is found."""
    env_root = tmp_path / "env_root"
    env_root.mkdir()
    monkeypatch.setenv(mnist.ENV_VAR, str(env_root))
    def nowhere(fs):
        return [("user cache", tmp_path / "nowhere_cache" / fs.subdir),
                ("system", tmp_path / "nowhere_system" / fs.subdir)]

    fixed = {fs.name: nowhere(fs) for fs in mnist.FILE_SETS.values()}
    # Other file sources (rainfall, text, sentiment) share this lookup: empty for them too.
    monkeypatch.setattr(files, "fixed_dirs", lambda fs: fixed.get(fs.name) or nowhere(fs))
    return {"env": env_root / "mnist", **{name: dirs for name, dirs in fixed.items()}}


# --- IDX ---------------------------------------------------------------------


def test_read_tiny_idx_gzipped_and_raw(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 0], np.uint8)
    got = idx.read_images(_write(tmp_path / "i.gz", _idx_bytes(images, 0x08)))
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    assert np.array_equal(got, images)
    assert np.array_equal(idx.read_labels(_write(tmp_path / "l.gz", _idx_bytes(labels, 0x08))),
                          labels)
    raw = _write(tmp_path / "l.raw", _idx_bytes(labels, 0x08), compress=False)
    assert np.array_equal(idx.read_labels(raw), labels)


def test_read_idx_big_endian_types(tmp_path):
    values = np.array([[-2, 300], [1, -40000]], ">i4")
    got = idx.read_idx(_write(tmp_path / "x.gz", _idx_bytes(values, 0x0C)))
    assert got.dtype == np.int32 and got.dtype.isnative
    assert got.tolist() == [[-2, 300], [1, -40000]]


def test_bad_magic_is_value_error_naming_file(tmp_path):
    path = _write(tmp_path / "bad.gz", b"\x12\x34\x08\x01" + b"\0\0\0\1" + b"\5")
    with pytest.raises(ValueError, match="bad IDX magic number 0x12340801") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_labels_file_read_as_images_is_rejected(tmp_path):
    path = _write(tmp_path / "labels.gz", _idx_bytes(np.zeros(3, np.uint8), 0x08))
    with pytest.raises(ValueError, match="0x00000801, expected 0x00000803"):
        idx.read_images(path)


def test_truncated_and_corrupt_files(tmp_path):
    content = _idx_bytes(np.zeros((2, 2, 2), np.uint8), 0x08)
    with pytest.raises(ValueError, match="needs 8 data bytes, file has 7"):
        idx.read_images(_write(tmp_path / "short.gz", content[:-1]))
    with pytest.raises(ValueError, match="header truncated"):
        idx.read_images(_write(tmp_path / "header.gz", content[:9]))
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(content)[:-6])
    with pytest.raises(ValueError, match="corrupt gzip") as info:
        idx.read_images(corrupt)
    assert str(corrupt) in str(info.value)


# --- Dataset with predefined splits ------------------------------------------


def test_dataset_predefined_splits_checked_and_read_only():
    x, y = np.zeros((3, 2), np.float32), np.zeros(3, np.int32)
    ds = data.Dataset("d", x, y, 2, "", predefined_splits={"test": (x[:2], y[:2])})
    assert set(ds.predefined_splits) == {"test"}
    with pytest.raises(TypeError, match="does not support item assignment"):
        ds.predefined_splits["extra"] = (x, y)
    with pytest.raises(ValueError, match="split 'test': 2 feature rows but 3 targets"):
        data.Dataset("d", x, y, 2, "", predefined_splits={"test": (x[:2], y)})
    assert data.Dataset("d", x, y, 2, "").predefined_splits is None


# --- lookup, checksums, loading (fake files) ---------------------------------


def test_candidate_order(monkeypatch, tmp_path):
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dirs = [d for _, d in mnist.candidate_dirs(mnist.FASHION_MNIST, tmp_path / "cfg")]
    assert dirs == [tmp_path / "cfg", tmp_path / "cfg" / "fashion-mnist",
                    tmp_path / "env" / "fashion-mnist",
                    tmp_path / "cache" / "jaxdl" / "data" / "fashion-mnist",
                    Path("/usr/share/datasets/fashion-mnist")]
    monkeypatch.delenv(mnist.ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    dirs = [d for _, d in mnist.candidate_dirs(mnist.MNIST)]
    # No Debian package for MNIST; nothing outside data_dir, the variable and the cache.
    assert dirs == [tmp_path / "home" / ".cache" / "jaxdl" / "data" / "mnist"]


def test_missing_files_message_lists_every_place(tmp_path, no_default_dirs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST") as info:
        data.load_source("fashion_mnist", data_dir=empty)
    message = str(info.value)
    assert "\n" not in message
    assert "Fashion-MNIST" in message
    places = [empty, empty / "fashion-mnist", no_default_dirs["env"].parent / "fashion-mnist",
              *(d for _, d in no_default_dirs["fashion_mnist"])]
    for place in places:
        assert str(place) in message, place
    assert "set JAXDL_DATA_DIR" in message and "pass data_dir" in message
    assert "apt install dataset-fashion-mnist" in message
    assert "run `python -m jaxdl.data download fashion_mnist`" in message


def test_missing_message_without_env_and_partial_dir(tmp_path, no_default_dirs, monkeypatch):
    monkeypatch.delenv(mnist.ENV_VAR)
    partial = tmp_path / "partial"
    _write(partial / TRAIN_FILES[0], b"")
    with pytest.raises(mnist.DataFilesNotFoundError, match=r"\$JAXDL_DATA_DIR is not set") as info:
        data.load_source("mnist", data_dir=partial)
    message = str(info.value)
    assert "$JAXDL_DATA_DIR is not set" in message
    assert f"{partial} [data_dir: lacks {TRAIN_FILES[1]}, {TEST_FILES[0]}" in message
    assert "apt install" not in message  # no Debian package for MNIST


def test_checksum_mismatch_names_file_and_digests(tmp_path, no_default_dirs):
    _fake_set(tmp_path / "cfg")
    path = tmp_path / "cfg" / TRAIN_FILES[0]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(mnist.ChecksumError, match=re.escape(str(path))) as info:
        data.load_source("mnist", data_dir=tmp_path / "cfg")
    message = str(info.value)
    assert isinstance(info.value, mnist.ChecksumError)
    assert str(path) in message
    assert mnist.MNIST.sha256[TRAIN_FILES[0]] in message and actual in message


def _trust(monkeypatch, fs, directory):
    """Accepts the fake files in `directory` by putting their digests in the table."""
    for path in directory.iterdir():
        monkeypatch.setitem(fs.sha256, path.name, hashlib.sha256(path.read_bytes()).hexdigest())


def test_load_fake_files_through_env_var(tmp_path, no_default_dirs, monkeypatch):
    arrays = _fake_set(no_default_dirs["env"])
    _trust(monkeypatch, mnist.MNIST, no_default_dirs["env"])
    ds = data.load_source("mnist")
    assert ds.features.shape == (6, 28, 28, 1) and ds.features.dtype == np.float32
    assert np.array_equal(ds.features[..., 0] * 255, arrays[TRAIN_FILES[0]].astype(np.float32))
    assert ds.targets.dtype == np.int32 and ds.targets.tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.num_classes == 10
    x_test, y_test = ds.predefined_splits["test"]
    assert x_test.shape == (4, 28, 28, 1) and y_test.tolist() == [0, 1, 2, 3]
    assert np.array_equal(x_test[..., 0] * 255, arrays[TEST_FILES[0]].astype(np.float32))
    only = data.load_source("mnist", split="test")
    assert only.predefined_splits is None and len(only) == 4


def test_data_dir_wins_and_split_needs_only_its_files(tmp_path, no_default_dirs, monkeypatch):
    _fake_set(no_default_dirs["env"], n_train=6)
    root = tmp_path / "cfg"
    _fake_set(root / "mnist", n_train=3)
    for name in TEST_FILES:
        (root / "mnist" / name).unlink()
    # Both sets use the same file names, so only one of them is trusted at a time.
    _trust(monkeypatch, mnist.MNIST, root / "mnist")
    assert len(data.load_source("mnist", split="train", data_dir=root)) == 3
    # The full set needs the test files too, so the lookup moves on to $JAXDL_DATA_DIR.
    _trust(monkeypatch, mnist.MNIST, no_default_dirs["env"])
    assert len(data.load_source("mnist", data_dir=root)) == 6


def test_unknown_split_rejected():
    with pytest.raises(ValueError, match="unknown split 'validation'; valid: train, test"):
        data.load_source("mnist", split="validation")


# --- real files ----------------------------------------------------------------

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _check_images(x, n):
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                    reason="no $JAXDL_DATA_DIR/mnist on this machine")
def test_real_mnist():
    ds = data.load_source("mnist", data_dir=SHARED / "mnist")
    _check_images(ds.features, 60000)
    assert ds.targets.dtype == np.int32 and ds.num_classes == 10
    assert np.bincount(ds.targets).tolist() == MNIST_TRAIN_COUNTS
    x_test, y_test = ds.predefined_splits["test"]
    _check_images(x_test, 10000)
    assert y_test.dtype == np.int32 and np.bincount(y_test).tolist() == MNIST_TEST_COUNTS


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(),
                    reason="no $JAXDL_DATA_DIR/fashion-mnist on this machine")
def test_real_fashion_mnist():
    ds = data.load_source("fashion_mnist", data_dir=SHARED)
    _check_images(ds.features, 60000)
    assert ds.targets.dtype == np.int32 and ds.num_classes == 10
    assert np.bincount(ds.targets).tolist() == [6000] * 10
    test = data.load_source("fashion_mnist", split="test", data_dir=SHARED)
    _check_images(test.features, 10000)
    assert np.bincount(test.targets).tolist() == [1000] * 10
    assert test.predefined_splits is None


# --- python -m jaxdl.data list -------------------------------------------------


def test_list_cli_reports_sources_and_directory(tmp_path):
    for name in TRAIN_FILES + TEST_FILES:  # presence is all `list` checks
        _write(tmp_path / "mnist" / name, b"")
    env = {**os.environ, mnist.ENV_VAR: str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "jaxdl.data", "list"], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The registry of a fresh process (tests in this one may register sources of their own).
    fresh = subprocess.run([sys.executable, "-c", "from jaxdl import data; "
                            "print(' '.join(data.source_names()))"], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert [line.split()[0] for line in lines] == fresh and "mnist" in fresh
    by_name = {line.split()[0]: line.split(None, 2)[1:] for line in lines}
    assert by_name["digits"] == ["available", "scikit-learn bundle"]
    assert by_name["mnist"] == ["available", f"{tmp_path / 'mnist'} (JAXDL_DATA_DIR)"]


def test_list_reports_missing(no_default_dirs):
    lines = {line.split()[0]: line.split()[1:] for line in data_cli.list_sources()}
    assert lines["mnist"] == ["missing", "missing"]
    assert lines["fashion_mnist"] == ["missing", "missing"]
    assert lines["fulda_rainfall_runoff"] == ["missing", "missing"]
    assert data.source_location("digits") == "scikit-learn bundle"
