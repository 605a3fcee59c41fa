"""Does FID in ganforge's feature space behave? Real digits against real digits, then corrupted.

Splits the 10,000 MNIST digits into two disjoint halves, and compares the first half with the
second as it is (FID about 0 up to sampling noise) and with the second corrupted at growing
strengths: Gaussian noise, blur, a blanked block. Every score should grow with the strength. Also
prints how long each metric takes on 5,000 against 5,000 images on this machine.

    ganforge evaluator train --data mnist --root ../shared/data/mnist
    python benchmarks/fid_corruption.py --root ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from ganforge.data import DataSettings, to_model_range
from ganforge.evaluator import default_path, load_evaluator
from ganforge.pluginmanager import make_plugin_host
from ganforge_plugins.metrics.quality import frechet_distance, kernel_distance, manifold_scores


def noise(images, strength, rng):
    return (images + strength * torch.randn(images.shape, generator=rng)).clamp(-1, 1)


def blur(images, sigma, rng):
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1)
    padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    rows = F.conv2d(padded, kernel)
    padded = F.pad(rows, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.transpose(2, 3))


def block(images, size, rng):
    """A size x size square blanked to the background at a random place in each image."""
    out = images.clone()
    n, _, h, w = images.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=rng)
    lefts = torch.randint(0, w - size + 1, (n,), generator=rng)
    for i in range(n):
        out[i, :, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size] = -1
    return out


CORRUPTIONS = [("none", None, 0), ("noise", noise, 0.1), ("noise", noise, 0.25), ("noise", noise, 0.5),
               ("blur", blur, 0.5), ("blur", blur, 1.0), ("blur", blur, 2.0),
               ("block", block, 6), ("block", block, 10), ("block", block, 14)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    parser.add_argument("--evaluator", type=Path, default=None)
    args = parser.parse_args()
    load = make_plugin_host().datasets.get("mnist")
    data = load(settings=DataSettings(name="mnist", root=args.root, split="all"))
    evaluator = load_evaluator(args.evaluator or default_path("mnist", data.image_shape))
    print(f"# feature network {evaluator.path} (sha256 {evaluator.sha256[:16]}..., layer {evaluator.record['layer']},"
          f" held-out accuracy {evaluator.record['held_out']['accuracy']})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    first, second = data.images[order[:5000]], to_model_range(data.images[order[5000:10000]])
    started = time.perf_counter()
    reference = evaluator.features(first)
    feature_seconds = time.perf_counter() - started
    print("| corruption | strength | FID | KID | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = torch.Generator().manual_seed(1)
    timings = {}
    for name, corrupt, strength in CORRUPTIONS:
        images = second if corrupt is None else corrupt(second, strength, rng)
        features = evaluator.features(images)
        started = time.perf_counter()
        fid = frechet_distance(reference, features)
        timings.setdefault("FID", time.perf_counter() - started)
        started = time.perf_counter()
        kid, _, _ = kernel_distance(reference, features)
        timings.setdefault("KID", time.perf_counter() - started)
        started = time.perf_counter()
        scores = manifold_scores(reference, features)
        timings.setdefault("precision/recall/density/coverage", time.perf_counter() - started)
        print(f"| {name} | {strength} | {fid:.3f} | {kid:.4f} | {scores['precision']:.3f} | {scores['recall']:.3f} |",
              flush=True)
    print()
    print(f"features of 5,000 images: {feature_seconds:.1f} s; " +
          "; ".join(f"{metric} on 5,000 vs 5,000 features: {seconds:.1f} s" for metric, seconds in timings.items()))


if __name__ == "__main__":
    main()
