"""Latent traversals: rows of different noise, columns sweeping one generator input.

Works for any generator input whose distribution implements ``traversal_values``, so a
third-party distribution gets pictures for free.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import UsageError
from .images import save_grid
from .registry import unknown_name_message

TRAVERSAL_ROWS = 10
TRAVERSAL_STEPS = 10  # columns for continuous codes; categorical codes show every category


def traversal_latents(run, code: str, rows: int = TRAVERSAL_ROWS, steps: int = TRAVERSAL_STEPS,
                      seed: int = 0) -> tuple[dict[str, torch.Tensor], int]:
    """Latents for a (rows x columns) traversal of ``code``, row-major, and the column count.

    Each row draws its own noise and other codes once (from ``seed``) and holds them fixed while
    the columns sweep ``code`` through its distribution's traversal values.
    """
    if code not in run.inputs or code == "z":
        codes = [name for name in run.inputs if name != "z"]
        raise UsageError(unknown_name_message("code", code, codes))
    values = run.inputs[code].traversal_values(steps).to(run.device)
    columns = values.shape[0]
    base = run.sample_latents(rows, torch.Generator().manual_seed(seed))
    latents = {name: batch.repeat_interleave(columns, dim=0) for name, batch in base.items()}
    latents[code] = values.repeat(rows, 1)
    return latents, columns


def save_traversal(run, code: str, path: Path, rows: int = TRAVERSAL_ROWS, steps: int = TRAVERSAL_STEPS,
                   seed: int = 0) -> Path:
    """Draw the traversal of ``code`` as a PNG grid."""
    latents, columns = traversal_latents(run, code, rows, steps, seed)
    return save_grid(run.generate(latents), path, columns=columns)
