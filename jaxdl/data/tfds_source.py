"""TFDS catalog datasets, read offline: `config.data.name = "tfds:NAME[:VERSION]"`.

`tfds:cifar10`, `tfds:mnist:3.0.1` (a pinned version), `tfds:imagenet2012` ... name any
dataset of the TensorFlow Datasets catalog. Reading never downloads: a dataset must have
been prepared first (`python -m jaxdl.data prepare NAME [--data_dir D]`, on a machine with
network, or from the manual download for datasets such as imagenet2012); otherwise the
load stops with one line naming the dataset, the directory looked in and that command.
The data directory is `config.data.data_dir`, else TFDS's default (`$TFDS_DATA_DIR` or
`~/tensorflow_datasets`).

By default each split is read whole into memory (fine for CIFAR or MNIST): images uint8 ->
float32 in [0, 1], labels int32, `num_classes` from the label feature. ImageNet does not fit:
with `streaming=True` each split is a `streaming.RecordSplit` that reads and decodes only the
rows a batch asks for, from a dataset prepared in the ArrayRecord format
(`python -m jaxdl.data prepare NAME --file_format array_record`). Both paths give the same
arrays for the same rows. The loader's options (`config.data.options`):

- `train_split` (default 'train'): the pool that validation/test fractions are cut from;
  any TFDS split string, e.g. 'train[:10%]' or 'train+validation';
- `test_split`, `validation_split`: kept apart as fixed splits ('' = none); the default
  test split is 'test' when the dataset has one, and no validation split;
- `image_size` (default 0 = as stored): resize the shorter side to this and take the
  central square, so variable-size images (ImageNet's JPEGs) stack into one array;
- `streaming` (default False): read splits lazily, as above. The splits then all come from
  TFDS split strings (train_split included); fractions cannot be cut from a streamed pool;
- `num_workers` (default 0 = one per CPU core this process may use): the host threads that
  decode a streamed batch.

TensorFlow reads the files and decodes the images on both paths (streamed rows through
TFDS's own parser and TensorFlow's decoders, as `as_dataset` does: PIL's JPEG decoder gives
pixels a few levels apart from TensorFlow's); it is imported only when a split is read, and
first told to see no GPU, so it never takes one from JAX. Importing this module imports
neither TFDS nor TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import numpy as np

from jaxdl.data.dataset import Dataset
from jaxdl.data.registry import register_source_family
from jaxdl.data.streaming import RecordSplit

PREFIX = "tfds:"
USAGE = "tfds:NAME[:VERSION]"
PREPARE = "python -m jaxdl.data prepare"
FILE_FORMATS = ("tfrecord", "array_record")  # what `prepare --file_format` writes
STREAMING_FORMAT = "array_record"  # the random-access format streamed splits read
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


def format_flag(file_format: str | None) -> str:
    return f" --file_format {file_format}" if file_format else ""


def prepare_fix(dataset_builder, spec: str, file_format: str | None = None) -> str:
    """The command that prepares `spec`, and for manual datasets what to download first."""
    root = dataset_builder.data_dir_root
    command = f"`{PREPARE} {spec} --data_dir {root}{format_flag(file_format)}`"
    instructions = dataset_builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    if instructions:
        return (f"put the manual download into {manual_dir(dataset_builder)} "
                f"({_one_line(instructions)}), then run {command}")
    return f"on a machine with network run {command}, then copy {root} to this machine"


def not_prepared_message(dataset_builder, spec: str, file_format: str | None = None) -> str:
    return (f"TFDS dataset {spec!r} is not prepared in {dataset_builder.data_dir_root} "
            f"(no {dataset_builder.data_path / 'dataset_info.json'}; reading never "
            f"downloads). Fix: {prepare_fix(dataset_builder, spec, file_format)}, or set "
            f"config.data.data_dir to the directory that holds it.")


def format_problem(dataset_builder, spec: str, file_format: str) -> str | None:
    """Why the prepared `spec` has no files in `file_format` (one line), or None."""
    stored = sorted(f.value for f in dataset_builder.info.available_file_formats())
    if file_format in stored:
        return None
    return (f"TFDS dataset {spec!r} is prepared in {dataset_builder.data_path} as "
            f"{' and '.join(stored) or 'an unknown format'}, not {file_format}; TFDS keeps "
            f"one preparation per folder, so prepare it again into another data directory: "
            f"`{PREPARE} {spec} --data_dir OTHER_DIR{format_flag(file_format)}`, then set "
            f"config.data.data_dir=OTHER_DIR")


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
            manual: str | os.PathLike | None = None, file_format: str | None = None) -> str:
    """Downloads (or reads the manual download) and prepares `spec` in `file_format` (one of
    FILE_FORMATS; None = TFDS's default, tfrecord); returns its folder.

    Goes to the network; the caller handles OSError (offline) and ValueError (what the
    dataset needs is missing, or it is already prepared in another format).
    """
    dataset_builder = builder(spec, data_dir)
    if is_prepared(dataset_builder):
        if file_format and (problem := format_problem(dataset_builder, spec, file_format)):
            raise ValueError(problem)
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
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_path)),
        file_format=file_format)
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


def _as_float(x: np.ndarray) -> np.ndarray:
    """Model inputs: uint8 pixels scaled to [0, 1], anything else float32 as it is."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(_MAX_INTENSITY)
    return x.astype(np.float32, copy=False)


def _check_labels(dataset_builder, split: str, labels: np.ndarray, num_classes: int,
                  label_key: str) -> np.ndarray:
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r} has labels outside "
                         f"0..{num_classes - 1} ({label_key!r} in {labels.min()}.."
                         f"{labels.max()}; unlabelled splits cannot be evaluated).")
    return labels


def _bad_split(dataset_builder, split: str, error: Exception) -> ValueError:
    """An unknown split, or a bad split string, in one line."""
    return ValueError(f"TFDS {dataset_builder.name}: split {split!r}: "
                      f"{_one_line(str(error))[:300]}")


def _read_split(dataset_builder, split: str, image_size: int, num_classes: int,
                label_key: str) -> tuple[np.ndarray, np.ndarray]:
    tfds = _tfds()
    try:
        ds = dataset_builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except ValueError as e:
        raise _bad_split(dataset_builder, split, e) from None
    if image_size:
        ds = ds.map(_resize_central_square(image_size))
    features, targets = [], []
    for x, y in tfds.as_numpy(ds.batch(_CHUNK)):
        features.append(_as_float(x))
        targets.append(y.astype(np.int32))
    if not features:
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r} is empty.")
    labels = _check_labels(dataset_builder, split, np.concatenate(targets), num_classes,
                           label_key)
    return np.concatenate(features), labels


def _supervised_keys(dataset_builder) -> tuple[str, str, int]:
    """(input key, label key, number of classes) of a prepared classification dataset."""
    info = dataset_builder.info
    if not info.supervised_keys or not all(isinstance(k, str) for k in info.supervised_keys):
        raise ValueError(f"TFDS {dataset_builder.name} has no (input, label) supervised keys.")
    input_key, label_key = info.supervised_keys
    num_classes = getattr(info.features[label_key], "num_classes", None)
    if num_classes is None:
        raise ValueError(f"TFDS {dataset_builder.name}: {label_key!r} is not a class label.")
    return input_key, label_key, num_classes


def record_split(dataset_builder, split: str, *, image_size: int,
                 num_workers: int) -> RecordSplit:
    """`split` of a dataset prepared as ArrayRecord, read lazily: each row is parsed and
    decoded as `as_dataset` would (TFDS's parser, TensorFlow's decoders) and then resized and
    scaled as `_read_split` does, so its rows equal the in-memory path's."""
    tfds = _tfds()
    import tensorflow as tf

    hide_gpus_from_tensorflow()
    input_key, label_key, num_classes = _supervised_keys(dataset_builder)
    try:
        records = dataset_builder.as_data_source(
            split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES,
            file_format=STREAMING_FORMAT)
    except (ValueError, KeyError) as e:
        raise _bad_split(dataset_builder, split, e) from None
    if not len(records):
        raise ValueError(f"TFDS {dataset_builder.name}: split {split!r} is empty.")
    features = dataset_builder.info.features
    resize = _resize_central_square(image_size) if image_size else None

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def parse_and_decode(record):
        example = features.deserialize_example(record)
        pair = example[input_key], example[label_key]
        return resize(*pair) if resize else pair

    def decode(record: bytes) -> tuple[np.ndarray, np.ndarray]:
        x, y = parse_and_decode(record)
        label = np.asarray(y.numpy(), np.int32)
        return _as_float(x.numpy()), _check_labels(dataset_builder, split, label, num_classes,
                                                   label_key)

    # A ClassLabel is stored as its int64 value: parsing that alone decodes no image.
    label_spec = {label_key: features.tf_example_spec[label_key]}

    def read_labels(batch: list[bytes]) -> np.ndarray:
        labels = tf.io.parse_example(tf.constant(batch), label_spec)[label_key]
        return labels.numpy().astype(np.int32)

    return RecordSplit(records, decode, num_workers=num_workers, read_labels=read_labels,
                       name=f"{dataset_builder.name}[{split}]")


def _read_records(split: RecordSplit) -> tuple[np.ndarray, np.ndarray]:
    """A whole lazy split in memory (ArrayRecord files, which tf.data cannot read)."""
    rows = np.arange(len(split))
    batches = [split.take(rows[start:start + _CHUNK]) for start in range(0, len(rows), _CHUNK)]
    return (np.concatenate([b["inputs"] for b in batches]),
            np.concatenate([b["targets"] for b in batches]))


def _tf_data_reads(dataset_builder) -> bool:
    """True when `as_dataset` can read the prepared files (tfrecord can, ArrayRecord not;
    folders that name no format are tfrecord, TFDS's default)."""
    from tensorflow_datasets.core import file_adapters

    stored = dataset_builder.info.available_file_formats()
    return not stored or bool(stored & file_adapters.FileFormat.with_tf_data())


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@register_source_family(PREFIX, usage=USAGE, check=check, locate=locate)
def load_tfds(spec: str, *, data_dir: str | os.PathLike | None = None,
              train_split: str = "train", test_split: str | None = None,
              validation_split: str = "", image_size: int = 0, streaming: bool = False,
              num_workers: int = 0) -> Dataset:
    """A prepared TFDS dataset, in memory or streamed; see the module docstring for the
    options."""
    if not isinstance(streaming, bool):
        raise TypeError(f"streaming must be True or False, got {streaming!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise TypeError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    dataset_builder = builder(spec, data_dir)
    wanted_format = STREAMING_FORMAT if streaming else None
    if not is_prepared(dataset_builder):
        raise DatasetNotPreparedError(not_prepared_message(dataset_builder, spec, wanted_format))
    if streaming and (problem := format_problem(dataset_builder, spec, STREAMING_FORMAT)):
        raise DatasetNotPreparedError(problem)
    info = dataset_builder.info
    _, label_key, num_classes = _supervised_keys(dataset_builder)
    if test_split is None:  # 'test' if there is one (unknown split lists accept any)
        test_split = "test" if not info.splits or "test" in info.splits else ""
    hide_gpus_from_tensorflow()
    fixed = {name: split for name, split in (("validation", validation_split),
                                             ("test", test_split)) if split}

    def lazy(split):
        return record_split(dataset_builder, split, image_size=image_size,
                            num_workers=num_workers or _usable_cpus())

    if streaming:
        return _streamed(spec, dataset_builder, num_classes,
                         {"train": lazy(train_split), **{n: lazy(s) for n, s in fixed.items()}})

    def read(split):
        if not _tf_data_reads(dataset_builder):
            return _read_records(lazy(split))
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


def _streamed(spec: str, dataset_builder, num_classes: int,
              splits: dict[str, RecordSplit]) -> Dataset:
    """Every split lazy and fixed (train included), around an empty pool that still tells
    the element shape (the first training row is decoded for it)."""
    first = splits["train"].take(np.zeros(1, np.int64))["inputs"]
    return Dataset(
        name=f"{PREFIX}{spec}",
        features=np.empty((0, *first.shape[1:]), first.dtype),
        targets=np.empty(0, np.int32),
        num_classes=num_classes,
        description=f"TFDS {dataset_builder.name} {dataset_builder.version} streamed from "
                    f"ArrayRecord files in {dataset_builder.data_dir}, "
                    f"{'x'.join(map(str, first.shape[1:]))}, {num_classes} classes, "
                    + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
                    + " rows.",
        predefined_splits=splits,
    )
