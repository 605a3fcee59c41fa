"""The run directory: ``recipe.toml``, ``metrics.jsonl``, ``samples/`` and ``checkpoints/``."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .checkpoint import CheckpointError, keep_copy, run_state, save_atomically
from .errors import GanforgeError, UsageError
from .images import save_grid

LAST = "last.pt"


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a file, one a line, skipping a line a killed process cut short."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class OutputError(GanforgeError):
    """The run directory cannot be created or written (a bad ``run.out_dir``, a full disk)."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A block in which an ``OSError`` (no space left, no permission) becomes a one-line error naming ``path``."""
    try:
        yield
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None


class RunOutputs:
    """Writes everything a run leaves behind, under ``<run.out_dir>/<run.name>/``."""

    def __init__(self, directory: Path, keep_checkpoints: int = 3):
        self.directory = Path(directory)
        self.samples = self.directory / "samples"
        self.checkpoints = self.directory / "checkpoints"
        self.metrics = self.directory / "metrics.jsonl"
        self.keep_checkpoints = keep_checkpoints
        self.saved_step: int | None = None  # the step of the last checkpoint this process wrote or resumed from
        self.created = False  # whether prepare() made the run folder (a failed new run then removes it whole)

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST

    def check_start(self, resume: bool) -> None:
        """Refuse to resume a run without a checkpoint, or to start a new run over an existing one."""
        if resume:
            if self.last_checkpoint.is_file():
                return
            if (self.directory / "recipe.toml").exists():
                raise CheckpointError(
                    f"cannot resume: {self.directory} holds a run that stopped before writing its first checkpoint"
                    f" ({self.last_checkpoint}); delete {self.directory} to start it again")
            raise CheckpointError(f"cannot resume: {self.last_checkpoint} does not exist; start the run without --resume")
        if (self.directory / "recipe.toml").exists() or self.last_checkpoint.exists():
            raise UsageError(
                f"{self.directory} already holds a run; continue it with --resume, or start another with"
                " --set run.name=NEW_NAME (ganforge never overwrites a run)")

    def prepare(self, recipe_toml: str, resume: bool) -> None:
        """Create the folders and write the resolved recipe, after :meth:`check_start`."""
        self.check_start(resume)
        self.created = not self.directory.exists()
        with writing(self.directory / "recipe.toml"):
            for folder in (self.directory, self.samples, self.checkpoints):
                folder.mkdir(parents=True, exist_ok=True)
            (self.directory / "recipe.toml").write_text(recipe_toml)

    def discard(self) -> None:
        """Remove what :meth:`prepare` and the first steps wrote, for a run that failed before its
        first checkpoint: the whole folder when this run created it (plugins' files too), else the
        core's files, and the folder itself unless something else is in it."""
        if self.created:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        for path in (self.directory / "recipe.toml", self.metrics):
            path.unlink(missing_ok=True)
        for folder in (self.samples, self.checkpoints):
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()

    def log_metrics(self, record: dict) -> None:
        with writing(self.metrics), self.metrics.open("a") as file:
            file.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                   for k, v in record.items()}) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records past ``after_step`` (logged after the checkpoint a resume starts from), and a
        partly written last line that a killed process may have left."""
        if not self.metrics.exists():
            return
        kept = [record for record in read_json_lines(self.metrics) if record.get("step", 0) <= after_step]
        with writing(self.metrics):
            self.metrics.write_text("".join(json.dumps(record) + "\n" for record in kept))

    def write_samples(self, step: int, images: torch.Tensor) -> Path:
        path = self.samples / f"step_{step:07d}.png"
        with writing(path):
            return save_grid(images, path)

    def save_checkpoint(self, run, meter: dict | None = None, periodic: bool = True) -> Path:
        """``last.pt``, plus (when ``periodic``) a copy named by the step, the oldest copies beyond
        ``train.keep_checkpoints`` pruned. ``meter`` is the training loop's unlogged sums."""
        for parameter in run.generator.parameters():
            if not torch.isfinite(parameter).all():
                raise GanforgeError(f"generator weights are not finite at step {run.step}; the last checkpoint is kept")
        save_atomically(run_state(run, meter), self.last_checkpoint)
        self.saved_step = run.step
        if periodic and self.keep_checkpoints:
            keep_copy(self.last_checkpoint, self.checkpoints / f"step_{run.step:07d}.pt")
            for old in self.periodic_checkpoints()[: -self.keep_checkpoints]:
                old.unlink(missing_ok=True)
        return self.last_checkpoint

    def periodic_checkpoints(self) -> list[Path]:
        """The kept copies, oldest first."""
        return sorted(self.checkpoints.glob("step_*.pt"))
