"""``[plugins.ema]``: an exponential moving average of the generator's weights.

After every step the average's parameters move towards the trained generator's: ``average =
decay * average + (1 - decay) * current``. Its buffers are copied, not averaged, as in
stylegan2-ada-pytorch (``training/training_loop.py``: parameters lerped, buffers copied): batch
norm's running statistics belong to the current weights, and spectral norm's power-iteration
vectors ``u``/``v`` must stay unit vectors, which an average of them is not. Under spectral norm the
parameter averaged is the raw weight (``parametrizations.weight.original``); the average's forward
divides it by ``u^T W v`` with the copied vectors, the generator's estimate of its top singular
directions (the averaged weight stays close to the generator's).

The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=t)`` rule: the decay used at
step ``t`` is ``min(decay, (1 + t) / (10 + t))``, so early averages are not dominated by the random
initial weights. It is kept rather than Karras et al.'s ramp-up (StyleGAN's ``ema_rampup``), which
is set by a half-life in images, not by a decay: recipes set ``decay`` and ``warmup``. The average is what
sample grids, traversals, ``ganforge sample``, ``load_generator`` and ``ganforge eval`` use
(``ganforge_inference_generator``); it is kept in checkpoints and never receives gradients.
Training always updates the generator itself.
"""

from __future__ import annotations

import copy

import torch

from ganforge import hookimpl
from ganforge.checks import open_interval
from ganforge.models import unwrap
from ganforge.plugin_spec import Option, PluginSpec


class EMA:
    """The average, updated after every step and offered for every picture and metric."""

    def __init__(self, settings: dict):
        self.decay, self.warmup = settings["decay"], settings["warmup"]
        self.run = None
        self._average: torch.nn.Module | None = None

    @hookimpl
    def ganforge_models_built(self, run):
        self.run = run

    @property
    def average(self) -> torch.nn.Module:
        """The copy, made at first use: after every plugin's ``ganforge_models_built`` (another
        may have changed the generator, e.g. spectral-normalised it), whatever their order."""
        if self._average is None:
            self.start_average()
        return self._average

    def start_average(self) -> None:
        self._average = copy.deepcopy(unwrap(self.run.generator)).requires_grad_(False).eval()

    @hookimpl
    def ganforge_train_start(self, run):
        self.start_average()  # from the untrained weights: the average starts where training starts

    @hookimpl
    def ganforge_step_end(self, run, step):
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        generator = unwrap(run.generator)
        current_parameters = dict(generator.named_parameters())
        current_buffers = dict(generator.named_buffers())
        with torch.no_grad():
            for name, average in self.average.named_parameters():
                average.lerp_(current_parameters[name], 1 - decay)
            for name, average in self.average.named_buffers():
                average.copy_(current_buffers[name])

    @hookimpl
    def ganforge_inference_generator(self, run):
        return self.average

    def state_dict(self) -> dict:
        return {"average": self.average.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state["average"])


SPEC = PluginSpec(
    "ema", EMA, doc="a moving average of G's weights for samples, load_generator and ganforge eval",
    options={
        "decay": Option(0.999, "how much of the average each step keeps", open_interval(0, 1)),
        "warmup": Option(True, "a smaller decay at first: min(decay, (1 + t) / (10 + t)) at step t"),
    },
    stateful=True)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
