"""Running the registered metrics on a run: which ones, on how many images, with which feature
network, and the record of how every figure was made.

A metric is ``metric(run, data, settings)`` (any subset of those names) returning a dict of named
floats. ``settings`` (:class:`EvalSettings`) gives it the number of images to compare, the
verified feature network, cached features of the real images and generated images from a seeded
stream, and takes the provenance of each figure.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import inception
from .data import ImageData
from .errors import UsageError
from .evaluator import EVALUATOR_EPOCHS, Evaluator, EvaluatorError, default_path, home, load_evaluator, train_evaluator
from .registry import unknown_name_message

DEFAULT_IMAGES = 5000
EVALUATOR_HOLDOUT = 2000


@dataclass
class EvalSettings:
    """What ``ganforge eval`` was asked for, and what the metrics share."""

    n: int = DEFAULT_IMAGES
    seed: int = 0
    part: str = "train"
    evaluator_path: Path | None = None  # a feature network file, or "inception"
    inception_weights: Path | None = None  # the Inception-v3 weights file (else $GANFORGE_INCEPTION_WEIGHTS)
    train_evaluator: bool = False
    trainer: Callable[[Path], Evaluator] | None = None  # trains the default network when asked to
    provenance: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it did not run
    notes: list[str] = field(default_factory=list)
    _evaluator: Evaluator | None = None
    _dataset: tuple[str, tuple[int, int, int]] = ("", (0, 0, 0))

    def evaluator(self) -> Evaluator:
        """The feature network: ``--evaluator FILE`` (or ``inception``: Inception-v3 from the
        user's weights file), else the cached one for this dataset and image shape, trained first
        only with ``--train-evaluator``. Checked by SHA-256."""
        if self._evaluator is None and str(self.evaluator_path) == inception.NAME:
            self._evaluator = inception.InceptionFeatures(inception.weights_path(self.inception_weights))
        if self._evaluator is None:
            dataset, shape = self._dataset
            path = self.evaluator_path or default_path(dataset, shape)
            if not path.exists() and self.evaluator_path is None:
                if not (self.train_evaluator and self.trainer):
                    raise EvaluatorError(
                        f"no feature network for {dataset} {'x'.join(map(str, shape))} at {path}: make one with"
                        f" `ganforge evaluator train --data {dataset}` (or add --train-evaluator), or name one with"
                        " --evaluator FILE")
                self.trainer(path)
            self._evaluator = load_evaluator(path)
        return self._evaluator

    def record(self, metric: str, **facts: Any) -> None:
        """Note how ``metric``'s figures were made (images compared, network, layer, ...)."""
        self.provenance.setdefault(metric, {}).update(facts)

    def network_facts(self) -> dict:
        evaluator = self.evaluator()
        record = evaluator.record
        return {"feature_network": str(evaluator.path), "feature_sha256": evaluator.sha256, "layer": record["layer"],
                "network_trained_on": f"{record['dataset']} {record['split']}, {record['trained_on']} images",
                "network_held_out_accuracy": record["held_out"]["accuracy"]}

    # -- images and features ------------------------------------------------------------------

    def real_features(self, data: ImageData) -> torch.Tensor:
        """Features of up to ``n`` real images (a fixed random choice), cached on disk by dataset,
        part, count, network checksum and layer."""
        evaluator = self.evaluator()
        count = min(self.n, len(data))
        key = json.dumps({"source": data.source, "part": self.part, "count": count, "sha256": evaluator.sha256,
                          "layer": evaluator.record["layer"]}, sort_keys=True)
        path = home() / "features" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
        if path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached["key"] == key:
                    return cached["features"]
            except Exception:
                raise UsageError(f"cannot read the cached real features {path}; delete it and they are computed"
                                 " again") from None
        choice = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))[:count]
        features = evaluator.features(data.images[choice.sort().values])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "features": features}, path)
        return features

    def generated_images(self, run, n: int | None = None, fixed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1] from the run's inference generator, latents from this
        evaluation's seed (every metric sees the same images); ``fixed`` replaces some latents."""
        n = self.n if n is None else n
        rng = torch.Generator().manual_seed(self.seed)
        images = []
        for start in range(0, n, 500):
            latents = run.sample_latents(min(500, n - start), rng)
            for name, value in (fixed or {}).items():
                latents[name] = value[start:start + 500].to(run.device)
            images.append(run.generate(latents).mul(2).sub(1).cpu())
        return torch.cat(images)


def metric_arguments(metric: Callable, **available: Any) -> dict[str, Any]:
    """The arguments ``metric`` names, of ``run``, ``data`` and ``settings``."""
    wanted = inspect.signature(metric).parameters
    return {name: value for name, value in available.items() if name in wanted}


def chosen_metrics(host, names: list[str] | None) -> list:
    """The registry entries ``names`` asks for (all of them when None), unknown names refused."""
    if names is None:
        return list(host.metrics)
    for name in names:
        if name not in host.metrics:
            raise UsageError(f"--metrics: {unknown_name_message('metric', name, host.metrics.names())}")
    return [host.metrics.entry(name) for name in names]


def score(run, data: ImageData, entries: list, settings: EvalSettings, strict: bool) -> dict[str, float]:
    """Every metric of ``entries`` on ``run`` and ``data``, each result checked. A metric that needs
    a feature network none can provide is skipped (``settings.skipped`` says why) unless
    ``strict`` (it was asked for by name), when it is a one-line error."""
    from .contracts import check_metric_result

    host = run.host
    results: dict[str, float] = {}
    for entry in entries:
        try:
            arguments = metric_arguments(entry.value, run=run, data=data, settings=settings)
            result = host.guarded(entry.plugin, entry.value, **arguments)
        except EvaluatorError as error:
            if strict:
                raise
            settings.skipped[entry.name] = str(error)
            continue
        results.update(check_metric_result(result, host.origin(host.metrics, entry.name)))
    return results


def evaluator_trainer(run, host, load_data) -> Callable[[Path], Evaluator]:
    """Trains the default feature network for the run's dataset (only when the user asked)."""

    def train(path: Path) -> Evaluator:
        data = load_data(run.recipe, host, "train", holdout=0)
        return train_evaluator(data, run.recipe.data.name, run.recipe.data.split, EVALUATOR_HOLDOUT, epochs=EVALUATOR_EPOCHS,
                               out=path, log=lambda line: None)

    return train
