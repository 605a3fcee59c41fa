"""Benchmark: does InfoGAN's categorical code recover the MNIST digit classes, on every seed?

Trains recipes/infogan_mnist.toml once per seed through the real CLI, evaluates each run with
``ganforge eval --json``, and prints a Markdown table: per seed the matched accuracy, NMI, training
minutes and images seen, then the mean, the minimum and how many seeds reach 90% and 95%.

    python benchmarks/infogan_mnist.py --data-root ../shared/data/mnist --seeds 0 1 2

Runs one seed at a time, so each has the whole machine. Nothing here is a unit test: it takes
about 10 minutes per seed on a 2-core CPU.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"


def train_and_evaluate(recipe: Path, seed: int, data_root: str, out_dir: Path, extra: list[str]) -> dict:
    name = f"{recipe.stem}_seed{seed}"
    command = [GANFORGE, "run", str(recipe), "--set", f"run.seed={seed}", "--set", f"run.name={name}",
               "--set", f"run.out_dir={out_dir}", "--set", f"data.root={data_root}", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - started) / 60
    result = subprocess.run([GANFORGE, "eval", str(out_dir / name), "--json"], check=True, capture_output=True, text=True)
    evaluation = json.loads(result.stdout)
    last = json.loads((out_dir / name / "metrics.jsonl").read_text().splitlines()[-1])
    return {**evaluation, "seed": seed, "minutes": minutes, "images_seen": last["images"]}


def report(rows: list[dict], code: str) -> str:
    accuracies = [row[f"{code}/accuracy"] for row in rows]
    lines = [
        f"| seed | {code} accuracy | {code} NMI | {code} purity | training minutes | images seen |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['seed']} | {row[f'{code}/accuracy']:.4f} | {row[f'{code}/nmi']:.4f} |"
                     f" {row[f'{code}/purity']:.4f} | {row['minutes']:.1f} | {row['images_seen']:,} |")
    lines += [
        "",
        f"mean accuracy {statistics.mean(accuracies):.4f}, minimum {min(accuracies):.4f}, "
        f"seeds >= 0.90: {sum(a >= 0.90 for a in accuracies)}/{len(rows)}, "
        f"seeds >= 0.95: {sum(a >= 0.95 for a in accuracies)}/{len(rows)}; "
        f"longest training {max(row['minutes'] for row in rows):.1f} minutes",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "infogan_mnist.toml")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out-dir", type=Path, default=Path("runs") / "benchmark")
    parser.add_argument("--code", default="digit", help="The categorical code to report.")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="Recipe override for every seed.")
    args = parser.parse_args()
    extra = [item for override in args.extra for item in ("--set", override)]
    print(f"# {args.recipe.name} on {args.data_root}; {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} CPUs; overrides: {' '.join(args.extra) or 'none'}", flush=True)
    rows = []
    for seed in args.seeds:
        rows.append(train_and_evaluate(args.recipe, seed, args.data_root, args.out_dir.resolve(), extra))
        row = rows[-1]
        print(f"seed {seed}: accuracy {row[f'{args.code}/accuracy']:.4f}, nmi {row[f'{args.code}/nmi']:.4f},"
              f" {row['minutes']:.1f} minutes", flush=True)
    print()
    print(report(rows, args.code))


if __name__ == "__main__":
    main()
