"""``ganforge run`` for the distributed tests, with two test plugins: a model without batch norm
(so that DDP's averaged gradients can equal one process's on the combined batch exactly), a
recorder of the first step's gradients (and, with ``--record-sync``, of whether each of its
micro-batches' backward passes let DDP average the gradients), and optionally a head that no loss
term uses.

    python tests/distributed_probe.py RECIPE [--record FILE] [--record-sync FILE] [--record-weights DIR]
                                      [--unused-head] [--resume]

``--record-weights DIR`` has every rank save its networks' parameters at the end of training as
``DIR/rank{N}.pt``: DDP must leave them the same on every rank.

Started once per rank with torchrun's environment (RANK, WORLD_SIZE, ...), or alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.errors import GanforgeError
from ganforge.launch import run_recipe
from ganforge.models import Discriminator
from ganforge.pluginmanager import make_plugin_host

#: The float32 operations on the way to the plain MLP's gradients: G's 8 and 64 inputs, D's conv
#: (16 taps), linear (1,568 inputs) and head (32), back through both, and the weight gradients'
#: sums over 16 x 14 x 14 positions: under 10,000 in all.
PLAIN_MLP_GRADIENT_TERMS = 10_000


class PlainD(Discriminator):
    feature_dim = 32

    def __init__(self, channels):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(channels, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                                   nn.Linear(8 * 14 * 14, 32), nn.LeakyReLU(0.2))
        self.head = nn.Linear(32, 1)

    def features(self, images):
        return self.trunk(images)

    def adversarial(self, features):
        return self.head(features).squeeze(1)


def build_plain(image_shape, input_dim):
    channels, height, width = image_shape
    generator = nn.Sequential(nn.Linear(input_dim, 64), nn.ReLU(), nn.Linear(64, channels * height * width),
                              nn.Tanh(), nn.Unflatten(1, (channels, height, width)))
    return generator, PlainD(channels)


class Probe:
    def __init__(self, record: Path | None, unused_head: bool, record_sync: Path | None = None,
                 record_weights: Path | None = None):
        self.record, self.unused_head, self.record_sync = record, unused_head, record_sync
        self.record_weights = record_weights
        self.synced: dict[str, list[bool]] = {"D": [], "G": []}

    def note_sync(self, ctx, network) -> list:
        # Inside DDP's no_sync() the flag is off: that micro-batch's backward pass averages nothing.
        if ctx.step == 1:
            self.synced[ctx.phase].append(bool(getattr(network, "require_backward_grad_sync", True)))
        return []

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        return self.note_sync(ctx, ctx.run.training_discriminator)

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        return self.note_sync(ctx, ctx.run.training_generator)

    @hookimpl
    def ganforge_register_models(self, register):
        register("plain-mlp", build_plain)

    @hookimpl
    def ganforge_discriminator_heads(self, run, feature_dim):
        return [("unused", nn.Linear(feature_dim, 3))] if self.unused_head else []

    @hookimpl
    def ganforge_step_end(self, run, step):
        if step == 1 and self.record and run.ranks.primary:
            grads = {f"G.{name}": p.grad.clone() for name, p in run.generator.named_parameters()}
            grads.update({f"D.{name}": p.grad.clone() for name, p in run.discriminator.named_parameters()
                          if p.grad is not None})
            torch.save(grads, self.record)
        if step == 1 and self.record_sync and run.ranks.primary:
            torch.save(self.synced, self.record_sync)

    @hookimpl
    def ganforge_train_end(self, run, error):
        if self.record_weights and error is None:
            parameters = {f"{network}.{name}": p.detach().clone() for network, module in
                          (("G", run.generator), ("D", run.discriminator)) for name, p in module.named_parameters()}
            torch.save(parameters, self.record_weights / f"rank{run.ranks.rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--unused-head", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--record-sync", type=Path)
    parser.add_argument("--record-weights", type=Path)
    args = parser.parse_args()
    probe = Probe(args.record, args.unused_head, args.record_sync, args.record_weights)
    host = make_plugin_host(plugins=[("probe", probe)])
    try:
        run_recipe(args.recipe, resume=args.resume, host=host)
    except GanforgeError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 1))


if __name__ == "__main__":
    main()
