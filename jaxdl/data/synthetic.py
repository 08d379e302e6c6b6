"""`synthetic`: random data of a given shape, so a model can be compiled and timed with no
dataset file (the benchmarks' `--model NAME` families use it).

Every value is a keyword of the loader, given in `config.data.options`:
  kind                  'images': uniform [0, 1) float32 examples of `shape`, labels
                        uniform in [0, num_classes); 'tokens': windows of `shape[0]`
                        uniform token ids of `vocabulary`, the targets the same stream one
                        step later (as jaxdl.data.text cuts a corpus); 'words': a text of
                        `num_classes` distinct words ('w0', 'w1', ...) drawn with Zipf's
                        law (P(rank r) ~ 1 / (r + 1)) cut into skip-gram pairs within
                        `shape[0]` words as jaxdl.data.words cuts Shakespeare (min count 1);
                        'pairs': source and target token sequences of random lengths up to
                        `shape` = (source, target) padded with 0, each target ended by the
                        end id, with the metadata the `seq2seq` task reads (as
                        jaxdl.data.dates); target tokens from `target_vocabulary` ('' =
                        `vocabulary`)
  shape                 one example's shape ('words': (window,))
  num_classes           'images' and 'words' only; `vocabulary` (a string of characters)
                        'tokens' and 'pairs' only
  examples              rows of the training pool ('words': words of the training text)
  validation_examples   rows of a predefined validation split (a checkpoint monitor needs
                        one; 'words': words of the validation text)
  seed                  numpy's generator seed: the rows are a pure function of it
"""

from __future__ import annotations

import numpy as np

from jaxdl.data import dates, words
from jaxdl.data.dataset import Dataset
from jaxdl.data.registry import register_source

NAME = "synthetic"
KINDS = ("images", "tokens", "words", "pairs")


@register_source(NAME, locate=lambda: "generated (random)")
def load_synthetic(*, kind: str, shape, examples: int, validation_examples: int, seed: int,
                   num_classes: int = 0, vocabulary: str = "",
                   target_vocabulary: str = "") -> Dataset:
    """Random `kind` rows of `shape` (see the module doc)."""
    rng = np.random.default_rng(seed)
    total, shape = examples + validation_examples, tuple(shape)
    if kind == "words":
        if len(shape) != 1 or num_classes < 1:
            raise ValueError(f"synthetic words need a shape (window,) and num_classes >= 1, "
                             f"got shape {shape} and num_classes {num_classes}")
        zipf = 1.0 / np.arange(1, num_classes + 1)
        ids = rng.choice(num_classes, size=total, p=zipf / zipf.sum())
        return words.make_dataset(NAME, [f"w{i}" for i in ids], window=shape[0], min_count=1,
                                  validation_fraction=validation_examples / total,
                                  test_fraction=0.0,
                                  description=f"random words (Zipf, {num_classes} distinct)")
    if kind == "images":
        if num_classes < 1:
            raise ValueError(f"synthetic images need num_classes >= 1, got {num_classes}")
        features = rng.random((total, *shape), dtype=np.float32)
        targets = rng.integers(0, num_classes, total).astype(np.int32)
        classes, metadata = num_classes, {}
    elif kind == "tokens":
        if len(shape) != 1 or not vocabulary:
            raise ValueError(f"synthetic tokens need a shape (window,) and a vocabulary, got "
                             f"shape {shape} and {len(vocabulary)} characters")
        (window,) = shape
        stream = rng.integers(0, len(vocabulary), total * window + 1).astype(np.int32)
        features = stream[:-1].reshape(total, window)
        targets = stream[1:].reshape(total, window)
        classes, metadata = None, {"vocabulary": vocabulary, "vocabulary_size": len(vocabulary)}
    elif kind == "pairs":
        if len(shape) != 2 or min(shape) < 2 or not vocabulary:
            raise ValueError(f"synthetic pairs need a shape (source, target), both >= 2, and a "
                             f"vocabulary, got shape {shape} and {len(vocabulary)} characters")
        features = _padded(rng, total, shape[0], 1, 1 + len(vocabulary))
        target_vocabulary = target_vocabulary or vocabulary
        targets = _padded(rng, total, shape[1] - 1, len(dates.SPECIALS),
                          len(dates.SPECIALS) + len(target_vocabulary))
        targets = np.concatenate([targets, np.zeros((total, 1), np.int32)], axis=1)
        targets[np.arange(total), np.sum(targets != dates.PAD, axis=1)] = dates.EOS
        classes, metadata = None, {"source_vocabulary": (dates.SPECIALS[0], *vocabulary),
                                   "target_vocabulary": (*dates.SPECIALS, *target_vocabulary),
                                   "pad_id": dates.PAD, "bos_id": dates.BOS,
                                   "eos_id": dates.EOS}
    else:
        raise ValueError(f"synthetic data kind {kind!r}; valid: {', '.join(KINDS)}")
    return Dataset(
        name=NAME, features=features[:examples], targets=targets[:examples],
        num_classes=classes, metadata=metadata,
        predefined_splits={"validation": (features[examples:], targets[examples:])},
        description=f"random {kind} of shape {shape} (for timing, not learning)")


def _padded(rng, rows: int, width: int, low: int, high: int) -> np.ndarray:
    """[rows, width] ids uniform in [low, high), each row real for a uniform length in
    [1, width] and 0 after it."""
    ids = rng.integers(low, high, (rows, width)).astype(np.int32)
    lengths = rng.integers(1, width + 1, rows)
    return np.where(np.arange(width)[None, :] < lengths[:, None], ids, 0).astype(np.int32)
