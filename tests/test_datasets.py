"""The dataset plugins, on the real MNIST test split from ../shared/data/mnist and on real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from PIL import Image

import ganforge_plugins.data.datasets
import ganforge_plugins.data.shapes
from ganforge.data import DataSettings
from ganforge.errors import DataError, RecipeError
from ganforge.pluginmanager import make_plugin_host
from ganforge_plugins.data.datasets import FASHION_MNIST, MNIST, IdxDataset, load_cifar10, load_image_folder

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
IMAGES_GZ = "t10k-images-idx3-ubyte.gz"
LABELS_GZ = "t10k-labels-idx1-ubyte.gz"
# The first labels and the class counts of the MNIST test split, as published.
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / IMAGES_GZ).is_file() or not (MNIST_DIR / LABELS_GZ).is_file(),
    reason=f"the MNIST test split ({IMAGES_GZ}, {LABELS_GZ}) is not in {MNIST_DIR}; see shared/data/README.md",
)


def settings(root: Path, **changes) -> DataSettings:
    return DataSettings(name="test", root=root, **{"split": "test", **changes})


@pytest.fixture(scope="module")
def mnist_test():
    return MNIST.load(settings(MNIST_DIR))


def gunzip(source: Path, target: Path) -> Path:
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return target


@needs_mnist
def test_flat_folder_loads_the_mnist_test_split(mnist_test):
    assert mnist_test.images.shape == (10_000, 1, 28, 28)
    assert mnist_test.images.dtype == torch.uint8
    labels = mnist_test.labels["label"]
    assert labels.dtype == torch.int64
    assert labels[:10].tolist() == FIRST_TEST_LABELS
    assert torch.bincount(labels, minlength=10).tolist() == TEST_CLASS_COUNTS
    assert mnist_test.label_names["label"] == [str(digit) for digit in range(10)]
    assert mnist_test.main_label == "label"
    assert 0 < mnist_test.images.float().mean() < 64 and int(mnist_test.images.max()) == 255
    assert str(MNIST_DIR) in mnist_test.source


@needs_mnist
def test_torchvision_layout(tmp_path, mnist_test):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (IMAGES_GZ, LABELS_GZ):
        (raw / name).symlink_to(MNIST_DIR / name)
    data = MNIST.load(settings(tmp_path))
    assert torch.equal(data.images, mnist_test.images)
    assert str(raw) in data.source


@needs_mnist
def test_uncompressed_idx_files(tmp_path, mnist_test):
    gunzip(MNIST_DIR / IMAGES_GZ, tmp_path / "t10k-images-idx3-ubyte")
    gunzip(MNIST_DIR / LABELS_GZ, tmp_path / "t10k-labels-idx1-ubyte")
    data = MNIST.load(settings(tmp_path))
    assert torch.equal(data.images, mnist_test.images)
    assert torch.equal(data.labels["label"], mnist_test.labels["label"])


@needs_mnist
def test_train_split_missing_says_what_where_and_how(mnist_test):
    with pytest.raises(DataError) as caught:
        MNIST.load(settings(MNIST_DIR, split="train"))
    message = str(caught.value)
    assert "\n" not in message
    for expected in ("train split is missing", "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     str(MNIST_DIR), str(MNIST_DIR / "MNIST" / "raw"), "test split is present",
                     "data.split=test", "data.download=true"):
        assert expected in message


@needs_mnist
def test_split_all_uses_the_splits_present(mnist_test):
    data = MNIST.load(settings(MNIST_DIR, split="all"))
    assert torch.equal(data.images, mnist_test.images)
    assert "test" in data.source


def test_unknown_split_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="data.split"):
        MNIST.load(settings(tmp_path, split="validation"))


def test_nothing_found_names_every_folder(tmp_path):
    with pytest.raises(DataError) as caught:
        MNIST.load(settings(tmp_path / "nowhere", split="all"))
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message and "does not exist" in message
    assert "t10k-images-idx3-ubyte" in message and "data.download=true" in message


@needs_mnist
def test_truncated_gzip_names_the_file(tmp_path):
    truncated = tmp_path / IMAGES_GZ
    truncated.write_bytes((MNIST_DIR / IMAGES_GZ).read_bytes()[:100_000])
    (tmp_path / LABELS_GZ).symlink_to(MNIST_DIR / LABELS_GZ)
    with pytest.raises(DataError, match="truncated") as caught:
        MNIST.load(settings(tmp_path))
    assert str(truncated) in str(caught.value)


@needs_mnist
def test_truncated_idx_names_the_file(tmp_path):
    images = gunzip(MNIST_DIR / IMAGES_GZ, tmp_path / "t10k-images-idx3-ubyte")
    images.write_bytes(images.read_bytes()[:-28])
    (tmp_path / LABELS_GZ).symlink_to(MNIST_DIR / LABELS_GZ)
    with pytest.raises(DataError, match="truncated") as caught:
        MNIST.load(settings(tmp_path))
    assert str(images) in str(caught.value)


@needs_mnist
def test_corrupt_magic_number(tmp_path):
    labels = gunzip(MNIST_DIR / LABELS_GZ, tmp_path / "t10k-labels-idx1-ubyte")
    labels.write_bytes(b"\x12\x34" + labels.read_bytes()[2:])
    (tmp_path / IMAGES_GZ).symlink_to(MNIST_DIR / IMAGES_GZ)
    with pytest.raises(DataError, match="not an IDX file") as caught:
        MNIST.load(settings(tmp_path))
    assert str(labels) in str(caught.value)


@needs_mnist
def test_swapped_files_are_rejected(tmp_path):
    (tmp_path / IMAGES_GZ).symlink_to(MNIST_DIR / LABELS_GZ)
    (tmp_path / LABELS_GZ).symlink_to(MNIST_DIR / IMAGES_GZ)
    with pytest.raises(DataError, match="expected uint8 images"):
        MNIST.load(settings(tmp_path))


@needs_mnist
def test_image_size_resizes_once_at_load(mnist_test):
    data = MNIST.load(settings(MNIST_DIR, image_size=32))
    assert data.images.shape == (10_000, 1, 32, 32) and data.images.dtype == torch.uint8
    assert torch.equal(data.labels["label"], mnist_test.labels["label"])
    # Bilinear resizing keeps the overall brightness.
    assert abs(data.images.float().mean() - mnist_test.images.float().mean()) < 2


@needs_mnist
def test_fashion_mnist_reads_the_same_format(tmp_path):
    for name in (IMAGES_GZ, LABELS_GZ):
        (tmp_path / name).symlink_to(MNIST_DIR / name)
    data = FASHION_MNIST.load(settings(tmp_path))
    assert data.images.shape == (10_000, 1, 28, 28)
    assert data.label_names["label"][0] == "T-shirt/top" and len(data.label_names["label"]) == 10


@needs_mnist
def test_half_a_split_is_named(tmp_path):
    (tmp_path / IMAGES_GZ).symlink_to(MNIST_DIR / IMAGES_GZ)
    with pytest.raises(DataError, match=f"{tmp_path} has only {IMAGES_GZ}"):
        MNIST.load(settings(tmp_path))


@needs_mnist
def test_system_folder_is_only_a_fallback(tmp_path):
    digits = IdxDataset("digits", "Digits", tuple("0123456789"), system_folders=(MNIST_DIR,))
    assert len(digits.load(settings(tmp_path))) == 10_000
    # Once the user's root holds any file of the dataset, the system copy is not mixed in.
    (tmp_path / LABELS_GZ).symlink_to(MNIST_DIR / LABELS_GZ)
    with pytest.raises(DataError, match=f"{tmp_path} has only {LABELS_GZ}") as caught:
        digits.load(settings(tmp_path))
    assert str(MNIST_DIR) not in str(caught.value)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_falls_back_to_the_debian_copy(tmp_path):
    data = FASHION_MNIST.load(settings(tmp_path, split="all"))
    assert data.images.shape == (70_000, 1, 28, 28)
    assert "/usr/share/datasets/fashion-mnist" in data.source


def test_missing_cifar10_says_what_where_and_how(tmp_path):
    with pytest.raises(DataError) as caught:
        load_cifar10(settings(tmp_path, split="train"))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message and "data.download=true" in message


def write_image(path: Path, color, size=(40, 30), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    write_image(tmp_path / "cats" / "a.png", (255, 0, 0))
    write_image(tmp_path / "cats" / "nested" / "b.jpg", (250, 0, 0), size=(64, 64))
    write_image(tmp_path / "dogs" / "c.png", 128, size=(20, 20), mode="L")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    data = load_image_folder(settings(tmp_path, image_size=16))
    assert data.images.shape == (3, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels["label"].tolist() == [0, 0, 1]
    assert data.label_names["label"] == ["cats", "dogs"]
    red = data.images[0].float().mean(dim=(1, 2))
    assert red[0] > 250 and red[1] < 5 and red[2] < 5
    assert torch.all(data.images[2] == 128)  # grayscale becomes RGB


def test_image_folder_without_classes_defaults_to_64px(tmp_path):
    write_image(tmp_path / "one.png", (0, 255, 0))
    write_image(tmp_path / "two.png", (0, 0, 255), size=(100, 50))
    data = load_image_folder(settings(tmp_path))
    assert data.images.shape == (2, 3, 64, 64)
    assert data.labels == {}


def test_image_folder_unreadable_image_names_the_file(tmp_path):
    write_image(tmp_path / "cats" / "good.png", (255, 0, 0))
    broken = tmp_path / "dogs" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(DataError) as caught:
        load_image_folder(settings(tmp_path))
    assert str(broken) in str(caught.value) and "\n" not in str(caught.value)


def test_image_folder_empty_or_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in"):
        load_image_folder(settings(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(settings(tmp_path / "missing"))


@needs_mnist
def test_datasets_are_reached_through_the_plugin_host():
    host = make_plugin_host(
        entry_points=False,
        plugins=[("datasets", ganforge_plugins.data.datasets), ("shapes", ganforge_plugins.data.shapes)],
    )
    assert host.datasets.names() == ["cifar10", "fashion-mnist", "image-folder", "mnist", "shapes"]
    assert host.datasets.by_plugin("datasets") == ["cifar10", "fashion-mnist", "image-folder", "mnist"]
    data = host.datasets.get("mnist")(DataSettings(name="mnist", root=MNIST_DIR, split="test"))
    assert len(data) == 10_000


def grey_folder(root: Path, count: int) -> None:
    """``count`` flat grey images, image ``i`` of value ``5 * i``: a batch shows which it holds."""
    for index in range(count):
        write_image(root / f"{index:03d}.png", (5 * index,) * 3, size=(8, 8))


def test_a_streamed_image_folder_gives_the_batches_memory_gives_and_resumes_mid_epoch(tmp_path):
    from ganforge.data import Batcher, FileImages

    grey_folder(tmp_path, 40)
    in_memory = load_image_folder(settings(tmp_path, image_size=8))
    streamed = load_image_folder(settings(tmp_path, image_size=8, stream=True))
    assert isinstance(streamed.images, FileImages) and streamed.images.shape == in_memory.images.shape
    assert torch.equal(streamed.images[torch.tensor([3, 1])], in_memory.images[[3, 1]])
    assert torch.equal(streamed.images[2:5], in_memory.images[2:5])

    def batches(data, count, workers=2, resume_from=None):
        batcher = Batcher(data, 16, torch.Generator().manual_seed(7), torch.device("cpu"), workers=workers)
        if resume_from:  # as a resumed run restores its data stream and order
            batcher.generator.set_state(resume_from.generator.get_state())
            batcher.load_state_dict(resume_from.state_dict())
        return [batcher.next() for _ in range(count)], batcher

    expected, _ = batches(in_memory, 5)  # two per epoch of 40: crosses two epoch ends
    got, _ = batches(streamed, 5)
    for (want, _, want_new), (have, _, have_new) in zip(expected, got):
        assert torch.equal(have, want) and have_new == want_new
    # A checkpoint's data order, taken mid-epoch, continues the same batches when streamed.
    _, halfway = batches(in_memory, 3)
    resumed, _ = batches(streamed, 2, workers=0, resume_from=halfway)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, expected[3:]))


def test_stream_on_a_dataset_held_in_memory_is_a_recipe_error(tmp_path):
    from .conftest import invoke, assert_one_line_cli_error, tiny_recipe, write_recipe

    path = write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", data={"stream": True}))
    assert_one_line_cli_error(invoke("check", str(path)), 2, "data.stream", "image-folder")


def test_a_run_on_a_streamed_image_folder_trains_and_resumes_bit_for_bit(tmp_path):
    from .test_variant_hooks import assert_resumes_bitwise

    grey_folder(tmp_path / "images", 48)
    data = {"name": "image-folder", "root": str(tmp_path / "images"), "image_size": 32, "stream": True,
            "workers": 1, "size": 0}
    straight, resumed = assert_resumes_bitwise(tmp_path, lambda: [], data=data, model={"name": "dcgan"})
    assert resumed.images_seen == 4 * 16
