"""Every shipped recipe trains as it did when its losses were recorded.

A short run of each recipe in ``recipes/`` (3 steps of 16 images, one thread, the residual
backbones narrowed, through the same path as ``ganforge run``) must log the losses recorded in
``tests/recorded/recipe_losses.json``. A change to how a run is built or stepped that moves a
random draw, an initialisation, the order of the plugins' hooks or a loss term changes these
figures; a change of structure alone does not.

Where the CPU's kernels are those of a machine that recorded them (the same torch, instruction set
and processor model), bit for bit; on other kernels,
within what rounding alone can do to three steps, measured in the same test (``RoundingNudge``).
Re-record only for a change meant to alter training, and say so in the commit:
``python -m tests.test_recipe_losses`` records this machine's figures beside the other machines'.
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

from ganforge import hookimpl
from tests.conftest import REPO, SHARED_MNIST, make_host, metric_records

RECORDED = REPO / "tests" / "recorded" / "recipe_losses.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
RECIPES = sorted(path.name for path in (REPO / "recipes").glob("*.toml"))

SHORT_RUN = ["train.steps=3", "train.batch_size=16", "train.log_every=1", "train.sample_every=1000",
             "train.checkpoint_every=1000", "train.threads=1", 'run.device="cpu"', "eval.every=0", 'eval.best=""']

#: How much further than the rounding nudge's a run on other kernels may drift, in the records'
#: RMS relative difference. Another CPU's kernels round differently at every operation, and three
#: Adam steps amplify that (a gradient that is zero but for rounding steps a weight by its learning
#: rate either way), so the drift is measured on this machine from the run itself: the same run
#: with every initial weight moved by one float32 rounding (RoundingNudge). On an AVX2 machine
#: against the AVX512 recording, the kernels' drift was 0.1 to 71 times the nudge's over the 36
#: records of the twelve recipes then shipped: one nudge is one draw of a chaotic divergence,
#: heavy-tailed. A change this test is for (a random draw moved, a term added, the hooks
#: reordered) moves the figures by orders of magnitude more; a learning rate 1% higher, 2 to 4,000
#: times the nudge, is told apart bit for bit on a recorded machine only.
OTHER_KERNELS_GROWTH = 100.0
#: Figures smaller than this are compared on this scale, not their own: a mutual-information
#: estimate near 0 may change sign by rounding alone.
SMALLEST_SCALE = 1e-3


class RoundingNudge:
    """Every initial weight times (1 +- 2^-23), the signs drawn from a fixed seed: one float32
    rounding's worth of change, applied after every plugin has changed the networks."""

    @hookimpl(trylast=True)
    def ganforge_models_built(self, run):
        signs = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for module in (run.generator, run.discriminator):
                for parameter in module.parameters():
                    sign = torch.randint(0, 2, parameter.shape, generator=signs).to(parameter.dtype) * 2 - 1
                    parameter.mul_(1 + sign * 2.0**-23)


def data_overrides(recipe: str) -> list[str]:
    """Where each recipe's data is on a test machine; the CIFAR-10 and image-folder recipes, whose
    images are not here, train their networks on the MNIST digits scaled to their size."""
    text = (REPO / "recipes" / recipe).read_text()
    if 'name = "fashion-mnist"' in text:
        if not FASHION_MNIST.is_dir():
            pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST} (Debian: dataset-fashion-mnist)")
        return [f"data.root={FASHION_MNIST}"]
    absent = 'name = "cifar10"' in text or 'name = "image-folder"' in text
    if 'name = "mnist"' in text or absent:
        if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
            pytest.skip(f"the shared MNIST test split is not at {SHARED_MNIST}")
        moved = [f"data.root={SHARED_MNIST}"]
        if absent:
            size = 64 if 'name = "image-folder"' in text else 32
            moved += ['data.name="mnist"', 'data.split="all"', f"data.image_size={size}"]
        return moved
    return []


#: The residual backbones' recipes train at the reference widths (a 64 px ResNet of 1,024
#: channels), which three steps of five D steps take minutes to run on a CPU; here they run at
#: these widths, with everything else as shipped. ``tests/test_recipe_standins.py`` steps each at
#: its shipped width.
NARROW = {"resnet": "model.options={g_width = 32, d_width = 32}", "biggan": "model.options={g_width = 8, d_width = 8}"}


def narrowed(recipe: str) -> list[str]:
    text = (REPO / "recipes" / recipe).read_text()
    return [width for family, width in NARROW.items() if f'name = "{family}"' in text]


def short_run_losses(recipe: str, out_dir: Path, extra: list[str] = (), *plugins) -> list[dict]:
    from rich.console import Console

    from ganforge.launch import run_recipe

    overrides = [f"run.out_dir={out_dir}", *SHORT_RUN, *data_overrides(recipe), *narrowed(recipe), *extra]
    run = run_recipe(REPO / "recipes" / recipe, overrides, False, host=make_host(*plugins),
                     console=Console(file=io.StringIO(), force_terminal=False))
    return metric_records(run.directory)


#: The instruction-set extensions oneDNN chooses its float32 kernels by, beyond torch's capability.
KERNEL_FLAGS = ("avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "fma")


def cpu_model() -> str:
    """The processor's model name and kernel-choosing extensions: two CPUs of one instruction set
    (AVX-512) still differ in the kernels oneDNN picks for them (an Intel Xeon's first-step losses
    differed from another AVX-512 machine's recording in the last bit), so a recording is bit for
    bit on its own kind of processor only."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    return f"{model}; {' '.join(flag for flag in KERNEL_FLAGS if flag in flags)}"


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "cpu": cpu_model()}


def assert_same_structure(actual: list[dict], expected: list[dict], where: str) -> None:
    """The same records, keys and plain values (steps, images); floats are compared elsewhere."""
    assert len(actual) == len(expected), f"{where}: {len(actual)} records, recorded {len(expected)}"
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        assert got.keys() == want.keys(), f"{where} record {step}: keys {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            if not isinstance(value, float):
                assert got[key] == value, f"{where} record {step} {key}: {got[key]!r}, recorded {value!r}"


def rms_relative(a: dict, b: dict, reference: dict) -> float:
    """The RMS over a record's float figures of their difference, each relative to its recorded
    size (at least SMALLEST_SCALE)."""
    terms = [((a[key] - b[key]) / max(abs(value), SMALLEST_SCALE)) ** 2
             for key, value in reference.items() if isinstance(value, float)]
    return math.sqrt(sum(terms) / len(terms)) if terms else 0.0


def assert_same_figures(actual: list[dict], expected: list[dict], where: str) -> None:
    """Bit for bit: the recording machine's kernels."""
    assert_same_structure(actual, expected, where)
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        for key, value in want.items():
            assert got[key] == value, f"{where} record {step} {key}: {got[key]!r}, recorded {value!r}"


def rounding_drift(plain: list[dict], nudged: list[dict], expected: list[dict]) -> list[float]:
    """Per record, how far one rounding of the initial weights moved this machine's run."""
    return [rms_relative(nudge, run, want) for run, nudge, want in zip(plain, nudged, expected)]


def assert_within_rounding_growth(actual: list[dict], expected: list[dict], drifts: list[float], where: str) -> None:
    """Other kernels: each record within OTHER_KERNELS_GROWTH times ``drifts``, the drift that one
    rounding of the initial weights makes in this machine's own run (at least one float32
    rounding, for a record that the nudge leaves exactly as it was)."""
    assert_same_structure(actual, expected, where)
    for step, (got, want, drift_of_nudge) in enumerate(zip(actual, expected, drifts), start=1):
        allowed = OTHER_KERNELS_GROWTH * max(drift_of_nudge, 2.0**-23)
        drift = rms_relative(got, want, want)
        assert drift <= allowed, (f"{where} record {step}: figures {drift:.2e} (RMS relative) from the recording,"
                                  f" more than {allowed:.2e}, {OTHER_KERNELS_GROWTH:g} times the drift of a rounding"
                                  f" nudge; {sorted((k, got[k], v) for k, v in want.items() if isinstance(v, float))}")


def recordings(recorded: dict, recipe: str) -> tuple[list[dict] | None, list[dict]]:
    """This machine's recording of ``recipe`` if there is one, and the first recording of it
    made on any machine."""
    here = machine()
    mine = next((entry["recipes"].get(recipe) for entry in recorded["machines"] if entry["machine"] == here), None)
    anywhere = next((entry["recipes"][recipe] for entry in recorded["machines"] if recipe in entry["recipes"]), None)
    assert anywhere is not None, f"{recipe} has no recorded losses: run python -m tests.test_recipe_losses"
    return mine, anywhere


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_shipped_recipe_trains_as_recorded(recipe, recorded, tmp_path):
    mine, anywhere = recordings(recorded, recipe)
    actual = short_run_losses(recipe, tmp_path / "run")
    if mine is not None:  # bit for bit where the kernels are a recording machine's
        assert_same_figures(actual, mine, recipe)
    else:
        nudged = short_run_losses(recipe, tmp_path / "nudged", (), ("rounding-nudge", RoundingNudge()))
        assert_within_rounding_growth(actual, anywhere, rounding_drift(actual, nudged, anywhere), recipe)


def test_the_recorded_losses_tell_a_changed_run_apart(recorded, tmp_path):
    # On a recorded machine a generator learning rate 1% higher (1.5e-3 in the recipe) is told
    # apart; on other kernels, a moved random draw (another seed for the latents and data) is.
    mine, anywhere = recordings(recorded, "infogan_mnist.toml")
    if mine is not None:
        changed = short_run_losses("infogan_mnist.toml", tmp_path / "lr", ["train.g_lr=1.515e-3"])
        with pytest.raises(AssertionError):
            assert_same_figures(changed, mine, "infogan_mnist.toml")
    plain = short_run_losses("infogan_mnist.toml", tmp_path / "plain")
    nudged = short_run_losses("infogan_mnist.toml", tmp_path / "nudged", (), ("rounding-nudge", RoundingNudge()))
    reseeded = short_run_losses("infogan_mnist.toml", tmp_path / "seed", ["run.seed=1"])
    with pytest.raises(AssertionError, match="RMS relative"):
        assert_within_rounding_growth(reseeded, anywhere, rounding_drift(plain, nudged, anywhere), "infogan_mnist.toml")


def test_a_rounding_nudge_moves_the_figures_by_rounding_only(tmp_path):
    # The nudge is what it says: at the first record, before Adam has amplified anything, the
    # figures move by a few float32 roundings of their size, and not at all without it.
    plain = short_run_losses("dcgan_mnist.toml", tmp_path / "plain")
    nudged = short_run_losses("dcgan_mnist.toml", tmp_path / "nudged", (), ("rounding-nudge", RoundingNudge()))
    first = rms_relative(nudged[0], plain[0], plain[0])
    assert 0 < first < 1e-4, first


def record(out_dir: Path) -> None:
    """Record every recipe on this machine, replacing this machine's earlier recording and
    keeping the other machines'."""
    results = {}
    for recipe in RECIPES:
        results[recipe] = short_run_losses(recipe, out_dir / recipe.removesuffix(".toml"))
        print(f"{recipe}: {len(results[recipe])} records", file=sys.stderr)
    stored = json.loads(RECORDED.read_text()) if RECORDED.exists() else {"machines": []}
    others = [entry for entry in stored["machines"] if entry["machine"] != machine()]
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps({"machines": [*others, {"machine": machine(), "recipes": results}]}, indent=1) + "\n")
    print(f"wrote {RECORDED}", file=sys.stderr)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        record(Path(scratch))
