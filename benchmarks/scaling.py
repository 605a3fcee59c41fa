"""Benchmark: how ganforge's training step time grows with batch size and image size.

DCGAN on the ``shapes`` sprites (generated, so no files are needed): ``dcgan-28`` at 28 px and
the classic DCGAN at 32, 64 and 128 px, each at batch 16, 32, 64 and 128. Each cell is the mean
time of one full training step (D and G updates) over ``--steps`` steps after two warm-up steps,
measured in this process through the same step ``ganforge run`` takes.

    python benchmarks/scaling.py --steps 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ganforge.launch import recipe_from_dict
from ganforge.pluginmanager import make_plugin_host
from ganforge.run import Run
from ganforge.training import train_step

SIZES = (28, 32, 64, 128)
BATCHES = (16, 32, 64, 128)


def step_seconds(host, size: int, batch: int, steps: int, folder: Path) -> float:
    values = {
        "run": {"name": "scaling", "out_dir": str(folder)},
        "data": {"name": "shapes", "image_size": size, "size": 1024},
        "model": {"name": "dcgan-28" if size == 28 else "dcgan"},
        "latent": {"noise_dim": 100},
        "train": {"batch_size": batch},
    }
    run = Run(recipe_from_dict(values, host, "scaling"), host, folder)
    for _ in range(2):
        train_step(run)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(run)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    host = make_plugin_host()
    print(f"# scaling: DCGAN on shapes, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch"
          f" {torch.__version__}; ms per step (images/s)")
    print("| image size | " + " | ".join(f"batch {batch}" for batch in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            cells = []
            for batch in BATCHES:
                seconds = step_seconds(host, size, batch, args.steps, Path(scratch))
                cells.append(f"{seconds * 1000:.0f} ({batch / seconds:.0f})")
            print(f"| {size} px | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
