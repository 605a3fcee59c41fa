"""The training loop: one readable module.

Per step: update D on real and detached fake images (``train.d_steps`` times), then update G
through the updated D. Plugins add named terms to either objective; each network gets one summed
objective and one backward pass per update. Logging, samples and checkpoints run at the recipe's
cadences, counted in generator steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

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

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for name, value in logs.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.count += 1

    def flush(self, step: int) -> dict[str, float]:
        means = {name: float(total) / self.count for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        for name, value in means.items():
            if not math.isfinite(value):
                raise GanforgeError(f"loss term {name} became {value} by step {step}; stopped before any"
                                    " checkpoint of the bad weights was written (lower the learning rates?)")
        return means


def train(run: Run, outputs: RunOutputs, progress) -> None:
    """Train ``run`` to ``train.steps``, logging, sampling and checkpointing at the recipe's cadences.

    ``ganforge_train_end`` is called however the loop ends; a checkpoint is only ever written from
    weights whose logged losses were all finite.
    """
    hook = run.host.hook
    cadence = run.recipe.train
    meter = Meter()
    error: BaseException | None = None
    hook.ganforge_train_start(run=run)
    progress.start(total=cadence.steps, completed=run.step, images=run.images_seen)
    started, images_at_start = time.perf_counter(), run.images_seen
    try:
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
            if step % cadence.checkpoint_every == 0 or last:
                outputs.save_checkpoint(run)
    except BaseException as exc:
        error = exc
        raise
    finally:
        progress.stop()
        hook.ganforge_train_end(run=run, error=error)
