"""Benchmark: the training step on a GPU, ganforge against the plain loop given the same speed-ups.

One command, about 8 minutes on one GPU, one table: for InfoGAN MNIST (the recipe as shipped) and
DCGAN at 64 px, at batch 64, 256 and 1,024, in fp32 and bf16, eager, compiled
(``torch.compile``) and graph-captured (``reduce-overhead``: CUDA graphs), the images per second of
benchmarks/plain_loop.py and of ``ganforge run``, their ratio, and each one's achieved TFLOP/s
(FLOP per image from torch's FLOP counter over one eager step, times images per second) beside
the card's own float32 and bf16 matrix-multiply rates measured at the start of the same run.
Then several ganforge runs at once on the one GPU (1, 4 and 8 processes): each run's images per
second and its share of the solo speed.

    python benchmarks/gpu.py                        # on a machine with a GPU
    python benchmarks/gpu.py --device cpu --quick   # the same code on the CPU, in a minute

The rows run in order of what they answer first (batch 64, then larger batches; eager before
compiled) and each is printed as it finishes; a row that would start after ``--budget`` seconds is
listed as not run, so a partial table is still a table. The images are generated sprites of the
recipes' shapes (one channel, 28 px for InfoGAN, 64 px for DCGAN): speed does not depend on what
the pixels show, and no dataset needs to be on the GPU machine.

ganforge's figure is timed inside ``ganforge run`` itself (the real loop, its logging cadence
included), from the end of a warm-up step to the end of the run, with the device's queue emptied
at both ends; the plain loop is timed the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import cost  # noqa: E402
import plain_loop  # noqa: E402

from ganforge import hookimpl  # noqa: E402
from ganforge.launch import run_recipe  # noqa: E402
from ganforge.testing import make_host  # noqa: E402

#: name: (recipe, its overrides for this benchmark, plain-loop setup, image size)
SETUPS = {
    "infogan": ("recipes/infogan_mnist.toml", ["data.name=shapes", "data.size=4096", "data.split=train"],
                "infogan", 28),
    "dcgan64": ("recipes/dcgan_shapes.toml", ["data.image_size=64", "data.size=4096", "model.name=dcgan",
                                              "latent.noise_dim=100", "train.g_lr=2e-4"], "dcgan64", 64),
}
#: name: torch.compile's mode (None: eager)
MODES = {"eager": None, "compiled": "default", "graphs": "reduce-overhead"}


@dataclass(frozen=True)
class Row:
    setup: str
    batch: int
    precision: str
    mode: str


def rows_in_order(batches: list[int]) -> list[Row]:
    """What answers most first: every eager row at the smallest batch; InfoGAN's graph-captured and
    compiled rows there (the goal's row is among them); the larger batches eager; then the rest."""
    grid = [Row(setup, batch, precision, mode) for batch in batches for mode in MODES for setup in SETUPS
            for precision in ("fp32", "bf16")]
    smallest = min(batches)

    def priority(row: Row) -> int:
        if row.batch == smallest:
            return 0 if row.mode == "eager" else 1 if row.setup == "infogan" else 3
        return 2 if row.mode == "eager" else 4

    return sorted(grid, key=lambda row: (priority(row), row.mode != "graphs"))


def sprites(setup: str, count: int = 4096) -> torch.Tensor:
    """uint8 images of the setup's shape: what the plain loop trains on."""
    size = SETUPS[setup][3]
    return torch.randint(0, 256, (count, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def recipe_settings(row: Row, steps: int, device: str, out_dir: Path) -> list[str]:
    recipe, overrides, _, _ = SETUPS[row.setup]
    settings = [*overrides, f"run.device={device}", f"run.out_dir={out_dir}", f"run.name={row.setup}",
                f"train.batch_size={row.batch}", f"train.precision={row.precision}", f"train.steps={steps}",
                f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "train.keep_checkpoints=0"]
    if MODES[row.mode]:
        settings += ["train.compile=true", f"train.compile_mode={MODES[row.mode]}"]
    return settings


class StepClock:
    """A plugin that times the run from the end of step ``warmup`` to the end of its last step."""

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.started = self.seconds = None

    @hookimpl
    def ganforge_step_end(self, run, step, logs):
        if step == self.warmup:
            plain_loop.synchronize(self.device)
            self.started = time.perf_counter()
        elif step == self.steps:
            plain_loop.synchronize(self.device)
            self.seconds = time.perf_counter() - self.started


def ganforge_speed(row: Row, steps: int, warmup: int, device: torch.device, scratch: Path) -> float:
    from rich.console import Console

    clock = StepClock(warmup, warmup + steps, device)
    settings = recipe_settings(row, warmup + steps, device.type,
                               scratch / f"{row.setup}-{row.batch}-{row.precision}-{row.mode}")
    run_recipe(REPO / SETUPS[row.setup][0], settings, host=make_host(("clock", clock)),
               console=Console(quiet=True))
    return steps * row.batch / clock.seconds


def plain_speed(row: Row, seconds: float, warmup: int, device: torch.device) -> tuple[float, int]:
    """The plain loop's images per second over about ``seconds``, and how many steps that was."""
    speedups = plain_loop.Speedups(device.type, row.precision, MODES[row.mode], fused=True)
    loop = plain_loop.make(SETUPS[row.setup][2], sprites(row.setup), row.batch, speedups=speedups)
    per_step = row.batch / plain_loop.images_per_second(loop, 3, warmup)  # a probe, to size the timed run
    steps = max(5, int(seconds / per_step))
    return plain_loop.images_per_second(loop, steps, warmup=0), steps


def plain_flop_per_image(setup: str, device: torch.device) -> float:
    loop = plain_loop.make(SETUPS[setup][2], sprites(setup), 64, speedups=plain_loop.Speedups(device.type))
    return cost.step_flop(loop.step, 64)


def ganforge_flop_per_image(setup: str, device: torch.device, scratch: Path) -> float:
    settings = recipe_settings(Row(setup, 64, "fp32", "eager"), 2, device.type, scratch / "flop")
    return cost.recipe_flop_per_image(REPO / SETUPS[setup][0], settings)


def concurrent_runs(counts: list[int], steps: int, device: str, scratch: Path, quick: bool
                    ) -> list[tuple[int, list[float]]]:
    """Each count's runs started together, each its own ``ganforge run`` process: their images/s."""
    results = []
    for count in counts:
        processes = []
        for index in range(count):
            command = [sys.executable, __file__, "--worker", "--device", device, "--worker-steps", str(steps),
                       "--scratch", str(scratch / f"concurrent{count}-{index}"), *(["--quick"] if quick else [])]
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                              env={**os.environ, "OMP_NUM_THREADS": "2"}))
        speeds = []
        for process in processes:
            output, _ = process.communicate()
            speeds.append(float(output.split()[-1]) if process.returncode == 0 else float("nan"))
        results.append((count, speeds))
    return results


def worker(args) -> None:
    """One run of the concurrency measurement: InfoGAN MNIST, batch 64, fp32, eager."""
    device = torch.device(args.device)
    row, warmup = (Row("infogan", 16, "fp32", "eager"), 2) if args.quick else (Row("infogan", 64, "fp32", "eager"), 20)
    speed = ganforge_speed(row, args.worker_steps, warmup, device, Path(args.scratch))
    print(f"images/s {speed:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=360, help="seconds after which no new row starts")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per plain-loop measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--concurrent", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--quick", action="store_true", help="a check that it runs: batch 16, eager, two rows")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-steps", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    device = torch.device(args.device)
    began = time.perf_counter()
    rows = rows_in_order(args.batches)
    if args.quick:
        rows = [Row(setup, 16, "fp32", "eager") for setup in SETUPS]
        args.seconds, args.concurrent = 0.3, [1, 2]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    size = 8192 if device.type == "cuda" else 2048
    peaks = {dtype: cost.matmul_rate(device, getattr(torch, dtype), size) for dtype in ("float32", "bfloat16")}
    print(f"# gpu benchmark: {name}, torch {torch.__version__}; matrix product {size}: float32"
          f" {peaks['float32']:.1f} TFLOP/s, bf16 {peaks['bfloat16']:.1f} TFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        flop = {setup: (plain_flop_per_image(setup, device), ganforge_flop_per_image(setup, device, scratch))
                for setup in SETUPS}
        for setup, (plain, ours) in flop.items():
            print(f"# {setup}: {plain / 1e6:.0f} MFLOP per image in the plain loop, {ours / 1e6:.0f} in ganforge"
                  " (torch's FLOP counter, one eager step)", flush=True)
        print("| setup | batch | precision | mode | plain images/s | ganforge images/s | ratio |"
              " plain TFLOP/s | ganforge TFLOP/s |")
        print("|---|---:|---|---|---:|---:|---:|---:|---:|", flush=True)
        for row in rows:
            if time.perf_counter() - began > args.budget:
                print(f"| {row.setup} | {row.batch} | {row.precision} | {row.mode} | not run (budget) | | | | |")
                continue
            warmup = 3 if row.mode == "eager" else 12  # compilation, then the graphs' recording
            torch._dynamo.reset()
            plain, steps = plain_speed(row, args.seconds, warmup, device)
            torch._dynamo.reset()
            ours = ganforge_speed(row, steps, warmup, device, scratch)
            plain_flop, our_flop = flop[row.setup]
            print(f"| {row.setup} | {row.batch} | {row.precision} | {row.mode} | {plain:,.0f} | {ours:,.0f} |"
                  f" {ours / plain:.2f} | {plain * plain_flop / 1e12:.2f} | {ours * our_flop / 1e12:.2f} |", flush=True)
        if args.concurrent and time.perf_counter() - began <= args.budget + 30:
            steps = 5 if args.quick else 600
            print(f"\n# {' / '.join(map(str, args.concurrent))} ganforge runs at once: InfoGAN MNIST, batch 64,"
                  f" fp32, eager, {steps} steps each", flush=True)
            print("| runs | each run's images/s | together | share of solo |")
            print("|---:|---|---:|---:|")
            solo = None
            for count, speeds in concurrent_runs(args.concurrent, steps, args.device, scratch, args.quick):
                solo = solo or speeds[0]
                print(f"| {count} | {', '.join(f'{s:,.0f}' for s in speeds)} | {sum(speeds):,.0f} |"
                      f" {min(speeds) / solo:.0%} (slowest) |", flush=True)
    print(f"# {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
