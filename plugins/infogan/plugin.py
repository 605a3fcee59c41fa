"""InfoGAN (Chen et al. 2016) as a plugin: a plain GAN plus three changes.

1. Codes sampled from the distributions the recipe names are extra generator inputs.
2. A Q head on the discriminator's shared features predicts each code's parameters.
3. Each code's negative log-likelihood under Q, weighted by its λ, is added to the
   discriminator's objective (on the detached fakes: trains Q and the shared trunk) and to the
   generator's (on the attached fakes: trains G). That is the paper's ``min over G, Q`` of
   ``-λ L_I``, with one summed objective per network.

Switched on by a ``[plugins.infogan]`` table; without it the recipe is plain DCGAN. Only the
``LatentDistribution`` interface is used, so any registered distribution can be a code.

Four further terms, off by default, are not the paper's: ``real_info_weight``,
``consistency_weight``, ``code_moves`` and ``moved_fake_weight`` teach Q what a code must not
depend on, or what it must mean, from real images and moved copies. They live in
:mod:`.extra_terms`; this module only hands them the codes, Q's predictions and the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.checks import accepting, between
from ganforge.errors import RecipeError
from ganforge.latents import LatentDistribution
from ganforge.losses import LossTerm
from ganforge.models import DiscriminatorOutput, unwrap
from ganforge.plugin_spec import CODE_READER, Option, PluginSpec
from ganforge.traversal import save_traversal

from .extra_terms import OPTIONS as EXTRA_TERM_OPTIONS
from .extra_terms import ExtraTerms


@accepting("[0, 1)")
def q_rate(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1) (0: train.d_lr)"


OPTIONS = {
    "codes": Option([], "each code: { name, dist, size, weight, ...options for the distribution }"),
    "q_hidden": Option(128, "width of Q's hidden layer: the paper's FC128-BN-lReLU-FC", between(1, 65536)),
    # So that a term on the continuous codes (code_moves) does not reshape the layer the
    # categories are read from.
    "q_split": Option(False, "a Q hidden layer for the categorical codes and one for the others; false: one for"
                      " all, as in the paper"),
    "q_lr": Option(0.0, "learning rate of the Q head; 0 trains it at train.d_lr with the rest of D", q_rate),
    "traverse_every_sample": Option(True, "write a traversal grid per code at every sample cadence (always at the end)"),
    # The terms beyond the paper: their weights, moves and codes tied to moves.
    **EXTRA_TERM_OPTIONS,
}
CODE_KEYS = ("name", "dist", "size", "weight")
HEAD = "q"


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
    """The per-run plugin object made from a ``[plugins.infogan]`` table.

    The paper's changes are its own methods; the terms beyond the paper are ``extra_terms``, which
    reads the codes and Q's predictions from it and adds to the same hooks."""

    def __init__(self, settings: dict):
        self.specs = parse_codes(settings["codes"])
        self.hidden = settings["q_hidden"]
        self.q_split = settings["q_split"]
        self.q_lr = settings["q_lr"]
        self.traverse_every_sample = settings["traverse_every_sample"]
        self.extra_terms = ExtraTerms(settings, self)
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
            self.extra_terms.check_code(spec.name, code)
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

    def q_predictions(self, output: DiscriminatorOutput) -> dict[str, torch.Tensor]:
        """Each code's parameters as Q predicts them in one of D's outputs."""
        return self.code_params(output.heads[HEAD])

    def q_head(self, run) -> nn.Module:
        """Q itself, for a pass of its own on features the discriminator computed."""
        return unwrap(run.discriminator).heads[HEAD]

    def categorical_codes(self) -> list[str]:
        return [name for name, code in self.codes.items() if code.kind == "categorical"]

    def information_terms(self, ctx) -> list[LossTerm]:
        params = self.q_predictions(ctx.d_fake)
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

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        # The moved real batch of the extra terms: in D's real/fake pass, its batch statistics left alone.
        return self.extra_terms.moved_real_views(run, real)

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        # Fakes are detached here: the information gradient trains Q and the shared trunk.
        return self.information_terms(ctx) + self.extra_terms.discriminator_terms(ctx)

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        # Fakes are attached and D is frozen: the same terms now train the generator.
        return self.information_terms(ctx) + self.extra_terms.generator_terms(ctx)

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
            return self.q_predictions(discriminator(images))
        finally:
            discriminator.train(was_training)


SPEC = PluginSpec("infogan", InfoGAN, OPTIONS, doc="latent codes, a Q head and the information loss (Chen et al. 2016)",
                  provides=frozenset({CODE_READER}))
DEFAULTS = SPEC.defaults()


@hookimpl
def ganforge_register_run_plugins(register):
    register(SPEC)
