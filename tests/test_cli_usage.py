"""The ``ganforge`` command's own argument checks: wrong paths and flag values are usage errors
(exit code 2), and files that are not what a command needs are one-line errors."""

from __future__ import annotations

import re

import pytest
import torch

from .conftest import assert_one_line_cli_error, invoke, tiny_recipe, write_recipe
from .test_checkpoint import RunsCode


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", train={"steps": 1}))


@pytest.mark.parametrize(("arguments", "message"), [
    (["run", "{tmp}/absent.toml"], "Invalid value for 'recipe': file '{tmp}/absent.toml' does not exist"),
    (["check", "{tmp}"], "Invalid value for 'recipe': file '{tmp}' is a directory"),
    (["run", "{recipe}", "--resme"], "No such option: --resme"),
    (["run"], "Missing argument 'recipe'"),
    (["run", "{recipe}", "--set"], "Option '--set' requires an argument"),
    (["sample", "{tmp}/last.pt", "--out", "{tmp}/x.png", "--n", "0"], "Invalid value for '--n'"),
    (["sample", "{tmp}/last.pt", "--out", "{tmp}/x.png", "--seed", "minus one"], "Invalid value for '--seed'"),
    (["sample", "{tmp}/last.pt"], "Missing option '--out'"),
    (["eval", "{tmp}/absent"], "Invalid value for 'run_dir': dir '{tmp}/absent' does not exist"),
    (["eval", "{recipe}"], "Invalid value for 'run_dir': dir '{recipe}' is a file"),
    (["trian", "{recipe}"], "No such command 'trian'"),
])
def test_wrong_paths_and_flag_values_are_usage_errors(tmp_path, recipe, arguments, message):
    result = invoke(*[argument.format(tmp=tmp_path, recipe=recipe) for argument in arguments])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # The usage box wraps long lines: compare with its borders and line breaks taken out.
    flat = " ".join(result.stderr.replace("│", " ").split())
    assert message.format(tmp=tmp_path, recipe=recipe) in flat, result.stderr


def test_sampling_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, recipe):
    result = invoke("sample", recipe, "--out", tmp_path / "x.png")
    assert_one_line_cli_error(result, 2, f"{recipe} is not a ganforge checkpoint")


def test_a_checkpoint_crafted_to_run_code_is_refused_by_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "generator": RunsCode()}, evil)
    assert_one_line_cli_error(invoke("sample", evil, "--out", tmp_path / "x.png"), 2, f"refused to load {evil}")
    assert not (tmp_path / "PWNED").exists()


def test_resume_and_force_resume_without_a_run_are_one_line(recipe):
    for flag in ("--resume", "--force-resume"):
        assert_one_line_cli_error(invoke("run", recipe, flag), 2, "cannot resume:", "last.pt does not exist")


def test_an_out_dir_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    values = tiny_recipe(blocker / "runs", train={"steps": 1})
    result = invoke("run", write_recipe(tmp_path / "tiny.toml", values))
    assert_one_line_cli_error(result, 2, f"cannot write {blocker / 'runs' / 'tiny' / 'recipe.toml'}: Not a directory")


# -- a third-party run plugin, bCR-like, as its author meets ganforge ------------------------------

MIRROR_PLUGIN = '''
from ganforge import hookimpl
from ganforge.losses import LossTerm


class ConsistencyOnReal:
    def __init__(self, settings):
        self.weight, self.view = settings["real_weight"], settings["view"]

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        return [("flip", real.flip(3))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        gap = ctx.views[self.view].logits - ctx.d_real.logits  # a KeyError for a view not asked for
        return [LossTerm("mirror", gap.pow(2).mean(), weight=self.weight)]


@hookimpl
def ganforge_register_run_plugins(register):
    register("mirror", ConsistencyOnReal, defaults={"real_weight": 10.0, "view": "flip"})
'''


@pytest.fixture
def mirror_installed(tmp_path, monkeypatch):
    """``gf-mirror 0.1`` installed for real: its module and a .dist-info folder on the path."""
    import sys

    (tmp_path / "gf_mirror.py").write_text(MIRROR_PLUGIN)
    dist_info = tmp_path / "gf_mirror-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-mirror\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[ganforge]\nmirror = gf_mirror\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("gf_mirror", None)


@pytest.fixture
def mirror_recipe(tmp_path):
    return write_recipe(tmp_path / "mirror.toml", tiny_recipe(tmp_path / "runs", plugins={"mirror": {}}))


def test_check_runs_one_real_step_and_writes_nothing(tmp_path, mirror_installed, mirror_recipe):
    result = invoke("check", mirror_recipe)
    assert result.exit_code == 0, result.stderr
    assert re.search(r"^one step on 4 images: D \d+\.\d{3}, G \d+\.\d{3}$", result.stdout, flags=re.M), result.stdout
    assert not (tmp_path / "runs").exists()


def test_check_fails_where_run_would_at_step_one_and_says_how_to_switch_the_plugin_off(tmp_path, mirror_installed,
                                                                                      mirror_recipe):
    expected = ("error: plugin 'mirror.run' from gf-mirror 0.1 failed in ganforge_discriminator_loss_terms:"
                " KeyError: 'flop'; GANFORGE_DISABLE_PLUGINS=mirror switches it off (then remove [plugins.mirror]"
                " from the recipe)")
    checked = assert_one_line_cli_error(invoke("check", mirror_recipe, "--set", "plugins.mirror.view=flop"), 3)
    assert checked == expected
    assert not (tmp_path / "runs").exists()
    ran = assert_one_line_cli_error(invoke("run", mirror_recipe, "--set", "plugins.mirror.view=flop"), 3)
    assert ran.startswith(f"{expected}; the run stopped before its first checkpoint")


def test_a_table_whose_plugin_is_disabled_says_to_remove_it_or_unset_the_variable(mirror_installed, mirror_recipe,
                                                                                 monkeypatch):
    monkeypatch.setenv("GANFORGE_DISABLE_PLUGINS", "mirror")
    assert_one_line_cli_error(invoke("check", mirror_recipe), 2,
                              f"{mirror_recipe}: plugins.mirror: no plugin takes this table",
                              "plugin 'mirror' is disabled by GANFORGE_DISABLE_PLUGINS: remove [plugins.mirror] from"
                              " the recipe, or unset GANFORGE_DISABLE_PLUGINS")


def test_a_misspelt_set_key_is_blamed_on_the_set_not_the_file(mirror_installed, mirror_recipe):
    line = assert_one_line_cli_error(invoke("check", mirror_recipe, "--set", "plugins.mirror.real_wieght=1"), 2)
    assert line.startswith("error: --set plugins.mirror.real_wieght=1: unknown key; did you mean 'real_weight'?"), line
    assert str(mirror_recipe) not in line
