"""Stopping a training run with SIGINT or SIGTERM: after the step under way and a checkpoint, or,
on a second signal, at once."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Self

from .errors import GanforgeError


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(GanforgeError):
    """SIGINT or SIGTERM stopped training: after the current step and a checkpoint, or, on a second
    signal, at once. The exit code is the shell's for that signal (130, 143)."""

    def __init__(self, signal_number: int, checkpoint: Path, step: int | None = None):
        super().__init__()
        self.signal_name = signal.Signals(signal_number).name
        self.exit_code = 128 + signal_number
        self.checkpoint = checkpoint
        self.step = step  # the step checkpointed; None when a second signal stopped training at once
        self.resume_command = ""  # the command line that continues the run, filled in by the caller

    def __str__(self) -> str:
        if self.step is None:
            stopped = f"stopped at once by a second {self.signal_name}; {self.checkpoint} holds the last checkpoint"
        else:
            stopped = f"stopped by {self.signal_name} after step {self.step}; checkpoint written to {self.checkpoint}"
        if not self.checkpoint.is_file():
            return f"{stopped}; no checkpoint was written: delete {self.checkpoint.parent.parent} to start the run again"
        resume = f"resume with: {self.resume_command}" if self.resume_command else "resume it with --resume"
        return f"{stopped}; {resume}"


class StopRequests:
    """While active, SIGINT and SIGTERM ask training to stop after the current step; a second
    signal stops it at once (checkpoints are written atomically, so that never corrupts one).
    The previous handlers come back on exit."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        # Python lets only the main thread install handlers; elsewhere signals keep their defaults.
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._request)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _request(self, number: int, frame) -> None:
        if self.signal_number is not None:
            raise TrainingInterrupted(number, self.checkpoint)
        self.signal_number = number
