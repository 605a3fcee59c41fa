"""The run directory: ``recipe.toml``, ``metrics.jsonl``, ``samples/`` and ``checkpoints/``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .checkpoint import CheckpointError, keep_copy, run_state, save_atomically
from .errors import GanforgeError
from .images import save_grid

LAST = "last.pt"


class RunOutputs:
    """Writes everything a run leaves behind, under ``<run.out_dir>/<run.name>/``."""

    def __init__(self, directory: Path, keep_checkpoints: int = 3):
        self.directory = Path(directory)
        self.samples = self.directory / "samples"
        self.checkpoints = self.directory / "checkpoints"
        self.metrics = self.directory / "metrics.jsonl"
        self.keep_checkpoints = keep_checkpoints

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST

    def check_start(self, resume: bool) -> None:
        """Refuse to resume a run without a checkpoint, or to start a new run over an existing one."""
        if resume:
            if not self.last_checkpoint.is_file():
                raise CheckpointError(f"cannot resume: {self.last_checkpoint} does not exist; start the run without --resume")
        elif (self.directory / "recipe.toml").exists() or self.last_checkpoint.exists():
            raise GanforgeError(
                f"{self.directory} already holds a run; continue it with --resume, or start another with"
                " --set run.name=NEW_NAME (ganforge never overwrites a run)")

    def prepare(self, recipe_toml: str, resume: bool) -> None:
        """Create the folders and write the resolved recipe, after :meth:`check_start`."""
        self.check_start(resume)
        for folder in (self.directory, self.samples, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
        (self.directory / "recipe.toml").write_text(recipe_toml)

    def log_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as file:
            file.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                   for k, v in record.items()}) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records past ``after_step`` (logged after the checkpoint a resume starts from)."""
        if not self.metrics.exists():
            return
        lines = [line for line in self.metrics.read_text().splitlines()
                 if line.strip() and json.loads(line).get("step", 0) <= after_step]
        self.metrics.write_text("".join(line + "\n" for line in lines))

    def write_samples(self, step: int, images: torch.Tensor) -> Path:
        path = self.samples / f"step_{step:07d}.png"
        return save_grid(images, path)

    def save_checkpoint(self, run) -> Path:
        """``last.pt``, plus a periodic copy when the cadence asks for it; older periodic ones pruned."""
        for parameter in run.generator.parameters():
            if not torch.isfinite(parameter).all():
                raise GanforgeError(f"generator weights are not finite at step {run.step}; the last checkpoint is kept")
        save_atomically(run_state(run), self.last_checkpoint)
        if self.keep_checkpoints:
            keep_copy(self.last_checkpoint, self.checkpoints / f"step_{run.step:07d}.pt")
            periodic = sorted(self.checkpoints.glob("step_*.pt"))
            for old in periodic[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)
        return self.last_checkpoint
