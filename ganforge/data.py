"""Datasets held in memory as one tensor, and the batcher that indexes into it.

Dataset plugins return an :class:`ImageData`; the training loop never touches PIL or a
``DataLoader``: one ``index_select`` per batch is all the data path costs on a CPU.
"""

from __future__ import annotations

import os
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
    return ImageData(data.images[index], {name: values[index] for name, values in data.labels.items()},
                     data.label_names, f"{data.source}, {part} part ({len(index)} of {len(data)})")


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
    """Endless shuffled batches from an in-memory dataset.

    Each epoch is one permutation drawn from ``generator``; batches are slices of it, and the last
    partial batch of an epoch is dropped so every step sees ``batch_size`` images. The position in
    the permutation is part of :meth:`state_dict`, so a resumed run continues the same data order.
    """

    def __init__(self, data: ImageData, batch_size: int, generator: torch.Generator, device: torch.device):
        if batch_size > len(data):
            raise ValueError(f"batch size {batch_size} exceeds the dataset's {len(data)} images")
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.device = device
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(len(data), generator=generator)
        # Holding the images on the training device once avoids a host copy per step on a GPU.
        self.images = data.images.to(device)
        self.labels = {name: values.to(device) for name, values in data.labels.items()}

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    def next(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        """The next batch as (images in [-1, 1], labels, whether this batch started a new epoch)."""
        new_epoch = False
        if self.position + self.batch_size > len(self.order):
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(len(self.data), generator=self.generator)
            new_epoch = True
        index = self.order[self.position : self.position + self.batch_size].to(self.device)
        self.position += self.batch_size
        images = to_model_range(self.images.index_select(0, index))
        labels = {name: values.index_select(0, index) for name, values in self.labels.items()}
        return images, labels, new_epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["order"]) != len(self.data):
            raise ValueError(f"its data order covers {len(state['order'])} images, the dataset has {len(self.data)}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = state["order"].clone()
