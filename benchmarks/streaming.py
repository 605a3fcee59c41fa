"""Benchmark: does a streamed image folder keep up with training?

Writes ``--files`` PNG images (64 px sprites from the ``shapes`` dataset) into ``--folder`` once,
then measures, each alone:

1. the loader by itself: images per second the training batcher delivers from the folder
   (``data.stream = true``, ``data.workers`` DataLoader processes, batch 64);
2. ``ganforge run`` of DCGAN at 64 px on the folder, streamed and held in memory: start-up
   seconds (listing, or decoding every file) and training images per second.

    python benchmarks/streaming.py --folder /tmp/folder200k --files 200000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"


def write_folder(folder: Path, count: int) -> None:
    from PIL import Image

    from ganforge_plugins.data.shapes import generate_shapes

    done = folder / ".complete"
    if done.exists() and int(done.read_text()) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    made = 0
    while made < count:  # the sprites in chunks: the whole set at once would not need to fit
        chunk = min(20_000, count - made)
        sprites = generate_shapes(chunk, 64, seed=made).images
        for index, sprite in enumerate(sprites):
            path = folder / f"{(made + index) // 1000:03d}" / f"{made + index:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sprite[0].numpy()).save(path)
        made += chunk
    done.write_text(str(count))


def loader_speed(folder: Path, workers: int, batches: int) -> float:
    from ganforge.data import Batcher, DataSettings
    from ganforge_plugins.data.datasets import load_image_folder

    data = load_image_folder(DataSettings(name="image-folder", root=folder, image_size=64, stream=True))
    batcher = Batcher(data, 64, torch.Generator().manual_seed(0), torch.device("cpu"), workers=workers)
    batcher.next()  # the workers start
    started = time.perf_counter()
    for _ in range(batches):
        batcher.next()
    return batches * 64 / (time.perf_counter() - started)


def run_speed(folder: Path, stream: bool, workers: int, steps: int, out: Path) -> tuple[float, float]:
    settings = ["data.name=image-folder", f"data.root={folder}", "data.image_size=64", "model.name=dcgan",
                "latent.noise_dim=100", f"data.stream={'true' if stream else 'false'}", f"data.workers={workers}",
                f"train.steps={steps}", f"train.log_every={steps}", f"train.sample_every={steps}",
                f"train.checkpoint_every={steps}", f"run.out_dir={out}", f"run.name={'streamed' if stream else 'memory'}"]
    command = [GANFORGE, "run", str(REPO / "recipes" / "dcgan_shapes.toml")]
    command += [arg for setting in settings for arg in ("--set", setting)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    record = json.loads((out / ("streamed" if stream else "memory") / "metrics.jsonl").read_text().splitlines()[-1])
    speed = record["images_per_s"]
    return wall - steps * 64 / speed, speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "ganforge-folder200k")
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    started = time.perf_counter()
    write_folder(args.folder, args.files)
    print(f"# streaming: {args.files:,} PNG files of 64 px in {args.folder} (ready in"
          f" {time.perf_counter() - started:.0f} s), {os.cpu_count()} cores, {args.workers} workers")
    print(f"loader alone: {loader_speed(args.folder, args.workers, 200):.0f} images/s")
    print("| data | start-up, s | training, images/s |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for stream in (True, False):
            startup, speed = run_speed(args.folder, stream, args.workers, args.steps, Path(scratch))
            print(f"| {'streamed' if stream else 'in memory'} | {startup:.0f} | {speed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
