"""A plain, hand-written PyTorch training loop: the reference ganforge's speed is measured against.

It trains the same networks (imported from ganforge's model plugins, so the layers are identical)
with the same batch, optimizers, losses and InfoGAN terms as the recipes the throughput benchmark
runs, written the way a user would write them by hand: fp32, eager, default memory layout, Adam
with torch's defaults, one pass per image set. Nothing of ganforge's loop, hooks or plugins is used.

    python benchmarks/plain_loop.py --setup infogan --steps 100

On a GPU (benchmarks/gpu.py) the loop is given the speed-ups ganforge has, so that the two are
compared like for like: images and random draws on the device, no value read per step, fused
Adam, and where asked bf16 autocast (losses in float32) and ``torch.compile`` of its passes
(``reduce-overhead``: replayed as CUDA graphs).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ganforge_plugins.augmentation.images import MOVE_DRAWS, jitter_with_draws  # noqa: E402  (the recipe's moves)
from ganforge_plugins.infogan.plugin import QHead  # noqa: E402
from ganforge_plugins.models.dcgan import build_dcgan, build_dcgan_28  # noqa: E402

SETUPS = ("infogan", "infogan-paper", "dcgan64")


class Speedups:
    """What the loop runs with beyond the plain CPU loop: its device, autocast, compilation and
    Adam's kernels. The default is the plain loop itself."""

    def __init__(self, device: str = "cpu", precision: str = "fp32", compile_mode: str | None = None,
                 fused: bool = False):
        self.device, self.precision, self.compile_mode, self.fused = torch.device(device), precision, compile_mode, fused

    def autocast(self):
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def compiled(self, function):
        return torch.compile(function, mode=self.compile_mode) if self.compile_mode else function

    def adam(self, parameters, lr):
        return torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999), fused=self.fused or None)

    def begin_step(self):
        if self.compile_mode == "reduce-overhead":  # the CUDA graphs' memory of the last step may be reused
            torch.compiler.cudagraph_mark_step_begin()


class Passes:
    """D's trunk and head, G, and Q as the loop calls them: compiled or not, under autocast or not,
    with float32 out."""

    def __init__(self, G, D, Q, speedups: Speedups):
        self.speedups = speedups
        self.g, self.features = speedups.compiled(G), speedups.compiled(D.features)
        self.adversarial = speedups.compiled(D.adversarial)
        self.q = speedups.compiled(Q) if Q is not None else None

    def run(self, function, inputs):
        with self.speedups.autocast():
            return function(inputs).float()


class PlainInfoGAN:
    """InfoGAN as in recipes/infogan_mnist.toml: 62 U(-1, 1) noise variables, a Cat(10) code and
    two U(-1, 1) codes (fixed-σ Gaussian NLL, λ 0.1), Q on D's shared features; with
    ``real_terms`` the consistency (weight 3) and real-image information (weight 1) terms, and the
    continuous codes tied to the shear and stretch moves on Q alone (weight 0.3)."""
    TIED_MOVES = [MOVE_DRAWS.index("shear"), MOVE_DRAWS.index("stretch")]

    def __init__(self, images: torch.Tensor, batch_size: int, real_terms: bool, seed: int = 0,
                 speedups: Speedups = Speedups()):
        torch.manual_seed(seed)
        device = self.device = speedups.device
        self.images, self.batch_size, self.real_terms, self.speedups = images.to(device), batch_size, real_terms, speedups
        self.noise_dim, self.categories, self.continuous = 62, 10, 2
        self.G, self.D = build_dcgan_28(images.shape[1:], self.noise_dim + self.categories + self.continuous)
        self.Q = QHead(self.D.feature_dim, 128, self.categories + self.continuous)
        self.G, self.D, self.Q = self.G.to(device), self.D.to(device), self.Q.to(device)
        # The shipped recipe's rates of its first 625 steps with its terms, the paper's without (the
        # speed is the same at any rate).
        g_lr, d_lr = (1.5e-3, 3e-4) if real_terms else (1e-3, 2e-4)
        self.opt_g = speedups.adam(self.G.parameters(), lr=g_lr)
        self.opt_d = speedups.adam([*self.D.parameters(), *self.Q.parameters()], lr=d_lr)
        self.moves = torch.Generator(device).manual_seed(seed + 1)
        self.passes = Passes(self.G, self.D, self.Q, speedups)

    def latents(self):
        n, device = self.batch_size, self.device
        z = torch.rand(n, self.noise_dim, device=device) * 2 - 1
        digit = torch.randint(self.categories, (n,), device=device)
        continuous = torch.rand(n, self.continuous, device=device) * 2 - 1
        return torch.cat([z, F.one_hot(digit, self.categories).float(), continuous], 1), digit, continuous

    def info_loss(self, q, digit, continuous):
        categorical = F.cross_entropy(q[:, :self.categories], digit)
        gaussian = (0.5 * (continuous - q[:, self.categories:]).pow(2) + 0.5 * math.log(2 * math.pi)).sum(1).mean()
        return categorical + 0.1 * gaussian

    def step(self):
        """One D and one G update; the losses come back as tensors (reading them is a device sync)."""
        self.speedups.begin_step()
        p = self.passes
        index = torch.randint(len(self.images), (self.batch_size,), device=self.device)
        real = self.images[index].float() / 127.5 - 1
        inputs, digit, continuous = self.latents()
        fake = p.run(p.g, inputs)
        ones = torch.ones(self.batch_size, device=self.device)
        zeros = torch.zeros(self.batch_size, device=self.device)

        real_features = p.run(p.features, real)
        fake_features = p.run(p.features, fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(p.run(p.adversarial, real_features), ones)
                  + F.binary_cross_entropy_with_logits(p.run(p.adversarial, fake_features), zeros))
        d_loss = d_loss + self.info_loss(p.run(p.q, fake_features), digit, continuous)
        if self.real_terms:
            q_real = p.run(p.q, real_features)
            moved_images, draws = jitter_with_draws(real, self.moves)
            moved_features = p.run(p.features, moved_images)
            log_p = q_real[:, :self.categories].log_softmax(1)
            moved = p.run(p.q, moved_features)[:, :self.categories].log_softmax(1)
            consistency = -(log_p.detach().exp() * moved).sum(1).mean()
            code_change = p.run(p.q, moved_features.detach())[:, self.categories:] - q_real[:, self.categories:].detach()
            code_move = (code_change - draws[:, self.TIED_MOVES]).pow(2).mean(0).sum()
            conditional = -(log_p.exp() * log_p).sum(1).mean()
            marginal_log = torch.logsumexp(log_p, 0) - math.log(self.batch_size)
            information = -(marginal_log.exp() * marginal_log).sum() - conditional
            d_loss = d_loss + 3.0 * consistency - information + 0.3 * code_move
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()

        fake_features = p.run(p.features, fake)
        g_loss = (F.binary_cross_entropy_with_logits(p.run(p.adversarial, fake_features), ones)
                  + self.info_loss(p.run(p.q, fake_features), digit, continuous))
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return d_loss.detach(), g_loss.detach()


class PlainDCGAN:
    """DCGAN as in recipes/dcgan_shapes.toml at 64 px: 100 N(0, 1) noise variables, Adam 2e-4."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, speedups: Speedups = Speedups()):
        torch.manual_seed(seed)
        device = self.device = speedups.device
        self.images, self.batch_size, self.speedups = images.to(device), batch_size, speedups
        G, D = build_dcgan(images.shape[1:], 100)
        self.G, self.D = G.to(device), D.to(device)
        self.opt_g = speedups.adam(self.G.parameters(), lr=2e-4)
        self.opt_d = speedups.adam(self.D.parameters(), lr=2e-4)
        self.passes = Passes(self.G, self.D, None, speedups)

    def step(self):
        """One D and one G update; the losses come back as tensors (reading them is a device sync)."""
        self.speedups.begin_step()
        p, n, device = self.passes, self.batch_size, self.device
        index = torch.randint(len(self.images), (n,), device=device)
        real = self.images[index].float() / 127.5 - 1
        fake = p.run(p.g, torch.randn(n, 100, device=device))
        ones, zeros = torch.ones(n, device=device), torch.zeros(n, device=device)
        d_loss = (F.binary_cross_entropy_with_logits(p.run(p.adversarial, p.run(p.features, real)), ones)
                  + F.binary_cross_entropy_with_logits(p.run(p.adversarial, p.run(p.features, fake.detach())), zeros))
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(p.run(p.adversarial, p.run(p.features, fake)), ones)
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return d_loss.detach(), g_loss.detach()


def make(setup: str, images: torch.Tensor, batch_size: int, seed: int = 0, speedups: Speedups = Speedups()):
    if setup == "dcgan64":
        return PlainDCGAN(images, batch_size, seed, speedups)
    return PlainInfoGAN(images, batch_size, real_terms=setup == "infogan", seed=seed, speedups=speedups)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(loop, steps: int, warmup: int = 5) -> float:
    """Images per second over ``steps`` steps after ``warmup`` untimed ones (the device's queue
    emptied before the clock starts and before it stops)."""
    for _ in range(warmup):
        loop.step()
    synchronize(loop.device)
    started = time.perf_counter()
    for _ in range(steps):
        loop.step()
    synchronize(loop.device)
    return steps * loop.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=SETUPS, default="infogan")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    size = 28 if args.setup != "dcgan64" else args.image_size
    images = torch.randint(0, 256, (1024, 1, size, size), dtype=torch.uint8)
    loop = make(args.setup, images, args.batch_size)
    print(f"{args.setup}: {images_per_second(loop, args.steps):.1f} images/s ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
