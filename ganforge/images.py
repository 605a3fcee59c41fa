"""Image grids as PNG files, with PIL alone: importing torchvision costs seconds at every CLI start."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image


def make_grid(images: torch.Tensor, columns: int = 8, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, rows*(H+p)+p, columns*(W+p)+p) image on a black ground."""
    count, channels, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = torch.zeros(channels, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid


def save_png(image: torch.Tensor, path: Path) -> Path:
    """A (C, H, W) image in [0, 1] as an 8-bit PNG (grayscale for one channel)."""
    pixels = image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_grid(images: torch.Tensor, path: Path, columns: int = 8) -> Path:
    return save_png(make_grid(images.float(), columns), path)
