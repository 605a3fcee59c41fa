"""How much the discriminator's batch-norm running statistics matter to evaluation.

Q is evaluated in eval mode, so it normalises with D's running statistics. Those statistics are
whatever passes updated them during training: real and fake batches, and (before the fix in the
training loop) the generator's pass and InfoGAN's consistency pass on moved images as well. This
script scores each checkpoint twice with every registered metric: with the statistics it stored,
and with statistics re-estimated on the real images alone (reset, then a cumulative average over
one pass of the data in training mode, no gradients, no weights changed).

    python benchmarks/bn_statistics.py RUN_DIR/checkpoints/step_0000500.pt RUN_DIR/checkpoints/last.pt \\
        --set data.root=../shared/data/mnist
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from ganforge.data import to_model_range
from ganforge.launch import run_from_checkpoint
from ganforge.pluginmanager import make_plugin_host
from ganforge.run import load_data

BATCH = 500


@torch.no_grad()
def reestimate_on_real(discriminator: nn.Module, images: torch.Tensor) -> None:
    """Reset every batch norm and average its statistics over ``images`` (uint8), in batches."""
    norms = [m for m in discriminator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch, not an exponential one
    discriminator.train()
    for start in range(0, len(images), BATCH):
        discriminator(to_model_range(images[start:start + BATCH]))
    discriminator.eval()


def metrics(host, run, data) -> dict[str, float]:
    results = {}
    for entry in host.metrics:
        results.update(entry.value(run, data))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--metric", default="digit/accuracy")
    args = parser.parse_args()
    print(f"| checkpoint | step | {args.metric}, stored statistics | {args.metric}, re-estimated on real images |")
    print("|---|---:|---:|---:|")
    for path in args.checkpoints:
        host = make_plugin_host()  # a run's plugin objects register with its own host
        run, _ = run_from_checkpoint(path, host, overrides=args.overrides)
        data = load_data(run.recipe, host)
        stored = metrics(host, run, data)[args.metric]
        reestimate_on_real(run.discriminator, data.images)
        real = metrics(host, run, data)[args.metric]
        print(f"| {path} | {run.step} | {stored:.4f} | {real:.4f} |", flush=True)


if __name__ == "__main__":
    main()
