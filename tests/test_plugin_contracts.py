"""Plugin authors' mistakes, each made in a throwaway package installed through a real entry point
(a ``.dist-info`` folder on the path, as pip leaves it): one line naming the plugin, the member at
fault and what was expected, with exit code 3, at ``ganforge check`` where possible."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from ganforge.pluginmanager import DISABLE_ENV

from .conftest import assert_one_line_cli_error, invoke, tiny_recipe, write_recipe

#: A Beta-distributed code written with public helpers only (ganforge.sampling.beta draws from the
#: run's generator). Each test below breaks one thing in it.
BETA_PLUGIN = '''
import torch
from torch.distributions import Beta as TorchBeta
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.latents import LatentDistribution, reject_unknown_options
from ganforge.sampling import beta


class Beta(LatentDistribution):
    """Values in (0, 1); Q predicts both concentrations of a Beta for each column."""

    kind = "continuous"

    def __init__(self, size, a=2.0, b=2.0, **options):
        reject_unknown_options(type(self), options)
        super().__init__(size)
        if not (a > 0 and b > 0):
            raise ValueError(f"a and b must be greater than 0, got a={a!r} b={b!r}")
        self.a, self.b = float(a), float(b)

    @property
    def param_dim(self):
        return 2 * self.size

    def sample(self, n, generator, device="cpu"):
        return beta((n, self.size), self.a, self.b, generator=generator).to(device)

    def nll(self, value, params):
        raw = params.reshape(params.shape[0], self.size, 2)
        concentrations = F.softplus(raw) + 1e-3
        log_p = TorchBeta(concentrations[..., 0], concentrations[..., 1]).log_prob(value.clamp(1e-6, 1 - 1e-6))
        return -log_p.sum(dim=1)

    def traversal_values(self, steps):
        return torch.linspace(0.05, 0.95, steps).unsqueeze(1).repeat(1, self.size)

    def entropy(self):
        return self.size * float(TorchBeta(torch.tensor(self.a), torch.tensor(self.b)).entropy())


@hookimpl
def ganforge_register_latents(register):
    register("beta", Beta)
'''

PACKAGE = "gf-beta 0.1.0"
CODE = {"name": "alpha", "dist": "beta", "size": 2, "weight": 1.0}


def mistake(old: str, new: str) -> str:
    assert old in BETA_PLUGIN, old
    return BETA_PLUGIN.replace(old, new)


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(source)`` installs module ``gf_beta`` with ``source`` as the distribution
    gf-beta 0.1.0, whose ``ganforge`` entry point ``beta`` names it."""
    folder = tmp_path / "site"

    def install(source: str, entry_point: str = "gf_beta") -> None:
        folder.mkdir()
        (folder / "gf_beta.py").write_text(textwrap.dedent(source))
        dist_info = folder / "gf_beta-0.1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-beta\nVersion: 0.1.0\n")
        (dist_info / "entry_points.txt").write_text(f"[ganforge]\nbeta = {entry_point}\n")
        monkeypatch.syspath_prepend(str(folder))

    yield install
    sys.modules.pop("gf_beta", None)


def recipe_with(tmp_path, code=CODE, **sections):
    values = tiny_recipe(tmp_path / "runs", plugins={"infogan": {"codes": [code]}}, **sections)
    return write_recipe(tmp_path / "beta.toml", values)


def check(tmp_path, **sections):
    return invoke("check", recipe_with(tmp_path, **sections))


# -- the Beta code written right ------------------------------------------------------------------


def test_a_beta_code_written_with_public_helpers_passes_check_trains_and_logs_its_mi_bound(tmp_path, install):
    install(BETA_PLUGIN)
    assert check(tmp_path).exit_code == 0
    result = invoke("run", recipe_with(tmp_path))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert {"loss/D/info/alpha", "loss/G/info/alpha", "mi/alpha"} <= set(records[-1])


def test_the_beta_code_resumes_bit_for_bit(tmp_path, install):
    from .conftest import assert_same_training

    install(BETA_PLUGIN)
    recipe = recipe_with(tmp_path)
    straight, halves = f"run.out_dir={tmp_path / 'straight'}", f"run.out_dir={tmp_path / 'halves'}"
    assert invoke("run", recipe, "--set", straight).exit_code == 0
    assert invoke("run", recipe, "--set", halves, "--set", "train.steps=2").exit_code == 0
    assert invoke("run", recipe, "--set", halves, "--resume").exit_code == 0
    assert_same_training(tmp_path / "straight/tiny/checkpoints/last.pt", tmp_path / "halves/tiny/checkpoints/last.pt")


def test_the_beta_helper_draws_the_run_generator_s_stream_only():
    from ganforge.sampling import beta

    torch.manual_seed(123)
    first = beta((4, 2), 2.0, 2.0, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(456)  # the global generator does not matter
    assert torch.equal(first, beta((4, 2), 2.0, 2.0, generator=torch.Generator().manual_seed(5)))


# -- each mistake, at `ganforge check` -------------------------------------------------------------


@pytest.mark.parametrize(("source", "member", "expected"), [
    (mistake("return 2 * self.size", "return 2 * self.size - 1"), "nll",
     "nll raised RuntimeError: shape '[8, 2, 2]' is invalid for input of size 24; it was given params of shape (8, 3):"
     " param_dim must be the number of parameters nll reads"),
    (mistake("beta((n, self.size),", "beta((n,),"), "sample",
     "sample returned shape (8,), expected (8, 2): (n, input_dim) with input_dim = 2"),
    (mistake("return -log_p.sum(dim=1)", "return -log_p"), "nll",
     "nll returned shape (8, 2), expected (8,): one value per sample, summed over the code's dimensions"),
    (mistake("return -log_p.sum(dim=1)", "return -log_p.sum()"), "nll",
     "nll returned shape (), expected (8,): one value per sample, summed over the code's dimensions"),
    (mistake("return 2 * self.size", "return 2 * self.size + 1"), "nll",
     "nll raised RuntimeError: shape '[8, 2, 2]' is invalid for input of size 40"),
    (mistake("generator=generator).to(device)", "generator=torch.Generator().manual_seed(torch.seed())).to(device)"),
     "sample", "sample gave different values from the same seed: draw only from the generator it is given"),
    (mistake(".to(device)", ".double().to(device)"), "sample", "sample returned torch.float64, expected torch.float32"),
    (mistake("return self.size * float(", "return self.size * ("), "entropy",
     "entropy returned tensor(-0.2502), expected a finite number of nats or None"),
    (mistake("steps).unsqueeze(1).repeat(1, self.size)", "steps)"), "traversal_values",
     "traversal_values returned shape (5,), expected (5, 2): (columns, input_dim)"),
])
def test_a_broken_distribution_is_one_line_at_check_naming_code_distribution_package_and_member(
        tmp_path, install, source, member, expected):
    install(source)
    line = assert_one_line_cli_error(check(tmp_path), 3, f"code 'alpha': beta ({PACKAGE}): {expected}")
    assert f": {member} " in line


def test_the_same_check_runs_before_the_first_training_step_and_leaves_nothing_behind(tmp_path, install):
    install(mistake("return -log_p.sum(dim=1)", "return -log_p"))
    result = invoke("run", recipe_with(tmp_path))
    assert_one_line_cli_error(result, 3, f"code 'alpha': beta ({PACKAGE}): nll returned shape (8, 2)")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_distribution_used_as_the_noise_is_checked_too(tmp_path, install):
    install(mistake("beta((n, self.size),", "beta((n,),"))
    values = tiny_recipe(tmp_path / "runs", latent={"noise": "beta", "noise_dim": 4, "noise_options": {"a": 3.0}})
    result = invoke("check", write_recipe(tmp_path / "noise.toml", values))
    assert_one_line_cli_error(result, 3, f"latent.noise: beta ({PACKAGE}): sample returned shape (8,), expected (8, 4)")


def test_noise_options_reach_the_distribution_and_bad_ones_name_the_key(tmp_path, install):
    install(BETA_PLUGIN)
    values = tiny_recipe(tmp_path / "runs", latent={"noise": "beta", "noise_dim": 4, "noise_options": {"a": 3.0}})
    assert invoke("check", write_recipe(tmp_path / "noise.toml", values)).exit_code == 0
    values["latent"]["noise_options"] = {"alpha": 3.0}
    result = invoke("check", write_recipe(tmp_path / "bad.toml", values))
    assert_one_line_cli_error(result, 2, "latent.noise_options: beta: unknown option 'alpha'; Beta takes: a, b")


# -- mistakes in the package itself ----------------------------------------------------------------


def test_a_plugin_without_hookimpl_warns_and_its_distribution_is_unknown_with_a_hint(tmp_path, install):
    install(mistake("@hookimpl\ndef ganforge_register_latents", "def ganforge_register_latents"))
    listing = invoke("plugins")
    assert listing.exit_code == 0
    assert (f"warning: plugin 'beta' from {PACKAGE}: ganforge_register_latents looks like that hook but is not"
            " marked @hookimpl, so it is never called") in listing.stderr.splitlines()
    assert f"warning: plugin 'beta' from {PACKAGE} implements no hook" in listing.stderr
    result = check(tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert ("plugins.infogan.codes[0].dist: unknown distribution 'beta'; known: bernoulli, categorical, gaussian,"
            " normal, uniform") in result.stderr
    assert "declare a 'ganforge' entry point (`ganforge plugins` lists what was found)" in result.stderr


def test_a_misspelt_marked_hook_is_an_error_with_did_you_mean(tmp_path, install):
    install(mistake("def ganforge_register_latents", "def ganforge_register_latent"))
    assert_one_line_cli_error(
        invoke("plugins"), 3,
        f"plugin 'beta' from {PACKAGE} does not match the hook specs: it marks ganforge_register_latent with"
        " @hookimpl, but no hook has that name; did you mean 'ganforge_register_latents'?")


def test_plugins_lists_a_plugin_that_fails_to_import_and_other_commands_stop_on_it(tmp_path, install):
    install("import a_module_that_is_not_installed\n")
    listing = invoke("plugins")
    assert listing.exit_code == 0, listing.stderr
    assert "beta" in listing.stdout and "(failed to" in listing.stdout  # the table may wrap the cell
    assert "dcgan" in listing.stdout  # the others are listed as usual
    assert (f"warning: plugin 'beta' from {PACKAGE} failed to import (gf_beta): ModuleNotFoundError: No module named"
            f" 'a_module_that_is_not_installed'; disable it with {DISABLE_ENV}=beta") in listing.stderr
    assert_one_line_cli_error(check(tmp_path), 3, f"plugin 'beta' from {PACKAGE} failed to import")


def test_an_unknown_distribution_without_a_close_name_hints_at_the_entry_point(tmp_path):
    result = check(tmp_path, code={"name": "alpha", "dist": "kumaraswamy"})
    assert_one_line_cli_error(result, 2, "unknown distribution 'kumaraswamy'; known:",
                              "must be installed in this environment and declare a 'ganforge' entry point")


# -- exit codes and run directories across commands ------------------------------------------------


FAIL_AT_STEP = '''
from ganforge import hookimpl

@hookimpl
def ganforge_generator_loss_terms(ctx):
    if ctx.step == {step}:
        raise RuntimeError("the term failed")
    return []
'''


def test_a_run_failing_at_step_one_leaves_nothing_that_blocks_the_same_command(tmp_path, install, monkeypatch):
    install(FAIL_AT_STEP.format(step=1))
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    assert_one_line_cli_error(invoke("run", recipe), 3, f"plugin 'beta' from {PACKAGE} failed in"
                              " ganforge_generator_loss_terms: RuntimeError: the term failed",
                              f"so {tmp_path / 'runs' / 'tiny'} was removed: the same command starts it again")
    assert not (tmp_path / "runs" / "tiny").exists()
    monkeypatch.setenv(DISABLE_ENV, "beta")
    assert invoke("run", recipe).exit_code == 0


def test_a_run_failing_after_a_checkpoint_keeps_it_and_says_how_to_resume(tmp_path, install, monkeypatch):
    install(FAIL_AT_STEP.format(step=3))
    values = tiny_recipe(tmp_path / "runs", train={"checkpoint_every": 2, "keep_checkpoints": 1})
    recipe = write_recipe(tmp_path / "tiny.toml", values)
    assert_one_line_cli_error(invoke("run", recipe), 3, "RuntimeError: the term failed;",
                              f"; the run's checkpoints are kept (last: step 2); once fixed, resume with: ganforge run {recipe}"
                              " --resume")
    monkeypatch.setenv(DISABLE_ENV, "beta")
    assert invoke("run", recipe, "--resume").exit_code == 0


def test_usage_mistakes_in_sample_and_run_exit_2(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", train={"steps": 1}))
    assert invoke("run", recipe).exit_code == 0
    assert_one_line_cli_error(invoke("run", recipe), 2, "already holds a run; continue it with --resume")
    checkpoint = tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt"
    assert_one_line_cli_error(invoke("sample", checkpoint, "--out", tmp_path / "x.png", "--traverse", "zz"), 2,
                              "unknown code 'zz'")


def test_a_bug_in_ganforge_exits_1_with_its_traceback_and_a_request_to_report_it(tmp_path, monkeypatch):
    import ganforge.launch

    def broken_check(*args, **kwargs):
        return {}["a key the core forgot"]

    monkeypatch.setattr(ganforge.launch, "check_recipe", broken_check)
    result = invoke("check", write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs")))
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: a bug in ganforge 0.1.0: KeyError: 'a key the core"
                                                     " forgot'; please report it with the traceback above")


def test_help_and_the_readme_show_the_same_exit_codes():
    from ganforge.errors import EXIT_CODES

    from .conftest import REPO

    help_text = invoke("--help").stdout
    readme = (REPO / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in help_text
        assert f"| {code} | {meaning} |" in readme


# -- the other registries: models, losses, datasets, metrics ------------------------------------------


def registering(hook: str, name: str, value):
    """A plugin object whose ``hook`` registers ``value`` as ``name``."""
    from ganforge import hookimpl

    def register_it(register):
        register(name, value)

    plugin = type("Probe", (), {})()
    setattr(plugin, hook, hookimpl(register_it))
    return plugin


def model_family(change):
    """The paper's MNIST networks with ``change(generator, discriminator)`` applied."""
    from ganforge_plugins.models.dcgan import build_dcgan_28

    def build(image_shape, input_dim):
        generator, discriminator = build_dcgan_28(image_shape, input_dim)
        return change(generator, discriminator)

    return build


class Unsquashed(torch.nn.Module):
    """A generator that forgot its final tanh."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, z):
        return self.generator(z) * 1000  # no longer squashed into [-1, 1]


class Flat(torch.nn.Module):
    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, z):
        return self.generator(z).flatten(1)


def unsqueezed(discriminator):
    adversarial = discriminator.adversarial
    discriminator.adversarial = lambda features: adversarial(features).unsqueeze(1)
    return discriminator


@pytest.mark.parametrize(("change", "expected"), [
    (lambda g, d: (Unsquashed(g), d), "model probe (plugin 'probe'): generator returned values up to"),
    (lambda g, d: (Flat(g), d), "model probe (plugin 'probe'): generator returned shape (2, 784), expected (2, 1, 28, 28)"),
    (lambda g, d: (g, unsqueezed(d)), "model probe (plugin 'probe'): discriminator.adversarial returned shape (2, 1),"
                                      " expected (2,): one logit per image"),
])
def test_a_model_family_is_checked_for_shapes_and_range(tmp_path, change, expected):
    from ganforge.contracts import ContractError

    from .conftest import make_host, run_tiny

    host = make_host(("probe", registering("ganforge_register_models", "probe", model_family(change))))
    with pytest.raises(ContractError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        run_tiny(tmp_path, host, model={"name": "probe"})
    assert not (tmp_path / "runs").exists()


class PerSampleLoss:
    """Forgot to reduce over the batch."""

    def discriminator_loss(self, real_logits, fake_logits):
        return -real_logits + fake_logits

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


class ConstantLoss:
    def discriminator_loss(self, real_logits, fake_logits):
        return torch.tensor(0.0)

    def generator_loss(self, fake_logits):
        return -fake_logits.mean()


@pytest.mark.parametrize(("loss", "expected"), [
    (PerSampleLoss(), "loss probe (plugin 'probe'): discriminator_loss returned shape (4,), expected (): a scalar"),
    (ConstantLoss(), "loss probe (plugin 'probe'): discriminator_loss does not depend on the logits"),
    (object(), "loss probe (plugin 'probe'): discriminator_loss is missing"),
])
def test_a_loss_is_checked_for_a_scalar_with_a_gradient(tmp_path, loss, expected):
    from ganforge.contracts import ContractError

    from .conftest import make_host, run_tiny

    host = make_host(("probe", registering("ganforge_register_losses", "probe", loss)))
    with pytest.raises(ContractError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        run_tiny(tmp_path, host, loss={"name": "probe"})


def test_a_dataset_is_checked_for_what_it_returns(tmp_path):
    from ganforge.contracts import ContractError
    from ganforge.data import ImageData

    from .conftest import make_host, run_tiny

    images = torch.zeros(32, 1, 28, 28, dtype=torch.uint8)
    cases = [
        (lambda settings: {"images": images}, "dataset probe (plugin 'probe'): load returned dict, expected"
                                              " ganforge.data.ImageData"),
        (lambda settings: ImageData(images, {"digit": torch.zeros(32, dtype=torch.int32)}),
         "dataset probe (plugin 'probe'): load returned label 'digit' as torch.int32, expected torch.int64"),
    ]
    for load, expected in cases:
        host = make_host(("probe", registering("ganforge_register_datasets", "probe", load)))
        with pytest.raises(ContractError) as caught:
            run_tiny(tmp_path, host, data={"name": "probe"})
        assert str(caught.value) == expected


def test_a_metric_must_return_a_dict_of_floats(tmp_path):
    from ganforge.contracts import ContractError
    from ganforge.launch import evaluate_run

    from .conftest import make_host, run_tiny

    run = run_tiny(tmp_path)
    host = make_host(("probe", registering("ganforge_register_metrics", "probe", lambda run, data: 0.5)))
    with pytest.raises(ContractError, match=r"metric probe \(plugin 'probe'\): result is float, expected a dict"):
        evaluate_run(run.directory, host)
    host = make_host(("probe", registering("ganforge_register_metrics", "probe", lambda run, data: {"x": torch.tensor(2)})))
    results, *_ = evaluate_run(run.directory, host)
    assert results["x"] == 2.0 and isinstance(results["x"], float)


def test_checking_a_run_changes_nothing_it_trains(tmp_path):
    """The contract checks draw from their own generators and run the models in eval mode: the
    first step's inputs and batch-norm statistics are what they were without them."""
    from ganforge.contracts import check_latent, check_models

    from .conftest import make_host, run_tiny

    run = run_tiny(tmp_path, make_host(), train={"steps": 1})
    state = torch.get_rng_state()
    buffers = {name: value.clone() for name, value in run.generator.state_dict().items()}
    check_latent(run.inputs["z"], "z", run.device)
    check_models(run.generator, run.discriminator.trunk, run.image_shape, run.input_dim, "dcgan-28", run.device)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(buffers[name], value) for name, value in run.generator.state_dict().items())
    assert run.generator.training
