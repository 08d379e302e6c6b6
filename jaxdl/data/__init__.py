"""Host-side data layer: dataset registry, splits and batching (numpy only)."""

from jaxdl.data.registry import (
    load_source,
    register_source,
    source_location,
    source_names,
)

# Imported for their @register_source side effect; further source modules
# (e.g. TFDS) are added here the same way.
from jaxdl.data import sources  # noqa: F401  isort: skip
from jaxdl.data import dates  # noqa: F401  isort: skip
from jaxdl.data import mnist  # noqa: F401  isort: skip
from jaxdl.data import rainfall  # noqa: F401  isort: skip
from jaxdl.data import sentiment  # noqa: F401  isort: skip
from jaxdl.data import synthetic  # noqa: F401  isort: skip
from jaxdl.data import text  # noqa: F401  isort: skip
from jaxdl.data import words  # noqa: F401  isort: skip
from jaxdl.data import tfds_source  # noqa: F401  isort: skip
from jaxdl.data.pipeline import (
    SAMPLINGS,
    ArraySplit,
    epoch_length,
    epoch_order,
    eval_batches,
    num_eval_batches,
    steps_per_epoch,
    train_batch,
    train_batches,
)
from jaxdl.data.dataset import Dataset
from jaxdl.data.splits import (keep_classes, kfold, per_class_subsample, random_split,
                               stratified_kfold, stratified_split)
from jaxdl.data.streaming import RecordSplit

__all__ = [
    "SAMPLINGS",
    "ArraySplit",
    "Dataset",
    "RecordSplit",
    "epoch_length",
    "epoch_order",
    "eval_batches",
    "keep_classes",
    "kfold",
    "load_source",
    "num_eval_batches",
    "per_class_subsample",
    "random_split",
    "register_source",
    "source_location",
    "source_names",
    "steps_per_epoch",
    "stratified_kfold",
    "stratified_split",
    "train_batch",
    "train_batches",
]
