"""The ``ganforge`` command's own argument checks: wrong paths and flag values are usage errors
(exit code 2), and files that are not what a command needs are one-line errors."""

from __future__ import annotations

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
