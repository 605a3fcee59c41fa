"""Progress: a rich bar on a terminal, a plain line per log record elsewhere (CI, log files)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def summarize(record: dict) -> str:
    """The record's losses, short: ``D 1.234  G 0.987  info/digit 0.012``."""
    parts = []
    for name, value in record.items():
        if name.startswith("loss/") and isinstance(value, float):
            phase, term = name.split("/", 2)[1:]
            label = phase if term == "total" else f"{phase}:{term}"
            if term != "adv":
                parts.append(f"{label} {value:.3f}")
    return "  ".join(parts)


class RichProgress:
    """step / total, bar, images per second, elapsed, ETA and the latest losses."""

    def __init__(self, console: Console):
        self.console = console
        self.bar = Progress(
            TextColumn("step"), MofNCompleteColumn(), BarColumn(),
            TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(), TextColumn("eta"),
            TimeRemainingColumn(), TextColumn("{task.fields[losses]}"),
            console=console, transient=False,
        )
        self.task = None

    def start(self, total: int, completed: int, images: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=completed, rate="-", losses="")

    def log(self, record: dict) -> None:
        self.bar.update(self.task, rate=f"{record['images_per_s']:.0f}", losses=summarize(record))

    def advance(self, step: int, images: int) -> None:
        self.bar.update(self.task, completed=step)

    def note(self, line: str) -> None:
        """A line above the bar (an evaluation's figures)."""
        self.bar.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        self.bar.stop()


class PlainProgress:
    """One line per log record: what a log file or CI wants instead of a redrawn bar."""

    def __init__(self, console: Console):
        self.console = console
        self.total = 0
        self.started = time.perf_counter()
        self.first_step = 0

    def start(self, total: int, completed: int, images: int) -> None:
        self.total, self.first_step, self.started = total, completed, time.perf_counter()

    def log(self, record: dict) -> None:
        step = record["step"]
        elapsed = time.perf_counter() - self.started
        done = max(step - self.first_step, 1)
        eta = elapsed / done * (self.total - step)
        self.console.print(
            f"step {step}/{self.total}  images {record['images']}  {record['images_per_s']:.0f} img/s"
            f"  eta {_clock(eta)}  {summarize(record)}", highlight=False, soft_wrap=True)

    def advance(self, step: int, images: int) -> None:
        pass

    def note(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        pass


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def make_progress(console: Console):
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
