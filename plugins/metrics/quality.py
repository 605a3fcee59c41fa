"""Sample-quality metrics in a verified feature network's space (``ganforge.evaluator``).

``fid`` and ``kid``: torchmetrics' FrechetInceptionDistance and KernelInceptionDistance, given
features the core computed (an identity "feature network", so real features can be cached and
shared by every metric). ``precision-recall``: precision, recall, density and coverage of the
generated features against the real ones (Naeem et al. 2020, their ``prdc`` package).
``inception-score``: the Inception Score (Salimans et al. 2016) of the generated images, from
Inception-v3's classifier; ``classifier-score``: the same formula with the dataset's own
classifier (not comparable with any published IS), both by torch-fidelity's
``isc_features_to_metric``. No matrix square root, k-NN manifold or score formula is written here.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.errors import UsageError
from ganforge.evaluator import EvaluatorError
from ganforge.inception import InceptionFeatures
from ganforge.sampling import drawing_from

KID_SUBSETS = 50
NEAREST_K = 5
SCORE_SPLITS = 10  # openai/improved-gan get_inception_score(splits=10); torch-fidelity's isc_splits default
SCORE_LIBRARY = ("torch-fidelity isc_features_to_metric: softmax in float64, the images shuffled by numpy's"
                 f" RandomState(2020), {SCORE_SPLITS} splits, exp of the mean KL per split, mean and np.std over them")


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


def inception_score(logits: torch.Tensor, splits: int = SCORE_SPLITS) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) of ``softmax(logits)`` on each of ``splits`` parts, their mean
    and (population) standard deviation: torch-fidelity's ``isc_features_to_metric``, which computes
    openai/improved-gan's ``get_inception_score`` in float64 (torchmetrics' InceptionScore differs:
    its std divides by ``splits - 1``)."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    if len(logits) < splits:
        raise UsageError(f"the Inception Score splits its images into {splits} parts; {len(logits)} are too few")
    scores = isc_features_to_metric(logits, splits=splits)
    return scores["inception_score_mean"], scores["inception_score_std"]


def _score_of_generated(name, run, settings, evaluator) -> tuple[float, float]:
    images = settings.generated_images(run)
    mean, std = inception_score(evaluator.class_logits(images))
    facts = {**settings.network_facts(), "layer": evaluator.logits_layer}  # the classifier's, not the features'
    settings.record(name, **facts, generated_images=len(images), splits=SCORE_SPLITS, step=run.step, seed=settings.seed,
                    library=SCORE_LIBRARY)
    return mean, std


def inception_score_metric(run, settings) -> dict[str, float]:
    """The Inception Score, from Inception-v3's ImageNet classifier only (``--evaluator inception``)."""
    evaluator = settings.evaluator()
    if not isinstance(evaluator, InceptionFeatures):
        raise EvaluatorError("the Inception Score needs Inception-v3's ImageNet classifier: pass --evaluator inception"
                             " (with your weights file); classifier-score is the same formula with the dataset's own"
                             " network")
    mean, std = _score_of_generated("inception-score", run, settings, evaluator)
    return {"inception_score": mean, "inception_score_std": std}


def classifier_score(run, settings) -> dict[str, float]:
    """The Inception Score's formula with the dataset's own classifier (at most its number of
    classes): named apart, as it compares with no published IS."""
    evaluator = settings.evaluator()
    if isinstance(evaluator, InceptionFeatures):
        raise EvaluatorError("classifier-score uses the dataset's own classifier; with Inception-v3 the same formula"
                             " is inception-score")
    mean, std = _score_of_generated("classifier-score", run, settings, evaluator)
    return {"classifier_score": mean, "classifier_score_std": std}


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
    register("inception-score", inception_score_metric)
    register("classifier-score", classifier_score)
