"""``intra-fid``: intra-class FID of a class-conditional run (Miyato and Koyama 2018, "cGANs with
Projection Discriminator", who report it on ImageNet).

For each class, the FID between the real images of that class and images generated for it, then
the plain mean over the classes, as POSTECH-CVLab/PyTorch-StudioGAN ``src/worker.py``
``calculate_intra_class_fid`` computes it: every real image of the class in the evaluated data,
and as many generated with the label fixed to the class. Here the real images are those of the
evaluated part (``--on train`` or ``holdout``), at most ``--n`` of them per class (a choice by
``--seed`` when the class holds more), and the generated ones come from the evaluation's seeded
latents with the label replaced. A class with fewer than two real images has no covariance: it
is left out, and named in the provenance. Any feature network works (the dataset's own or
Inception-v3); with either, classes of at most as many images as features get FID's warning.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ganforge import hookimpl
from ganforge.evaluation import NotApplicable
from ganforge.plugin_spec import CLASS_LABEL

from ..metrics.quality import frechet_distance
from .labels import LABEL

MIN_IMAGES = 2  # a covariance needs two images
LIBRARY = "torchmetrics FrechetInceptionDistance per class, their mean over the classes"
REMEDY = "per class: ganforge eval --n, eval.n in a recipe, up to the images of the class in the evaluated part"


def class_indices(data, classes: int) -> dict[int, torch.Tensor]:
    """The positions of each class's images in ``data`` (by its main label), classes 0 .. classes - 1."""
    labels = data.labels[data.main_label]
    return {k: (labels == k).nonzero().flatten() for k in range(classes)}


def intra_fid(run, data, settings) -> dict[str, float]:
    """``intra_fid`` and ``intra_fid/<class>``, for a run whose generator takes a class label."""
    feeding = run.provider(CLASS_LABEL)
    if feeding is None:
        raise NotApplicable(f"--metrics intra-fid: the run's generator takes no class label (its inputs:"
                            f" {', '.join(run.inputs)}); intra-class FID needs a conditional run, e.g. with"
                            " [plugins.conditional] or [plugins.acgan]")
    evaluator = settings.evaluator()
    per_class, counts, left_out = {}, {}, []
    for k, index in class_indices(data, feeding.classes).items():
        if len(index) < MIN_IMAGES:
            left_out.append(k)
            continue
        of_class = data.subset(index, f"{data.source}, {data.main_label} = {k} ({len(index)} images)")
        real = settings.real_features(of_class)
        label = F.one_hot(torch.full((len(real),), k), feeding.classes).float()
        fake = evaluator.features(settings.generated_images(run, len(real), {LABEL: label}))
        per_class[k], counts[k] = frechet_distance(real, fake), len(real)
    if not per_class:
        raise NotApplicable(f"--metrics intra-fid: no class has {MIN_IMAGES} real images in the {settings.part} part"
                            f" ({data.source})")
    smallest = min(counts, key=counts.get)
    warning = settings.check_fid_count(counts[smallest], f"intra-class FID, class {smallest} (the smallest),",
                                       REMEDY)
    per_class_counts = {str(k): count for k, count in counts.items()}
    settings.record("intra-fid", **settings.network_facts(), **settings.real_facts(data), classes=len(per_class),
                    real_images=sum(counts.values()), generated_images=sum(counts.values()),
                    real_images_per_class=per_class_counts, generated_images_per_class=dict(per_class_counts),
                    classes_left_out=left_out, step=run.step, seed=settings.seed, library=LIBRARY,
                    **({"warning": warning} if warning else {}))
    return {"intra_fid": sum(per_class.values()) / len(per_class),
            **{f"intra_fid/{k}": value for k, value in per_class.items()}}


@hookimpl
def ganforge_register_metrics(register):
    register("intra-fid", intra_fid)
