"""Bad data as a user meets it through ``ganforge check``: small real files, damaged in the ways
files get damaged. Each is one line naming the file, with exit code 2."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

from .conftest import assert_one_line_cli_error, invoke, tiny_recipe, write_recipe

IMAGES, LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
COUNT = 32


def idx_bytes(values: torch.Tensor) -> bytes:
    """An IDX file of uint8 values: magic 0 0 8 ndim, big-endian dimensions, the bytes."""
    header = bytes([0, 0, 0x08, values.dim()]) + struct.pack(f">{values.dim()}I", *values.shape)
    return header + values.numpy().tobytes()


def write_mnist(folder: Path) -> tuple[Path, Path]:
    """A real, tiny MNIST-format test split: 32 random 28x28 digits and their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (COUNT, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (COUNT,), dtype=torch.uint8, generator=generator)
    (folder / IMAGES).write_bytes(idx_bytes(images))
    (folder / LABELS).write_bytes(idx_bytes(labels))
    return folder / IMAGES, folder / LABELS


def check(tmp_path: Path, **data):
    values = tiny_recipe(tmp_path / "runs", data={"split": "test", "size": 0, **data}, train={"batch_size": 8})
    return invoke("check", write_recipe(tmp_path / "recipe.toml", values))


def check_mnist(tmp_path: Path):
    return check(tmp_path, name="mnist", root=str(tmp_path / "mnist"), image_size=0)


def test_the_undamaged_files_load(tmp_path):
    write_mnist(tmp_path / "mnist")
    result = check_mnist(tmp_path)
    assert result.exit_code == 0, result.stderr
    assert f"mnist ({COUNT} images 1x28x28)" in result.stdout


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def add_trailing_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 7)


def break_magic(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04" + path.read_bytes()[4:])


def forge_dimensions(path: Path) -> None:
    """A header claiming far more values than the file holds. For the images (32 x 28 x 28 =
    25,088 values), dimensions whose product is 25,088 + 49 * 2**64: a 64-bit product would wrap
    round to exactly the file's size."""
    data = path.read_bytes()
    ndim = data[3]
    dims = (COUNT * 28 * 28, 538_037_401, 66_963_369) if ndim == 3 else (2**32 - 1,)
    path.write_bytes(data[:4] + struct.pack(f">{ndim}I", *dims) + data[4 + 4 * ndim :])


def gzip_then_truncate(path: Path) -> None:
    packed = gzip.compress(path.read_bytes())
    path.with_name(path.name + ".gz").write_bytes(packed[: len(packed) // 2])
    path.unlink()


def gzip_then_corrupt(path: Path) -> None:
    packed = bytearray(gzip.compress(path.read_bytes()))
    packed[len(packed) // 2 : len(packed) // 2 + 16] = b"\xff" * 16
    path.with_name(path.name + ".gz").write_bytes(bytes(packed))
    path.unlink()


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(("damage", "problem"), [
    (truncate, "is truncated"),
    (add_trailing_bytes, "has trailing data"),
    (break_magic, "is not an IDX file"),
    (forge_dimensions, "is truncated"),
    (gzip_then_truncate, "is a truncated or corrupt gzip file"),
    (gzip_then_corrupt, "is a truncated or corrupt gzip file"),
    (empty, "is not an IDX file"),
])
@pytest.mark.parametrize("which", [IMAGES, LABELS])
def test_a_damaged_idx_file_is_named(tmp_path, damage, problem, which):
    write_mnist(tmp_path / "mnist")
    damage(tmp_path / "mnist" / which)
    named = next((tmp_path / "mnist").glob(f"{which}*"))
    assert_one_line_cli_error(check_mnist(tmp_path), 2, f"{named} {problem}")


def test_labels_out_of_range_are_named(tmp_path):
    _, labels = write_mnist(tmp_path / "mnist")
    labels.write_bytes(idx_bytes(torch.full((COUNT,), 10, dtype=torch.uint8)))
    assert_one_line_cli_error(check_mnist(tmp_path), 2, f"{labels} holds label 10, expected labels 0..9")


def test_images_and_labels_of_different_lengths_name_both_files(tmp_path):
    images, labels = write_mnist(tmp_path / "mnist")
    labels.write_bytes(idx_bytes(torch.zeros(COUNT - 1, dtype=torch.uint8)))
    assert_one_line_cli_error(check_mnist(tmp_path), 2, f"{images} holds {COUNT} images but {labels} holds {COUNT - 1}")


def test_missing_files_name_where_they_were_looked_for(tmp_path):
    images, _ = write_mnist(tmp_path / "mnist")
    images.unlink()
    assert_one_line_cli_error(check_mnist(tmp_path), 2, "the test split is missing", f"{tmp_path / 'mnist'} has only {LABELS}")


# -- image folders ---------------------------------------------------------------------------------


def image_folder(tmp_path: Path, count: int = 8) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index in range(count):
        Image.new("RGB", (40, 30), (index * 30, 0, 0)).save(folder / f"{index}.png")
    return folder


def not_an_image(path: Path) -> None:
    path.write_text("this is not a picture")


def truncated_png(path: Path) -> None:
    Image.effect_noise((64, 64), 50).save(path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("damage", [not_an_image, truncated_png, empty])
def test_an_unreadable_image_is_named(tmp_path, damage):
    folder = image_folder(tmp_path)
    damage(folder / "3.png")
    result = check(tmp_path, name="image-folder", root=str(folder), image_size=32)
    assert_one_line_cli_error(result, 2, f"cannot read image {folder / '3.png'}", "delete or replace it")


def test_an_image_size_the_model_cannot_take_names_the_key_and_the_sizes_it_can(tmp_path):
    folder = image_folder(tmp_path)
    result = check(tmp_path, name="image-folder", root=str(folder), image_size=48)
    assert_one_line_cli_error(result, 2, "recipe.toml: model.name: takes 28x28 images, the data has 48x48")
    values = tiny_recipe(tmp_path / "runs", model={"name": "dcgan"},
                         data={"name": "image-folder", "root": str(folder), "image_size": 48})
    result = invoke("check", write_recipe(tmp_path / "classic.toml", values))
    assert_one_line_cli_error(result, 2, "model.name: takes square 32, 64 or 128 px images, the data has 48x48")


def test_a_missing_image_folder_is_named(tmp_path):
    result = check(tmp_path, name="image-folder", root=str(tmp_path / "nowhere"))
    assert_one_line_cli_error(result, 2, f"image folder {tmp_path / 'nowhere'} does not exist")
