"""The training loop: one readable module.

Per step: update D on real and detached fake images (``run.d_steps`` times), then update G
through the updated D. Plugins add named terms to either objective; each network gets one summed
objective and one backward pass per update, or per micro-batch with ``train.accumulate``
(:mod:`ganforge.accumulation`). Logging, samples and checkpoints run at the recipe's cadences,
counted in generator steps.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field

import torch

from . import accumulation, distributed, schedule
from .checkpoint import restore_plugin_states
from .errors import GanforgeError, PluginError
from .losses import LossTerm, adversarial_loss
from .models import DiscriminatorOutput, float32, frozen_batch_statistics
from .outputs import RunOutputs
from .run import Run
from .scoring import TrainingEvaluation
from .stopping import StopRequests, TrainingInterrupted
from . import step_services
from .step_services import autocast, discriminator_passes, named_views, real_conditions, training_latents, transform


@dataclass
class StepContext:
    """What the objective and the loss-term hooks see in one phase of one step.

    ``phase`` is ``"D"`` or ``"G"``. In the D phase ``fake`` is detached and ``d_real`` holds the
    discriminator's output on ``real``; in the G phase ``fake`` is attached to the generator's graph
    and ``d_fake`` is the updated discriminator's output on it, while ``d_real`` is computed only if
    something reads it (a relativistic loss). ``latents`` maps each generator input (``"z"`` and
    every plugin input) to its sampled batch; ``conditions`` holds what conditioned heads saw for
    the real images (``ganforge_real_conditions``). What D saw went through the run's image
    transforms (``ganforge_discriminator_transforms``); ``real`` and ``fake`` are the untransformed images.
    ``views`` holds D's outputs on the plugins' views of the real batch (``ganforge_discriminator_views``)
    and ``fake_views`` those on their views of the detached fakes (``ganforge_discriminator_fake_views``);
    ``view_info`` and ``fake_view_info`` hold, by the same names, what a view returned as
    ``(name, images, info)`` carried (the random draws behind a moved copy, say), so a plugin
    hands its term what made the view without keeping it on itself between hooks. D phase only:
    all four are empty in the G phase. With ``train.accumulate`` each micro-batch has its own
    context, holding that micro-batch; ``step`` is the step's.
    """

    phase: str
    step: int
    run: Run
    real: torch.Tensor
    labels: dict[str, torch.Tensor]
    latents: dict[str, torch.Tensor]
    fake: torch.Tensor
    d_fake: DiscriminatorOutput
    _d_real: DiscriminatorOutput | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    conditions: dict[str, torch.Tensor] = field(default_factory=dict)
    views: dict[str, DiscriminatorOutput] = field(default_factory=dict)
    fake_views: dict[str, DiscriminatorOutput] = field(default_factory=dict)
    view_info: dict[str, object] = field(default_factory=dict)
    fake_view_info: dict[str, object] = field(default_factory=dict)

    @property
    def d_real(self) -> DiscriminatorOutput:
        if self._d_real is None:  # the G phase: one more pass, only when asked for
            self._d_real = self.discriminate(self.real, self.conditions)
        return self._d_real

    def discriminate(self, images: torch.Tensor, conditions: dict[str, torch.Tensor] | None = None,
                     transform: bool = True) -> DiscriminatorOutput:
        """An extra discriminator pass (a gradient penalty, a consistency term), through the run's
        image transforms unless ``transform`` is false. It trains through whatever objective uses
        it, but never moves D's batch-norm running statistics: only the real/fake passes of the D
        phase do."""
        with frozen_batch_statistics(self.run.discriminator):
            return self.run.discriminator(step_services.transform(self.run, images) if transform else images, conditions)

    def log(self, name: str, value: torch.Tensor | float) -> None:
        """Log an extra scalar for this step (e.g. a mutual-information bound) under ``name``."""
        self.logs[name] = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))


def objective(phase: str, adversarial: torch.Tensor, contributions: list, logs: dict) -> torch.Tensor:
    """The adversarial loss plus every plugin term, each logged by name (``loss/D/info/digit``).

    Every value is summed in float32, whatever precision the passes ran in."""
    terms: list[LossTerm] = [term for group in contributions for term in group]
    for term in terms:
        if not isinstance(term, LossTerm):
            raise PluginError(f"a {phase} loss-term hook returned {type(term).__name__}, not a LossTerm")
    # pluggy calls implementations newest first: sort so the sum does not depend on install order.
    terms.sort(key=lambda term: term.name)
    total = adversarial.float()
    logs[f"loss/{phase}/adv"] = total.detach()
    for term in terms:
        key = f"loss/{phase}/{term.name}"
        if key in logs:
            raise PluginError(f"two plugins add a {phase} loss term named {term.name!r}")
        value = term.value.float()
        logs[key] = value.detach()
        total = total + term.weight * value
    logs[f"loss/{phase}/total"] = total.detach()
    return total


def trainable(module: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters an optimizer step may change: a plugin may have frozen some (a fixed feature
    network), and each keeps its own flag."""
    return [parameter for parameter in module.parameters() if parameter.requires_grad]


def discriminator_objective(run: Run, real: torch.Tensor, labels: dict[str, torch.Tensor],
                            latents: dict[str, torch.Tensor], keep_graph: bool) -> tuple[StepContext, torch.Tensor, torch.Tensor]:
    """D's objective on one (micro-)batch of real images and fresh fakes of ``latents``; returns its
    context, the fakes (attached to G's graph when ``keep_graph``) and the objective."""
    hook = run.host.hook
    with contextlib.nullcontext() if keep_graph else torch.no_grad(), autocast(run):
        fake = run.generator_forward(latents, run.training_generator)
    fake = fake.float()
    conditions = real_conditions(run, labels)
    views, view_info = named_views(hook.ganforge_discriminator_views(run=run, real=real), "a discriminator view")
    fake_views, fake_view_info = named_views(
        hook.ganforge_discriminator_fake_views(run=run, fake=fake.detach(), latents=latents), "a discriminator fake view")
    # Views last, after real and fake: the transforms draw in this order, so a run without
    # views draws what it always drew. Views see their batch's conditions and move no statistics.
    batches = [(real, conditions, True), (fake.detach(), latents, True),
               *((images, conditions, False) for images in views.values()),
               *((images, latents, False) for images in fake_views.values())]
    d_real, d_fake, *d_views = discriminator_passes(run, batches)
    logs: dict[str, torch.Tensor] = {}
    ctx = StepContext("D", run.step + 1, run, real, labels, latents, fake.detach(), d_fake, d_real, logs, conditions,
                      dict(zip(views, d_views)), dict(zip(fake_views, d_views[len(views):])), view_info, fake_view_info)
    total = objective("D", adversarial_loss(run.loss, ctx), hook.ganforge_discriminator_loss_terms(ctx=ctx), logs)
    if run.ranks.distributed:
        # Every output of the pass joins the objective, a head no term used with weight 0: DDP
        # waits for a gradient of every parameter the pass touched.
        total = total + 0 * sum(value.sum() for output in (d_real, d_fake, *d_views)
                                for value in (output.logits, *output.heads.values()))
    return ctx, fake, total


def discriminator_step(run: Run, keep_graph: bool = True
                       ) -> tuple[list[StepContext], list[torch.Tensor], dict[str, torch.Tensor]]:
    """One D update on a fresh batch and fresh fakes, in ``train.accumulate`` micro-batches;
    returns each micro-batch's context and fakes (attached to G's graph when ``keep_graph`` and the
    update is one batch: the G update uses them) and the update's logs, each term's mean over the
    micro-batches."""
    hook = run.host.hook
    real, labels, new_epoch = run.batcher.next()
    if new_epoch:
        hook.ganforge_epoch_end(run=run, epoch=run.batcher.epoch)
    latents = training_latents(run)
    # Each micro-batch's graph through G would live until the G update, holding the memory
    # accumulation is there to save: the G update makes those fakes again instead.
    keep_graph = keep_graph and not accumulation.accumulating(run)
    run.optimizer_d.zero_grad(set_to_none=True)
    contexts, fakes, per_batch = [], [], []
    for (micro_real, micro_labels, micro_latents), last in accumulation.micro_batches(run, real, labels, latents):
        with accumulation.synced_after(run, run.training_discriminator, last):
            ctx, fake, total = discriminator_objective(run, micro_real, micro_labels, micro_latents, keep_graph)
            # Gradients for D's trainable parameters only: an image a penalty made differentiable gets none.
            accumulation.backward(run, total, trainable(run.discriminator))
        contexts.append(ctx)
        fakes.append(fake)
        per_batch.append(ctx.logs)
    run.optimizer_d.step()
    run.images_seen += real.shape[0] * run.ranks.world_size
    return contexts, fakes, mean_logs(per_batch)


def generator_objective(run: Run, ctx: StepContext, fake: torch.Tensor, logs: dict[str, torch.Tensor]) -> torch.Tensor:
    """G's objective on one (micro-)batch of the last D update, through the updated D, logging
    into ``logs``."""
    if accumulation.accumulating(run):
        # The same latents made into fakes again, now with G's graph; G's batch statistics moved
        # already, when the D update made them.
        with frozen_batch_statistics(run.generator), autocast(run):
            fake = run.generator_forward(ctx.latents, run.training_generator).float()
    # Only G's parameters receive gradients (D's own flags are left alone), and this pass does not
    # move D's batch statistics.
    with frozen_batch_statistics(run.discriminator), autocast(run):
        d_fake = float32(run.discriminator(transform(run, fake), ctx.latents))
    g_ctx = StepContext("G", ctx.step, run, ctx.real, ctx.labels, ctx.latents, fake, d_fake, None, logs, ctx.conditions)
    return objective("G", adversarial_loss(run.loss, g_ctx), run.host.hook.ganforge_generator_loss_terms(ctx=g_ctx), logs)


def train_step(run: Run) -> dict[str, torch.Tensor]:
    """One generator step and the discriminator steps before it; returns the step's detached logs."""
    if run.recipe.train.lr_factors:
        schedule.apply_factor((run.optimizer_g, run.optimizer_d), run.base_rates,
                              schedule.factor_at(run.recipe.train.lr_factors, run.step))
    # Update D on real and detached fake images; with several D steps, each term is logged as
    # its mean over them.
    # Only the last step's fakes are kept with G's graph; the others are made without one.
    per_step = []
    for index in range(run.d_steps):
        contexts, fakes, step_logs = discriminator_step(run, keep_graph=index == run.d_steps - 1)
        per_step.append(step_logs)
    logs = mean_logs(per_step)

    # Update G through the updated D, on the last D step's latents and fakes, micro-batch by
    # micro-batch. The last micro-batch logs into the step's logs, the others into copies; each
    # G term ends as its mean over them.
    d_logs = dict(logs)
    run.optimizer_g.zero_grad(set_to_none=True)
    per_batch = []
    for ctx, fake in zip(contexts, fakes):
        last = ctx is contexts[-1]
        g_logs = logs if last else dict(d_logs)
        with accumulation.synced_after(run, run.training_generator, last):
            accumulation.backward(run, generator_objective(run, ctx, fake, g_logs), trainable(run.generator))
        per_batch.append({name: value for name, value in g_logs.items() if d_logs.get(name) is not value})
    run.optimizer_g.step()
    logs.update(mean_logs(per_batch))
    return logs


def mean_logs(per_step: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each name's mean over the D steps (or micro-batches) that logged it."""
    if len(per_step) == 1:
        return per_step[0]
    names = dict.fromkeys(name for logs in per_step for name in logs)
    return {name: torch.stack([logs[name] for logs in per_step if name in logs]).mean() for name in names}


class Meter:
    """Means of the logged scalars since the last flush, each over the steps that logged it (a
    term logged every 16 steps is not diluted by the other 15); floats are read only at the log
    cadence, since reading a tensor's value is a device sync."""

    def __init__(self, state: dict | None = None, device: torch.device | None = None):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        if state:  # a checkpoint's unlogged sums: the next record averages the same steps
            self.sums = {name: total.to(device) for name, total in state["sums"].items()}
            counts = state.get("counts") or dict.fromkeys(self.sums, state.get("count", 1))  # older checkpoints: one count
            self.counts = {name: int(counts[name]) for name in self.sums}

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for name, value in logs.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self, step: int) -> dict[str, float]:
        """The means so far; a non-finite one stops the run, naming the term and the step."""
        means = {name: float(total) / self.counts[name] for name, total in self.sums.items()}
        for name, value in means.items():
            if not math.isfinite(value):
                raise GanforgeError(f"loss term {name} became {value} by step {step}; stopped before any"
                                    " checkpoint of the bad weights was written (lower the learning rates?)")
        return means

    def flush(self, step: int) -> dict[str, float]:
        means = self.means(step)
        self.sums, self.counts = {}, {}
        return means

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}


def train(run: Run, outputs: RunOutputs, progress, resumed: dict | None = None) -> None:
    """Train ``run`` to ``train.steps``, logging, sampling and checkpointing at the recipe's cadences.

    ``resumed`` is the checkpoint a resumed run started from: its unlogged sums, and its plugin
    states, loaded after ``ganforge_train_start`` so that no plugin's set-up overwrites them.
    SIGINT or SIGTERM ends the current step, writes ``last.pt`` and raises
    :class:`TrainingInterrupted`. ``ganforge_train_end`` is called however the loop ends; a
    checkpoint is only ever written from weights whose logged losses were all finite.
    """
    hook = run.host.hook
    cadence = run.recipe.train
    ranks, primary = run.ranks, run.ranks.primary
    meter = Meter(resumed.get("meter") if resumed else None, run.device)
    error: BaseException | None = None
    hook.ganforge_train_start(run=run)
    if resumed:
        restore_plugin_states(run, resumed, outputs.last_checkpoint)
    if run.recipe.train.compile:
        # In place: the modules stay themselves, so checkpoints are the same with or without.
        run.generator.compile(mode=run.recipe.train.compile_mode)
        run.discriminator.compile(mode=run.recipe.train.compile_mode)
    run.training_generator = distributed.wrap(run.generator, ranks, run.device)
    run.training_discriminator = distributed.wrap(run.discriminator, ranks, run.device)
    progress.start(total=cadence.steps, completed=run.step, images=run.images_seen)
    scoring = TrainingEvaluation(run, outputs, progress) if run.recipe.eval.every and primary else None
    started, images_at_start = time.perf_counter(), run.images_seen
    graphs_replayed = run.recipe.train.compile and run.recipe.train.compile_mode == "reduce-overhead"
    try:
        with StopRequests(outputs.last_checkpoint) as stop:
            if scoring and run.step == 0:
                scoring.evaluate(0, candidate=False)  # fails fast; the curve's first point
            while run.step < cadence.steps:
                if graphs_replayed:
                    # A new step: the CUDA graphs' output memory of the last one may be reused.
                    torch.compiler.cudagraph_mark_step_begin()
                logs = train_step(run)
                run.step += 1
                step, last = run.step, run.step == cadence.steps
                hook.ganforge_step_end(run=run, step=step, logs=logs)
                meter.add(logs)
                saved = step % cadence.checkpoint_every == 0 or last
                if step % cadence.log_every == 0 or last or saved:
                    meter.sums = distributed.mean_over_ranks(meter.sums, ranks)
                    seconds = time.perf_counter() - started
                    record = {"step": step, "images": run.images_seen, **meter.flush(step),
                              "images_per_s": (run.images_seen - images_at_start) / max(seconds, 1e-9)}
                    if primary:
                        outputs.log_metrics(record)
                        progress.log(record)
                        hook.ganforge_log(run=run, step=step, record=record)
                progress.advance(step, run.images_seen)
                if primary and (step % cadence.sample_every == 0 or last):
                    images = run.generate(run.fixed_latents)
                    path = outputs.write_samples(step, images)
                    hook.ganforge_samples(run=run, step=step, images=images, path=path)
                if scoring and scoring.due(step, last):
                    scoring.evaluate(step, meter.state_dict())
                if saved and primary:
                    outputs.save_checkpoint(run, meter.state_dict())
                # Every rank stops after the same step: the signal may reach them at different times.
                if distributed.any_rank(stop.signal_number is not None, ranks) and not last:
                    stop.signal_number = stop.signal_number or signal.SIGTERM
                    stop_after_step(run, outputs, meter, stop, saved)
    except BaseException as exc:
        error = exc
        raise
    finally:
        progress.stop()
        run.training_generator, run.training_discriminator = run.generator, run.discriminator
        hook.ganforge_train_end(run=run, error=error)


def stop_after_step(run: Run, outputs: RunOutputs, meter: Meter, stop: StopRequests, saved: bool) -> None:
    """Checkpoint the step just finished (unless its cadence just did), then stop."""
    if not saved and run.ranks.primary:
        meter.means(run.step)  # the one sync this costs: never checkpoint weights behind a NaN loss
        outputs.save_checkpoint(run, meter.state_dict(), periodic=False)
    raise TrainingInterrupted(stop.signal_number, outputs.last_checkpoint, run.step)
