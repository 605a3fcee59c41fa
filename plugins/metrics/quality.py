"""Sample-quality metrics in a verified feature network's space (``ganforge.evaluator``).

``fid`` and ``kid``: torchmetrics' FrechetInceptionDistance and KernelInceptionDistance, given
features the core computed (an identity "feature network", so real features can be cached and
shared by every metric). ``precision-recall``: precision, recall, density and coverage of the
generated features against the real ones (Naeem et al. 2020, their ``prdc`` package). No matrix
square root or k-NN manifold is written here.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.sampling import drawing_from

KID_SUBSETS = 50
NEAREST_K = 5


class Features(nn.Module):
    """The identity, sized: torchmetrics reads ``num_features`` and passes our features through."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features):
        return features


def _features(run, data, settings) -> tuple[torch.Tensor, torch.Tensor]:
    real = settings.real_features(data)
    fake = settings.evaluator().features(settings.generated_images(run, len(real)))
    return real, fake


def _record(name, settings, run, data, real, fake, **extra):
    settings.record(name, **settings.network_facts(), **settings.real_facts(data), real_images=len(real),
                    generated_images=len(fake), step=run.step, seed=settings.seed, **extra)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two sets of features (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Features(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> tuple[float, float, int]:
    """KID (mean, std over subsets, subset size) between two sets of features (torchmetrics)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(1000, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")  # that is the point here
        metric = KernelInceptionDistance(feature=Features(real.shape[1]), subsets=KID_SUBSETS, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with drawing_from(torch.Generator().manual_seed(seed)):  # its subsets: seeded, global state kept
        mean, std = metric.compute()
    return float(mean), float(std), size


def manifold_scores(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Precision, recall, density and coverage (prdc, k = NEAREST_K)."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        scores = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=NEAREST_K)
    return {name: float(value) for name, value in scores.items()}


def fid(run, data, settings) -> dict[str, float]:
    real, fake = _features(run, data, settings)
    warning = settings.check_fid_count(min(len(real), len(fake)))
    _record("fid", settings, run, data, real, fake, library="torchmetrics FrechetInceptionDistance",
            **({"warning": warning} if warning else {}))
    return {"fid": frechet_distance(real, fake)}


def kid(run, data, settings) -> dict[str, float]:
    real, fake = _features(run, data, settings)
    mean, std, size = kernel_distance(real, fake, settings.seed)
    _record("kid", settings, run, data, real, fake, library="torchmetrics KernelInceptionDistance",
            subsets=KID_SUBSETS, subset_size=size)
    return {"kid": mean, "kid_std": std}


def precision_recall(run, data, settings) -> dict[str, float]:
    real, fake = _features(run, data, settings)
    _record("precision-recall", settings, run, data, real, fake, library="prdc", nearest_k=NEAREST_K)
    return manifold_scores(real, fake)


@hookimpl
def ganforge_register_metrics(register):
    register("fid", fid)
    register("kid", kid)
    register("precision-recall", precision_recall)
