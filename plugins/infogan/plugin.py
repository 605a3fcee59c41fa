"""InfoGAN (Chen et al. 2016) as a plugin: a plain GAN plus three changes.

1. Codes sampled from the distributions the recipe names are extra generator inputs.
2. A Q head on the discriminator's shared features predicts each code's parameters.
3. Each code's negative log-likelihood under Q, weighted by its λ, is added to the
   discriminator's objective (on the detached fakes: trains Q and the shared trunk) and to the
   generator's (on the attached fakes: trains G). That is the paper's ``min over G, Q`` of
   ``-λ L_I``, with one summed objective per network.

Switched on by a ``[plugins.infogan]`` table; without it the recipe is plain DCGAN. Only the
``LatentDistribution`` interface is used, so any registered distribution can be a code.

Two optional terms on real images, off by default, train Q and the shared trunk further (the
discriminator's objective only): ``consistency_weight`` asks each categorical code's prediction
to stay the same when a real image is slightly moved (:func:`jitter`), ``real_info_weight`` asks
the predictions over a real batch to be sure and to use every category. On MNIST they stop the
categories from splitting a digit class by slant (docs/results.md). A third, ``code_moves``, ties a
continuous code to a move: Q's prediction of the code must change by the move's amount when a real
image is moved, so the code comes to mean that move (slant, width, position, ...). And
``moved_fake_weight`` asks Q to read each category from a moved copy of the fakes too, in both
objectives, so the generator cannot carry a category in what the moves change (on Fashion-MNIST,
how light a garment is).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.errors import RecipeError
from ganforge.latents import LatentDistribution
from ganforge.losses import LossTerm
from ganforge.models import frozen_batch_statistics, unwrap
from ganforge.traversal import save_traversal

from ..augmentation.images import MOVE_DRAWS, MOVE_LIMITS, MOVE_PRESETS, Moves, jitter_with_draws

DEFAULTS = {
    # Each code: { name, dist, size, weight, ...options for the distribution }.
    "codes": [],
    # Width of Q's hidden layer: the paper's FC128-BN-lReLU-FC.
    "q_hidden": 128,
    # Give the categorical codes and the other codes a Q hidden layer each (two FC-BN-lReLU-FC on
    # the shared features), so that a term on the continuous codes (code_moves) does not reshape
    # the layer the categories are read from; false: one layer for all, as in the paper.
    "q_split": False,
    # Learning rate of the Q head; 0 trains it at train.d_lr with the rest of the discriminator.
    "q_lr": 0.0,
    # Also write a traversal grid per code at every sample cadence (always at the end).
    "traverse_every_sample": True,
    # Weight of the mutual information between real images and Q's categorical prediction,
    # H(mean p) - mean H(p), maximised on each real batch; 0: off (the paper has no such term).
    "real_info_weight": 0.0,
    # Weight of the agreement between Q's categorical prediction on a real image and on a slightly
    # moved copy; 0: off.
    "consistency_weight": 0.0,
    # Which moves the consistency term makes: a preset named for the kind of data (handwriting,
    # clothing, sprites, none; docs/results.md says which fits which data and why) ...
    "moves": "handwriting",
    # ... with explicit values in place of the preset's: move_values = { shear = 0.6, flip = 0.5 }
    # (moves = "none" and a full table: only the moves named).
    "move_values": {},
    # Continuous codes tied to a move: Q's prediction of the code on a moved real image must be its
    # prediction on the plain image plus the move's draw (from -1 to 1 over the move's range), so
    # the code comes to mean that move: code_moves = { slant = "shear", width = "stretch" }. The
    # moves are degrees, scale, shear, stretch, shift_x, shift_y, thickness, brightness and blur; {}: off.
    "code_moves": {},
    # Weight of that squared error, summed over the codes tied to a move. On twelve MNIST seeds, 0.3
    # gave both codes their moves on 10 and kept the categories on all (0.1: 5 of 8; docs/results.md).
    "code_move_weight": 0.3,
    # Whether that term also trains D's shared trunk, not Q's head alone. On MNIST the trunk learnt
    # to read slant and width and the categories split a pair of digits on 3 of 11 runs; on
    # sprites the trunk's share is what lifts MIG (docs/results.md).
    "code_move_trunk": False,
    # Weight of each categorical code's information term on a moved copy of the fakes (the same
    # set of moves), in D's objective and G's: Q must read the category from a moved G(z, c), so G
    # cannot carry it in what a move changes (how light a garment is, how slanted a digit); 0: off.
    "moved_fake_weight": 0.0,
    # Steps trained before that term starts (0: from the first). Until then the term adds nothing,
    # so the categories form as they do untied (with the consistency term on, as in the MNIST
    # recipes, exactly so: the same moved images are drawn either way).
    "code_move_after": 0,
}
CODE_KEYS = ("name", "dist", "size", "weight")
HEAD = "q"
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


def parse_code_moves(code_moves: dict, specs: list["CodeSpec"], moves: Moves) -> dict[str, str]:
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


@dataclass(frozen=True)
class CodeSpec:
    name: str
    dist: str
    size: int
    weight: float
    options: dict


def parse_codes(codes: list) -> list[CodeSpec]:
    """The ``codes`` array checked item by item; errors name ``codes[i].key``."""
    if not codes:
        raise RecipeError("needs at least one code, e.g. codes = [{ name = \"digit\", dist = \"categorical\","
                          " size = 10, weight = 1.0 }]", key="codes")
    specs, names = [], set()
    for index, code in enumerate(codes):
        where = f"codes[{index}]"
        if not isinstance(code, dict):
            raise RecipeError(f"must be a table {{ name, dist, size, weight }}, got {code!r}", key=where)
        missing = [key for key in ("name", "dist") if key not in code]
        if missing:
            raise RecipeError(f"lacks {', '.join(missing)}", key=where)
        name, dist = code["name"], code["dist"]
        size, weight = code.get("size", 1), code.get("weight", 1.0)
        if not isinstance(name, str) or not name.isidentifier() or name == "z":
            raise RecipeError(f"must be a word (letters, digits, _) other than 'z', got {name!r}", key=f"{where}.name")
        if name in names:
            raise RecipeError(f"code {name!r} is defined twice", key=f"{where}.name")
        if not isinstance(dist, str):
            raise RecipeError(f"must be a distribution name, got {dist!r}", key=f"{where}.dist")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
            raise RecipeError(f"must be an integer from 1 to 4096, got {size!r}", key=f"{where}.size")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < 1e6:
            raise RecipeError(f"must be a number >= 0 (the code's λ), got {weight!r}", key=f"{where}.weight")
        names.add(name)
        options = {key: value for key, value in code.items() if key not in CODE_KEYS}
        specs.append(CodeSpec(name, dist, size, float(weight), options))
    return specs


class QHead(nn.Module):
    """FC-BN-lReLU-FC from the shared features to every code's parameters, concatenated."""

    def __init__(self, feature_dim: int, hidden: int, outputs: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.1, True),
            nn.Linear(hidden, outputs),
        )
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, features):
        return self.net(features)


class SplitQHead(nn.Module):
    """Two :class:`QHead` on the same features, one for the categorical codes and one for the
    rest. The output has :class:`QHead`'s columns, in the recipe's order of the codes."""

    def __init__(self, feature_dim: int, hidden: int, sizes: list[int], categorical: list[bool]):
        super().__init__()
        self.categorical = QHead(feature_dim, hidden, sum(s for s, kind in zip(sizes, categorical) if kind))
        self.continuous = QHead(feature_dim, hidden, sum(s for s, kind in zip(sizes, categorical) if not kind))
        # Where each of the recipe-ordered columns sits in [categorical outputs, continuous outputs].
        offsets = {True: 0, False: self.categorical.net[-1].out_features}
        order = []
        for size, kind in zip(sizes, categorical):
            order.extend(range(offsets[kind], offsets[kind] + size))
            offsets[kind] += size
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, features):
        return torch.cat([self.categorical(features), self.continuous(features)], dim=1)[:, self.order]


class InfoGAN:
    """The per-run plugin object made from a ``[plugins.infogan]`` table."""

    def __init__(self, settings: dict):
        self.specs = parse_codes(settings["codes"])
        hidden = settings["q_hidden"]
        if not 1 <= hidden <= 65536:
            raise RecipeError(f"must be from 1 to 65536, got {hidden}", key="q_hidden")
        self.hidden = hidden
        self.q_split = settings["q_split"]
        if not 0 <= settings["q_lr"] < 1:
            raise RecipeError(f"must be in [0, 1) (0: train.d_lr), got {settings['q_lr']}", key="q_lr")
        self.q_lr = settings["q_lr"]
        self.traverse_every_sample = settings["traverse_every_sample"]
        for key in ("real_info_weight", "consistency_weight", "moved_fake_weight"):
            if not 0 <= settings[key] < 1e6:
                raise RecipeError(f"must be a number >= 0 (0: off), got {settings[key]}", key=key)
        self.real_info_weight = float(settings["real_info_weight"])
        self.consistency_weight = float(settings["consistency_weight"])
        self.moved_fake_weight = float(settings["moved_fake_weight"])
        self.moves = parse_moves(settings["moves"], settings["move_values"])
        self.code_moves = parse_code_moves(settings["code_moves"], self.specs, self.moves)
        if not 0 <= settings["code_move_weight"] < 1e6:
            raise RecipeError(f"must be a number >= 0 (0: off), got {settings['code_move_weight']}", key="code_move_weight")
        self.code_move_weight = float(settings["code_move_weight"])
        self.code_move_trunk = settings["code_move_trunk"]
        if settings["code_move_after"] < 0:
            raise RecipeError(f"must be a number of steps >= 0, got {settings['code_move_after']}", key="code_move_after")
        self.code_move_after = settings["code_move_after"]
        self.move_draws: torch.Tensor | None = None  # the step's draws behind the moved real batch
        self.codes: dict[str, LatentDistribution] = {}

    # -- setup -----------------------------------------------------------------------------

    @hookimpl
    def ganforge_generator_inputs(self, run):
        for index, spec in enumerate(self.specs):
            where = f"plugins.infogan.codes[{index}]"
            code = run.make_distribution(spec.dist, spec.size, spec.options, key=where, name_key=f"{where}.dist")
            if type(code).nll is LatentDistribution.nll:
                raise RecipeError(f"{spec.dist} has no likelihood (no nll), so Q cannot learn it: use it as"
                                  " latent.noise, or pick a distribution with one", key=f"{where}.dist")
            if spec.name in self.code_moves and not hasattr(code, "split_params"):
                raise RecipeError(f"{code.describe()} has no Gaussian mean for Q to predict; tie a uniform or"
                                  " gaussian code to a move", key=f"plugins.infogan.code_moves.{spec.name}")
            self.codes[spec.name] = code
        if self.q_split and len(self.categorical_codes()) in (0, len(self.codes)):
            raise RecipeError("splits Q between the categorical codes and the others, but the codes are all of one"
                              " kind: set it to false, or add a code of the other kind", key="plugins.infogan.q_split")
        return list(self.codes.items())

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        sizes = [distribution.param_dim for distribution in self.codes.values()]
        if self.q_split:
            categorical = set(self.categorical_codes())
            head = SplitQHead(feature_dim, self.hidden, sizes, [name in categorical for name in self.codes])
        else:
            head = QHead(feature_dim, self.hidden, sum(sizes))
        head.learning_rate = self.q_lr  # 0: the discriminator's rate
        return [(HEAD, head)]

    # -- per step --------------------------------------------------------------------------

    def code_params(self, q_output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Q's output split into each code's parameters, in the order of the recipe."""
        sizes = [distribution.param_dim for distribution in self.codes.values()]
        return dict(zip(self.codes, torch.split(q_output, sizes, dim=1)))

    def information_terms(self, ctx) -> list[LossTerm]:
        params = self.code_params(ctx.d_fake.heads[HEAD])
        terms = []
        for spec in self.specs:
            nll = self.codes[spec.name].nll(ctx.latents[spec.name], params[spec.name]).mean()
            terms.append(LossTerm(f"info/{spec.name}", nll, spec.weight))
            entropy = self.codes[spec.name].entropy()
            if ctx.phase == "D" and entropy is not None:
                # H(c) - NLL: the variational lower bound on I(c; G(z, c)) (Barber and Agakov), valid
                # for any Q whose nll is a normalised density. It reaches ln K when Q recovers a
                # categorical code; for a continuous code with a fixed σ it stays below
                # H(c) - log(σ √(2πe)) and may be negative (docs/writing-a-latent-plugin.md).
                ctx.log(f"mi/{spec.name}", entropy - nll.detach())
        return terms

    def categorical_codes(self) -> list[str]:
        return [name for name, code in self.codes.items() if code.kind == "categorical"]

    def ties_codes_to_moves(self) -> bool:
        return bool(self.code_move_weight and self.code_moves)

    def uses_moved_view(self) -> bool:
        return bool(self.consistency_weight and self.categorical_codes()) or self.ties_codes_to_moves()

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        """The moved copies of the real batch behind the consistency and code-move terms: the core
        puts them in the discriminator's real/fake pass, leaving its batch statistics alone."""
        if not self.uses_moved_view():
            return []
        # Its own stream, checkpointed by the core; the draws wait for the step's loss terms.
        moved, self.move_draws = jitter_with_draws(real, run.rng(MOVES_STREAM), self.moves)
        return [(MOVED_VIEW, moved)]

    def real_terms(self, ctx) -> list[LossTerm]:
        """Unsupervised terms on the real batch for each categorical code (off unless weighted)."""
        categorical = self.categorical_codes()
        if not categorical or not (self.real_info_weight or self.consistency_weight):
            return []
        params = self.code_params(ctx.d_real.heads[HEAD])
        moved = self.code_params(ctx.views[MOVED_VIEW].heads[HEAD]) if self.consistency_weight else None
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
        real batch and its moved copy (off unless weighted).

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
            moved = self.code_params(ctx.views[MOVED_VIEW].heads[HEAD])
        else:
            head = unwrap(ctx.run.discriminator).heads[HEAD]
            with frozen_batch_statistics(head):
                moved = self.code_params(head(ctx.views[MOVED_VIEW].features.detach()))
        plain = self.code_params(ctx.d_real.heads[HEAD])
        terms = []
        for name, move in self.code_moves.items():
            code = self.codes[name]  # a Gaussian-scored code: its parameters start with the mean
            before, after = code.split_params(plain[name])[0], code.split_params(moved[name])[0]
            draw = self.move_draws[:, MOVE_DRAWS.index(move)].unsqueeze(1)
            terms.append(LossTerm(f"code_move/{name}", move_error(before, after, draw), self.code_move_weight))
        return terms

    def moved_fake_terms(self, ctx) -> list[LossTerm]:
        """Each categorical code's negative log-likelihood under Q on the fakes moved at random
        (off unless weighted). In the D phase (detached fakes) it teaches Q to read the category
        whatever the move; in the G phase the gradient goes back through the move into G, which
        must then draw the category in what the moves leave alone. Its own random stream, drawn in
        both phases, so the other terms keep their draws."""
        categorical = self.categorical_codes()
        if not self.moved_fake_weight or not categorical:
            return []
        moved, _ = jitter_with_draws(ctx.fake, ctx.run.rng(FAKE_MOVES_STREAM), self.moves)
        params = self.code_params(ctx.discriminate(moved, ctx.latents).heads[HEAD])
        return [LossTerm(f"moved_info/{name}", self.codes[name].nll(ctx.latents[name], params[name]).mean(),
                         self.moved_fake_weight) for name in categorical]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        # Fakes are detached here: the information gradient trains Q and the shared trunk.
        return self.information_terms(ctx) + self.real_terms(ctx) + self.code_move_terms(ctx) + self.moved_fake_terms(ctx)

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        # Fakes are attached and D is frozen: the same terms now train the generator.
        return self.information_terms(ctx) + self.moved_fake_terms(ctx)

    # -- pictures --------------------------------------------------------------------------

    @hookimpl
    def ganforge_samples(self, run, step, path):
        if not self.traverse_every_sample and step != run.recipe.train.steps:
            return
        for name in self.codes:
            save_traversal(run, name, path.parent / f"traverse_{name}_{step:07d}.png", seed=run.recipe.run.seed)

    # -- evaluation -------------------------------------------------------------------------

    @torch.inference_mode()
    def predict_codes(self, run, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Q's parameters for each code on ``images`` (in [-1, 1]), discriminator in eval mode."""
        discriminator = run.discriminator
        was_training = discriminator.training
        discriminator.eval()
        try:
            return self.code_params(discriminator(images).heads[HEAD])
        finally:
            discriminator.train(was_training)


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


@hookimpl
def ganforge_register_run_plugins(register):
    register("infogan", InfoGAN, defaults=DEFAULTS)
