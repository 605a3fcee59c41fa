"""Built-in datasets: ``mnist``, ``fashion-mnist``, ``cifar10`` and ``image-folder``.

Each loader reads the whole dataset into one uint8 tensor at load time, resized once if the
recipe asks for another ``data.image_size``; nothing is decoded or transformed per batch.

Where the files are looked for (``data.root`` is the recipe's root, see
:func:`ganforge.data.resolve_data_root`):

* ``mnist`` / ``fashion-mnist``: the torchvision layout ``<root>/MNIST/raw/``
  (``<root>/FashionMNIST/raw/``), then the IDX files directly in ``<root>``; for Fashion-MNIST,
  when neither holds any of its files, also Debian's ``/usr/share/datasets/fashion-mnist/``
  (package ``dataset-fashion-mnist``). Files may be gzip-compressed or not.
* ``cifar10``: the python batches in ``<root>/cifar-10-batches-py/`` (read by :mod:`.cifar`).
* ``image-folder``: every image under ``<root>``, recursively.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.data import SPLITS, DataSettings, FileImages, ImageData
from ganforge.errors import DataError, RecipeError
from ganforge.hookspecs import hookimpl

from .cifar import read_cifar10
from .idx import read_idx_images, read_idx_labels

#: split -> (images file, labels file), without the optional ``.gz``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
OTHER_SPLIT = {"train": "test", "test": "train"}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_FOLDER_DEFAULT_SIZE = 64
RESIZE_CHUNK = 4096  # images resized at once: bounds the float copy's memory


def wanted_splits(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise RecipeError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}", key="data.split")
    return ("train", "test") if split == "all" else (split,)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing; a no-op at the same size."""
    if size < 0:
        raise RecipeError(f"image size must be positive, got {size}", key="data.image_size")
    if size == 0 or tuple(images.shape[2:]) == (size, size):
        return images
    resized = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = images[start : start + RESIZE_CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        resized[start : start + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return resized


# ---------------------------------------------------------------------------------------------
# MNIST-format datasets (IDX files)
# ---------------------------------------------------------------------------------------------


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder``; the plain file first, it reads faster."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def splits_in(folder: Path) -> dict[str, tuple[Path, Path]]:
    """The splits whose images and labels files are both in ``folder``."""
    found = {}
    for split, (images_stem, labels_stem) in IDX_FILES.items():
        images, labels = find_idx_file(folder, images_stem), find_idx_file(folder, labels_stem)
        if images and labels:
            found[split] = (images, labels)
    return found


@dataclass(frozen=True)
class IdxDataset:
    """A dataset shipped as MNIST's four IDX files: 28x28 grayscale, 10 classes."""

    name: str
    torchvision_name: str  # torchvision's class, also the folder it downloads into
    label_names: tuple[str, ...]
    system_folders: tuple[Path, ...] = ()

    def raw_folder(self, root: Path) -> Path:
        return root / self.torchvision_name / "raw"

    def search_folders(self, root: Path) -> list[Path]:
        folders = [self.raw_folder(root), root]
        # A system copy is only a fallback: never mix it with files the user put under root.
        if not any(find_idx_file(folder, stem) for folder in folders for pair in IDX_FILES.values() for stem in pair):
            folders += list(self.system_folders)
        return folders

    def load(self, settings: DataSettings) -> ImageData:
        wanted = wanted_splits(settings.split)
        root = Path(settings.root)
        folder, found = self.locate(root, wanted)
        if settings.download and not all(split in found for split in wanted):
            self.download(root, wanted)
            folder, found = self.locate(root, wanted)
        if not found:
            raise DataError(self.missing_message(root, settings.split, settings.download))
        splits = [split for split in wanted if split in found]
        parts = [self.read_split(*found[split]) for split in splits]
        images = resize_images(torch.cat([images for images, _ in parts]), settings.image_size)
        labels = torch.cat([labels for _, labels in parts])
        return ImageData(
            images,
            {"label": labels},
            {"label": list(self.label_names)},
            source=f"{self.name} {'+'.join(splits)} from {folder}",
        )

    def locate(self, root: Path, wanted: tuple[str, ...]) -> tuple[Path | None, dict[str, tuple[Path, Path]]]:
        """The first folder holding a wanted split, with the wanted splits it holds."""
        for folder in self.search_folders(root):
            found = {split: files for split, files in splits_in(folder).items() if split in wanted}
            if found:
                return folder, found
        return None, {}

    def read_split(self, images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx_images(images_path, 28, 28)
        labels = read_idx_labels(labels_path, len(self.label_names))
        if len(images) != len(labels):
            raise DataError(
                f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels;"
                " the two files must come from the same split"
            )
        return images, labels

    def download(self, root: Path, wanted: tuple[str, ...]) -> None:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, self.torchvision_name)
        try:
            # Downloads all four files whichever split is asked for; we read them ourselves after.
            dataset_class(str(root), train=wanted[0] == "train", download=True)
        except Exception as error:  # offline, mirror down, checksum mismatch: all end the same way
            raise DataError(
                f"downloading {self.name} into {self.raw_folder(root)} failed ({one_line(error)});"
                f" check the internet connection, or copy the IDX files there yourself"
            ) from None

    def missing_message(self, root: Path, split: str, download: bool) -> str:
        folders = self.search_folders(root)
        where = ", ".join(f"{folder}" + ("" if folder.is_dir() else " (does not exist)") for folder in folders)
        how = (
            f"run with --set data.download=true (needs internet) or put the files in {self.raw_folder(root)}/"
            " (torchvision layout)"
        )
        if download:
            how = f"put the files in {self.raw_folder(root)}/ (the download did not bring them)"
        if split == "all":
            files = " ".join(f"{stem}[.gz]" for pair in IDX_FILES.values() for stem in pair)
            return f"{self.name} not found: looked for {files} in {where}; to get it, {how}"
        files = " and ".join(f"{stem}[.gz]" for stem in IDX_FILES[split])
        message = f"{self.name}: the {split} split is missing: looked for {files} in {where}"
        for folder in folders:
            pair = [find_idx_file(folder, stem) for stem in IDX_FILES[split]]
            if any(pair) and not all(pair):
                message += f"; {folder} has only {next(path for path in pair if path).name}"
        other = OTHER_SPLIT[split]
        holding_other = [folder for folder in folders if other in splits_in(folder)]
        if holding_other:
            message += (
                f"; the {other} split is present in {holding_other[0]}"
                f" (use --set data.split={other} or --set data.split=all)"
            )
        return f"{message}; to get the {split} split, {how}"


MNIST = IdxDataset("mnist", "MNIST", tuple(str(digit) for digit in range(10)))
FASHION_MNIST = IdxDataset(
    "fashion-mnist", "FashionMNIST", FASHION_CLASSES, system_folders=(Path("/usr/share/datasets/fashion-mnist"),)
)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's pickled batches)
# ---------------------------------------------------------------------------------------------


def load_cifar10(settings: DataSettings) -> ImageData:
    """CIFAR-10 from ``<root>/cifar-10-batches-py``: 32x32 RGB, 10 classes (50,000 train, 10,000 test)."""
    wanted = wanted_splits(settings.split)
    root = Path(settings.root)
    folder = root / CIFAR_FOLDER
    missing = [name for name in CIFAR_FILES if not (folder / name).is_file()]
    how = f"to get it, run with --set data.download=true (needs internet) or unpack cifar-10-python.tar.gz into {root}"
    if missing and not settings.download:
        state = "" if folder.is_dir() else " (folder does not exist)"
        raise DataError(f"cifar10 not found: {folder}{state} lacks {', '.join(missing)}; {how}")
    if missing:  # download=true: torchvision fetches and checks the published archive
        import torchvision.datasets

        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:
            raise DataError(f"cifar10: downloading into {folder} failed ({one_line(error)}); check the internet"
                            f" connection, or unpack cifar-10-python.tar.gz into {root} yourself") from None
    images, labels, classes = read_cifar10(folder, wanted)
    return ImageData(
        resize_images(images.contiguous(), settings.image_size),
        {"label": labels},
        {"label": classes},
        source=f"cifar10 {'+'.join(wanted)} from {folder}",
    )


# ---------------------------------------------------------------------------------------------
# A folder of images
# ---------------------------------------------------------------------------------------------


def load_image_folder(settings: DataSettings) -> ImageData:
    """Every image under ``data.root`` (recursively), as RGB, scaled and center-cropped to a square.

    ``data.image_size = 0`` means 64 px: a folder has no native size to keep. When every image
    sits in a subfolder of the root and there are at least two subfolders, the subfolders are
    classes (sorted by name) and the images get a ``label``; otherwise there are no labels.
    Files without an image extension are skipped; an image file that cannot be decoded is an error.
    """
    root = Path(settings.root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; set data.root to a folder of images")
    files = image_files(root)
    if not files:
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        raise DataError(f"no images in {root} (looked recursively for {extensions}); set data.root to a folder of images")
    size = settings.image_size or IMAGE_FOLDER_DEFAULT_SIZE
    if size < 0:
        raise RecipeError(f"image size must be positive, got {size}", key="data.image_size")
    labels, label_names = folder_labels(root, files)
    if settings.stream:  # decoded batch by batch in DataLoader workers
        read_image(files[0], size)  # an unreadable first file is a one-line error now, not in a worker
        images = FileImages(files, (3, size, size), partial(read_image_tensor, size=size))
        return ImageData(images, labels, label_names, source=f"image-folder {root}, streamed")
    images = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    # Decoding and resizing release the GIL in PIL, so threads give a real speed-up here.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for index, pixels in enumerate(pool.map(partial(read_image, size=size), files)):
            images[index] = torch.from_numpy(pixels).permute(2, 0, 1)
    return ImageData(images, labels, label_names, source=f"image-folder {root}")


def folder_labels(root: Path, files: list[Path]) -> tuple[dict, dict]:
    """``label`` by top-level subfolder, when every image is in one and there are at least two."""
    top_folders = [path.relative_to(root).parts[0] if path.parent != root else None for path in files]
    classes = sorted(set(top_folders) - {None})
    if None in top_folders or len(classes) < 2:
        return {}, {}
    index_of = {name: index for index, name in enumerate(classes)}
    labels = torch.tensor([index_of[name] for name in top_folders], dtype=torch.int64)
    return {"label": labels}, {"label": classes}


def read_image_tensor(path: Path, size: int) -> torch.Tensor:
    """One image as a uint8 (3, size, size) tensor (what streamed batches are made of)."""
    return torch.from_numpy(read_image(path, size)).permute(2, 0, 1).contiguous()


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` in a stable order, skipping hidden files and folders."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    )


def read_image(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3): scaled so its shorter side is ``size``, center-cropped."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG decodes at a reduced scale: much faster for big photos
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
            return np.array(fitted, dtype=np.uint8)  # a writable copy: torch warns about read-only arrays
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path} ({one_line(error)}); delete or replace it") from None


@hookimpl
def ganforge_register_datasets(register):
    register("mnist", MNIST.load)
    register("fashion-mnist", FASHION_MNIST.load)
    register("cifar10", load_cifar10)
    register("image-folder", load_image_folder)
