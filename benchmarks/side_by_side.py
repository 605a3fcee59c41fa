"""Benchmark: two ganforge runs side by side on one machine (a user comparing seeds or variants).

For each setting of threads and OpenMP wait policy, trains the InfoGAN MNIST recipe alone, then
two copies at once (seeds 0 and 1), and prints each run's images per second and its share of the
solo speed. Each run is ``ganforge run`` in a process of its own; its figure is the run's own
``images_per_s`` (metrics.jsonl).

    python benchmarks/side_by_side.py --data-root ../shared/data/mnist --steps 150

A setting is ``THREADS/POLICY``: THREADS is ``train.threads`` (0: ganforge's default) and POLICY
is ``OMP_WAIT_POLICY`` (``default``: whatever ganforge sets, ``active`` or ``passive``) or
``spin=N`` (``GOMP_SPINCOUNT``: how long a waiting OpenMP thread spins before it sleeps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"
RECIPE = REPO / "recipes" / "infogan_mnist.toml"


def start(seed: int, threads: int, policy: str, steps: int, data_root: str, out_dir: Path) -> tuple:
    name = f"seed{seed}"
    shutil.rmtree(out_dir / name, ignore_errors=True)
    settings = [f"data.root={data_root}", f"run.out_dir={out_dir}", f"run.name={name}", f"run.seed={seed}",
                f"train.steps={steps}", f"train.log_every={steps}", f"train.sample_every={steps}",
                f"train.checkpoint_every={steps}", f"train.threads={threads}"]
    env = dict(os.environ)
    if policy.startswith("spin="):  # libgomp's spin count before a waiting thread sleeps
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin=")
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy.upper()
    command = [GANFORGE, "run", str(RECIPE)] + [arg for setting in settings for arg in ("--set", setting)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, out_dir / name


def finish(process, directory: Path) -> tuple[float, str]:
    output, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a run failed:\n{output}")
    header = next((line for line in output.splitlines() if "thread" in line), "")
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["images_per_s"], header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--settings", nargs="+", default=["0/default", "0/active", "2/passive", "1/default"])
    args = parser.parse_args()
    print(f"# side by side: {os.cpu_count()} cores, InfoGAN MNIST as shipped, {args.steps} steps per run")
    print("| threads/wait policy | solo, images/s | side by side, images/s (two runs) | share of solo | header says |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        for setting in args.settings:
            threads, policy = setting.split("/")
            solo, header = finish(*start(0, int(threads), policy, args.steps, args.data_root, out))
            pair = [start(seed, int(threads), policy, args.steps, args.data_root, out) for seed in (0, 1)]
            speeds = [finish(*running)[0] for running in pair]
            shares = ", ".join(f"{speed / solo:.0%}" for speed in speeds)
            print(f"| {setting} | {solo:.1f} | {speeds[0]:.1f}, {speeds[1]:.1f} | {shares} | {header.strip()[:60]} |",
                  flush=True)


if __name__ == "__main__":
    main()
