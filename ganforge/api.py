"""The Python API: load a trained generator and sample from it with chosen codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UsageError
from .registry import unknown_name_message


@dataclass(frozen=True)
class CodeInfo:
    """A generator input a user can fix: its name, kind (categorical, continuous, binary) and size."""

    name: str
    kind: str
    size: int


class Generator:
    """A trained generator with its latent inputs.

    ``codes`` lists the inputs besides the noise ``z``. :meth:`sample` returns float images in
    [0, 1] of shape (n, C, H, W); codes named in ``fixed`` are held at the given value (a category
    index, a number, or a list of numbers), the others are drawn from their priors. With
    ``truncation`` (say 0.5), a normal noise ``z`` is drawn within that many standard deviations
    of 0: the truncation trick, less variety for more typical images. A generator that truncates
    its own latents takes it instead (StyleGAN2: ``w`` moved towards its average, ``psi = truncation``).
    """

    def __init__(self, run):
        self._run = run
        self.step = run.step
        self.image_shape = run.image_shape
        self.codes = {name: CodeInfo(name, dist.kind, dist.size) for name, dist in run.inputs.items() if name != "z"}

    def __repr__(self) -> str:
        codes = ", ".join(f"{c.name}: {c.kind}({c.size})" for c in self.codes.values())
        return f"Generator(step={self.step}, image_shape={self.image_shape}, codes={{{codes}}})"

    def sample(self, n: int, fixed: dict[str, Any] | None = None, seed: int = 0,
               truncation: float | None = None) -> torch.Tensor:
        run = self._run
        if truncation is not None and not truncation > 0:
            raise UsageError(f"truncation must be greater than 0, got {truncation!r}")
        latents = run.sample_latents(n, torch.Generator().manual_seed(seed), truncation)
        for name, value in (fixed or {}).items():
            if name not in self.codes:
                raise UsageError(unknown_name_message("code", name, list(self.codes)))
            try:
                encoded = run.inputs[name].encode(value)
            except (TypeError, ValueError) as error:
                raise UsageError(f"code {name!r}: {error}") from None
            latents[name] = encoded.to(run.device, torch.float32).expand(n, -1).clone()
        return run.generate(latents, truncation)


def load_generator(checkpoint_path: str | Path, device: str | None = None) -> Generator:
    """The generator of a checkpoint (``runs/NAME/checkpoints/last.pt``), ready to sample.

    ``device`` is where it runs and where :meth:`Generator.sample` returns images (``"cpu"``,
    ``"cuda"``, ...); by default the device it was trained on when this machine has it, else the
    CPU. Loading leaves torch's global generator and thread count alone."""
    from .loading import run_from_checkpoint

    run, _ = run_from_checkpoint(Path(checkpoint_path), device=device)
    return Generator(run)
