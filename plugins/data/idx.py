"""Reading IDX files (the MNIST file format), gzip-compressed or not, into tensors.

An IDX file is a 4-byte magic number ``0 0 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values, big-endian, row-major. We read it ourselves rather than through
``torchvision.datasets.MNIST`` because torchvision refuses a folder unless all four MNIST files are
present, and a folder holding only the test split must load.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX type byte -> big-endian numpy dtype.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> torch.Tensor:
    """The array stored in an IDX file (``.gz`` or plain), as a tensor in native byte order.

    Raises :class:`DataError` naming the file when it cannot be read, is not an IDX file, or is
    shorter or longer than its header says.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: its magic number is {raw[:4].hex() or 'missing'},"
            f" expected 0000 then a type byte (08 for uint8) and a dimension count;"
            " replace it with the original MNIST-format file"
        )
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its own header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header_size + math.prod(dims) * dtype.itemsize  # Python ints: a forged header cannot overflow them
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has trailing data"
        raise DataError(
            f"{path} {problem}: {len(raw)} bytes, but its header (dimensions {dims}) needs {expected};"
            " download it again"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    # astype copies into native byte order and makes the array writable, as torch wants.
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def read_idx_images(path: Path, height: int, width: int) -> torch.Tensor:
    """Images stored as uint8 (N, H, W), returned as (N, 1, H, W)."""
    images = read_idx(path)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (height, width):
        raise DataError(
            f"{path} holds {images.dtype} {tuple(images.shape)}, expected uint8 images (N, {height}, {width});"
            " is it an images file?"
        )
    return images.unsqueeze(1)


def read_idx_labels(path: Path, num_classes: int) -> torch.Tensor:
    """Labels stored as uint8 (N,), returned as int64."""
    labels = read_idx(path)
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise DataError(
            f"{path} holds {labels.dtype} {tuple(labels.shape)}, expected uint8 labels (N,); is it a labels file?"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{path} holds label {int(labels.max())}, expected labels 0..{num_classes - 1}")
    return labels.long()


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as file:
            raw = file.read()
        # Decide by content, not by name: torchvision leaves both forms, users rename files.
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({error}); download it again") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
