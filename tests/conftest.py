"""Shared fixtures: a plugin host without entry points, tiny recipes, the shared MNIST folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganforge.pluginmanager import make_plugin_host
from ganforge.recipe import dump_toml

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def builtin_plugins():
    """The built-in plugin modules, as pyproject.toml's entry points name them, registered by hand
    so that nothing else installed leaks in."""
    import importlib
    import tomllib

    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["ganforge"]
    return [(name, importlib.import_module(module)) for name, module in entry_points.items()]


def make_host(*extra):
    """A fresh host with the built-ins and ``extra`` ``(name, plugin)`` pairs."""
    return make_plugin_host(entry_points=False, plugins=[*builtin_plugins(), *extra])


def tiny_recipe(out_dir: Path, **sections) -> dict:
    """A recipe that trains in about a second: 256 generated sprites, batch 16, a few steps."""
    recipe = {
        "run": {"name": "tiny", "seed": 0, "out_dir": str(out_dir)},
        "data": {"name": "shapes", "image_size": 28, "size": 256},
        "model": {"name": "dcgan-28"},
        "latent": {"noise": "normal", "noise_dim": 8},
        "train": {"steps": 4, "batch_size": 16, "log_every": 2, "sample_every": 2, "checkpoint_every": 1000,
                  "keep_checkpoints": 0},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


def write_recipe(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_toml(values))
    return path


#: How many generated cases the recipe fuzzing ran, by command; reported after the test session.
FUZZ_CASES: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter):
    if FUZZ_CASES:
        counts = ", ".join(f"{command} {count}" for command, count in sorted(FUZZ_CASES.items()))
        terminalreporter.write_line(f"recipe fuzzing: {sum(FUZZ_CASES.values())} generated cases ran ({counts})")


@pytest.fixture
def host():
    return make_host()


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the shared MNIST test split is not at {SHARED_MNIST}")
    return SHARED_MNIST


def run_tiny(tmp_path: Path, host=None, overrides=(), resume=False, **sections):
    """Train a tiny recipe through the same path as ``ganforge run``; returns the finished run."""
    import io

    from rich.console import Console

    from ganforge.launch import run_recipe

    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(tmp_path / "runs", **sections))
    console = Console(file=io.StringIO(), force_terminal=False)
    return run_recipe(recipe, list(overrides), resume, host=host or make_host(), console=console)


def metric_records(directory: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` without the wall-clock field, which no two runs share."""
    import json

    lines = (Path(directory) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in lines]


def assert_same_state(a, b, where: str = "checkpoint") -> None:
    """Two checkpoint trees equal bit for bit: same keys, same plain values, equal tensors."""
    import torch

    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{index}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training(path_a: Path, path_b: Path) -> None:
    """Two checkpoints of the same training: everything equal but where the runs were written."""
    from ganforge.checkpoint import load_checkpoint

    a, b = load_checkpoint(path_a), load_checkpoint(path_b)
    for state in (a, b):
        del state["recipe"]["run"]["out_dir"]
    assert_same_state(a, b)


def invoke(*args):
    """``ganforge ARGS`` in this process (fast: no interpreter or torch start-up)."""
    from typer.testing import CliRunner

    from ganforge.cli import app

    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_one_line_cli_error(result, code: int, *fragments: str) -> str:
    """An in-process command that failed as a user mistake should: the exit ``code``, one line on
    stderr starting with ``error:`` and holding each fragment, no exception escaping."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def private_ganforge_home(tmp_path_factory, monkeypatch):
    """Feature networks and cached features in the machine's own ~/.cache/ganforge never leak in;
    a test may point GANFORGE_HOME elsewhere itself."""
    monkeypatch.setenv("GANFORGE_HOME", str(tmp_path_factory.getbasetemp() / "ganforge-home"))
