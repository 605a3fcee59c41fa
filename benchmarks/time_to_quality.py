"""Benchmark: how many images, and how many minutes, until InfoGAN's categorical code finds the
MNIST digits: the first evaluation at which Q's matched accuracy reaches 0.90, 0.95 and 0.98.

Trains recipes/infogan_mnist.toml once per seed through the real CLI, scoring Q's categories
against the digit labels of every training image every ``--every`` steps (``[eval]`` with
``categorical-clustering``; scoring never changes what is trained). Minutes are training time
only (each scoring's own seconds are logged and taken out). The plain hand-written loop's speed on
the same setup is measured in the same run (benchmarks/plain_loop.py), and each time is also
given in "plain-loop minutes", images / plain speed: figures that compare across machines.

    python benchmarks/time_to_quality.py --data-root ../shared/data/mnist --seeds 0 1 2
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

REPO = Path(__file__).resolve().parents[1]
GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"
TARGETS = (0.90, 0.95, 0.98)
FIGURE = "eval/digit/accuracy"


def plain_speed(steps: int) -> float:
    output = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plain_loop.py"), "--setup", "infogan",
                             "--steps", str(steps)], check=True, capture_output=True, text=True).stdout
    return float(output.split(":")[1].split()[0])


def train(seed: int, every: int, data_root: str, out_dir: Path, extra: list[str]) -> tuple[list[dict], float]:
    settings = [f"data.root={data_root}", f"run.seed={seed}", f"run.out_dir={out_dir}", f"run.name=seed{seed}",
                f"eval.every={every}", 'eval.metrics=["categorical-clustering"]', *extra]
    command = [GANFORGE, "run", str(REPO / "recipes" / "infogan_mnist.toml")]
    command += [arg for setting in settings for arg in ("--set", setting)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out_dir / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
    return records, wall


def first_reaching(records: list[dict], target: float) -> dict | None:
    return next((record for record in records if record.get(FIGURE, 0) >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--every", type=int, default=25, help="steps between scorings")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="an extra recipe override")
    parser.add_argument("--plain-steps", type=int, default=100, help="steps of the plain loop's timing (0: skip it)")
    parser.add_argument("--out-dir", type=Path, help="keep the runs here (seed<S>/), e.g. for ganforge eval;"
                                                      " by default they go to a scratch folder")
    args = parser.parse_args()
    plain = plain_speed(args.plain_steps) if args.plain_steps else None
    speed = f"plain loop {plain:.1f} images/s on this machine" if plain else "plain loop not timed"
    print(f"# time to quality: InfoGAN MNIST as shipped{' with ' + ' '.join(args.extra) if args.extra else ''};"
          f" scored every {args.every} steps; {speed}")
    header = " | ".join(f"{target:.2f}: images, min{' (plain-loop min)' if plain else ''}" for target in TARGETS)
    print(f"| seed | {header} | final accuracy | training min | images/s |")
    print("|---|" + "---|" * len(TARGETS) + "---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            records, wall = train(seed, args.every, args.data_root, args.out_dir or Path(scratch), args.extra)
            scored = [record for record in records if FIGURE in record]
            steps = max(record["step"] for record in records)
            images = max(record.get("images", 0) for record in records)
            training = wall - sum(record.get("eval_seconds", 0) for record in records)
            per_image = training / images  # start-up included: an upper bound on the minutes
            cells = []
            for target in TARGETS:
                hit = first_reaching(scored, target)
                if hit is None:
                    cells.append("not reached")
                    continue
                seen = hit["step"] * images // steps
                in_plain_minutes = f" ({seen / plain / 60:.1f})" if plain else ""
                cells.append(f"{seen:,}, {seen * per_image / 60:.1f}{in_plain_minutes}")
            print(f"| {seed} | {' | '.join(cells)} | {scored[-1][FIGURE]:.4f} | {training / 60:.1f} |"
                  f" {images / training:.0f} |", flush=True)


if __name__ == "__main__":
    main()
