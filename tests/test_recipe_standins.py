"""The recipes for data that is not on these machines (CIFAR-10, a folder of images) pass
``ganforge check`` (which runs one real training step) on generated stand-ins of the same shape:
CIFAR-10's python batches and a folder of PNGs in class subfolders, made of coloured sprites.
And the CIFAR-10 reader itself: what it reads, and the one-line errors for what it refuses."""

from __future__ import annotations

import pickle
import re
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from ganforge.errors import DataError
from ganforge_plugins.data.cifar import read_cifar10, write_cifar10
from ganforge_plugins.data.datasets import load_cifar10
from ganforge_plugins.data.shapes import generate_shapes

from .conftest import REPO, invoke
from .test_datasets import settings

STANDIN_DATA = ("cifar10", "image-folder")
CLASSES = [f"class{k}" for k in range(10)]


def coloured_sprites(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RGB sprites at ``size`` px: the grey ``shapes`` renderings (drawn at 64 px) tinted by
    a random colour each, and a label 0-9 each."""
    generator = torch.Generator().manual_seed(seed)
    grey = F.interpolate(generate_shapes(n, 64, seed).images.float(), size=(size, size), mode="bilinear",
                         antialias=True)
    tint = torch.rand(n, 3, 1, 1, generator=generator) * 0.8 + 0.2
    return (grey * tint).round().to(torch.uint8), torch.randint(10, (n,), generator=generator)


@pytest.fixture(scope="module")
def standin_roots(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("standins")
    write_cifar10(root / "cifar" / "cifar-10-batches-py",
                  {"train": coloured_sprites(50, 32, 0), "test": coloured_sprites(10, 32, 1)}, CLASSES)
    images, labels = coloured_sprites(24, 80, 2)
    for index, (image, label) in enumerate(zip(images, labels)):
        path = root / "folder" / f"class{int(label) % 2}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return {"cifar10": root / "cifar", "image-folder": root / "folder"}


def recipes_for_absent_data() -> list[Path]:
    found = [path for path in sorted((REPO / "recipes").glob("*.toml"))
             if tomllib.loads(path.read_text())["data"]["name"] in STANDIN_DATA]
    return found


def test_there_are_recipes_for_cifar10_and_an_image_folder():
    names = {tomllib.loads(path.read_text())["data"]["name"] for path in recipes_for_absent_data()}
    assert names == set(STANDIN_DATA)


@pytest.mark.parametrize("recipe", recipes_for_absent_data(), ids=lambda path: path.name)
def test_the_recipe_checks_and_steps_on_a_standin(recipe, standin_roots, tmp_path):
    data = tomllib.loads(recipe.read_text())["data"]["name"]
    result = invoke("check", recipe, "--set", f"data.root={standin_roots[data]}", "--set",
                    f"run.out_dir={tmp_path}", "--set", "train.batch_size=8", "--set", "run.device=cpu")
    assert result.exit_code == 0, result.output
    shape = "3x32x32" if data == "cifar10" else "3x64x64"
    assert f"on {data} (" in result.stdout and f"images {shape})" in result.stdout, result.stdout
    # check ran one real step and its losses are numbers
    assert re.search(r"one step on \d+ images: D -?\d+\.\d+, G -?\d+\.\d+", result.stdout), result.stdout


def test_the_cifar_reader_keeps_images_labels_order_and_class_names(tmp_path):
    train, test = coloured_sprites(12, 32, 3), coloured_sprites(4, 32, 4)
    write_cifar10(tmp_path / "cifar-10-batches-py", {"train": train, "test": test}, CLASSES)
    images, labels, names = read_cifar10(tmp_path / "cifar-10-batches-py", ("train", "test"))
    assert torch.equal(images, torch.cat([train[0], test[0]])) and torch.equal(labels, torch.cat([train[1], test[1]]))
    assert names == CLASSES
    data = load_cifar10(settings(tmp_path, split="test"))
    assert torch.equal(data.images, test[0]) and data.label_names["label"] == CLASSES


def test_a_cifar_batch_of_the_wrong_shape_is_named_in_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, {"train": coloured_sprites(10, 32, 5), "test": coloured_sprites(5, 32, 6)}, CLASSES)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": torch.zeros(2, 100, dtype=torch.uint8).numpy(),
                                                        "labels": [0, 1]}))
    with pytest.raises(DataError) as caught:
        load_cifar10(settings(tmp_path, split="train"))
    message = str(caught.value)
    assert "data_batch_3" in message and "3072 bytes" in message and "\n" not in message


class RunsCode:
    """Unpickling this would call ``print``: a file that tries to run code when it is read."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_cifar_file_that_would_run_code_is_refused(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, {"train": coloured_sprites(10, 32, 7), "test": coloured_sprites(5, 32, 8)}, CLASSES)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": RunsCode(), "labels": []}))
    with pytest.raises(DataError) as caught:
        load_cifar10(settings(tmp_path, split="test"))
    assert "builtins.print is not part of a CIFAR batch" in str(caught.value)
    assert "unpickled" not in capsys.readouterr().out
