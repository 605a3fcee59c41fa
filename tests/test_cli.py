"""The ``ganforge`` command as a user runs it: a real process, real recipes, real data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys



from .conftest import REPO, tiny_recipe, write_recipe

GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"


def ganforge(*args, cwd=None, env=None):
    environment = {**os.environ, **(env or {})}
    return subprocess.run([GANFORGE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=environment,
                          timeout=300)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_run_trains_shows_progress_and_fills_the_run_directory(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    result = ganforge("run", recipe)
    assert result.returncode == 0, result.stderr
    assert "step 2/4" in result.stdout and "step 4/4" in result.stdout and "img/s" in result.stdout
    directory = tmp_path / "runs" / "tiny"
    assert (directory / "checkpoints" / "last.pt").is_file()
    assert (directory / "samples" / "step_0000004.png").is_file()
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]


def test_a_misspelt_key_is_one_line_and_exit_code_2(tmp_path):
    values = tiny_recipe(tmp_path / "runs")
    values["train"]["batch_sise"] = values["train"].pop("batch_size")
    recipe = write_recipe(tmp_path / "typo.toml", values)
    for command in ("run", "check"):
        result = ganforge(command, recipe)
        assert_one_line_error(result, 2, str(recipe), "train.batch_sise", "did you mean 'batch_size'?")
    assert not (tmp_path / "runs").exists()


def test_a_bad_override_is_one_line_and_exit_code_2(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    result = ganforge("run", recipe, "--set", "train.steps=many")
    assert_one_line_error(result, 2, "train.steps", "is not an integer")


def test_a_missing_dataset_is_one_line_naming_where_it_looked(tmp_path):
    recipe = write_recipe(tmp_path / "mnist.toml", tiny_recipe(tmp_path / "runs", data={"name": "mnist", "image_size": 0}))
    result = ganforge("run", recipe, "--set", f"data.root={tmp_path / 'nowhere'}")
    assert_one_line_error(result, 2, "nowhere")


def test_check_builds_the_models_and_prints_their_sizes_and_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    result = ganforge("check", recipe)
    assert result.returncode == 0, result.stderr
    assert "generator" in result.stdout and "discriminator" in result.stdout
    assert "[train]" in result.stdout and "steps = 4" in result.stdout
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_plugins_lists_the_builtins_their_hooks_and_names():
    result = ganforge("plugins", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    for expected in ("dcgan", "register_models", "dcgan-28", "shapes", "register_datasets", "mnist",
                     "non-saturating", "ganforge 0.1.0"):
        assert expected in result.stdout


def test_plugins_reports_a_broken_plugin_disabled_by_name(tmp_path):
    result = ganforge("plugins", env={"GANFORGE_DISABLE_PLUGINS": "losses", "COLUMNS": "200"})
    assert result.returncode == 0
    assert "non-saturating" not in result.stdout and "dcgan-28" in result.stdout


def test_sample_draws_a_grid_from_a_checkpoint(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", train={"steps": 1}))
    assert ganforge("run", recipe).returncode == 0
    checkpoint = tmp_path / "runs" / "tiny" / "checkpoints" / "last.pt"
    out = tmp_path / "grid.png"
    result = ganforge("sample", checkpoint, "--out", out, "--n", 16, "--seed", 3)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(out).size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 tiles of 28 px, 2 px apart


def test_sample_from_a_missing_checkpoint_is_one_line(tmp_path):
    result = ganforge("sample", tmp_path / "absent.pt", "--out", tmp_path / "x.png")
    assert_one_line_error(result, 2, "no checkpoint at")


def test_the_dcgan_mnist_recipe_trains_on_the_shared_digits(tmp_path, shared_mnist):
    result = ganforge("run", REPO / "recipes" / "dcgan_mnist.toml", "--set", f"data.root={shared_mnist}",
                      "--set", f"run.out_dir={tmp_path}", "--set", "train.steps=3", "--set", "train.log_every=1",
                      "--set", "train.batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "mnist (10000 images 1x28x28)" in result.stdout
    assert (tmp_path / "dcgan_mnist" / "samples" / "step_0000003.png").is_file()


def test_the_data_root_can_come_from_the_environment(tmp_path, shared_mnist):
    values = tiny_recipe(tmp_path / "runs", data={"name": "mnist", "image_size": 0, "split": "test"},
                         train={"steps": 1})
    recipe = write_recipe(tmp_path / "env.toml", values)
    result = ganforge("check", recipe, env={"GANFORGE_DATA_ROOT": str(shared_mnist)})
    assert result.returncode == 0, result.stderr
    assert "10000 images" in result.stdout


def test_plugins_lists_the_hooks_of_a_run_plugin_class(tmp_path):
    from .test_cli_usage import MIRROR_PLUGIN

    (tmp_path / "gf_mirror.py").write_text(MIRROR_PLUGIN)
    (tmp_path / "gf_mirror-0.1.dist-info").mkdir()
    (tmp_path / "gf_mirror-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gf-mirror\nVersion: 0.1\n")
    (tmp_path / "gf_mirror-0.1.dist-info" / "entry_points.txt").write_text("[ganforge]\nmirror = gf_mirror\n")
    result = ganforge("plugins", env={"PYTHONPATH": str(tmp_path), "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "gf-mirror 0.1" in line)
    assert "register_run_plugins" in row
    assert "mirror (run plugin): discriminator_loss_terms, discriminator_views" in result.stdout


def test_check_into_a_pipe_its_reader_closes_early_still_exits_0(tmp_path):
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs"))
    process = subprocess.Popen([GANFORGE, "check", str(recipe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does after its line
    stderr = process.communicate(timeout=300)[1].decode()
    assert first.startswith(b"ganforge: dcgan-28 on shapes")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
