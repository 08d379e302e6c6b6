"""Reader for the IDX format of MNIST-style files (gzipped or raw), numpy only.

An IDX file is a 4-byte magic number -- two zero bytes, a type code, the number
of dimensions -- then one big-endian uint32 per dimension, then the values in
C order, big-endian. Every malformed file is a ValueError naming it.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# Type codes of the IDX specification (yann.lecun.com/exdb/mnist).
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Magic numbers of unsigned-byte image (3-D) and label (1-D) files.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_GZIP_SIGNATURE = b"\x1f\x8b"
_HEADER_BYTES = 4
_DIM_BYTES = 4


def parse_idx(content: bytes, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decodes uncompressed IDX `content` into an array in native byte order.

    `magic`, if given, is the exact magic number required; `source` names the
    file in error messages.
    """
    if len(content) < _HEADER_BYTES:
        raise ValueError(f"{source}: not an IDX file ({len(content)} bytes, no header).")
    found = int.from_bytes(content[:_HEADER_BYTES], "big")
    zeros, code, ndim = content[:2], content[2], content[3]
    if zeros != b"\0\0" or code not in _DTYPES or (magic is not None and found != magic):
        want = f"0x{magic:08x}" if magic is not None else "0x0000TTDD (IDX)"
        raise ValueError(f"{source}: bad IDX magic number 0x{found:08x}, expected {want}.")
    data_start = _HEADER_BYTES + _DIM_BYTES * ndim
    if len(content) < data_start:
        raise ValueError(f"{source}: IDX header truncated ({len(content)} bytes, "
                         f"{ndim} dimensions need {data_start}).")
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", ndim, _HEADER_BYTES))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(content) - data_start
    if actual != expected:
        raise ValueError(f"{source}: IDX shape {shape} of {dtype} needs {expected} data bytes, "
                         f"file has {actual}.")
    values = np.frombuffer(content, dtype, offset=data_start).reshape(shape)
    # frombuffer gives a read-only view of `content`; a native-order copy is writable.
    return values.astype(dtype.newbyteorder("="))


def decompress(raw: bytes, source: str = "<bytes>") -> bytes:
    """`raw` gunzipped if it starts with the gzip signature, else unchanged."""
    if not raw.startswith(_GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{source}: corrupt gzip data ({e}).") from None


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """The array in the IDX file at `path` (gzipped or raw)."""
    with open(path, "rb") as f:
        raw = f.read()
    return parse_idx(decompress(raw, str(path)), str(path), magic)


def read_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 images [N, rows, cols] from an IDX image file."""
    return read_idx(path, IMAGES_MAGIC)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """uint8 labels [N] from an IDX label file."""
    return read_idx(path, LABELS_MAGIC)
