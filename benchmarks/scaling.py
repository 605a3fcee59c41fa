"""Benchmark: how ganforge's training step time grows with batch size and image size.

DCGAN on ``shapes`` sprites: ``dcgan-28`` at 28 px on the generated dataset, and the classic
DCGAN at 32, 64 and 128 px on 1,024 of them written as PNG files (``image-folder``, which resizes;
RGB), each at batch 16, 32, 64 and 128. Each cell is the mean
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
from streaming import write_folder  # this folder's benchmark: the same sprites as PNG files

SIZES = (28, 32, 64, 128)
BATCHES = (16, 32, 64, 128)


def step_seconds(host, size: int, batch: int, steps: int, folder: Path) -> float:
    data = {"name": "shapes", "image_size": 28, "size": 1024} if size == 28 else \
        {"name": "image-folder", "root": str(folder / "sprites"), "image_size": size}
    values = {
        "run": {"name": "scaling", "out_dir": str(folder)},
        "data": data,
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
          f" {torch.__version__}; ms per step (images/s); 28 px grey, 32-128 px RGB")
    print("| image size | " + " | ".join(f"batch {batch}" for batch in BATCHES) + " |")
    print("|---|" + "---:|" * len(BATCHES))
    with tempfile.TemporaryDirectory() as scratch:
        write_folder(Path(scratch) / "sprites", 1024)
        for size in SIZES:
            cells = []
            for batch in BATCHES:
                seconds = step_seconds(host, size, batch, args.steps, Path(scratch))
                cells.append(f"{seconds * 1000:.0f} ({batch / seconds:.0f})")
            print(f"| {size} px | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
