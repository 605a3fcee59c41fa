"""``[plugins.ada]``: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data").

Every image D sees, real and generated, in both phases, goes through the 'bgc' changes of
:mod:`.ada_pipeline`, each applied per image with probability ``p``; G learns through them. As
a ``ganforge_discriminator_transforms`` transform with ``order = -10`` it comes before any other
transform, so heads on D's features (InfoGAN's Q) see the augmented images.

``p`` follows how much D overfits, measured as ``r_t = E[sign(D(x))]`` over the real images of
the last ``interval`` steps (D's logits on them, augmented, as the objective sees them): every
``interval`` steps ``p`` moves by ``sign(r_t - target) * images / (speed_kimg * 1000)``, where
``images`` is how many real images the statistic was taken on, and never below 0. This is
NVlabs/stylegan2-ada-pytorch ``training/training_loop.py`` (``ada_target = 0.6``,
``ada_interval = 4``, ``ada_kimg = 500``; ``adjust = np.sign(signs - ada_target) * (batch_size *
ada_interval) / (ada_kimg * 1000)``, ``p = max(p + adjust, 0)``), with ``Loss/signs/real`` from
``training/loss.py``. With one D step per G step, ``images`` is the reference's ``batch_size *
ada_interval``; with several, every D step's real batch counts. ``adjust = false`` keeps ``p``
fixed. ``p`` and the unspent sum of signs are kept in checkpoints; ``ada/p`` and
``ada/real_sign`` (the steps' ``r_t``) are logged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ganforge import hookimpl
from ganforge.checks import Each, accepting, at_least, between, one_of, positive
from ganforge.errors import RecipeError
from ganforge.plugin_spec import Option, PluginSpec

from .ada_pipeline import BGC, COLOUR, augment

# Objectives under which the sign of D's logits on a real image does not say "real" or "fake".
SIGNLESS_OBJECTIVES = {
    "least-squares": "its targets are 1 for real and 0 for fake images, so its boundary is at 0.5, not 0",
    "wasserstein": "a critic's values have no sign that says real or fake",
}


class ADA:
    """The augmentation (``__call__``, a transform) and the controller of its probability ``p``."""

    order = -10

    def __init__(self, settings: dict):
        self.ops = tuple(op for op in BGC if op in settings["ops"])  # the reference's order
        self.target, self.interval, self.speed_kimg = settings["target"], settings["interval"], settings["speed_kimg"]
        self.adjusting = settings["adjust"]
        if not self.adjusting and settings["p"] == 0:
            raise RecipeError("with adjust = false, p stays where it starts: at 0 nothing is augmented; set p"
                              " above 0 (e.g. 0.2) or adjust = true", key="p")
        self.p = torch.tensor(float(settings["p"]))  # on the run's device once the run is built
        self.signs = torch.zeros((), dtype=torch.int64)  # sum of sign(D(x)) over the real images since the last move
        self.counted = 0  # how many real images (on this rank) that sum is over

    @hookimpl
    def ganforge_discriminator_transforms(self, run):
        channels, loss = run.image_shape[0], run.recipe.loss.name
        colour = [op for op in self.ops if op in COLOUR]
        if colour and channels not in (1, 3):
            raise RecipeError(f"the colour changes ({', '.join(colour)}) are defined on RGB and greyscale images, and"
                              f" these have {channels} channels: leave them out of ops", key="plugins.ada.ops")
        if self.adjusting and loss in SIGNLESS_OBJECTIVES:
            raise RecipeError(f"p is steered by the sign of D's logits on real images, which says nothing under"
                              f" {loss!r}: {SIGNLESS_OBJECTIVES[loss]}; set adjust = false with a fixed p, or use"
                              f" loss.name = \"non-saturating\" or \"hinge\"", key="plugins.ada.adjust")
        self.p, self.signs = self.p.to(run.device), self.signs.to(run.device)
        return [("ada", self)]

    def __call__(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return augment(images, rng, self.p, self.ops)

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        logits = ctx.d_real.logits.detach()
        if self.adjusting:
            # Whole numbers, summed exactly; read on the host only when logged.
            self.signs = self.signs + (logits > 0).sum() - (logits < 0).sum()
            self.counted += logits.numel()
        ctx.log("ada/p", self.p)
        ctx.log("ada/real_sign", logits.sign().mean())
        return []

    @hookimpl
    def ganforge_step_end(self, run, step):
        if self.adjusting and step % self.interval == 0 and self.counted:
            self.adjust(run.ranks)

    def adjust(self, ranks) -> None:
        """Move ``p`` by the reference's rule, from the signs of every rank's real images."""
        signs, images = self.signs, self.counted * ranks.world_size  # every rank sees as many real images
        if ranks.distributed:
            signs = signs.clone()
            dist.all_reduce(signs)
        direction = torch.sign(signs.float() / images - self.target)
        # A new tensor, never changed in place: the logs of earlier steps hold the old one.
        self.p = (self.p + direction * (images / (self.speed_kimg * 1000))).clamp(min=0)
        self.signs, self.counted = torch.zeros_like(self.signs), 0

    def state_dict(self) -> dict:
        return {"p": self.p, "signs": self.signs, "counted": self.counted}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.signs = state["p"].to(self.p.device), state["signs"].to(self.signs.device)
        self.counted = int(state["counted"])


@accepting("not empty, no change twice")
def names_changes_once(ops: list) -> str | None:
    if not ops:
        return f"must name at least one change: {', '.join(BGC)}"
    twice = sorted({op for op in ops if ops.count(op) > 1})
    return f"names {', '.join(map(repr, twice))} more than once" if twice else None


SPEC = PluginSpec(
    "ada", ADA, doc="adaptive discriminator augmentation: the 'bgc' changes with a probability p steered by"
                    " D's overfitting (Karras et al. 2020)",
    options={
        "ops": Option(list(BGC), "the changes, applied in the reference's order whatever the order here: the"
                      " reference's 'bgc'; its 'bg' is the first seven, 'blit' the first three",
                      (names_changes_once, Each(one_of(*BGC)))),
        "p": Option(0.0, "the probability of each change at the start (throughout, with adjust = false)",
                    between(0, 1)),
        "adjust": Option(True, "steer p by the sign of D's logits on real images; false: p stays fixed"),
        "target": Option(0.6, "the mean sign of D's logits on real images that p is steered to, r_t", between(0, 1)),
        "interval": Option(4, "steps between two moves of p", at_least(1)),
        "speed_kimg": Option(500.0, "thousands of real images over which p can move by 1", positive),
    },
    conflicts={"diffaugment": "both augment every image D sees: ADA's p, steered by how much D overfits under ADA's"
                              " changes, would be set under DiffAugment's fixed ones as well; use one of them"},
    stateful=True)
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
