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
from .evaluator import (EVALUATOR_EPOCHS, Evaluator, EvaluatorError, default_path, home, load_evaluator,
                        recorded_feature_dim, train_evaluator)
from .registry import unknown_name_message

DEFAULT_IMAGES = 5000
EVALUATOR_HOLDOUT = 2000
FID_REMEDY = "ganforge eval --n, eval.n in a recipe"  # how to give FID more images


class NotApplicable(UsageError):
    """A metric that does not apply to this run (intra-class FID of a generator without a class
    label): left out, as a metric returning no figures is, when every metric runs; a one-line
    error when the metric was asked for by name."""


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
    warnings: list[str] = field(default_factory=list)  # figures that may mislead (too few images for FID)
    _evaluator: Evaluator | None = None
    _dataset: tuple[str, tuple[int, int, int]] = ("", (0, 0, 0))
    _split: str = ""  # the run's data.split

    def describe_run(self, run) -> None:
        """Take the run's dataset, image shape and split: which default network, which real images."""
        self._dataset = (run.recipe.data.name, tuple(run.image_shape))
        self._split = run.recipe.data.split

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
                "network_held_out_accuracy": record["held_out"]["accuracy"], "preparation": evaluator.preparation}

    def real_facts(self, data: ImageData) -> dict:
        """Which real images a metric compared against."""
        return {"real_split": self._split, "real_part": self.part, "real_source": data.source, "n_requested": self.n}

    def check_fid_count(self, count: int, what: str = "FID", remedy: str | None = None) -> str | None:
        """Keep a warning (``warnings``) when ``count`` images are too few for FID in this
        network's space; returns it. ``what`` names the FID (one class's, for intra-class FID),
        ``remedy`` how to compare more (``--n`` by default)."""
        evaluator = self.evaluator()
        warning = fid_count_warning(count, evaluator.feature_dim, evaluator.record["layer"], what, remedy or FID_REMEDY)
        if warning and warning not in self.warnings:
            self.warnings.append(warning)
        return warning

    # -- images and features ------------------------------------------------------------------

    def real_features(self, data: ImageData) -> torch.Tensor:
        """Features of up to ``n`` real images (a random choice by ``seed``), cached on disk by
        everything that picks those images and their features: seed, count, dataset source, split
        and part, image shape, network checksum, layer and how the network prepares images."""
        evaluator = self.evaluator()
        count = min(self.n, len(data))
        key = json.dumps({"seed": self.seed, "count": count, "source": data.source, "split": self._split,
                          "part": self.part, "image_shape": list(data.image_shape), "sha256": evaluator.sha256,
                          "layer": evaluator.record["layer"], "preparation": evaluator.preparation}, sort_keys=True)
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


def fid_count_warning(count: int, feature_dim: int, layer: str, what: str = "FID",
                      remedy: str = FID_REMEDY) -> str | None:
    """Why ``what`` (an FID) from ``count`` images in ``feature_dim`` features would mislead, or None.

    The covariance of ``count`` images, mean removed, has rank at most ``count - 1``: at or below
    ``feature_dim`` images it is singular, and FID (its matrix square root) is biased upward and
    moves with the sample, so it compares with no FID from another count."""
    if count > feature_dim:
        return None
    return (f"{what} from {count} images in {feature_dim} features ({layer}): their covariance has rank at most"
            f" {count - 1}, so it is singular and the FID is biased and not comparable; compare at least"
            f" {feature_dim + 1} images ({remedy})")


def recipe_warnings(recipe, image_shape: tuple[int, int, int] | None = None) -> list[str]:
    """One-line warnings about the recipe's ``[eval]`` table (for ``ganforge check``): FID while
    training with ``eval.n`` too few for the feature network's width (Inception-v3's 2,048; the
    own network's record, or its design's 128 before it is trained). ``image_shape`` locates the
    dataset's default network."""
    options = recipe.eval
    if not options.every or (options.metrics and "fid" not in options.metrics):
        return []  # FID is not computed while training
    if options.evaluator == inception.NAME:
        feature_dim, layer = inception.FEATURE_DIM, inception.LAYER
    else:
        path = Path(options.evaluator) if options.evaluator else (
            default_path(recipe.data.name, image_shape) if image_shape else None)
        feature_dim = recorded_feature_dim(path)
        layer = f"the {'named' if options.evaluator else 'default'} feature network"
    warning = fid_count_warning(options.n, feature_dim, layer)
    return [f"{recipe.source}: eval.n = {options.n}: {warning}"] if warning else []


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
    a feature network none can provide is skipped (``settings.skipped`` says why), and one that does
    not apply to the run (:class:`NotApplicable`) left out, unless ``strict`` (it was asked for by
    name), when either is a one-line error."""
    from .contracts import check_metric_result

    host = run.host
    settings.describe_run(run)
    results: dict[str, float] = {}
    for entry in entries:
        try:
            arguments = metric_arguments(entry.value, run=run, data=data, settings=settings)
            result = host.guarded(entry.plugin, entry.value, **arguments)
        except (EvaluatorError, NotApplicable) as error:
            if strict:
                raise
            if isinstance(error, EvaluatorError):  # the run has no such figure otherwise: no note, as for {}
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
