"""Benchmark: the backbones at one budget, on Fashion-MNIST at 32 px.

Each row is a backbone with the objective and regularisers its paper trains it with, on the same
data, the same optimiser settings (Adam, lr 2e-4 for G and D, betas 0.5 and 0.999: setting C of
Miyato et al. 2018, where spectral norm does well with one D step per G step), batch 64, one D
step per G step and an average of G's weights (``[plugins.ema]``, decay 0.999) for every row, so
the discriminator sees the same real images in every row. Widths are CPU-sized and given in the
table. Each run goes through the real CLI, is scored by ``ganforge eval --json`` against 5,000
real images in the Fashion-MNIST feature network's space, and the table is ``ganforge compare``'s.

    python benchmarks/backbones.py --rows dcgan resnet --seeds 0 1 --jobs 2
    python benchmarks/backbones.py --rows resnet --seeds 0 --limited 2000   # 2,000 training images

``--limited N`` trains on N images only (``data.holdout`` holds out all the others, drawn once
with a fixed seed, so every run trains on the same N) and scores against the held-out images, for
the limited-data comparison. Needs the feature network: ``ganforge evaluator train --data
fashion-mnist --image-size 32``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GANFORGE = shutil.which("ganforge", path=os.path.dirname(sys.executable)) or "ganforge"
BATCH = 64
FASHION_TRAIN_IMAGES = 70_000  # Debian's package: the train and test splits together

COMMON = ["data.name=fashion-mnist", "data.image_size=32", "data.split=all", f"train.batch_size={BATCH}",
          "train.d_steps=1", "train.g_lr=2e-4", "train.d_lr=2e-4", "train.beta1=0.5", "train.beta2=0.999",
          "train.log_every=100", "train.sample_every=500", "train.checkpoint_every=500", "train.threads=1",
          "plugins.ema={decay = 0.999}"]

#: Each backbone with what its paper trains it with, at CPU-sized widths. Alone on a 2-core AMD
#: EPYC (two threads), 30 steps ran at about 200 (dcgan), 44 (resnet), 53 (biggan) and 35
#: (stylegan2) images/s; two runs at once on one thread each, 300 steps took 2.9, 11.9, 7.4 and
#: 11.9 minutes a row (docs/variants.md).
ROWS = {
    "dcgan": ["model.name=dcgan", "latent.noise=normal", "latent.noise_dim=100", "loss.name=non-saturating"],
    "resnet": ["model.name=resnet", "model.options={g_width = 64, d_width = 64}", "latent.noise=normal",
               "latent.noise_dim=128", "loss.name=hinge", "plugins.spectral-norm={}"],
    "biggan": ["model.name=biggan", "model.options={g_width = 16, d_width = 16}", "latent.noise=normal",
               "latent.noise_dim=128", "loss.name=hinge", "plugins.spectral-norm={generator = true}"],
    # The paper's setup (config F: style mixing 0.9, a residual D) with R1 at the cifar
    # configuration's gamma, 0.01, every 16 steps; no path-length term, as in that configuration.
    "stylegan2": ["model.name=stylegan2", "model.options={channel_base = 1024, w_dim = 128, mbstd_group = 4}",
                  "latent.noise=normal", "latent.noise_dim=128", "loss.name=non-saturating",
                  "plugins.r1={gamma = 0.01}"],
}

#: Regularisers for little data, each added to a row in the limited-data comparison, with their
#: schedules scaled from the papers' runs to this one's length (``steps``): LeCam's averages start
#: after a tenth of the run (the reference: 1,000 of 100,000 iterations would leave the term off
#: for all of a short run), and ADA's p may move from 0 to 1 within a tenth of the images D sees
#: (the reference's 500 kimg is 2% of a 25,000 kimg run; at 500 kimg here p would stay near 0).
LIMITED = {
    "none": lambda steps: [],
    "diffaugment": lambda steps: ["plugins.diffaugment={}"],
    "lecam": lambda steps: [f"plugins.lecam={{start = {steps // 10}}}"],
    "ada": lambda steps: [f"plugins.ada={{speed_kimg = {steps * BATCH / 10 / 1000:g}}}"],
}


def overrides(items: list[str]) -> list[str]:
    return [part for item in items for part in ("--set", item)]


def train_and_evaluate(row: str, extra: str, seed: int, steps: int, limited: int, out_dir: Path) -> Path:
    name = f"{row}{'_' + extra if extra != 'none' else ''}_seed{seed}"
    settings = [*COMMON, *ROWS[row], *LIMITED[extra](steps), f"run.seed={seed}", f"run.name={name}",
                f"run.out_dir={out_dir}", f"train.steps={steps}"]
    if limited:
        settings.append(f"data.holdout={FASHION_TRAIN_IMAGES - limited}")
    started = time.perf_counter()
    log = (out_dir / f"{name}.log").open("w")
    subprocess.run([GANFORGE, "run", str(REPO / "recipes" / "dcgan_mnist.toml"), *overrides(settings)],
                   check=True, stdout=log, stderr=subprocess.STDOUT)
    minutes = (time.perf_counter() - started) / 60
    on = ["--on", "holdout"] if limited else []
    scored = subprocess.run([GANFORGE, "eval", str(out_dir / name), "--json", *on], check=True,
                            capture_output=True, text=True)
    (out_dir / f"{name}.eval.json").write_text(scored.stdout)
    print(f"{name}: {minutes:.1f} minutes, fid {json.loads(scored.stdout).get('fid')}", flush=True)
    return out_dir / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--with", dest="extras", nargs="+", default=["none"], choices=list(LIMITED))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--limited", type=int, default=0, help="Train on this many images only.")
    parser.add_argument("--jobs", type=int, default=1, help="Runs at once (one CPU thread each).")
    parser.add_argument("--out-dir", type=Path, default=Path("runs") / "backbones")
    args = parser.parse_args()
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"# backbones on Fashion-MNIST 32 px; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs;"
          f" {args.steps} steps of 64; limited {args.limited or 'no'}; {args.jobs} runs at once", flush=True)
    jobs = [(row, extra, seed) for row in args.rows for extra in args.extras for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: train_and_evaluate(*job, args.steps, args.limited, out_dir), jobs))
    on = ["--on", "holdout"] if args.limited else []
    table = subprocess.run([GANFORGE, "compare", *map(str, runs), "--metrics", "fid,kid,precision,recall", *on],
                           check=True, capture_output=True, text=True)
    print(table.stdout)


if __name__ == "__main__":
    main()
