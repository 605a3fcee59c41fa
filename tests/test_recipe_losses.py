"""Every shipped recipe trains as it did when its losses were recorded.

A short run of each recipe in ``recipes/`` (3 steps of 16 images, one thread, through the same
path as ``ganforge run``) must log the losses recorded in ``tests/recorded/recipe_losses.json``. A
change to how a run is built or stepped that moves a random draw, an initialisation, the order of
the plugins' hooks or a loss term changes these figures; a change of structure alone does not.

Re-record only for a change meant to alter training, and say so in the commit:
``python -m tests.test_recipe_losses`` rewrites the file.
"""

from __future__ import annotations

import io
import json
import math
import platform
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, SHARED_MNIST, make_host, metric_records

RECORDED = REPO / "tests" / "recorded" / "recipe_losses.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
RECIPES = sorted(path.name for path in (REPO / "recipes").glob("*.toml"))

SHORT_RUN = ["train.steps=3", "train.batch_size=16", "train.log_every=1", "train.sample_every=1000",
             "train.checkpoint_every=1000", "train.threads=1", 'run.device="cpu"', "eval.every=0", 'eval.best=""']

#: How far a logged figure may move on a CPU whose kernels differ from the recording machine's.
#: Three Adam steps move each weight by up to its learning rate whatever the gradient's size, so a
#: gradient that is zero but for rounding (a bias under batch norm) may step either way, and the
#: figures drift beyond a single pass's rounding. What this test is for moves them much more: a
#: generator learning rate 1% higher moves some of InfoGAN's logged figures by more than 100%
#: (``test_the_recorded_losses_tell_a_changed_run_apart``).
OTHER_KERNELS_RTOL = 1e-3


def data_overrides(recipe: str) -> list[str]:
    """Where each recipe's data is on a test machine; the CIFAR-10 recipe, whose images cannot be
    fetched here, trains its 32 px networks on the MNIST digits padded to 32 px."""
    text = (REPO / "recipes" / recipe).read_text()
    if 'name = "fashion-mnist"' in text:
        if not FASHION_MNIST.is_dir():
            pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST} (Debian: dataset-fashion-mnist)")
        return [f"data.root={FASHION_MNIST}"]
    if 'name = "mnist"' in text or 'name = "cifar10"' in text:
        if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
            pytest.skip(f"the shared MNIST test split is not at {SHARED_MNIST}")
        moved = [f"data.root={SHARED_MNIST}"]
        if 'name = "cifar10"' in text:
            moved += ['data.name="mnist"', 'data.split="all"', "data.image_size=32"]
        return moved
    return []


def short_run_losses(recipe: str, out_dir: Path, extra: list[str] = ()) -> list[dict]:
    from rich.console import Console

    from ganforge.launch import run_recipe

    overrides = [f"run.out_dir={out_dir}", *SHORT_RUN, *data_overrides(recipe), *extra]
    run = run_recipe(REPO / "recipes" / recipe, overrides, False, host=make_host(),
                     console=Console(file=io.StringIO(), force_terminal=False))
    return metric_records(run.directory)


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


def assert_same_figures(actual: list[dict], expected: list[dict], exact: bool, where: str) -> None:
    assert len(actual) == len(expected), f"{where}: {len(actual)} records, recorded {len(expected)}"
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        assert got.keys() == want.keys(), f"{where} record {step}: keys {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            if isinstance(value, float) and not exact:
                assert math.isclose(got[key], value, rel_tol=OTHER_KERNELS_RTOL, abs_tol=1e-6), \
                    f"{where} record {step} {key}: {got[key]!r}, recorded {value!r}"
            else:
                assert got[key] == value, f"{where} record {step} {key}: {got[key]!r}, recorded {value!r}"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_shipped_recipe_trains_as_recorded(recipe, recorded, tmp_path):
    assert recipe in recorded["recipes"], f"{recipe} has no recorded losses: run python -m tests.test_recipe_losses"
    # Bit for bit where the kernels are the recording machine's; within OTHER_KERNELS_RTOL elsewhere.
    exact = recorded["machine"] == machine()
    assert_same_figures(short_run_losses(recipe, tmp_path), recorded["recipes"][recipe], exact, recipe)


def test_the_recorded_losses_tell_a_changed_run_apart(recorded, tmp_path):
    # The tolerance must not hide a real change: a generator learning rate 1% higher (1e-3 in
    # the recipe) moves the figures beyond it.
    changed = short_run_losses("infogan_mnist.toml", tmp_path, ["train.g_lr=1.01e-3"])
    with pytest.raises(AssertionError):
        assert_same_figures(changed, recorded["recipes"]["infogan_mnist.toml"], False, "infogan_mnist.toml")


def record(out_dir: Path) -> None:
    results = {}
    for recipe in RECIPES:
        results[recipe] = short_run_losses(recipe, out_dir / recipe.removesuffix(".toml"))
        print(f"{recipe}: {len(results[recipe])} records", file=sys.stderr)
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps({"machine": machine(), "recipes": results}, indent=1) + "\n")
    print(f"wrote {RECORDED}", file=sys.stderr)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        record(Path(scratch))
