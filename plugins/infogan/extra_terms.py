"""The InfoGAN plugin's terms beyond the paper, each off unless the recipe weights it.

The paper's information term only asks Q to read the codes back from the generator's images.
On MNIST that left the categories free to split a digit class by slant (docs/results.md), so
these terms teach Q, and through it G, what a code must *not* depend on, or what it must mean:

- ``real_info_weight``: Q's categorical predictions over a real batch must be sure and use every
  category (:func:`information_of_predictions`).
- ``consistency_weight``: each categorical prediction must stay the same when a real image is
  slightly moved (:func:`disagreement`).
- ``code_moves``: a continuous code tied to a move must change by the move's amount when a real
  image is moved, so the code comes to mean that move: slant, width, position (:func:`move_error`).
- ``moved_fake_weight``: Q must read each category from a moved copy of the fakes too, in both
  objectives, so the generator cannot carry a category in what the moves change (on
  Fashion-MNIST, how light a garment is).

The consistency and code-move terms share one moved copy of the real batch, which the core puts
in the discriminator's real/fake pass as a view; the random draws behind it travel with the view
(``ctx.view_info``) to the loss-term hook that compares each code's change with its move.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch

from ganforge.checks import accepting
from ganforge.errors import RecipeError
from ganforge.latents import LatentDistribution
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics
from ganforge.plugin_spec import Option

from ..augmentation.images import MOVE_DRAWS, MOVE_LIMITS, MOVE_PRESETS, Moves, jitter_with_draws

if TYPE_CHECKING:
    from .plugin import CodeSpec, InfoGAN

@accepting(">= 0")
def steps(value: int) -> str | None:
    return None if value >= 0 else "must be a number of steps >= 0"


@accepting("0 to 1e6, 0: off")
def weight(value: float) -> str | None:
    return None if 0 <= value < 1e6 else "must be a number >= 0 (0: off)"


OPTIONS = {
    "real_info_weight": Option(0.0, "weight of the mutual information between real images and Q's categorical"
                               " prediction, H(mean p) - mean H(p), maximised on each real batch; 0: off (the paper"
                               " has no such term)", weight),
    "consistency_weight": Option(0.0, "weight of the agreement between Q's categorical prediction on a real image"
                                 " and on a slightly moved copy; 0: off", weight),
    "moves": Option("handwriting", "which moves the consistency term makes: a preset named for the kind of data"
                    " (handwriting, clothing, sprites, none; docs/results.md says which fits which data)"),
    "move_values": Option({}, "explicit values in place of the preset's: { shear = 0.6, flip = 0.5 } (with"
                          ' moves = "none": only the moves named)'),
    "code_moves": Option({}, "continuous codes tied to a move: Q's prediction of the code on a moved real image"
                         " must be its prediction on the plain image plus the move's draw, so the code comes to"
                         " mean that move: { slant = \"shear\", width = \"stretch\" }; {}: off"),
    # On twelve MNIST seeds, 0.3 gave both codes their moves on 10 and kept the categories on all
    # (0.1: 5 of 8; docs/results.md).
    "code_move_weight": Option(0.3, "weight of that squared error, summed over the codes tied to a move", weight),
    # On MNIST the trunk learnt to read slant and width and the categories split a pair of digits
    # on 3 of 11 runs; on sprites the trunk's share is what lifts MIG (docs/results.md).
    "code_move_trunk": Option(False, "whether that term also trains D's shared trunk, not Q's head alone"),
    "moved_fake_weight": Option(0.0, "weight of each categorical code's information term on a moved copy of the"
                                " fakes, in D's objective and G's: G cannot carry the category in what a move"
                                " changes; 0: off", weight),
    # Until then the term adds nothing, so the categories form as they do untied (with the
    # consistency term on, exactly so: the same moved images are drawn either way).
    "code_move_after": Option(0, "steps trained before the code-move term starts (0: from the first)", steps),
}
MOVES_STREAM = "infogan/moves"  # the consistency term's random moves
MOVED_VIEW = "infogan/moved"  # the moved real batch D sees for the consistency term
FAKE_MOVES_STREAM = "infogan/fake-moves"  # the moves of the fakes in the moved-fake term


def parse_moves(preset: str, values: dict) -> Moves:
    """The ``moves`` preset with the ``move_values`` table's explicit values in place of its own."""
    if preset not in MOVE_PRESETS:
        raise RecipeError(f"unknown preset {preset!r}; the presets are {', '.join(map(repr, MOVE_PRESETS))}", key="moves")
    for key, value in values.items():
        if key not in MOVE_LIMITS:
            raise RecipeError(f"unknown move; the moves are {', '.join(MOVE_LIMITS)}", key=f"move_values.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MOVE_LIMITS[key]:
            raise RecipeError(f"must be a number from 0 to {MOVE_LIMITS[key]:g}, got {value!r}", key=f"move_values.{key}")
    return dataclasses.replace(MOVE_PRESETS[preset], **{key: float(value) for key, value in values.items()})


def parse_code_moves(code_moves: dict, specs: list[CodeSpec], moves: Moves) -> dict[str, str]:
    """The ``code_moves`` table checked: each key a continuous code of the recipe, each value a
    move that the set of moves makes (a move of range 0 would teach the code nothing)."""
    names = {spec.name: spec for spec in specs}
    for code, move in code_moves.items():
        where = f"code_moves.{code}"
        if code not in names:
            raise RecipeError(f"no code of that name; the codes are {', '.join(names)}", key=where)
        if move not in MOVE_DRAWS:
            raise RecipeError(f"must name a move ({', '.join(MOVE_DRAWS)}), got {move!r}", key=where)
        if names[code].size != 1:
            raise RecipeError(f"code {code!r} has {names[code].size} columns; a move drives one: declare a code"
                              " of size 1 per move", key=where)
        move_range = "shift" if move.startswith("shift_") else move  # one range for both shifts
        if not getattr(moves, move_range):
            raise RecipeError(f"the set of moves never makes a {move} move; give it a range with"
                              f" move_values.{move_range}", key=where)
    return dict(code_moves)


class ExtraTerms:
    """The terms above, made from the ``[plugins.infogan]`` table. They read the codes and Q's
    predictions through ``infogan``, the paper's plugin that owns both, and hold no per-step state."""

    def __init__(self, settings: dict, infogan: InfoGAN):
        self.infogan = infogan
        self.real_info_weight = float(settings["real_info_weight"])
        self.consistency_weight = float(settings["consistency_weight"])
        self.moved_fake_weight = float(settings["moved_fake_weight"])
        self.moves = parse_moves(settings["moves"], settings["move_values"])
        self.code_moves = parse_code_moves(settings["code_moves"], infogan.specs, self.moves)
        self.code_move_weight = float(settings["code_move_weight"])
        self.code_move_trunk = settings["code_move_trunk"]
        self.code_move_after = settings["code_move_after"]

    def check_code(self, name: str, code: LatentDistribution) -> None:
        """A code tied to a move needs a mean for the move to shift: refuse any other at setup."""
        if name in self.code_moves and not hasattr(code, "split_params"):
            raise RecipeError(f"{code.describe()} has no Gaussian mean for Q to predict; tie a uniform or"
                              " gaussian code to a move", key=f"plugins.infogan.code_moves.{name}")

    def ties_codes_to_moves(self) -> bool:
        return bool(self.code_move_weight and self.code_moves)

    def uses_moved_view(self) -> bool:
        return bool(self.consistency_weight and self.infogan.categorical_codes()) or self.ties_codes_to_moves()

    def moved_real_views(self, run, real) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The moved copy of the real batch behind the consistency and code-move terms, with the
        draws that moved it: the code-move term reads them back as ``ctx.view_info``."""
        if not self.uses_moved_view():
            return []
        moved, draws = jitter_with_draws(real, run.rng(MOVES_STREAM), self.moves)  # a stream the core checkpoints
        return [(MOVED_VIEW, moved, draws)]

    def discriminator_terms(self, ctx) -> list[LossTerm]:
        # In this order, after the information terms: the order the graphs are built in fixes the
        # order the gradients are summed in, and so training's every bit.
        return self.real_terms(ctx) + self.code_move_terms(ctx) + self.moved_fake_terms(ctx)

    def generator_terms(self, ctx) -> list[LossTerm]:
        # Only the moved-fake term goes through G's images; the real-image terms have nothing for G.
        return self.moved_fake_terms(ctx)

    def real_terms(self, ctx) -> list[LossTerm]:
        """The real-information and consistency terms for each categorical code."""
        categorical = self.infogan.categorical_codes()
        if not categorical or not (self.real_info_weight or self.consistency_weight):
            return []
        params = self.infogan.q_predictions(ctx.d_real)
        moved = self.infogan.q_predictions(ctx.views[MOVED_VIEW]) if self.consistency_weight else None
        terms = []
        for name in categorical:
            log_p = params[name].log_softmax(dim=1)
            if self.real_info_weight:
                information = information_of_predictions(log_p)
                ctx.log(f"real_mi/{name}", information)
                terms.append(LossTerm(f"real_info/{name}", -information, self.real_info_weight))
            if moved is not None:
                terms.append(LossTerm(f"consistency/{name}", disagreement(log_p, moved[name]), self.consistency_weight))
        return terms

    def code_move_terms(self, ctx) -> list[LossTerm]:
        """For each continuous code tied to a move, :func:`move_error` of Q's predictions on the
        real batch and its moved copy.

        By default the term trains the Q head alone, on D's features with their gradient cut:
        trained through D's shared trunk too, it taught the trunk to read slant and width, and on 3
        of 11 MNIST runs the categories split a pair of digits again (docs/results.md). Q is then
        run again on the moved copy's detached features, its batch statistics frozen like every
        pass but the real/fake one. With ``code_move_trunk`` the moved pass's own reading is used,
        and the gradient goes on into the trunk. Either way the plain reading is the real pass's
        own, a target without gradient."""
        if not self.ties_codes_to_moves() or ctx.step <= self.code_move_after:
            return []
        if self.code_move_trunk:
            moved = self.infogan.q_predictions(ctx.views[MOVED_VIEW])
        else:
            head = self.infogan.q_head(ctx.run)
            with frozen_batch_statistics(head):
                moved = self.infogan.code_params(head(ctx.views[MOVED_VIEW].features.detach()))
        plain = self.infogan.q_predictions(ctx.d_real)
        draws = ctx.view_info[MOVED_VIEW]
        terms = []
        for name, move in self.code_moves.items():
            code = self.infogan.codes[name]  # a Gaussian-scored code: its parameters start with the mean
            before, after = code.split_params(plain[name])[0], code.split_params(moved[name])[0]
            draw = draws[:, MOVE_DRAWS.index(move)].unsqueeze(1)
            terms.append(LossTerm(f"code_move/{name}", move_error(before, after, draw), self.code_move_weight))
        return terms

    def moved_fake_terms(self, ctx) -> list[LossTerm]:
        """Each categorical code's negative log-likelihood under Q on the fakes moved at random.
        In the D phase (detached fakes) it teaches Q to read the category whatever the move; in
        the G phase the gradient goes back through the move into G, which must then draw the
        category in what the moves leave alone. Its own random stream, drawn in both phases, so
        the other terms keep their draws."""
        categorical = self.infogan.categorical_codes()
        if not self.moved_fake_weight or not categorical:
            return []
        moved, _ = jitter_with_draws(ctx.fake, ctx.run.rng(FAKE_MOVES_STREAM), self.moves)
        params = self.infogan.q_predictions(ctx.discriminate(moved, ctx.latents))
        codes = self.infogan.codes
        return [LossTerm(f"moved_info/{name}", codes[name].nll(ctx.latents[name], params[name]).mean(),
                         self.moved_fake_weight) for name in categorical]


def information_of_predictions(log_p: torch.Tensor) -> torch.Tensor:
    """I(c; x) over a batch as Q sees it: the entropy of the mean prediction minus the mean
    entropy of each prediction (Krause et al. 2010). High when Q is sure of each image and uses
    every category equally often; ``log_p`` is (n, K) log-probabilities."""
    conditional = -(log_p.exp() * log_p).sum(dim=1).mean()
    marginal_log = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    marginal = -(marginal_log.exp() * marginal_log).sum()
    return marginal - conditional


def disagreement(log_p: torch.Tensor, moved_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of Q's prediction on the moved images against its prediction on the plain
    ones. The plain prediction is the target and gets no gradient: the term teaches Q to ignore
    the move, not to make its plain predictions vaguer."""
    return -(log_p.detach().exp() * moved_logits.log_softmax(dim=1)).sum(dim=1).mean()


def move_error(plain: torch.Tensor, moved: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the change of Q's predicted code, from a plain image (``plain``) to
    its moved copy (``moved``), against the move's draw: Q's code must move by the move. The plain
    prediction gets no gradient, as in :func:`disagreement`: the term teaches Q how the move
    shows, not to shift its plain predictions, which the information term on fakes ties to G."""
    return (moved - plain.detach() - draw).pow(2).mean()
