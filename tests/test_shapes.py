"""The procedurally rendered ``shapes`` dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ganforge_plugins.data.shapes
from ganforge.data import DataSettings
from ganforge.errors import RecipeError
from ganforge.pluginmanager import make_plugin_host
from ganforge_plugins.data.shapes import FACTOR_SIZES, POSITIONS, SHAPE_NAMES, generate_shapes, render_shapes


def pose(shape: int, n: int = 1, scale: int = 5, rotation: int = 0, pos_x: int = 16, pos_y: int = 16) -> dict:
    return {
        name: torch.full((n,), value, dtype=torch.int64)
        for name, value in zip(FACTOR_SIZES, (shape, scale, rotation, pos_x, pos_y))
    }


def ink_centroid(image: torch.Tensor) -> tuple[float, float]:
    """(x, y) of an image's brightness centroid, in pixels."""
    weights = image[0].double()
    rows, columns = torch.meshgrid(
        torch.arange(image.shape[1], dtype=torch.float64), torch.arange(image.shape[2], dtype=torch.float64), indexing="ij"
    )
    total = weights.sum()
    return float((weights * columns).sum() / total), float((weights * rows).sum() / total)


@pytest.fixture(scope="module")
def sample():
    return generate_shapes(2000, 28, seed=7)


def test_same_seed_same_dataset_different_seed_different(sample):
    again = generate_shapes(2000, 28, seed=7)
    assert torch.equal(again.images, sample.images)
    assert all(torch.equal(again.labels[name], sample.labels[name]) for name in FACTOR_SIZES)
    other = generate_shapes(2000, 28, seed=8)
    assert not torch.equal(other.images, sample.images)


def test_shapes_dtypes_and_labels(sample):
    assert sample.images.shape == (2000, 1, 28, 28) and sample.images.dtype == torch.uint8
    assert list(sample.labels) == ["shape", "scale", "rotation", "pos_x", "pos_y"]
    assert sample.main_label == "shape"
    assert sample.label_names["shape"] == list(SHAPE_NAMES)
    for name, count in FACTOR_SIZES.items():
        values = sample.labels[name]
        assert values.dtype == torch.int64
        assert 0 <= int(values.min()) and int(values.max()) < count
        # Uniform sampling reaches every value of the smaller factors.
        if count <= 6:
            assert len(values.unique()) == count


def test_every_sprite_is_in_the_frame_where_its_position_says(sample):
    ink = sample.images.float().sum(dim=(1, 2, 3)) / 255
    assert ink.min() > 4  # even the smallest ellipse covers several pixels
    # Antialiased edges: grey levels between black and white.
    assert ((sample.images > 0) & (sample.images < 255)).any()
    for index in range(0, 2000, 97):
        x, y = ink_centroid(sample.images[index])
        expected_x = (float(POSITIONS[sample.labels["pos_x"][index]]) + 1) * 14 - 0.5
        expected_y = (float(POSITIONS[sample.labels["pos_y"][index]]) + 1) * 14 - 0.5
        assert abs(x - expected_x) < 1.5 and abs(y - expected_y) < 1.5


def test_shape_categories_differ():
    images = torch.cat([render_shapes(**pose(shape)) for shape in range(len(SHAPE_NAMES))]).float()
    for first in range(len(images)):
        for second in range(first + 1, len(images)):
            changed = (images[first] - images[second]).abs().gt(127).sum()
            assert changed >= 10, (SHAPE_NAMES[first], SHAPE_NAMES[second])


def test_mean_images_of_categories_differ(sample):
    means = torch.stack([sample.images[sample.labels["shape"] == shape].float().mean(0) for shape in range(4)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).fill_diagonal_(float("inf")).min() > 10


def test_scale_and_rotation_act():
    small, large = render_shapes(**pose(0, scale=0)), render_shapes(**pose(0, scale=5))
    assert large.float().sum() > 3 * small.float().sum()
    flat, upright = render_shapes(**pose(1, rotation=0))[0, 0], render_shapes(**pose(1, rotation=10))[0, 0]
    assert (flat > 127).any(0).sum() > (flat > 127).any(1).sum()  # wider than tall
    assert (upright > 127).any(0).sum() < (upright > 127).any(1).sum()


def test_a_sprite_renders_the_same_alone_or_in_a_batch(sample):
    labels = {name: values[:70] for name, values in sample.labels.items()}
    alone = render_shapes(**{name: values[69:70] for name, values in labels.items()})
    assert torch.equal(alone[0], sample.images[69])


def test_64_pixels():
    data = generate_shapes(50, 64, seed=1)
    assert data.images.shape == (50, 1, 64, 64)
    x, y = ink_centroid(data.images[0])
    expected_x = (float(POSITIONS[data.labels["pos_x"][0]]) + 1) * 32 - 0.5
    expected_y = (float(POSITIONS[data.labels["pos_y"][0]]) + 1) * 32 - 0.5
    assert abs(x - expected_x) < 3 and abs(y - expected_y) < 3


def test_bad_image_size_and_factors():
    with pytest.raises(RecipeError, match="28 or 64"):
        generate_shapes(10, 32)
    with pytest.raises(ValueError, match="rotation"):
        render_shapes(**{**pose(0), "rotation": torch.tensor([40])})


def test_loaded_through_the_plugin_host():
    host = make_plugin_host(entry_points=False, plugins=[("shapes", ganforge_plugins.data.shapes)])
    load = host.datasets.get("shapes")
    train = load(DataSettings(name="shapes", root=Path("unused"), seed=3))
    assert train.images.shape == (20_000, 1, 28, 28)
    test = load(DataSettings(name="shapes", root=Path("unused"), seed=3, split="test", size=100))
    assert len(test) == 100 and not torch.equal(test.images, train.images[:100])
    with pytest.raises(RecipeError, match="data.image_size"):
        load(DataSettings(name="shapes", root=Path("unused"), image_size=48))
