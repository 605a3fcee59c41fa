"""Datasets, and the batcher that draws training batches from them.

Dataset plugins return an :class:`ImageData`. Most hold every image in memory as one tensor:
one ``index_select`` per batch is all the data path costs. A dataset too large for memory (an
image folder with ``data.stream = true``) leaves its images in their files (:class:`FileImages`),
and a ``DataLoader`` with worker processes decodes each batch ahead of the step that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

DATA_ROOT_ENV = "GANFORGE_DATA_ROOT"
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class DataSettings:
    """What a dataset loader is asked for (the recipe's ``[data]`` table, resolved)."""

    name: str
    root: Path
    split: str = "train"
    download: bool = False
    image_size: int = 0  # 0 keeps the dataset's own size
    size: int = 0  # for generated datasets: how many images; 0 is the dataset's default
    seed: int = 0
    stream: bool = False  # read images from their files as training needs them (FileImages)


class FileImages:
    """Images left in their files and decoded when read: a dataset too large for memory.

    It answers what the core and the metrics ask of an image tensor (``len``, ``shape``,
    ``dtype``, ``dim()``, and indexing by an int, a slice or a tensor of indices, which decodes
    those images into a uint8 ``(n, C, H, W)`` tensor). Training reads it through a
    ``torch.utils.data.DataLoader`` with worker processes (:class:`Batcher`). ``read(path)``
    returns one image as a uint8 ``(C, H, W)`` tensor; it must be picklable (a module-level
    function, or a ``functools.partial`` of one) for the workers.
    """

    dtype = torch.uint8

    def __init__(self, files: list[Path], shape: tuple[int, int, int], read: Callable[[Path], torch.Tensor]):
        self.files = list(files)
        self.shape = torch.Size((len(self.files), *shape))
        self.read = read

    def __len__(self) -> int:
        return len(self.files)

    def dim(self) -> int:
        return 4

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int):
            return self.read(self.files[index])
        positions = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        return torch.stack([self.read(self.files[position]) for position in positions])

    def subset(self, index: torch.Tensor) -> FileImages:
        """The images at ``index``, still in their files."""
        return FileImages([self.files[position] for position in index.tolist()], tuple(self.shape[1:]), self.read)


class _FileDataset(torch.utils.data.Dataset):
    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> torch.Tensor:
        return self.images[position]


@dataclass
class ImageData:
    """A whole dataset in memory.

    ``images`` is uint8 of shape (N, C, H, W). ``labels`` maps a label name to an int64 tensor of
    shape (N,); the first entry is the dataset's main label (the digit, the shape category), the
    one evaluations match against. ``label_names`` optionally names the values of each label.
    """

    images: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if isinstance(self.images, FileImages):
            return
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        for name, values in self.labels.items():
            if values.shape != (len(self.images),):
                raise ValueError(f"label {name!r} has shape {tuple(values.shape)}, expected ({len(self.images)},)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def main_label(self) -> str | None:
        return next(iter(self.labels), None)

    def subset(self, index: torch.Tensor, source: str) -> ImageData:
        """The images at ``index`` with their labels, named ``source``; streamed images stay in their files."""
        images = self.images.subset(index) if isinstance(self.images, FileImages) else self.images[index]
        return ImageData(images, {name: values[index] for name, values in self.labels.items()}, self.label_names,
                         source)


#: Holding out is seeded on its own, not by ``run.seed``: every seed of a benchmark trains on the
#: same images and is scored on the same held-out ones.
HOLDOUT_SEED = 20_161_206
PARTS = ("train", "holdout")


def select_holdout(data: ImageData, holdout: int, part: str = "train", source: str = "") -> ImageData:
    """``data`` without ``holdout`` images chosen at random (``part="train"``), or just those
    (``part="holdout"``), each in the dataset's order. ``holdout = 0`` keeps everything."""
    from .errors import RecipeError

    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if not holdout:
        if part == "holdout":
            raise RecipeError("is 0: no images were held out of training, so there are none to evaluate on",
                              source=source, key="data.holdout")
        return data
    if holdout >= len(data):
        raise RecipeError(f"{holdout} would hold out all of the dataset's {len(data)} images", source=source,
                          key="data.holdout")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    chosen = order[:holdout] if part == "holdout" else order[holdout:]
    index = chosen.sort().values
    return data.subset(index, f"{data.source}, {part} part ({len(index)} of {len(data)})")


def resolve_data_root(recipe_root: str) -> Path:
    """The recipe's ``data.root``, else ``$GANFORGE_DATA_ROOT``, else ``./data``."""
    if recipe_root:
        return Path(recipe_root).expanduser()
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    return Path("data")


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the generators' tanh produces."""
    return images.float().div_(127.5).sub_(1.0)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> [0, 1] for saving and for the Python API."""
    return images.add(1.0).div_(2.0).clamp_(0.0, 1.0)


class Batcher:
    """Endless shuffled batches from a dataset.

    Each epoch is one permutation drawn from ``generator``; batches are slices of it, and the last
    partial batch of an epoch is dropped so every step sees ``batch_size`` images. The position in
    the permutation is part of :meth:`state_dict`, so a resumed run continues the same data order.
    Images in memory are indexed directly (one ``index_select`` per batch); images in files
    (:class:`FileImages`) are decoded by ``workers`` DataLoader processes, which prefetch the
    epoch's batches in the same order.
    """

    def __init__(self, data: ImageData, batch_size: int, generator: torch.Generator, device: torch.device,
                 share: Callable[[torch.Tensor], torch.Tensor] = lambda rows: rows, workers: int = 2):
        """``share`` picks this process's rows of each batch's index (a distributed run's rank
        keeps its part of the global batch; the order itself is the same on every rank)."""
        if batch_size > len(data):
            raise ValueError(f"batch size {batch_size} exceeds the dataset's {len(data)} images")
        self.share = share
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.workers = workers
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(len(data), generator=generator)
        self._device_order = None  # the epoch's order on the training device, made when first read
        self.streamed = isinstance(data.images, FileImages)
        self._loaded = None  # the DataLoader's iterator over the rest of this epoch (streamed data)
        # Holding the images on the training device once avoids a host copy per step on a GPU.
        self.images = data.images if self.streamed else data.images.to(device)
        self.labels = {name: values.to(device) for name, values in data.labels.items()}

    def _batch_indices(self, start: int) -> list[list[int]]:
        """This process's index of every whole batch of the epoch from ``start`` on."""
        return [self.share(self.order[position:position + self.batch_size]).tolist()
                for position in range(start, len(self.order) - self.batch_size + 1, self.batch_size)]

    def _stream(self):
        loader = torch.utils.data.DataLoader(
            _FileDataset(self.images), batch_sampler=self._batch_indices(self.position), num_workers=self.workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None,
            # Its own generator: the workers' seeds must not be drawn from torch's global one, which
            # a checkpoint restores (nothing random happens in the workers).
            generator=torch.Generator().manual_seed(0))
        return iter(loader)

    def next(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        """The next batch as (images in [-1, 1], labels, whether this batch started a new epoch)."""
        new_epoch = False
        if self.position + self.batch_size > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self._loaded = self._device_order = None
            new_epoch = True
        if self._device_order is None:
            # One copy of the order per epoch: a batch's index is then a slice on the device, with
            # no host-to-device copy (on a GPU, one that waits for the host) inside a step.
            self._device_order = self.order.to(self.device)
        index = self.share(self._device_order[self.position : self.position + self.batch_size])
        if self.streamed:
            if self._loaded is None:
                self._loaded = self._stream()
            images = next(self._loaded).to(self.device, non_blocking=True)
        else:
            images = self.images.index_select(0, index)
        self.position += self.batch_size
        labels = {name: values.index_select(0, index) for name, values in self.labels.items()}
        return to_model_range(images), labels, new_epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["order"]) != len(self.data):
            raise ValueError(f"its data order covers {len(state['order'])} images, the dataset has {len(self.data)}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = state["order"].clone()
        self._loaded = self._device_order = None  # the loader starts again where the checkpoint left off
