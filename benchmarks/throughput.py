"""Benchmark: images per second of ``ganforge run`` against a plain hand-written loop of the same
models (benchmarks/plain_loop.py), measured in the same benchmark run and printed as a ratio.

Rows: the InfoGAN MNIST recipe as shipped; the same without its real-image terms (the paper's
setup); DCGAN at 64x64 on ``shapes``. Every measurement is a process of its own, one at a time,
alternating plain and ganforge ``--repeats`` times, so a machine that speeds up or slows down
during the benchmark moves both; the table shows the median of each.

    python benchmarks/throughput.py --data-root ../shared/data/mnist --steps 150 --repeats 3

ganforge's figure is its own ``images_per_s`` over the whole run (metrics.jsonl, first step to
last, sample grids and checkpoints included); the plain loop's is timed over the same number of
steps after 5 warm-up steps, so the comparison favours the plain loop slightly.

Each row also has its cost against the limit (benchmarks/cost.py): FLOP per image of one step of
each loop (torch's FLOP counter), the GFLOP/s that ganforge's speed means, and that as a share of
the machine's float32 matrix-product rate, measured at the start of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import cost  # noqa: E402
import plain_loop  # noqa: E402

GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"

#: (row name, recipe, overrides, plain-loop setup, image size)
ROWS = [
    ("InfoGAN MNIST, as shipped", "recipes/infogan_mnist.toml", [], "infogan", 28),
    ("InfoGAN MNIST, paper setup (no real-image terms)", "recipes/infogan_mnist.toml",
     ["plugins.infogan.consistency_weight=0", "plugins.infogan.real_info_weight=0", "plugins.infogan.code_moves={}"],
     "infogan-paper", 28),
    ("DCGAN 64x64 on shapes", "recipes/dcgan_shapes.toml",
     ["data.image_size=64", "model.name=dcgan", "latent.noise_dim=100", "train.g_lr=2e-4"], "dcgan64", 64),
]


def ganforge_speed(recipe: str, overrides: list[str], steps: int, data_root: str, out_dir: Path,
                   extra: list[str]) -> float:
    settings = [*overrides, f"train.steps={steps}", f"train.log_every={steps}", f"train.sample_every={steps}",
                f"train.checkpoint_every={steps}", f"run.out_dir={out_dir}", "run.name=throughput", *extra]
    if "mnist" in recipe:
        settings.append(f"data.root={data_root}")
    shutil.rmtree(out_dir / "throughput", ignore_errors=True)
    command = [GANFORGE, "run", str(REPO / recipe)] + [arg for setting in settings for arg in ("--set", setting)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in (out_dir / "throughput" / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["images_per_s"]


def plain_speed(setup: str, steps: int, image_size: int) -> float:
    output = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plain_loop.py"), "--setup", setup,
                             "--steps", str(steps), "--image-size", str(image_size)],
                            check=True, capture_output=True, text=True).stdout
    return float(output.split(":")[1].split()[0])


def flop_per_image(recipe: str, overrides: list[str], setup: str, size: int, data_root: str,
                   out_dir: Path) -> tuple[float, float]:
    """FLOP per image of one step: the plain loop's, ganforge's."""
    images = torch.randint(0, 256, (1024, 1, size, size), dtype=torch.uint8)
    plain = cost.step_flop(plain_loop.make(setup, images, 64).step, 64)
    settings = [*overrides, f"run.out_dir={out_dir}"] + ([f"data.root={data_root}"] if "mnist" in recipe else [])
    return plain, cost.recipe_flop_per_image(REPO / recipe, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, nargs="*", help="which rows (0-based); default all")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="an extra override for ganforge")
    args = parser.parse_args()
    rows = [ROWS[index] for index in args.rows] if args.rows else ROWS
    print(f"# throughput: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch"
          f" {torch.__version__}, {args.steps} steps per measurement, median of {args.repeats}"
          + (f", ganforge with {' '.join(args.extra)}" if args.extra else ""))
    peak = cost.matmul_rate(torch.device("cpu")) * 1000
    print(f"# the machine's limit: a 2048 x 2048 float32 matrix product at {peak:.0f} GFLOP/s"
          f" ({torch.get_num_threads()} threads)")
    print("| setup | plain loop, images/s | ganforge, images/s | ratio | every ratio |"
          " MFLOP per image, plain / ganforge | ganforge GFLOP/s | share of the limit |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for name, recipe, overrides, setup, size in rows:
            plain, ours = [], []
            for _ in range(args.repeats):
                plain.append(plain_speed(setup, args.steps, size))
                ours.append(ganforge_speed(recipe, overrides, args.steps, args.data_root, Path(scratch), args.extra))
            ratios = [b / a for a, b in zip(plain, ours)]
            plain_flop, our_flop = flop_per_image(recipe, overrides, setup, size, args.data_root, Path(scratch))
            achieved = statistics.median(ours) * our_flop / 1e9
            print(f"| {name} | {statistics.median(plain):.1f} | {statistics.median(ours):.1f} |"
                  f" {statistics.median(ours) / statistics.median(plain):.2f} |"
                  f" {', '.join(f'{r:.2f}' for r in ratios)} | {plain_flop / 1e6:.0f} / {our_flop / 1e6:.0f} |"
                  f" {achieved:.1f} | {achieved / peak:.0%} |", flush=True)


if __name__ == "__main__":
    main()
