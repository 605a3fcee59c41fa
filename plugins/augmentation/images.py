"""Random, differentiable image changes, shared by DiffAugment, InfoGAN's real-image moves and
consistency regularisation.

InfoGAN's real-image moves (:func:`jitter`: affine moves and stroke weight), DiffAugment's
colour, translation and cutout, and bCR's flip and translation (:func:`flip_and_translate`).
Every function maps a batch in [-1, 1] to a batch of the same shape (with the draws behind it,
where a caller needs them), draws only from the ``torch.Generator`` it is given (per sample), and
is differentiable with respect to the images, so the generator's gradient flows through it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def uniform(images: torch.Tensor, rng: torch.Generator, *shape: int) -> torch.Tensor:
    """Per-sample uniform draws in [0, 1) of shape ``(B, *shape)``, on the images' device."""
    return torch.rand(images.shape[0], *shape, generator=rng, device=rng.device).to(images.device)


def colour(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """DiffAugment's colour: brightness shifted by up to ±0.5, saturation scaled by 0 to 2, contrast
    by 0.5 to 1.5 (each drawn per sample)."""
    draws = uniform(images, rng, 3)
    images = images + (draws[:, 0] - 0.5).view(-1, 1, 1, 1)
    if images.shape[1] > 1:  # saturation needs colour
        mean = images.mean(dim=1, keepdim=True)
        images = (images - mean) * (draws[:, 1] * 2).view(-1, 1, 1, 1) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * (draws[:, 2] + 0.5).view(-1, 1, 1, 1) + mean


def translate(images: torch.Tensor, rng: torch.Generator, fraction: float = 0.125, fill: float = 0.0) -> torch.Tensor:
    """Shift each image by a whole number of pixels, up to ``fraction`` of its size either way,
    the uncovered border filled with ``fill``: 0 (mid-grey in [-1, 1]), as DiffAugment's
    ``rand_translation`` pads with zeros (mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``)."""
    _, _, height, width = images.shape
    most_y, most_x = int(height * fraction + 0.5), int(width * fraction + 0.5)
    draws = uniform(images, rng, 2)
    dy, dx = whole_shift(draws[:, 0], most_y), whole_shift(draws[:, 1], most_x)
    return shifted(images, dy, dx, most_y, most_x, fill=fill)


def whole_shift(draws: torch.Tensor, most: int) -> torch.Tensor:
    """Uniform draws in [0, 1) as whole shifts from ``-most`` to ``most``, each equally likely."""
    return (draws * (2 * most + 1)).long() - most


def shifted(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, most_y: int, most_x: int,
            padding: str = "constant", fill: float = 0.0) -> torch.Tensor:
    """Each image moved down by its ``dy`` and right by its ``dx`` whole pixels (at most ``most_y``,
    ``most_x`` either way): ``moved[i, j] = image[i - dy, j - dx]``, the uncovered border taken
    from ``F.pad``'s ``padding`` (``"constant"`` with ``fill``, or ``"reflect"``)."""
    n, _, height, width = images.shape
    pad = (most_x, most_x, most_y, most_y)
    padded = F.pad(images, pad, value=fill) if padding == "constant" else F.pad(images, pad, mode=padding)
    rows = (torch.arange(height, device=images.device).view(1, -1) - dy.view(-1, 1) + most_y)  # (n, H)
    columns = (torch.arange(width, device=images.device).view(1, -1) - dx.view(-1, 1) + most_x)  # (n, W)
    batch = torch.arange(n, device=images.device).view(-1, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), columns.unsqueeze(1)].permute(0, 3, 1, 2)


def flip_and_translate(images: torch.Tensor, rng: torch.Generator, flip: bool = True,
                       fraction: float = 0.125) -> tuple[torch.Tensor, torch.Tensor]:
    """Consistency regularisation's move (Zhao et al. 2020; StudioGAN ``src/utils/cr.py``,
    ``apply_cr_aug``): each image mirrored left-right with probability 1/2 (when ``flip``), then
    shifted by a whole number of pixels, up to ``int(size * fraction)`` either way, the border
    reflected. Returns the moved images and the draws behind them, an ``(n, 3)`` long tensor:
    mirrored (0 or 1), ``dy``, ``dx``. The three draws per image are made whatever the settings,
    so the stream advances alike."""
    _, _, height, width = images.shape
    most_y, most_x = int(height * fraction), int(width * fraction)
    draws = uniform(images, rng, 3)
    mirrored = (draws[:, 0] < 0.5) & flip
    dy, dx = whole_shift(draws[:, 1], most_y), whole_shift(draws[:, 2], most_x)
    images = torch.where(mirrored.view(-1, 1, 1, 1), images.flip(3), images)
    return shifted(images, dy, dx, most_y, most_x, padding="reflect"), torch.stack([mirrored.long(), dy, dx], 1)


def cutout(images: torch.Tensor, rng: torch.Generator, fraction: float = 0.5, fill: float = 0.0) -> torch.Tensor:
    """Blank a square of ``fraction`` of the image's size at a random place (it may cross the
    border) with ``fill``, as DiffAugment does (0: mid-grey in [-1, 1])."""
    n, _, height, width = images.shape
    size_y, size_x = int(height * fraction + 0.5), int(width * fraction + 0.5)
    draws = uniform(images, rng, 2)
    top = (draws[:, 0] * (height + 1 - size_y % 2)).long() - size_y // 2
    left = (draws[:, 1] * (width + 1 - size_x % 2)).long() - size_x // 2
    y = torch.arange(height, device=images.device).view(1, -1, 1)
    x = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = ((y >= top.view(-1, 1, 1)) & (y < (top + size_y).view(-1, 1, 1)) &
              (x >= left.view(-1, 1, 1)) & (x < (left + size_x).view(-1, 1, 1))).unsqueeze(1)
    return torch.where(inside, torch.full_like(images, fill), images)


@dataclass(frozen=True)
class Moves:
    """How far :func:`jitter` may move an image, each drawn uniformly either way: ``shift`` of its
    size, ``degrees`` of rotation, ``scale`` of zoom, ``shear`` of slant, ``stretch`` of width
    alone, and ``thickness`` of a blend towards the strokes grown or thinned by one pixel; ``flip``
    is the chance of a left-right mirror; ``brightness`` scales how light the object is, by up to
    ``1 + brightness`` times either way (darker or lighter; the black background stays black); and
    ``blur`` blends the image towards its 3x3 blur by up to that fraction, or away from it (sharper)
    by as much. The defaults are the handwriting preset."""

    shift: float = 0.1
    degrees: float = 20.0
    scale: float = 0.1
    shear: float = 0.6
    stretch: float = 0.15
    thickness: float = 0.5
    flip: float = 0.0
    brightness: float = 0.0
    blur: float = 0.0


STILL = Moves(0, 0, 0, 0, 0, 0, 0, 0, 0)

# Named sets of moves, one per kind of data: each keeps only the changes that leave the class
# alone there (docs/results.md, "Which moves fit which data").
MOVE_PRESETS = {
    # Digits and letters: slant, width and stroke weight vary from writer to writer. No mirror
    # (a mirrored 2 or 7 is no digit) and small rotations (a 6 turned by 180 degrees is a 9). A
    # slant of ±0.6 and 20 degrees cover the slant of real 1s, 4s and 9s; at ±0.4 and 15 degrees
    # some seeds split them by slant for longer (docs/results.md).
    "handwriting": Moves(),
    # Clothing photographed front-on: a garment mirrored left-right is the same garment, and so is
    # a darker or lighter one, or one with its print or knit blurred away (with these two, the
    # NMI rose on four seeds of four and the accuracy on three; the long-sleeved tops still split
    # by lightness: docs/results.md); a slant, a rotation or thicker edges would turn a shirt's
    # outline into another item's.
    "clothing": Moves(shift=0.06, degrees=0.0, scale=0.08, shear=0.0, stretch=0.1, thickness=0.0, flip=0.5,
                      brightness=0.75, blur=1.0),
    # Sprites whose class is their outline: position, size and turn are the factors the other codes
    # should take; a shear or a width stretch would make a square a parallelogram.
    "sprites": Moves(shift=0.15, degrees=45.0, scale=0.2, shear=0.0, stretch=0.0, thickness=0.0, flip=0.5),
    "none": STILL,
}
# The largest value each move may take: beyond these the moved image is no longer the same image.
MOVE_LIMITS = {"shift": 0.5, "degrees": 180.0, "scale": 0.9, "shear": 2.0, "stretch": 0.9, "thickness": 1.0, "flip": 1.0,
               "brightness": 1.0, "blur": 1.0}


# The columns of :func:`jitter_with_draws`'s draws, each in [-1, 1] (a fraction of its move's limit in
# the set of moves). A positive draw turns the image counter-clockwise, enlarges it, slants it to
# the right (its top moves right), widens it, moves it right, moves it down, thickens its strokes,
# lightens it and blurs it.
MOVE_DRAWS = ("degrees", "scale", "shear", "stretch", "shift_x", "shift_y", "thickness", "brightness", "blur")
MIRRORED_DRAWS = tuple(name in ("degrees", "shear", "shift_x") for name in MOVE_DRAWS)  # the ones a flip reverses


@functools.lru_cache(maxsize=32)
def constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``, made once: a new one would be a copy from host memory
    in every step, which on a GPU waits for the host."""
    return torch.tensor(values, dtype=dtype, device=device)


def jitter(images: torch.Tensor, rng: torch.Generator, moves: Moves = Moves()) -> torch.Tensor:
    """Each image moved at random within ``moves`` (by default the handwriting preset: the changes
    of handwriting that do not change a digit). Slant, width and stroke weight matter most on
    MNIST: left free, Q may split a digit class into upright and slanted, or thin and bold, halves.
    Borders are repeated (background)."""
    return jitter_with_draws(images, rng, moves)[0]


def jitter_with_draws(images: torch.Tensor, rng: torch.Generator, moves: Moves = Moves()) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`jitter`'s moved images and how far each was moved: an (n, 9) tensor whose columns
    are named by ``MOVE_DRAWS``."""
    n = images.shape[0]
    draws = uniform(images, rng, 7) * 2 - 1
    draws = torch.cat([draws, draws.new_zeros(n, 2)], 1)  # brightness and blur, drawn below if they move
    angle = draws[:, 0] * math.radians(moves.degrees)
    zoom, slant = 1 + draws[:, 1] * moves.scale, draws[:, 2] * moves.shear
    widen = 1 + draws[:, 3] * moves.stretch
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output to input coordinates, as affine_grid wants: rotation @ shear, then the zooms.
    linear = torch.stack([torch.stack([cos, cos * slant - sin], 1), torch.stack([sin, sin * slant + cos], 1)], 1)
    linear = linear / zoom.view(n, 1, 1)
    linear[:, :, 0] = linear[:, :, 0] / widen.view(n, 1)
    theta = torch.cat([linear, (draws[:, 4:6] * moves.shift * 2).unsqueeze(2)], 2)
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    moved = nn.functional.grid_sample(images, grid, padding_mode="border", align_corners=False)
    if moves.thickness:
        weight = (draws[:, 6] * moves.thickness).view(n, 1, 1, 1)
        grown = nn.functional.max_pool2d(moved, 3, 1, 1)
        thinned = -nn.functional.max_pool2d(-moved, 3, 1, 1)
        moved = torch.lerp(moved, torch.where(weight > 0, grown, thinned), weight.abs())
    # affine_grid's offset maps output to input coordinates: a positive one moves the content left
    # and up, so the shift columns change sign to read "right" and "down".
    signs = constant((1, 1, 1, 1, -1, -1, 1, 1, 1), draws.dtype, draws.device)
    if moves.flip:  # drawn apart, so that sets of moves without a mirror keep their random stream
        mirrored = uniform(images, rng) < moves.flip
        moved = torch.where(mirrored.view(n, 1, 1, 1), moved.flip(3), moved)
        # A mirror turns the other way, slants the other way and moves the other way.
        signs = torch.where(mirrored.view(n, 1) & constant(MIRRORED_DRAWS, torch.bool, draws.device), -signs, signs)
    if moves.brightness:  # drawn last, so that sets of moves without it keep their random stream
        draws[:, 7] = uniform(images, rng) * 2 - 1
        # A factor on the lightness above black (-1), even in log scale either way: a dark and a
        # light garment of one kind are the same item.
        factor = (1 + moves.brightness) ** draws[:, 7].view(n, 1, 1, 1)
        moved = ((moved + 1) * factor).clamp(max=2) - 1
    if moves.blur:
        draws[:, 8] = uniform(images, rng) * 2 - 1
        # Fine texture (a print, a knit) is no part of what the item is; the outline is.
        blurred = nn.functional.avg_pool2d(nn.functional.pad(moved, (1, 1, 1, 1), mode="replicate"), 3, 1)
        moved = torch.lerp(moved, blurred, (draws[:, 8] * moves.blur).view(n, 1, 1, 1)).clamp(-1, 1)
    return moved, draws * signs
