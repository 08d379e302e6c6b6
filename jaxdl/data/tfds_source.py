"""TFDS catalog datasets, read offline: `config.data.name = "tfds:NAME[:VERSION]"`.

`tfds:cifar10`, `tfds:mnist:3.0.1` (a pinned version), `tfds:imagenet2012` ... name any
dataset of the TensorFlow Datasets catalog. Reading never downloads: a dataset must have
been prepared first (`python -m jaxdl.data prepare NAME [--data_dir D]`, on a machine with
network, or from the manual download for datasets such as imagenet2012); otherwise the
load stops with one line naming the dataset, the directory looked in and that command.
The data directory is `config.data.data_dir`, else TFDS's default (`$TFDS_DATA_DIR` or
`~/tensorflow_datasets`).

Each split is read whole into memory (fine for CIFAR or MNIST, impossible for ImageNet,
which needs a streaming pipeline that jaxdl does not have yet): images uint8 -> float32
in [0, 1], labels int32, `num_classes` from the label feature. The loader's options
(`config.data.options`) are TFDS split strings and an image size:

- `train_split` (default 'train'): the pool that validation/test fractions are cut from;
  any TFDS split string, e.g. 'train[:10%]' or 'train+validation';
- `test_split`, `validation_split`: kept apart as fixed splits ('' = none); the default
  test split is 'test' when the dataset has one, and no validation split;
- `image_size` (default 0 = as stored): resize the shorter side to this and take the
  central square, so variable-size images (ImageNet's JPEGs) stack into one array.

TensorFlow reads the files; it is imported only when a split is read, and first told to
see no GPU, so it never takes one from JAX. Importing this module imports neither TFDS
nor TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import numpy as np

from jaxdl.data.registry import register_source_family
from jaxdl.data.sources import Dataset

PREFIX = "tfds:"
USAGE = "tfds:NAME[:VERSION]"
PREPARE = "python -m jaxdl.data prepare"
_MAX_INTENSITY = 255.0  # uint8 pixels
# Rows converted to numpy at a time: bounds TensorFlow's share of the memory.
_CHUNK = 4096


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset has not been downloaded and prepared in the data directory."""


def parse(spec: str) -> tuple[str, str | None]:
    """'mnist:3.0.1' -> ('mnist', '3.0.1'); 'cifar10' -> ('cifar10', None)."""
    name, _, version = spec.strip().partition(":")
    return name, version or None


def _tfds():
    """tensorflow_datasets, or a one-line error saying how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"TFDS datasets need tensorflow-datasets ({e}); "
                          "`pip install tensorflow-datasets tensorflow-cpu`") from None
    return tfds


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow sees no GPU, so it never takes GPU memory from JAX.

    Called before TensorFlow runs anything (reading or preparing); an import alone does not
    initialise its devices, and tensorflow-cpu has none.
    """
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised by someone else: too late to hide
        if tf.config.get_visible_devices("GPU"):
            raise RuntimeError("TensorFlow initialised the GPU before jaxdl could hide it from "
                               "TensorFlow; do not use TensorFlow on the GPU alongside jaxdl"
                               ) from None


def _unknown(name: str, tfds) -> str:
    close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{name!r} is not in the TFDS catalog{hint}"


def builder(spec: str, data_dir: str | os.PathLike | None = None):
    """The TFDS builder of `spec` ('NAME[:VERSION]'); ValueError in one line if unknown."""
    tfds = _tfds()
    name, version = parse(spec)
    try:
        return tfds.builder(name, version=version,
                            data_dir=os.fspath(data_dir) if data_dir else None)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(_unknown(name, tfds)) from None
    except AssertionError as e:  # a version the code cannot read: TFDS says which it can
        raise ValueError(str(e).splitlines()[-1]) from None


def is_prepared(dataset_builder) -> bool:
    """True when the version folder holds the dataset_info.json TFDS writes on preparing."""
    return (dataset_builder.data_path / "dataset_info.json").exists()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def manual_dir(dataset_builder, manual: str | os.PathLike | None = None) -> Path:
    """Where the files of a manual download go (TFDS's default: DATA_DIR/downloads/manual)."""
    if manual:
        return Path(manual)
    return Path(dataset_builder.data_dir_root) / "downloads" / "manual"


def prepare_fix(dataset_builder, spec: str) -> str:
    """The command that prepares `spec`, and for manual datasets what to download first."""
    root = dataset_builder.data_dir_root
    command = f"`{PREPARE} {spec} --data_dir {root}`"
    instructions = dataset_builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    if instructions:
        return (f"put the manual download into {manual_dir(dataset_builder)} "
                f"({_one_line(instructions)}), then run {command}")
    return f"on a machine with network run {command}, then copy {root} to this machine"


def not_prepared_message(dataset_builder, spec: str) -> str:
    return (f"TFDS dataset {spec!r} is not prepared in {dataset_builder.data_dir_root} "
            f"(no {dataset_builder.data_path / 'dataset_info.json'}; reading never "
            f"downloads). Fix: {prepare_fix(dataset_builder, spec)}, or set "
            f"config.data.data_dir to the directory that holds it.")


def check(spec: str) -> str | None:
    """Why `tfds:spec` cannot name a dataset (TFDS missing, not in the catalog), or None."""
    name, _ = parse(spec)
    if not name:
        return f"write {USAGE}, e.g. tfds:cifar10 or tfds:mnist:3.0.1"
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return "TFDS datasets need tensorflow-datasets: `pip install tensorflow-datasets`"
    tfds = _tfds()
    try:
        tfds.builder_cls(name.split("/")[0])
    except tfds.core.registered.DatasetNotFoundError:
        return _unknown(name, tfds)
    return None


def locate(spec: str) -> str | None:
    """The prepared version folder of `spec` in TFDS's default data dir, or None."""
    try:
        dataset_builder = builder(spec)
    except (ImportError, ValueError):
        return None
    return str(dataset_builder.data_path) if is_prepared(dataset_builder) else None


def prepared_datasets(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """('NAME[/CONFIG]:VERSION', folder) of every prepared dataset under `data_dir`
    (default TFDS's), found from the files alone."""
    if data_dir is None:
        data_dir = _tfds().core.constants.DATA_DIR
    root = Path(data_dir)
    found = []
    for depth in ("*/*", "*/*/*"):  # NAME/VERSION and NAME/CONFIG/VERSION
        for info in root.glob(f"{depth}/dataset_info.json"):
            folder = info.parent
            *names, version = folder.relative_to(root).parts
            if version.count(".") == 2 and "downloads" not in names:
                found.append((f"{'/'.join(names)}:{version}", folder))
    return sorted(found)


def prepare(spec: str, data_dir: str | os.PathLike | None = None,
            manual: str | os.PathLike | None = None) -> str:
    """Downloads (or reads the manual download) and prepares `spec`; returns its folder.

    Goes to the network; the caller handles OSError (offline) and ValueError (what the
    dataset needs is missing).
    """
    dataset_builder = builder(spec, data_dir)
    if is_prepared(dataset_builder):
        return str(dataset_builder.data_path)
    tfds = _tfds()
    manual_path = manual_dir(dataset_builder, manual)
    if dataset_builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not (
            manual_path.is_dir() and any(manual_path.iterdir())):
        raise ValueError(f"{spec!r} needs a manual download in {manual_path}, which is "
                         f"missing or empty: "
                         f"{_one_line(dataset_builder.MANUAL_DOWNLOAD_INSTRUCTIONS)}")
    hide_gpus_from_tensorflow()
    dataset_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_path)))
    return str(dataset_builder.data_path)


def _resize_central_square(size: int):
    """tf.data map: shorter side to `size` (antialiased), then the central size x size."""
    import tensorflow as tf

    def resize(image, label):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scaled = tf.cast(tf.round(shape * (size / tf.reduce_min(shape))), tf.int32)
        scaled = tf.maximum(scaled, size)  # rounding must not leave a side short
        image = tf.image.resize(image, scaled, antialias=True)
        top, left = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        image = image[top:top + size, left:left + size]
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), label

    return resize


def _read_split(dataset_builder, split: str, image_size: int, num_classes: int,
                label_key: str) -> tuple[np.ndarray, np.ndarray]:
    tfds = _tfds()
    try:
        ds = dataset_builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except ValueError as e:  # an unknown split, or a bad split string
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r}: "
                         f"{_one_line(str(e))[:300]}") from None
    if image_size:
        ds = ds.map(_resize_central_square(image_size))
    features, targets = [], []
    for x, y in tfds.as_numpy(ds.batch(_CHUNK)):
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / np.float32(_MAX_INTENSITY)
        features.append(x.astype(np.float32, copy=False))
        targets.append(y.astype(np.int32))
    if not features:
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r} is empty.")
    labels = np.concatenate(targets)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r} has labels outside "
                         f"0..{num_classes - 1} ({label_key!r} in {labels.min()}.."
                         f"{labels.max()}; unlabelled splits cannot be evaluated).")
    return np.concatenate(features), labels


@register_source_family(PREFIX, usage=USAGE, check=check, locate=locate)
def load_tfds(spec: str, *, data_dir: str | os.PathLike | None = None,
              train_split: str = "train", test_split: str | None = None,
              validation_split: str = "", image_size: int = 0) -> Dataset:
    """A prepared TFDS dataset in memory; see the module docstring for the options."""
    dataset_builder = builder(spec, data_dir)
    if not is_prepared(dataset_builder):
        raise DatasetNotPreparedError(not_prepared_message(dataset_builder, spec))
    info = dataset_builder.info
    if not info.supervised_keys or not all(isinstance(k, str) for k in info.supervised_keys):
        raise ValueError(f"TFDS {dataset_builder.name} has no (input, label) supervised keys.")
    label_key = info.supervised_keys[1]
    num_classes = getattr(info.features[label_key], "num_classes", None)
    if num_classes is None:
        raise ValueError(f"TFDS {dataset_builder.name}: {label_key!r} is not a class label.")
    if test_split is None:  # 'test' if there is one (unknown split lists accept any)
        test_split = "test" if not info.splits or "test" in info.splits else ""
    hide_gpus_from_tensorflow()
    fixed = {name: split for name, split in (("validation", validation_split),
                                             ("test", test_split)) if split}

    def read(split):
        return _read_split(dataset_builder, split, image_size, num_classes, label_key)

    features, targets = read(train_split)
    return Dataset(
        name=f"{PREFIX}{spec}",
        features=features,
        targets=targets,
        num_classes=num_classes,
        description=f"TFDS {dataset_builder.name} {dataset_builder.version} '{train_split}' "
                    f"from {dataset_builder.data_dir}, {'x'.join(map(str, features.shape[1:]))}"
                    f", {num_classes} classes.",
        predefined_splits={name: read(split) for name, split in fixed.items()} or None,
    )
