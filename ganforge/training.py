"""The training loop: one readable module.

Per step: update D on real and detached fake images (``train.d_steps`` times), then update G
through the updated D. Plugins add named terms to either objective; each network gets one summed
objective and one backward pass per update. Logging, samples and checkpoints run at the recipe's
cadences, counted in generator steps.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import torch

from .errors import GanforgeError, PluginError
from .losses import LossTerm
from .models import DiscriminatorOutput
from .outputs import RunOutputs
from .run import Run


@dataclass
class StepContext:
    """What the loss-term hooks see in one phase of one step.

    ``phase`` is ``"D"`` or ``"G"``. In the D phase ``fake`` is detached and ``d_real`` holds the
    discriminator's output on ``real``; in the G phase ``fake`` is attached to the generator's graph,
    ``d_fake`` is the updated discriminator's output on it and ``d_real`` is ``None``.
    ``latents`` maps each generator input (``"z"`` and every plugin input) to its sampled batch.
    """

    phase: str
    step: int
    run: Run
    real: torch.Tensor
    labels: dict[str, torch.Tensor]
    latents: dict[str, torch.Tensor]
    fake: torch.Tensor
    d_fake: DiscriminatorOutput
    d_real: DiscriminatorOutput | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    def log(self, name: str, value: torch.Tensor | float) -> None:
        """Log an extra scalar for this step (e.g. a mutual-information bound) under ``name``."""
        self.logs[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def objective(phase: str, adversarial: torch.Tensor, contributions: list, logs: dict) -> torch.Tensor:
    """The adversarial loss plus every plugin term, each logged by name (``loss/D/info/digit``)."""
    terms: list[LossTerm] = [term for group in contributions for term in group]
    for term in terms:
        if not isinstance(term, LossTerm):
            raise PluginError(f"a {phase} loss-term hook returned {type(term).__name__}, not a LossTerm")
    # pluggy calls implementations newest first: sort so the sum does not depend on install order.
    terms.sort(key=lambda term: term.name)
    total = adversarial
    logs[f"loss/{phase}/adv"] = adversarial.detach()
    for term in terms:
        key = f"loss/{phase}/{term.name}"
        if key in logs:
            raise PluginError(f"two plugins add a {phase} loss term named {term.name!r}")
        logs[key] = term.value.detach()
        total = total + term.weight * term.value
    logs[f"loss/{phase}/total"] = total.detach()
    return total


def train_step(run: Run) -> dict[str, torch.Tensor]:
    """One generator step and the discriminator steps before it; returns the step's detached logs."""
    hook = run.host.hook
    generator, discriminator, loss = run.generator, run.discriminator, run.loss
    logs: dict[str, torch.Tensor] = {}

    # Update D on real and detached fake images.
    for _ in range(run.recipe.train.d_steps):
        real, labels, new_epoch = run.batcher.next()
        if new_epoch:
            hook.ganforge_epoch_end(run=run, epoch=run.batcher.epoch)
        latents = run.sample_latents(real.shape[0])
        fake = generator(run.generator_input(latents))
        d_real, d_fake = discriminator(real), discriminator(fake.detach())
        ctx = StepContext("D", run.step + 1, run, real, labels, latents, fake.detach(), d_fake, d_real, logs)
        adversarial = loss.discriminator_loss(d_real.logits, d_fake.logits)
        total = objective("D", adversarial, hook.ganforge_discriminator_loss_terms(ctx=ctx), logs)
        run.optimizer_d.zero_grad(set_to_none=True)
        total.backward()
        run.optimizer_d.step()
        run.images_seen += real.shape[0]

    # Update G through the updated D, on the last D step's fakes. D needs no gradients of its own
    # here, so its parameters are frozen for this pass (the gradients still flow through it to G).
    discriminator.requires_grad_(False)
    try:
        d_fake = discriminator(fake)
        ctx = StepContext("G", run.step + 1, run, real, labels, latents, fake, d_fake, None, logs)
        adversarial = loss.generator_loss(d_fake.logits)
        total = objective("G", adversarial, hook.ganforge_generator_loss_terms(ctx=ctx), logs)
        run.optimizer_g.zero_grad(set_to_none=True)
        total.backward()
        run.optimizer_g.step()
    finally:
        discriminator.requires_grad_(True)
    return logs


class Meter:
    """Means of the logged scalars since the last flush; floats are read only at the log cadence,
    since reading a tensor's value is a device sync."""

    def __init__(self, state: dict | None = None, device: torch.device | None = None):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        if state:  # a checkpoint's unlogged sums: the next record averages the same steps
            self.sums = {name: total.to(device) for name, total in state["sums"].items()}
            self.count = int(state["count"])

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for name, value in logs.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.count += 1

    def means(self, step: int) -> dict[str, float]:
        """The means so far; a non-finite one stops the run, naming the term and the step."""
        means = {name: float(total) / self.count for name, total in self.sums.items()}
        for name, value in means.items():
            if not math.isfinite(value):
                raise GanforgeError(f"loss term {name} became {value} by step {step}; stopped before any"
                                    " checkpoint of the bad weights was written (lower the learning rates?)")
        return means

    def flush(self, step: int) -> dict[str, float]:
        means = self.means(step)
        self.sums, self.count = {}, 0
        return means

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


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


def train(run: Run, outputs: RunOutputs, progress, meter_state: dict | None = None) -> None:
    """Train ``run`` to ``train.steps``, logging, sampling and checkpointing at the recipe's cadences.

    ``meter_state`` is a resumed checkpoint's ``"meter"``. SIGINT or SIGTERM ends the current step,
    writes ``last.pt`` and raises :class:`TrainingInterrupted`. ``ganforge_train_end`` is called
    however the loop ends; a checkpoint is only ever written from weights whose logged losses were
    all finite.
    """
    hook = run.host.hook
    cadence = run.recipe.train
    meter = Meter(meter_state, run.device)
    error: BaseException | None = None
    hook.ganforge_train_start(run=run)
    progress.start(total=cadence.steps, completed=run.step, images=run.images_seen)
    started, images_at_start = time.perf_counter(), run.images_seen
    try:
        with StopRequests(outputs.last_checkpoint) as stop:
            while run.step < cadence.steps:
                logs = train_step(run)
                run.step += 1
                step, last = run.step, run.step == cadence.steps
                hook.ganforge_step_end(run=run, step=step, logs=logs)
                meter.add(logs)
                if step % cadence.log_every == 0 or last or step % cadence.checkpoint_every == 0:
                    seconds = time.perf_counter() - started
                    record = {"step": step, "images": run.images_seen, **meter.flush(step),
                              "images_per_s": (run.images_seen - images_at_start) / max(seconds, 1e-9)}
                    outputs.log_metrics(record)
                    progress.log(record)
                progress.advance(step, run.images_seen)
                if step % cadence.sample_every == 0 or last:
                    images = run.generate(run.fixed_latents)
                    path = outputs.write_samples(step, images)
                    hook.ganforge_samples(run=run, step=step, images=images, path=path)
                saved = step % cadence.checkpoint_every == 0 or last
                if saved:
                    outputs.save_checkpoint(run, meter.state_dict())
                if stop.signal_number is not None and not last:
                    stop_after_step(run, outputs, meter, stop, saved)
    except BaseException as exc:
        error = exc
        raise
    finally:
        progress.stop()
        hook.ganforge_train_end(run=run, error=error)


def stop_after_step(run: Run, outputs: RunOutputs, meter: Meter, stop: StopRequests, saved: bool) -> None:
    """Checkpoint the step just finished (unless its cadence just did), then stop."""
    if not saved:
        meter.means(run.step)  # the one sync this costs: never checkpoint weights behind a NaN loss
        outputs.save_checkpoint(run, meter.state_dict(), periodic=False)
    raise TrainingInterrupted(stop.signal_number, outputs.last_checkpoint, run.step)
