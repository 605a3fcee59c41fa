"""The GPU benchmark's code on the CPU: a GPU is lent rarely and briefly, so what it runs must be
known to work before it gets there. Speeds are not checked here (benchmarks print those); what
is checked is that the comparison is like for like."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from .conftest import REPO
from .test_performance import ValueReads

sys.path.insert(0, str(REPO / "benchmarks"))

import cost  # noqa: E402
import plain_loop  # noqa: E402


def sprites(size: int) -> torch.Tensor:
    return torch.randint(0, 256, (64, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("setup", ["infogan", "dcgan64"])
def test_the_plain_loop_with_speedups_reads_no_value_and_autocasts_its_passes(setup):
    """On a GPU a value read per step would hold the plain loop back where ganforge's loop reads
    none: the two would not be compared like for like."""
    speedups = plain_loop.Speedups("cpu", "bf16", fused=True)
    loop = plain_loop.make(setup, sprites(28 if setup == "infogan" else 64), 16, speedups=speedups)
    seen = []
    first_conv = next(m for m in loop.D.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    loop.step()
    with ValueReads() as reads:
        d_loss, g_loss = loop.step()
    assert reads.reads == []
    assert set(seen) == {torch.bfloat16}
    assert d_loss.dtype == g_loss.dtype == torch.float32  # the losses are computed from float32 logits
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(group.get("fused") for group in loop.opt_d.param_groups)


def test_flop_per_image_counts_the_step_and_grows_with_the_image():
    small = cost.step_flop(plain_loop.make("dcgan64", sprites(64), 16).step, 16)
    # Forward, and backward (about twice the forward) of D on 3 batches and of G: billions per
    # 64 px image, as the DCGAN paper's networks cost.
    assert 1e9 < small < 1e10
    infogan = cost.step_flop(plain_loop.make("infogan", sprites(28), 16).step, 16)
    assert 1e8 < infogan < small


def test_the_gpu_benchmark_runs_its_rows_on_the_cpu():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| infogan") or line.startswith("| dcgan64")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        plain, ours, ratio = (float(cells[index].replace(",", "")) for index in (4, 5, 6))
        # Speeds are printed to the unit, the ratio to two places: what rounding can move it by.
        rounding = 0.005 + ours / plain * (0.5 / ours + 0.5 / plain)
        assert plain > 0 and ours > 0 and abs(ratio - ours / plain) <= rounding, row
    together = [line for line in result.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(together) == 2, result.stdout
