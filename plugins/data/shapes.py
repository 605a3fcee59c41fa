"""``shapes``: procedurally rendered sprites in the spirit of DeepMind's dSprites.

Every image is one white sprite on black, one channel, drawn from five independent factors, each
sampled uniformly from a fixed grid (the label values are indices into these grids):

=========  ======  =========================================================================
factor     values  grid
=========  ======  =========================================================================
shape      4       square, ellipse, heart, triangle (the main label)
scale      6       0.5, 0.6, ..., 1.0 (times the sprite's size at full scale, 40% of the frame's half-width)
rotation   40      0, 2π/40, ..., 2π·39/40 radians, counter-clockwise on screen
pos_x      32      sprite centre from -0.6 to 0.6 of the frame's half-width, left to right
pos_y      32      the same, top to bottom
=========  ======  =========================================================================

The square and the ellipse are symmetric, so several rotation values give the same picture (as
in dSprites). At the extreme positions a full-scale sprite may touch or just cross the border.

Images are 28 px (the default) or 64 px. Rendering is vectorised: for each sprite the pixels of
a window around it are mapped back through its inverse rotation, scale and translation, an
implicit function of the shape decides inside/outside on a 4x (28 px) or 2x (64 px) supersampled
grid, and averaging the subsamples gives antialiased edges. ``data.size`` images (default 20,000) come from a ``torch.Generator`` seeded
with ``data.seed``, so a seed always gives the same dataset; ``data.split = "test"`` draws from
a different seed stream so train and test images differ.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ganforge.data import DataSettings, ImageData
from ganforge.errors import RecipeError
from ganforge.hookspecs import hookimpl

SHAPE_NAMES = ("square", "ellipse", "heart", "triangle")
SCALES = torch.linspace(0.5, 1.0, 6)
ROTATIONS = torch.arange(40) * (2 * math.pi / 40)
POSITIONS = torch.linspace(-0.6, 0.6, 32)
FACTOR_SIZES = {"shape": len(SHAPE_NAMES), "scale": len(SCALES), "rotation": len(ROTATIONS), "pos_x": 32, "pos_y": 32}

SPRITE_HALF_SIZE = 0.4  # a full-scale sprite's half-extent, in units of the frame's half-width
SPRITE_RADIUS = 1.2  # every shape lies within this radius of its centre, in the same sprite units (heart: 1.17)
IMAGE_SIZES = (28, 64)
DEFAULT_IMAGE_SIZE = 28
DEFAULT_SIZE = 20_000
TEST_SEED_OFFSET = 1_000_003
SUPERSAMPLING = {28: 4, 64: 2}  # subsamples per pixel side: ~112-128 samples across the frame either way
CHUNK = 128  # sprites rendered at once: keeps the supersampled grids in cache (~2 MB), 3-4x faster than big chunks


def check_image_size(image_size: int) -> int:
    size = image_size or DEFAULT_IMAGE_SIZE
    if size not in IMAGE_SIZES:
        raise RecipeError(
            f"the shapes dataset renders 28 or 64 px images, not {image_size}; set data.image_size = 28 or 64",
            key="data.image_size",
        )
    return size


class Coordinates:
    """The sprite frame's coordinates ``u`` (right) and ``v`` (down) over a grid of subsamples.

    Each is stored separably as a part along x plus a part along y, because the inverse affine
    map is linear in the pixel position: any linear function of ``u`` and ``v`` then costs one
    broadcast add on the full grid instead of several full-size multiplies.
    """

    def __init__(self, dx: torch.Tensor, dy: torch.Tensor, scale: torch.Tensor, rotation: torch.Tensor):
        # dx (N, columns), dy (N, rows): subsample offsets from each sprite's centre, in full-scale sprite units.
        dx, dy = dx / scale[:, None], dy / scale[:, None]
        # Screen rows point down, so a counter-clockwise turn on screen is -angle in (x, y).
        cos, sin = rotation.cos()[:, None], rotation.sin()[:, None]
        self.u = (cos * dx, -sin * dy)
        self.v = (sin * dx, cos * dy)

    def linear(self, a: float, b: float, c: float = 0.0) -> torch.Tensor:
        """``a*u + b*v + c`` on the full grid, shape (N, rows, columns)."""
        along_x = a * self.u[0] + b * self.v[0] + c
        along_y = a * self.u[1] + b * self.v[1]
        return along_x[:, None, :] + along_y[:, :, None]


def inside_square(p: Coordinates) -> torch.Tensor:
    return (p.linear(1, 0).abs_() <= 0.8) & (p.linear(0, 1).abs_() <= 0.8)


def inside_ellipse(p: Coordinates) -> torch.Tensor:
    # Elongated (semi-axes 1 and 0.5) so that its rotation shows.
    return p.linear(1, 0).square_().add_(p.linear(0, 2).square_()) <= 1


def inside_heart(p: Coordinates) -> torch.Tensor:
    # (x² + y² - 1)³ - x² y³ <= 0 spans x in [-1.14, 1.14], y in [-1, 1.25] with y up: fit it to [-1, 1]².
    x2 = p.linear(1.14, 0).square_()
    y = p.linear(0, -1.14, 0.125)
    y2 = y.square()
    return (x2 + y2 - 1).pow_(3) <= x2.mul_(y2.mul_(y))


def inside_triangle(p: Coordinates) -> torch.Tensor:
    # Equilateral, pointing up, circumradius 1 around its centroid: three half-planes at distance 0.5.
    inside = p.linear(0, 1) <= 0.5
    inside &= p.linear(-math.sqrt(3) / 2, -0.5) <= 0.5
    inside &= p.linear(math.sqrt(3) / 2, -0.5) <= 0.5
    return inside


INSIDE = (inside_square, inside_ellipse, inside_heart, inside_triangle)


def render_shapes(
    shape: torch.Tensor,
    scale: torch.Tensor,
    rotation: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> torch.Tensor:
    """Sprites for factor indices (int tensors of equal length N) as uint8 images (N, 1, size, size)."""
    size = check_image_size(image_size)
    factors = {"shape": shape, "scale": scale, "rotation": rotation, "pos_x": pos_x, "pos_y": pos_y}
    for name, values in factors.items():
        if values.shape != shape.shape or values.dim() != 1:
            raise ValueError(f"factor {name!r} has shape {tuple(values.shape)}, expected ({len(shape)},) like 'shape'")
        if len(values) and not 0 <= int(values.min()) <= int(values.max()) < FACTOR_SIZES[name]:
            raise ValueError(f"factor {name!r} must hold indices 0..{FACTOR_SIZES[name] - 1}")
    factor, window = SUPERSAMPLING[size], sprite_window(size)
    half = size / 2
    # Only a window around each sprite is rendered, 3-4x fewer samples than the whole frame. Its
    # origin is a whole pixel, so its subsamples are the frame's; clamping it into the frame
    # still covers every visible part of the sprite, because the window is wider than the sprite.
    centre_x, centre_y = (POSITIONS[pos_x] + 1) * half, (POSITIONS[pos_y] + 1) * half
    origin_x = (centre_x - window / 2).floor().clamp_(0, size - window)
    origin_y = (centre_y - window / 2).floor().clamp_(0, size - window)
    offsets = (torch.arange(window * factor, dtype=torch.float32) + 0.5) / factor
    unit = SPRITE_HALF_SIZE * half  # pixels per full-scale sprite unit
    dx = (origin_x[:, None] + offsets - centre_x[:, None]) / unit
    dy = (origin_y[:, None] + offsets - centre_y[:, None]) / unit
    steps = torch.arange(window)
    pixel = ((origin_y.long()[:, None, None] + steps[:, None]) * size + origin_x.long()[:, None, None] + steps).flatten(1)
    images = torch.zeros((len(shape), size * size), dtype=torch.uint8)
    with single_threaded():
        render_windows(images, shape, scale, rotation, dx, dy, pixel, factor)
    return images.view(len(shape), 1, size, size)


def render_windows(images, shape, scale, rotation, dx, dy, pixel, factor) -> None:
    """Fill ``images`` (N, size*size) with each sprite's window, scattered to its ``pixel`` indices."""
    size_squared = images.shape[1]
    # One implicit function per category: group the sprites by shape rather than evaluating all four.
    for category, inside in enumerate(INSIDE):
        members = (shape == category).nonzero().squeeze(1)
        for start in range(0, len(members), CHUNK):
            index = members[start : start + CHUNK]
            coordinates = Coordinates(dx[index], dy[index], SCALES[scale[index]], ROTATIONS[rotation[index]])
            coverage = F.avg_pool2d(inside(coordinates).unsqueeze(1).float(), factor)
            sprites = coverage.mul_(255).round_().to(torch.uint8).flatten(1)
            images[index] = torch.zeros((len(index), size_squared), dtype=torch.uint8).scatter_(1, pixel[index], sprites)


@contextmanager
def single_threaded():
    """Run torch on one thread: rendering is thousands of small ops, and with a busy core OpenMP's
    barriers made two threads 10-30x slower than one (idle, two threads gain only ~30%)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sprite_window(image_size: int) -> int:
    """Pixels across the square that holds any sprite wherever it sits relative to the pixel grid."""
    return min(image_size, math.ceil(2 * SPRITE_RADIUS * SPRITE_HALF_SIZE * image_size / 2) + 1)


def generate_shapes(n: int = DEFAULT_SIZE, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> ImageData:
    """``n`` sprites with uniformly drawn factors; the same ``seed`` gives the same images and labels."""
    if n <= 0:
        raise RecipeError(f"the shapes dataset needs a positive number of images, got {n}", key="data.size")
    size = check_image_size(image_size)
    generator = torch.Generator().manual_seed(seed)
    labels = {name: torch.randint(count, (n,), generator=generator) for name, count in FACTOR_SIZES.items()}
    images = render_shapes(**labels, image_size=size)
    return ImageData(images, labels, {"shape": list(SHAPE_NAMES)}, source=f"shapes n={n} size={size} seed={seed}")


def load_shapes(settings: DataSettings) -> ImageData:
    seed = settings.seed + (TEST_SEED_OFFSET if settings.split == "test" else 0)
    return generate_shapes(settings.size or DEFAULT_SIZE, settings.image_size, seed)


@hookimpl
def ganforge_register_datasets(register):
    register("shapes", load_shapes)
