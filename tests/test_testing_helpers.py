"""ganforge.testing, the helpers a plugin author's tests use: one real step with the author's
plugin and the built-ins alone, a few steps of training into a folder, and the documented example
(docs/testing-plugins.md) run as it is written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
import torch

from ganforge import hookimpl, testing
from ganforge.losses import LossTerm

from .conftest import REPO

GUIDE = REPO / "docs" / "testing-plugins.md"


class FlipConsistency:
    """bCR's real half in small: D's logits on a mirrored real batch are pulled towards its
    logits on the batch itself (Zhao et al. 2021, eq. 3, with a flip as the augmentation)."""

    def __init__(self, settings):
        self.weight = settings["real_weight"]

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        return [("flip", real.flip(3))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        gap = ctx.views["flip"].logits - ctx.d_real.logits
        return [LossTerm("bcr/real", gap.pow(2).mean(), weight=self.weight)]


class RegistersFlip:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register("flip", FlipConsistency, defaults={"real_weight": 10.0})


def flip_recipe(tmp_path, weight=10.0, **sections):
    return testing.tiny_recipe(tmp_path / "runs", plugins={"flip": {"real_weight": weight}}, **sections)


def test_step_once_runs_the_authors_term_on_a_tiny_batch_and_returns_what_the_hooks_saw(tmp_path):
    result = testing.step_once(flip_recipe(tmp_path), RegistersFlip())
    assert result.images == 4 and result.run.images_seen == 4 and result.run.step == 1
    assert result.d_ctx.phase == "D" and result.g_ctx.phase == "G" and result.g_ctx.logs is result.logs
    # The logged term is the one the hook computed from what D saw in this step.
    views, real = result.d_ctx.views["flip"].logits, result.d_ctx.d_real.logits
    assert views.shape == real.shape == (4,)
    torch.testing.assert_close(result.logs["loss/D/bcr/real"], (views - real).pow(2).mean().detach())
    adv, term, total = (result.logs[f"loss/D/{name}"] for name in ("adv", "bcr/real", "total"))
    scale = float(adv.abs() + 10 * term.abs())
    assert abs(float(total - (adv + 10 * term))) <= 4 * torch.finfo(torch.float32).eps * scale
    assert not (tmp_path / "runs").exists()


def test_the_authors_term_reaches_ds_gradient_and_only_its_weight_changes_it(tmp_path):
    """The same first step with the term's weight at 0 and at 10: the adversarial loss is the
    same, D's gradient is not (the term trains D), and G's gradient is the same (it is D's term)."""
    off = testing.step_once(flip_recipe(tmp_path, weight=0.0), RegistersFlip())
    on = testing.step_once(flip_recipe(tmp_path, weight=10.0), RegistersFlip())
    assert torch.equal(off.logs["loss/D/adv"], on.logs["loss/D/adv"])
    d_off, d_on = (next(r.run.discriminator.trunk.parameters()).grad for r in (off, on))
    assert d_off is not None and not torch.equal(d_off, d_on)
    assert float(on.logs["loss/D/bcr/real"]) > 0


def test_step_once_takes_the_recipes_discriminator_steps(tmp_path):
    result = testing.step_once(flip_recipe(tmp_path), RegistersFlip(), overrides=["train.d_steps=3"])
    assert result.run.d_steps == 3 and result.run.images_seen == 3 * 4


def test_make_host_has_the_builtins_and_the_authors_plugins_and_nothing_else_installed():
    host = testing.make_host(RegistersFlip())
    assert "flip" in host.run_plugins and "dcgan-28" in host.models
    installed = {name for name, _ in testing.make_host(installed=True).plugins()}
    builtins = {name for name, _ in testing.make_host().plugins()}
    assert builtins <= installed
    if importlib.util.find_spec("ganforge_vonmises") is not None:  # the example package, when installed
        assert "vonmises" in installed and "vonmises" not in builtins


def test_train_steps_writes_a_run_as_ganforge_run_does(tmp_path):
    run = testing.train_steps(flip_recipe(tmp_path), tmp_path / "out", RegistersFlip(), steps=2)
    directory = tmp_path / "out" / "tiny"
    assert run.step == 2 and run.directory == directory
    assert (directory / "checkpoints" / "last.pt").is_file() and (directory / "recipe.toml").is_file()
    assert "loss/D/bcr/real" in (directory / "metrics.jsonl").read_text()


def test_the_public_helpers_import_nothing_of_the_command_line():
    code = "import sys, ganforge.testing; print(sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'typer')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_the_guides_example_test_file_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    example = next(block for block in blocks if "def test_" in block)
    namespace: dict = {}
    exec(compile(example, str(GUIDE), "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) >= 3
    for test in tests:
        argument = {"tmp_path": tmp_path / test.__name__} if "tmp_path" in test.__code__.co_varnames else {}
        test(**argument)


@pytest.mark.parametrize("recipe_as", ["dict", "file"])
def test_a_recipe_mistake_is_the_error_ganforge_run_reports(tmp_path, recipe_as):
    from ganforge.errors import RecipeError
    from ganforge.recipe import dump_toml

    values = flip_recipe(tmp_path)
    recipe = values if recipe_as == "dict" else tmp_path / "r.toml"
    if recipe_as == "file":
        recipe.write_text(dump_toml(values))
    with pytest.raises(RecipeError, match=r"--set plugins.flip.real_wieght=1: unknown key; did you mean 'real_weight'"):
        testing.step_once(recipe, RegistersFlip(), overrides=["plugins.flip.real_wieght=1"])
