"""ADA's augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data"): the 'bgc' changes of NVlabs/stylegan2-ada-pytorch ``training/augment.py``
(``AugmentPipe``), each applied to each image with probability ``p``.

The geometric changes (x-flip, rotation by 90 degrees, integer translation, isotropic scaling,
rotation, anisotropic scaling, fractional translation) compose into one 3x3 matrix per image
that maps output pixels to input pixels, in pixel coordinates centred on the image, as the
reference's ``G_inv``; the colour changes (brightness, contrast, luma flip, hue, saturation) into
one 4x4 colour matrix, as its ``C``. Both are built in the reference's order, whatever order the
recipe names the changes in, and from its strengths (:class:`Strengths`), drawing in its order:
each change's value, then whether the image gets it.

Where this differs from the reference:

- The image is resampled bilinearly at the moved pixel positions, without the reference's 2x
  upsampling and downsampling through a ``sym6`` wavelet filter (``upfirdn2d``), which suppresses
  aliasing at a cost of several convolutions. Resampling gathers the four neighbours itself rather
  than through ``grid_sample``: ``grid_sample`` takes coordinates in [-1, 1] and rounds turning them
  back into pixels, so a flip, a quarter turn or a whole-pixel shift would not be exact at sizes
  such as 28 px; here those land on whole pixels and copy them exactly, and ``p = 0`` is exactly
  the identity. The gathers are differentiable to any order (R1 backpropagates through a gradient).
- Outside the image it reflects about the edge pixels' centres, as the reference's ``reflect``
  padding does, repeatedly; the reference pads by at most one image less a pixel and reads 0
  beyond, which only moves far outside (strong zoom-outs) reach.
- On greyscale images the colour matrix acts on (g, g, g) and the three outputs are averaged, as
  the reference does for 1 channel: brightness and contrast act as on RGB, a luma flip inverts
  the image about 0 (mid-grey in [-1, 1]), and hue and saturation, which leave grey alone, are
  skipped without drawing, as in the reference. Other channel counts cannot take the colour changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .images import uniform

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
#: The reference's 'bgc' pipeline (train.py ``augpipe_specs``): every change, in its order.
BGC = GEOMETRIC + COLOUR
RGB_ONLY = ("hue", "saturation")  # the reference skips them on one channel (``num_channels > 1``)


@dataclass(frozen=True)
class Strengths:
    """How far each change goes when it is applied: ``AugmentPipe``'s defaults. Integer
    translation is uniform within ``xint_max`` of the image's size; scalings are ``2**N(0, std)``;
    rotations and hue uniform within ``max`` of a half turn either way; fractional translation
    ``N(0, xfrac_std)`` of the size; brightness ``N(0, brightness_std)`` added in [-1, 1] units."""

    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0


REFERENCE = Strengths()


class Draws:
    """Per-image draws from the transform's stream, on the images' device."""

    def __init__(self, rng: torch.Generator, images: torch.Tensor):
        self.rng, self.images = rng, images

    def uniform(self, *shape: int) -> torch.Tensor:
        return uniform(self.images, self.rng, *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        n, rng = self.images.shape[0], self.rng
        return torch.randn(n, *shape, generator=rng, device=rng.device).to(self.images.device)

    def kept(self, value: torch.Tensor, probability: torch.Tensor, identity: float) -> torch.Tensor:
        """``value`` for the images drawn with ``probability``, ``identity`` for the others."""
        chosen = self.uniform() < probability
        return torch.where(chosen.view(-1, *([1] * (value.dim() - 1))), value, torch.full_like(value, identity))


def draw_parameters(images: torch.Tensor, rng: torch.Generator, p: torch.Tensor, ops: tuple[str, ...],
                    strengths: Strengths = REFERENCE) -> dict[str, torch.Tensor]:
    """Each change's value per image, the identity's where the image does not get it: flips and
    quarter turns as counts, translations in pixels ``(n, 2)``, rotations in radians, the
    rest as factors or offsets; ``rotate`` is the rotation before the anisotropic scaling and
    ``rotate_after`` the one after it. Only the changes in ``ops`` are drawn."""
    channels, height, width = images.shape[1:]
    draws, s, found = Draws(rng, images), strengths, {}
    if "xflip" in ops:
        found["xflip"] = draws.kept(torch.floor(draws.uniform() * 2), p, 0.0)
    if "rotate90" in ops:
        found["rotate90"] = draws.kept(torch.floor(draws.uniform() * 4), p, 0.0)
    if "xint" in ops:
        shift = draws.kept((draws.uniform(2) * 2 - 1) * s.xint_max, p, 0.0)
        found["xint"] = torch.round(shift * torch.tensor([width, height], device=shift.device))
    if "scale" in ops:
        found["scale"] = draws.kept(torch.exp2(draws.normal() * s.scale_std), p, 1.0)
    # Two rotations, before and after the anisotropic scaling, each with the probability that
    # makes "either of them" p (the reference's p_rot).
    p_rotate = 1 - torch.sqrt((1 - p).clamp(0, 1))
    if "rotate" in ops:
        found["rotate"] = draws.kept((draws.uniform() * 2 - 1) * math.pi * s.rotate_max, p_rotate, 0.0)
    if "aniso" in ops:
        found["aniso"] = draws.kept(torch.exp2(draws.normal() * s.aniso_std), p, 1.0)
    if "rotate" in ops:
        found["rotate_after"] = draws.kept((draws.uniform() * 2 - 1) * math.pi * s.rotate_max, p_rotate, 0.0)
    if "xfrac" in ops:
        shift = draws.kept(draws.normal(2) * s.xfrac_std, p, 0.0)
        found["xfrac"] = shift * torch.tensor([width, height], device=shift.device)
    if "brightness" in ops:
        found["brightness"] = draws.kept(draws.normal() * s.brightness_std, p, 0.0)
    if "contrast" in ops:
        found["contrast"] = draws.kept(torch.exp2(draws.normal() * s.contrast_std), p, 1.0)
    if "lumaflip" in ops:
        found["lumaflip"] = draws.kept(torch.floor(draws.uniform() * 2), p, 0.0)
    if "hue" in ops and channels > 1:
        found["hue"] = draws.kept((draws.uniform() * 2 - 1) * math.pi * s.hue_max, p, 0.0)
    if "saturation" in ops and channels > 1:
        found["saturation"] = draws.kept(torch.exp2(draws.normal() * s.saturation_std), p, 1.0)
    return found


# -- the geometric matrix: output pixel -> input pixel ------------------------------------------


def then(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The batched product ``first @ second`` as float32 sums, whatever autocast or TF32 would do
    to a matmul: the matrices are tiny, and an identity must stay exactly one."""
    return (first.unsqueeze(-1) * second.unsqueeze(-3)).sum(-2)


def plane(n: int, device: torch.device, a=1.0, b=0.0, c=0.0, d=1.0, x=0.0, y=0.0) -> torch.Tensor:
    """Per-image 2D homogeneous matrices ``[[a, b, x], [c, d, y], [0, 0, 1]]``, each entry a
    number or an (n,) tensor."""
    entries = [torch.as_tensor(v, dtype=torch.float32, device=device).expand(n) for v in (a, b, x, c, d, y, 0, 0, 1)]
    return torch.stack(entries, 1).view(n, 3, 3)


# The geometric parameters in the reference's order of composition (both rotations are "rotate").
MOVES = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "rotate_after", "xfrac")
# cos and sin of k quarter turns, exactly: cos(pi / 2) in float32 is -4.4e-8, not 0.
QUARTER_COS, QUARTER_SIN = (1.0, 0.0, -1.0, 0.0), (0.0, 1.0, 0.0, -1.0)


def geometric_matrix(parameters: dict[str, torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
    """The (n, 3, 3) matrices mapping each output pixel to the input pixel it reads, composed
    in the reference's order, each change's inverse multiplied on the right: turning the output
    by an angle reads the input at the output's position turned by it."""
    moves = torch.eye(3, device=device).expand(n, 3, 3)
    frame = lambda **entries: plane(n, device, **entries)
    turn = lambda cos, sin: frame(a=cos, b=-sin, c=sin, d=cos)
    for name, value in ((name, parameters[name]) for name in MOVES if name in parameters):
        if name == "xflip":
            moves = then(moves, frame(a=1 - 2 * value))
        elif name == "rotate90":
            quarter = value.long()
            moves = then(moves, turn(torch.tensor(QUARTER_COS, device=device)[quarter],
                                     torch.tensor(QUARTER_SIN, device=device)[quarter]))
        elif name in ("xint", "xfrac"):
            moves = then(moves, frame(x=-value[:, 0], y=-value[:, 1]))
        elif name == "scale":
            moves = then(moves, frame(a=1 / value, d=1 / value))
        elif name in ("rotate", "rotate_after"):
            moves = then(moves, turn(torch.cos(value), torch.sin(value)))
        elif name == "aniso":
            moves = then(moves, frame(a=1 / value, d=value))
    return moves


def reflected(index: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel indices folded back into ``[0, size)`` by reflection about the edge pixels' centres
    (``... 2 1 | 0 1 2 ... size-1 | size-2 ...``: the edge pixel is not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def resample(images: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """``images`` read bilinearly at ``moves @ (x, y, 1)`` for every output pixel, in pixel
    coordinates centred on the image; differentiable with respect to ``images``."""
    n, channels, height, width = images.shape
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    x = (torch.arange(width, device=images.device, dtype=torch.float32) - centre_x).view(1, 1, width)
    y = (torch.arange(height, device=images.device, dtype=torch.float32) - centre_y).view(1, height, 1)
    row = lambda i: [moves[:, i, j].view(n, 1, 1) for j in range(3)]
    (a, b, tx), (c, d, ty) = row(0), row(1)
    source_x = a * x + b * y + tx + centre_x  # (n, H, W); whole numbers for whole-pixel moves
    source_y = c * x + d * y + ty + centre_y
    left, top = torch.floor(source_x), torch.floor(source_y)
    right_weight, bottom_weight = (source_x - left).unsqueeze(3), (source_y - top).unsqueeze(3)
    left, top = left.long(), top.long()
    pixels = images.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    first = (torch.arange(n, device=images.device) * (height * width)).view(n, 1, 1)

    def at(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        return pixels[first + reflected(rows, height) * width + reflected(columns, width)]  # (n, H, W, C)

    upper = at(top, left) * (1 - right_weight) + at(top, left + 1) * right_weight
    lower = at(top + 1, left) * (1 - right_weight) + at(top + 1, left + 1) * right_weight
    return (upper * (1 - bottom_weight) + lower * bottom_weight).permute(0, 3, 1, 2)


# -- the colour matrix: colour in -> colour out --------------------------------------------------

LUMA = (1 / math.sqrt(3),) * 3  # the grey axis, a unit vector


def colour_matrix(parameters: dict[str, torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
    """The (n, 4, 4) homogeneous colour matrices, each change multiplied on the left in the
    reference's order: brightness, contrast, luma flip, hue, saturation."""
    eye = torch.eye(4, device=device)
    spatial = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], device=device))  # the colour part of eye
    axis = torch.tensor([*LUMA, 0.0], device=device)
    on_axis = torch.outer(axis, axis)  # projection onto grey
    colours = eye.expand(n, 4, 4)
    per_image = lambda name: parameters[name].view(n, 1, 1)
    if "brightness" in parameters:  # the same offset added to R, G and B
        offset = torch.zeros(4, 4, device=device)
        offset[:3, 3] = 1
        colours = then(eye + per_image("brightness") * offset, colours)
    if "contrast" in parameters:  # R, G and B scaled alike
        colours = then(eye + (per_image("contrast") - 1) * spatial, colours)
    if "lumaflip" in parameters:  # a Householder reflection through the plane normal to grey
        colours = then(eye - 2 * on_axis * per_image("lumaflip"), colours)
    if "hue" in parameters:  # a turn about the grey axis, by Rodrigues' formula
        x, y, z = LUMA
        cross = torch.tensor([[0, -z, y, 0], [z, 0, -x, 0], [-y, x, 0, 0], [0, 0, 0, 0]], device=device)
        cos, sin = torch.cos(per_image("hue")), torch.sin(per_image("hue"))
        colours = then(eye - spatial + cos * spatial + sin * cross + (1 - cos) * on_axis, colours)
    if "saturation" in parameters:  # away from grey scaled by the factor, along grey unchanged
        colours = then(eye + (per_image("saturation") - 1) * (spatial - on_axis), colours)
    return colours


def recolour(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``colours`` applied to each pixel: RGB directly; one channel as the mean of the three
    outputs for the input (g, g, g), as the reference reduces its matrix for 1 channel."""
    n, channels = images.shape[:2]
    if channels == 3:
        linear = colours[:, :3, :3].reshape(n, 3, 3, 1, 1)
        return (linear * images.unsqueeze(1)).sum(2) + colours[:, :3, 3].reshape(n, 3, 1, 1)
    if channels == 1:
        gain = colours[:, :3, :3].sum((1, 2)) / 3
        return images * gain.view(n, 1, 1, 1) + colours[:, :3, 3].mean(1).view(n, 1, 1, 1)
    raise ValueError(f"the colour changes need 1 or 3 channels, not {channels}")


def augment(images: torch.Tensor, rng: torch.Generator, p: torch.Tensor, ops: tuple[str, ...],
            strengths: Strengths = REFERENCE) -> torch.Tensor:
    """``images`` through the changes in ``ops``, each applied per image with probability ``p``
    (a 0-dim tensor on the images' device)."""
    n = images.shape[0]
    parameters = draw_parameters(images, rng, p, ops, strengths)
    if any(op in ops for op in GEOMETRIC):
        images = resample(images, geometric_matrix(parameters, n, images.device))
    if any(name in parameters for name in COLOUR):
        images = recolour(images, colour_matrix(parameters, n, images.device))
    return images
