"""``[plugins.path-length]``: StyleGAN2's path-length regularisation of the generator (Karras et
al. 2020, section 3.2), after NVlabs/stylegan2-ada-pytorch ``training/loss.py``
(``StyleGAN2Loss.accumulate_gradients``, phase ``Gpl``).

A fixed-size step in ``w`` should move the image by a fixed amount, whatever the direction: for a
random image-space direction ``y ~ N(0, I) / sqrt(H W)``, the length ``|J_w^T y|`` (the gradient
of ``sum(G(w) * y)`` by the per-layer ws, squared and summed over ``w``'s width, averaged over
the layers, square-rooted) is held near ``pl_mean``, its moving average (``decay`` 0.01 per use):
``(length - pl_mean)^2``, averaged over the batch, with weight ``weight`` (2). ``pl_mean`` is
updated from the batch's mean length before the penalty, and the penalty differentiates through
that update, as the reference's does; it is kept in checkpoints.

The pass is G's own on fresh latents from the plugin's stream, ``batch_size // batch_shrink``
images (2), style mixing and noise as in training. Lazy, as the reference's ``G_reg_interval =
4``: computed every ``every`` steps and scaled by ``every``. The reference runs it as a separate
optimizer step, and therefore rescales Adam's learning rate and betas by ``every / (every + 1)``;
here the term joins G's one objective of that step, so there is no extra step to rescale for.

It needs a generator split into mapping and synthesis networks (the ``style-latents`` capability
of ``model.name = "stylegan2"``); ``ganforge check`` refuses it with any other family, and with
``train.compile``, whose aot_autograd cannot backpropagate through the gradient.
"""

from __future__ import annotations

import math

import torch

from ganforge import hookimpl
from ganforge.checks import at_least, non_negative, open_interval
from ganforge.losses import LossTerm
from ganforge.models import unwrap
from ganforge.plugin_spec import STYLE_LATENTS, Option, PluginSpec
from ganforge.step_services import autocast

from .penalties import refuse_compiled_networks


def image_direction(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """``y ~ N(0, I) / sqrt(H W)`` of the images' shape: the reference's ``pl_noise``."""
    noise = torch.randn(images.shape, generator=rng, device=rng.device).to(images)
    return noise / math.sqrt(images.shape[2] * images.shape[3])


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, direction: torch.Tensor, pl_mean: torch.Tensor,
                        decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ``(length - pl_mean')^2`` with ``pl_mean' = pl_mean.lerp(mean(length), decay)``,
    kept in the graph; and ``pl_mean'`` detached, the average to keep."""
    (gradients,) = torch.autograd.grad((images * direction).sum(), ws, create_graph=True)
    lengths = gradients.square().sum(dim=2).mean(dim=1).sqrt()
    mean = pl_mean.lerp(lengths.mean(), decay)
    return (lengths - mean).square(), mean.detach()


class PathLength:
    """``pl_mean`` and the lazy term."""

    def __init__(self, settings: dict):
        self.weight, self.decay = settings["weight"], settings["decay"]
        self.batch_shrink, self.every = settings["batch_shrink"], settings["every"]
        self.pl_mean: torch.Tensor | None = None

    @hookimpl
    def ganforge_models_built(self, run):
        refuse_compiled_networks(run, "path-length")
        self.pl_mean = torch.zeros([], device=run.device)

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        if ctx.step % self.every:
            return []
        run = ctx.run
        generator = unwrap(run.generator)
        latents = run.sample_latents(max(1, len(ctx.fake) // self.batch_shrink), run.rng("path-length", "cpu"))
        with autocast(run):
            ws = generator.style_latents(run.generator_input(latents))
            images = generator.synthesise(ws).float()
        direction = image_direction(images, run.rng("path-length/direction"))
        penalty, self.pl_mean = path_length_penalty(images, ws, direction, self.pl_mean, self.decay)
        ctx.log("path_length/mean", self.pl_mean)
        # Scaled by the interval: on average as strong as a term at every step.
        return [LossTerm("path_length", penalty.mean(), self.weight * self.every)]

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean}

    def load_state_dict(self, state: dict) -> None:
        self.pl_mean = state["pl_mean"].to(self.pl_mean.device)


SPEC = PluginSpec(
    "path-length", PathLength,
    doc="StyleGAN2's path-length regularisation of G: |J_w^T y| held near its moving average (Karras et al. 2020)",
    options={
        "weight": Option(2.0, "the term's weight, pl_weight", non_negative),
        "decay": Option(0.01, "how far pl_mean moves towards each batch's mean length, pl_decay", open_interval(0, 1)),
        "batch_shrink": Option(2, "the term's batch is train.batch_size divided by this, pl_batch_shrink", at_least(1)),
        "every": Option(4, "computed every this many steps, scaled by it (G_reg_interval; 1: each step)", at_least(1)),
    },
    requires={STYLE_LATENTS: "path-length regularisation differentiates the images by the generator's per-layer"
                             ' latents w, which only a mapping and synthesis generator has (model.name = "stylegan2")'},
    stateful=True)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
