"""CIFAR-10's python batches (``cifar-10-batches-py``), read without torchvision.

torchvision's reader checks each file's MD5 against the published archive's, so it refuses any
other file of the same layout: a generated stand-in that tests a recipe end to end, or a user's
re-packed subset. This reader checks what training depends on instead (the keys, 3,072 bytes per
image, one label per image in 0-9) and says which file is wrong. The batches are pickles; only
the numpy types an array needs may be unpickled, so a file cannot run code when it is read.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import DataError

SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META_FILE = "batches.meta"
IMAGE_BYTES = 3 * 32 * 32

#: What a CIFAR batch needs to be rebuilt: numpy arrays, their dtypes, and nothing else.
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype")}


class ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            loaded = ArraysOnly(handle, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"cifar10: {path} holds a {type(loaded).__name__}, not a CIFAR-10 batch's dict")
    return loaded


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file's images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64."""
    batch = unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        shape = getattr(data, "shape", None)
        raise DataError(f"cifar10: {path}: 'data' must be uint8 rows of {IMAGE_BYTES} bytes (3x32x32), got {shape}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"cifar10: {path}: 'labels' must be one class 0-9 per image ({len(data)} images),"
                        f" got {labels.size} labels")
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return images, torch.from_numpy(labels)


def read_cifar10(folder: Path, splits: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The images, labels and class names of ``splits`` (in that order) from ``folder``."""
    parts = [read_batch(folder / name) for split in splits for name in SPLIT_FILES[split]]
    names = unpickle(folder / META_FILE).get("label_names")
    if not (isinstance(names, list) and len(names) == 10 and all(isinstance(name, str) for name in names)):
        raise DataError(f"cifar10: {folder / META_FILE}: 'label_names' must list the 10 class names")
    return torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts]), names


def write_cifar10(folder: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], names: list[str]) -> None:
    """Write images and labels in CIFAR-10's python layout, each split spread over its files: for
    a stand-in of the dataset where the real one is not at hand (tests, recipe checks)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        files = SPLIT_FILES[split]
        for name, chunk, chunk_labels in zip(files, images.tensor_split(len(files)), labels.tensor_split(len(files))):
            batch = {"data": chunk.reshape(len(chunk), -1).numpy(), "labels": chunk_labels.tolist(),
                     "batch_label": name}
            (folder / name).write_bytes(pickle.dumps(batch))
    (folder / META_FILE).write_bytes(pickle.dumps({"label_names": list(names), "num_vis": IMAGE_BYTES}))
