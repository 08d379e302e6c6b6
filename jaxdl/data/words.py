"""Shakespeare's works as word-level skip-gram pairs (offline), for word2vec.

The text is `jaxdl.data.text.read_text` (the verified Gutenberg texts, found through the
loader's `data_dir`, `$JAXDL_DATA_DIR/shakespeare` or the per-user cache). Tokenisation
(`tokenize`): lower case, a word is a run of letters with inner apostrophes kept
("o'er", "'tis" -> "tis"), everything else separates words.

Splits, so no held-out word is seen in training: the last `test_fraction` of the tokens is
the test split, the `validation_fraction` before it the validation split (both
`predefined_splits`), the rest trains. The vocabulary is the training tokens' words seen
at least `min_count` times, most frequent first (ties by spelling), so id 0 is the most
frequent word; other words are dropped from every split's token stream before pairs are
formed, as word2vec does (a window then reaches past them).

An example is one (center, context) pair: every context word within `window` positions
of a center word, both sides, in the same split's stream: features are the center ids
[N] int32, targets the context ids [N] int32. Subsampling of frequent words and the
negative samples are drawn on the device (`jaxdl.tasks.word2vec`), from the training
counts this loader ships in `metadata['counts']` with the words in
`metadata['vocabulary']`.
"""

from __future__ import annotations

import collections
import os
import re

import numpy as np

from jaxdl.data import packaged, text
from jaxdl.data.dataset import Dataset
from jaxdl.data.registry import register_source

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def tokenize(raw: str) -> list[str]:
    """The lower-cased words of `raw`, in order (see the module docstring)."""
    return _WORD.findall(raw.lower())


def build_vocabulary(words: list[str], min_count: int) -> tuple[list[str], np.ndarray]:
    """(words seen >= `min_count` times, most frequent first, ties by spelling; their
    counts as int64)."""
    counted = collections.Counter(words)
    kept = sorted((w for w, c in counted.items() if c >= min_count),
                  key=lambda w: (-counted[w], w))
    return kept, np.asarray([counted[w] for w in kept], np.int64)


def skipgram_pairs(ids: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(centers, contexts) [N] int32: every pair (ids[i], ids[i + d]) with 0 < |d| <=
    `window` inside the stream, ordered by offset d (-window .. -1, 1 .. window), then i."""
    centers, contexts = [], []
    for d in (*range(-window, 0), *range(1, window + 1)):
        lo, hi = max(0, -d), len(ids) - max(0, d)
        if hi > lo:
            centers.append(ids[lo:hi])
            contexts.append(ids[lo + d:hi + d])
    if not centers:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return (np.concatenate(centers).astype(np.int32),
            np.concatenate(contexts).astype(np.int32))


def make_dataset(name: str, words: list[str], *, window: int, min_count: int,
                 validation_fraction: float, test_fraction: float,
                 description: str = "") -> Dataset:
    """Skip-gram pairs of the head of the token list `words` for training, of its tail
    held out; see the module docstring."""
    if window < 1 or min_count < 1:
        raise ValueError(f"{name}: window and min_count must be >= 1, got {window}, "
                         f"{min_count}")
    if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 1:
        raise ValueError(f"{name}: validation_fraction + test_fraction must be in [0, 1), "
                         f"got {validation_fraction} + {test_fraction}")
    test_start = len(words) - round(len(words) * test_fraction)
    validation_start = test_start - round(len(words) * validation_fraction)
    vocabulary, counts = build_vocabulary(words[:validation_start], min_count)
    if not vocabulary:
        raise ValueError(f"{name}: no word occurs {min_count} times in the training text")
    index = {w: i for i, w in enumerate(vocabulary)}

    def ids(part: list[str]) -> np.ndarray:
        return np.asarray([index[w] for w in part if w in index], np.int32)

    held_out = {split: skipgram_pairs(ids(words[start:stop]), window)
                for split, start, stop in (("validation", validation_start, test_start),
                                           ("test", test_start, len(words)))
                if stop > start}
    held_out = {split: pairs for split, pairs in held_out.items() if len(pairs[0])}
    centers, contexts = skipgram_pairs(ids(words[:validation_start]), window)
    return Dataset(
        name=name, features=centers, targets=contexts, num_classes=None,
        description=f"{description}: {len(words):,} words, vocabulary {len(vocabulary):,} "
                    f"(min count {min_count}); (center, context) pairs within {window} "
                    f"words (held-out tail: validation {validation_fraction}, test "
                    f"{test_fraction}).",
        predefined_splits=held_out or None,
        metadata={"vocabulary": tuple(vocabulary), "counts": counts,
                  "words": {"train": validation_start,
                            "validation": test_start - validation_start,
                            "test": len(words) - test_start}})


@register_source("shakespeare_words", locate=lambda: packaged.locate_file(text.SHAKESPEARE,
                                                                           text.FILENAME))
def load_shakespeare_words(*, window: int, min_count: int, validation_fraction: float,
                           test_fraction: float, data_dir: str | os.PathLike | None = None
                           ) -> Dataset:
    """Shakespeare's works as skip-gram pairs; see the module docstring."""
    return make_dataset("shakespeare_words", tokenize(text.read_text(data_dir)), window=window,
                        min_count=min_count, validation_fraction=validation_fraction,
                        test_fraction=test_fraction,
                        description="Shakespeare's 42 plays and poems (Project Gutenberg)")
