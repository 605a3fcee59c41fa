"""Feature networks for sample-quality metrics, trained here and verified by checksum.

FID, KID and precision/recall compare generated and real images in the feature space of a
network. Public tools download an Inception network on first use; ganforge trains a small
classifier on a labelled dataset instead (``ganforge evaluator train``), on a part of it, and
records how: a ``.json`` beside the weights holds the dataset, the split, the held-out part and
the classifier's accuracy on it, the feature layer, the command and the weights' SHA-256, which is
checked before every use. Nothing is downloaded and nothing is trained unless the user asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import save_atomically
from .data import ImageData, select_holdout, to_model_range
from .errors import UsageError

HOME_ENV = "GANFORGE_HOME"
LAYER = "pooled-128"  # the feature layer: the global average pool before the classifier
FEATURE_DIM = 128
EVALUATOR_SEED = 0
EVALUATOR_EPOCHS = 8
#: How the own network's inputs are prepared (provenance, and part of the real-feature cache key).
PREPARATION = "as stored, 8-bit"


class EvaluatorError(UsageError):
    """A feature network that is missing, altered or unreadable."""


def home() -> Path:
    """ganforge's cache folder: ``$GANFORGE_HOME``, else ``$XDG_CACHE_HOME/ganforge``, else ``~/.cache/ganforge``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganforge"


def as_8bit(images: torch.Tensor) -> torch.Tensor:
    """Images as datasets store them: uint8 unchanged; floats in [-1, 1] (generated images)
    rounded to the nearest of the 256 levels, the inverse of ``to_model_range``. Every feature
    network reads its inputs through this, so real and generated images reach it alike: real
    images hold 8-bit values only, and a network trained on them never saw values between."""
    if images.dtype == torch.uint8:
        return images
    return images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def recorded_feature_dim(path: Path | None) -> int:
    """The feature width in the record beside the network file ``path``; this design's
    ``FEATURE_DIM`` when there is no readable record (yet)."""
    try:
        return int(json.loads(Path(path).with_suffix(".json").read_text())["feature_dim"])
    except (TypeError, OSError, ValueError, KeyError):
        return FEATURE_DIM


def default_path(dataset: str, image_shape: tuple[int, int, int]) -> Path:
    return home() / "evaluators" / f"{dataset}-{'x'.join(map(str, image_shape))}.pt"


class FeatureNet(nn.Module):
    """A small convolutional classifier; its 128 pooled features are what the metrics compare.
    Global average pooling lets one design take 28, 32 or 64 px images."""

    def __init__(self, channels: int, classes: int):
        super().__init__()

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(True)]

        self.body = nn.Sequential(
            *block(channels, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classify = nn.Linear(FEATURE_DIM, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 128) features of images in [-1, 1]."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))


@dataclass
class Evaluator:
    """A verified feature network and the record of how it was made."""

    net: FeatureNet
    record: dict
    path: Path

    preparation = PREPARATION

    @property
    def sha256(self) -> str:
        return self.record["sha256"]

    @property
    def feature_dim(self) -> int:
        return int(self.record.get("feature_dim", FEATURE_DIM))

    @torch.inference_mode()
    def features(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Features of images in [-1, 1] (float, rounded to 8 bits first) or uint8, in batches, on the CPU."""
        return self._map(self.net.features, images, batch)

    @torch.inference_mode()
    def class_logits(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """The classifier's logits, (B, classes): its softmax is the network's p(y | x)."""
        return self._map(self.net, images, batch)

    def classify(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """The predicted class of each image."""
        return self.class_logits(images, batch).argmax(dim=1)

    @property
    def logits_layer(self) -> str:
        """What :meth:`class_logits` reads, for provenance."""
        return f"classifier-{self.record['classes']} (the linear classifier on {LAYER}, with its bias)"

    def _map(self, function, images: torch.Tensor, batch: int) -> torch.Tensor:
        self.net.eval()
        device = next(self.net.parameters()).device
        out = []
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            part = to_model_range(as_8bit(part))
            out.append(function(part.to(device)).float().cpu())
        return torch.cat(out)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def train_evaluator(data: ImageData, dataset: str, split: str, holdout: int, epochs: int, out: Path,
                    seed: int = EVALUATOR_SEED, log=print) -> Evaluator:
    """Train a :class:`FeatureNet` on ``data`` minus ``holdout`` images (the same held-out part
    as ``data.holdout``), measure it on those, and save weights and record to ``out``."""
    label = data.main_label
    if label is None:
        raise EvaluatorError(f"{dataset} has no labels: a feature network is trained as a classifier")
    train, held = select_holdout(data, holdout, "train"), select_holdout(data, holdout, "holdout")
    classes = int(data.labels[label].max()) + 1
    with torch.random.fork_rng(devices=[]):  # initialised from the seed; the caller's global stream untouched
        torch.manual_seed(seed)
        net = FeatureNet(data.image_shape[0], classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    order_rng = torch.Generator().manual_seed(seed)
    images, labels = train.images, train.labels[label]
    # The rate decays to 0 over the run (cosine): the last epochs settle instead of hopping.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * -(-len(images) // 128))
    started = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(images), generator=order_rng)
        for start in range(0, len(order), 128):
            index = order[start:start + 128]
            loss = F.cross_entropy(net(to_model_range(images[index])), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f}, {time.perf_counter() - started:.0f} s")
    evaluator = Evaluator(net, {}, out)
    accuracy = float((evaluator.classify(held.images) == held.labels[label]).float().mean())
    record = {
        "dataset": dataset, "split": split, "label": label, "classes": classes,
        "image_shape": list(data.image_shape), "trained_on": len(train),
        "held_out": {"images": len(held), "how": f"data.holdout = {holdout} (the same images a run holds out)",
                     "accuracy": round(accuracy, 4)},
        "layer": LAYER, "feature_dim": FEATURE_DIM, "epochs": epochs, "seed": seed,
        "command": shlex.join(["ganforge", *sys.argv[1:]]) if sys.argv and "ganforge" in sys.argv[0] else "",
        "torch": str(torch.__version__),
    }
    save_atomically({"format": 1, "state_dict": net.state_dict(), "record": record}, out)
    record["sha256"] = sha256_of(out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    evaluator.record = record
    return evaluator


def load_evaluator(path: Path) -> Evaluator:
    """The feature network at ``path``, after checking its SHA-256 against its record."""
    path = Path(path)
    record_path = path.with_suffix(".json")
    if not path.is_file() or not record_path.is_file():
        raise EvaluatorError(f"no feature network at {path} (with its record {record_path.name})")
    try:
        record = json.loads(record_path.read_text())
        expected = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EvaluatorError(f"{record_path} is not a feature network's record; train it again") from None
    if sha256_of(path) != expected:
        raise EvaluatorError(f"{path} does not match the SHA-256 in {record_path.name}: it was altered or"
                             " damaged; train it again with ganforge evaluator train")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        with torch.random.fork_rng(devices=[]):  # its initial weights are replaced; draw none from the caller's stream
            net = FeatureNet(record["image_shape"][0], record["classes"])
        net.load_state_dict(state["state_dict"])
    except Exception as error:  # a file that matches its checksum but not the network: a record written by hand
        raise EvaluatorError(f"{path} cannot be read as a feature network ({type(error).__name__})") from None
    return Evaluator(net.eval(), record, path)
