"""VADER sentiment ground truth (Hutto & Gilbert, ICWSM 2014) as padded token ids.

Files: `<corpus>_GroundTruth.txt.gz`, from `additional_resources/hutto_ICWSM_2014.tar.gz`
in the PyPI source archive `vaderSentiment==3.3.2` (MIT-licensed package; cite the
ICWSM-14 paper). Each line is `id<TAB>mean human rating -4..+4<TAB>text` (UTF-8, CRLF).
The SHA-256 of each file's uncompressed content is pinned below (equal to the text
files inside the archive). Lookup order as in `jaxdl.data.files`: `data_dir` (itself,
then its `sentiment/`), `$JAXDL_DATA_DIR/sentiment`, then the per-user cache, which
`python -m jaxdl.data download sentiment` fills from the source archive on PyPI.

Labels: 1 where the mean rating is > 0, 0 where it is < 0; snippets rated exactly 0
carry no polarity and are dropped (the count is in `metadata['dropped_neutral']`).

The split happens here, not in `load_splits`: the vocabulary must come from training
rows only, so the loader splits stratified by label (`split_seed`, `validation_fraction`,
`test_fraction`), builds the vocabulary from the training rows, and returns the training
pool plus predefined `validation` and `test` splits (the config's own fractions are then
0). Tokens are lowercase words and numbers (regex `TOKEN`), no download needed. Ids:
0 = padding, 1 = unknown (a word outside the vocabulary), then the training words seen at
least `min_count` times, most frequent first (ties alphabetical), at most `max_vocab` ids
in all. Features: [N, max_len] int32, truncated after `max_len` tokens and padded with 0
at the end; targets int32.
"""

from __future__ import annotations

import collections
import functools
import gzip
import io
import os
import re
import tarfile
from pathlib import Path

import numpy as np

from jaxdl.data import packaged
from jaxdl.data.dataset import Dataset
from jaxdl.data.files import Download, FileSet, Remote, write_atomic
from jaxdl.data.registry import register_source
from jaxdl.data.splits import stratified_split

PAD, UNKNOWN = 0, 1
RESERVED = 2  # ids below this are PAD and UNKNOWN
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
NUM_CLASSES = 2

# Corpus -> (file, SHA-256 of its uncompressed content, description).
CORPORA = {
    "movie_reviews": ("movieReviewSnippets_GroundTruth.txt.gz",
                      "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
                      "movie-review snippets (rottentomatoes)"),
    "amazon_reviews": ("amazonReviewSnippets_GroundTruth.txt.gz",
                       "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
                       "Amazon product-review snippets"),
    "tweets": ("tweets_GroundTruth.txt.gz",
               "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
               "tweets"),
    "nyt_editorials": ("nytEditorialSnippets_GroundTruth.txt.gz",
                       "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
                       "New York Times editorial snippets"),
}


SUBDIR = "sentiment"
_INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def _file_set(corpus: str) -> FileSet:
    filename, digest, _ = CORPORA[corpus]
    return FileSet(name=f"sentiment_{corpus}", subdir=SUBDIR,
                   title=f"VADER {corpus.replace('_', ' ')}", sha256={filename: digest},
                   download="sentiment")


def _unpack_sdist(sdist: Path, folder: Path) -> None:
    """Every corpus's text file, gzipped, from the archive inside the source archive."""
    with tarfile.open(sdist) as outer:
        inner_bytes = outer.extractfile(_INNER_ARCHIVE).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for filename, _, _ in CORPORA.values():
            text = inner.extractfile(f"hutto_ICWSM_2014/{filename.removesuffix('.gz')}").read()
            # mtime=0: the same bytes on every download.
            write_atomic(folder / filename, gzip.compress(text, mtime=0))


# The source archive on PyPI and the SHA-256 PyPI lists for it.
DOWNLOAD = Download(
    name="sentiment", subdir=SUBDIR, title="VADER sentiment ground truth",
    files=tuple(filename for filename, _, _ in CORPORA.values()),
    remotes=(Remote("https://files.pythonhosted.org/packages/77/8c/4a48c10a50f750ae565e341e69"
                    "7d74a38075a3e43ff0df6f1ab72e186902/vaderSentiment-3.3.2.tar.gz",
                    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
                    unpack=_unpack_sdist),))


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def read_corpus(corpus: str, data_dir=None) -> tuple[list[str], np.ndarray]:
    """(texts, mean ratings) of every line of the verified file."""
    fs = _file_set(corpus)
    path = packaged.find_file(fs, CORPORA[corpus][0], data_dir)
    texts, scores = [], []
    for line in packaged.read_verified(fs, path).decode("utf-8").splitlines():
        if not line.strip():
            continue
        _, score, text = line.split("\t", 2)
        texts.append(text)
        scores.append(float(score))
    return texts, np.asarray(scores)


def build_vocabulary(token_lists, *, min_count: int, max_vocab: int) -> dict[str, int]:
    """Word -> id from `token_lists` only: words seen >= min_count times, most frequent
    first, ids from RESERVED up to max_vocab - 1."""
    counts = collections.Counter(token for tokens in token_lists for token in tokens)
    ranked = sorted((w for w, n in counts.items() if n >= min_count),
                    key=lambda w: (-counts[w], w))
    return {word: RESERVED + i for i, word in enumerate(ranked[:max(0, max_vocab - RESERVED)])}


def encode(token_lists, vocabulary: dict[str, int], max_len: int) -> np.ndarray:
    """[N, max_len] int32 ids, truncated, padded with PAD at the end."""
    out = np.full((len(token_lists), max_len), PAD, np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [vocabulary.get(t, UNKNOWN) for t in tokens[:max_len]]
        out[row, :len(ids)] = ids
    return out


def make_dataset(name: str, texts, scores: np.ndarray, *, split_seed: int,
                 validation_fraction: float, test_fraction: float, max_len: int,
                 min_count: int, max_vocab: int, description: str = "") -> Dataset:
    """Polarity labels, a stratified split, the vocabulary of the training rows and the
    encoded splits of `texts` rated `scores`; see the module docstring."""
    if max_len < 1 or min_count < 1 or max_vocab <= RESERVED:
        raise ValueError(f"{name}: need max_len >= 1, min_count >= 1 and max_vocab > "
                         f"{RESERVED}, got {max_len}, {min_count}, {max_vocab}")
    scores = np.asarray(scores)
    keep = np.flatnonzero(scores != 0)
    labels = (scores[keep] > 0).astype(np.int32)
    tokens = [tokenize(texts[i]) for i in keep]
    fractions = {"train": 1.0 - validation_fraction - test_fraction,
                 "validation": validation_fraction, "test": test_fraction}
    rows = stratified_split(labels, fractions, split_seed)
    vocabulary = build_vocabulary([tokens[i] for i in rows["train"]], min_count=min_count,
                                  max_vocab=max_vocab)
    features = encode(tokens, vocabulary, max_len)
    arrays = {split: (features[idx], labels[idx]) for split, idx in rows.items() if len(idx)}
    train_features, train_labels = arrays.pop("train")
    dropped = len(scores) - len(keep)
    return Dataset(
        name=name,
        features=train_features,
        targets=train_labels,
        num_classes=NUM_CLASSES,
        description=f"{description}: polarity of the mean human rating (0 negative, "
                    f"1 positive; {dropped} neutral dropped), token ids [N, {max_len}], "
                    f"vocabulary {len(vocabulary) + RESERVED} from the training rows.",
        predefined_splits=arrays,
        metadata={"vocabulary_size": len(vocabulary) + RESERVED, "vocabulary": vocabulary,
                  "dropped_neutral": int(dropped),
                  "truncated": int(sum(len(t) > max_len for t in tokens))},
    )


def load_sentiment(corpus: str, *, split_seed: int, validation_fraction: float,
                   test_fraction: float, max_len: int, min_count: int, max_vocab: int,
                   data_dir: str | os.PathLike | None = None) -> Dataset:
    """Binary polarity of one VADER corpus; see the module docstring."""
    texts, scores = read_corpus(corpus, data_dir)
    return make_dataset(f"sentiment_{corpus}", texts, scores, split_seed=split_seed,
                        validation_fraction=validation_fraction,
                        test_fraction=test_fraction, max_len=max_len, min_count=min_count,
                        max_vocab=max_vocab, description=f"VADER {CORPORA[corpus][2]}")


for _corpus, (_filename, _, _) in CORPORA.items():
    register_source(f"sentiment_{_corpus}", locate=functools.partial(
        packaged.locate_file, _file_set(_corpus), _filename))(
        functools.partial(load_sentiment, _corpus))
