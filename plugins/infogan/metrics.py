"""InfoGAN's metrics: Q's categories matched against the labels of real images, and the
generator's categories classified by the feature network."""

from __future__ import annotations

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.data import to_model_range
from ganforge.plugin_spec import CODE_READER

from ..metrics.clustering import contingency, matched_accuracy, normalized_mutual_information, purity

EVAL_BATCH = 500


def categorical_clustering(run, data) -> dict[str, float]:
    """For each categorical code: Q's argmax on the real images against the main label."""
    plugin = run.provider(CODE_READER)
    label = data.main_label
    if plugin is None or label is None:
        return {}
    labels = data.labels[label]
    classes = int(labels.max()) + 1
    predicted: dict[str, list[torch.Tensor]] = {name: [] for name, code in plugin.codes.items() if code.kind == "categorical"}
    for start in range(0, len(data), EVAL_BATCH):
        images = to_model_range(data.images[start : start + EVAL_BATCH]).to(run.device)
        params = plugin.predict_codes(run, images)
        for name in predicted:
            predicted[name].append(params[name].argmax(dim=1).cpu())
    results = {}
    for name, batches in predicted.items():
        table = contingency(torch.cat(batches), labels, plugin.codes[name].size, classes)
        results[f"{name}/accuracy"] = matched_accuracy(table)
        results[f"{name}/nmi"] = normalized_mutual_information(table)
        results[f"{name}/purity"] = purity(table)
    return results




def generated_category_agreement(run, settings) -> dict[str, float]:
    """For each categorical code: images generated per category (the rest of the latents drawn
    as usual), classified by the feature network; matched accuracy and NMI of the categories
    against its classes. Complements Q's accuracy on real images: it asks whether G draws one
    class per category, not whether Q reads one."""
    plugin = run.provider(CODE_READER)
    categorical = {name: code for name, code in (plugin.codes.items() if plugin else ()) if code.kind == "categorical"}
    if not categorical:
        return {}
    evaluator = settings.evaluator()
    results = {}
    for name, code in categorical.items():
        per_category = max(1, settings.n // code.size)
        categories = torch.arange(code.size).repeat_interleave(per_category)
        images = settings.generated_images(run, len(categories), {name: nn.functional.one_hot(categories, code.size).float()})
        table = contingency(categories, evaluator.classify(images), code.size, evaluator.record["classes"])
        results[f"{name}/generated_accuracy"] = matched_accuracy(table)
        results[f"{name}/generated_nmi"] = normalized_mutual_information(table)
        settings.record(f"generated-agreement/{name}", **settings.network_facts(), images_per_category=per_category,
                        step=run.step, seed=settings.seed)
    return results


@hookimpl
def ganforge_register_metrics(register):
    register("categorical-clustering", categorical_clustering)
    register("generated-agreement", generated_category_agreement)
