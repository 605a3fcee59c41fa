"""How much rounding generated images to 8 bits moves FID and KID in the own feature space.

Trains the own MNIST network as the tests do (the first 3,000 digits of the split, 1,000 held
out, 5 epochs), then compares 1,000 real digits with 1,000 other real digits plus Gaussian float
noise, the noisy floats given to the network as they are (as generated images were until the
8-bit step) and rounded to 8 bits (``ganforge.evaluator.as_8bit``, what every network reads now).

    python benchmarks/eight_bit_fid.py --root ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ganforge.data import DataSettings, ImageData, to_model_range
from ganforge.evaluator import train_evaluator
from ganforge.pluginmanager import make_plugin_host
from ganforge_plugins.metrics.quality import frechet_distance, kernel_distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    load = make_plugin_host().datasets.get("mnist")
    data = load(settings=DataSettings(name="mnist", root=args.root, split="all"))
    digits = ImageData(data.images[:3000], {"label": data.labels["label"][:3000]}, source="mnist first 3000")
    with tempfile.TemporaryDirectory() as folder:
        network = train_evaluator(digits, "mnist", "all", 1000, epochs=5, out=Path(folder) / "mnist.pt",
                                  log=lambda line: None)
    print(f"held-out accuracy {network.record['held_out']['accuracy']}")
    first = network.features(digits.images[:1000])
    other = to_model_range(digits.images[1000:2000])
    rng = torch.Generator().manual_seed(0)
    for sigma in (0.0, 0.01, 0.02, 0.05):
        noisy = (other + sigma * torch.randn(other.shape, generator=rng)).clamp(-1, 1)
        with torch.inference_mode():
            as_floats = network.net.eval().features(noisy)  # bypasses the 8-bit step on purpose
        rounded = network.features(noisy)
        fid = frechet_distance(first, as_floats), frechet_distance(first, rounded)
        kid = kernel_distance(first, as_floats)[0], kernel_distance(first, rounded)[0]
        print(f"sigma {sigma}: FID floats {fid[0]:.4f} rounded {fid[1]:.4f};"
              f" KID floats {kid[0]:.6f} rounded {kid[1]:.6f}")


if __name__ == "__main__":
    main()
