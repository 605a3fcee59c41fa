"""Benchmark: does InfoGAN's categorical code recover the MNIST digit classes, on every seed?

Trains recipes/infogan_mnist.toml once per seed through the real CLI, evaluates each run with
``ganforge eval --json``, and prints a Markdown table: per seed the matched accuracy, NMI, training
minutes and images seen, then the mean, the minimum and how many seeds reach 90% and 95%.

    python benchmarks/infogan_mnist.py --data-root ../shared/data/mnist --seeds 0 1 2

With ``--holdout N`` each run trains without N digits (``data.holdout``, the same N for every
seed) and is scored twice: on the digits it trained on, and on the N it never saw.

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


def evaluate(run_dir: Path, on: str) -> dict:
    result = subprocess.run([GANFORGE, "eval", str(run_dir), "--json", "--on", on], check=True, capture_output=True,
                            text=True)
    return json.loads(result.stdout)


def train_and_evaluate(recipe: Path, seed: int, data_root: str, out_dir: Path, extra: list[str],
                       holdout: int) -> dict:
    name = f"{recipe.stem}_seed{seed}"
    command = [GANFORGE, "run", str(recipe), "--set", f"run.seed={seed}", "--set", f"run.name={name}",
               "--set", f"run.out_dir={out_dir}", "--set", f"data.root={data_root}",
               "--set", f"data.holdout={holdout}", *extra]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    minutes = (time.perf_counter() - started) / 60
    row = evaluate(out_dir / name, "train")
    if holdout:
        row.update({f"holdout {key}": value for key, value in evaluate(out_dir / name, "holdout").items()})
    last = json.loads((out_dir / name / "metrics.jsonl").read_text().splitlines()[-1])
    return {**row, "seed": seed, "minutes": minutes, "images_seen": last["images"]}


def report(rows: list[dict], code: str) -> str:
    parts = [""] + (["holdout "] if f"holdout {code}/accuracy" in rows[0] else [])
    titles = {"": "", "holdout ": "held-out "}
    header = " | ".join(f"{titles[p]}{code} {measure}" for p in parts for measure in ("accuracy", "NMI", "purity"))
    lines = [
        f"| seed | {header} | training minutes | images seen | images scored |",
        "|---:|" + "---:|" * (3 * len(parts) + 3),
    ]
    for row in rows:
        figures = " | ".join(f"{row[f'{p}{code}/{m}']:.4f}" for p in parts for m in ("accuracy", "nmi", "purity"))
        scored = " / ".join(f"{row[f'{p}eval_images']:,}" for p in parts)
        lines.append(f"| {row['seed']} | {figures} | {row['minutes']:.1f} | {row['images_seen']:,} | {scored} |")
    lines.append("")
    for part in parts:
        accuracies = [row[f"{part}{code}/accuracy"] for row in rows]
        lines.append(
            f"{titles[part] or 'transductive '}mean accuracy {statistics.mean(accuracies):.4f}, minimum {min(accuracies):.4f}, "
            f"seeds >= 0.90: {sum(a >= 0.90 for a in accuracies)}/{len(rows)}, "
            f"seeds >= 0.95: {sum(a >= 0.95 for a in accuracies)}/{len(rows)}")
    lines.append(f"longest training {max(row['minutes'] for row in rows):.1f} minutes")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "infogan_mnist.toml")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out-dir", type=Path, default=Path("runs") / "benchmark")
    parser.add_argument("--code", default="digit", help="The categorical code to report.")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="Recipe override for every seed.")
    parser.add_argument("--holdout", type=int, default=0, help="Digits kept out of training and scored apart.")
    args = parser.parse_args()
    extra = [item for override in args.extra for item in ("--set", override)]
    print(f"# {args.recipe.name} on {args.data_root}; {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} CPUs; holdout {args.holdout}; overrides: {' '.join(args.extra) or 'none'}", flush=True)
    rows = []
    for seed in args.seeds:
        rows.append(train_and_evaluate(args.recipe, seed, args.data_root, args.out_dir.resolve(), extra, args.holdout))
        row = rows[-1]
        held = f", held-out accuracy {row[f'holdout {args.code}/accuracy']:.4f}" if args.holdout else ""
        print(f"seed {seed}: accuracy {row[f'{args.code}/accuracy']:.4f}, nmi {row[f'{args.code}/nmi']:.4f}{held},"
              f" {row['minutes']:.1f} minutes", flush=True)
    print()
    print(report(rows, args.code))


if __name__ == "__main__":
    main()
