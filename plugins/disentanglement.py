"""Disentanglement of InfoGAN's codes on data whose factors are known (``shapes``).

Q reads each code back from the real images (its argmax for a categorical code, its predicted
mean for each dimension of a continuous one); the mutual information gap (MIG, Chen et al. 2018)
compares those readings with the true factors: for each factor, the gap between the two codes
that carry most information about it, over the factor's entropy, averaged over factors. 1 when
each factor is carried by one code alone, near 0 when no code, or several equally, carry it.
Mutual information is scikit-learn's ``mutual_info_score`` on discretised values (20 bins).
"""

from __future__ import annotations

import torch

from ganforge import hookimpl

BINS = 20


def discretise(values: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Continuous values as bin indices of equal width between their minimum and maximum."""
    low, high = values.min(), values.max()
    if high <= low:
        return torch.zeros_like(values, dtype=torch.long)
    return ((values - low) / (high - low) * bins).long().clamp(0, bins - 1)


def mutual_information_gap(codes: dict[str, torch.Tensor], factors: dict[str, torch.Tensor]
                           ) -> tuple[float, dict[str, float], dict[str, str]]:
    """MIG of discrete ``codes`` against discrete ``factors`` (each (N,) of integers), the gap of
    each factor, and the factor each code carries most information about (normalised by entropy)."""
    from sklearn.metrics import mutual_info_score

    code_names, factor_names = list(codes), list(factors)
    information = torch.tensor([[mutual_info_score(factors[f].numpy(), codes[c].numpy()) for c in code_names]
                                for f in factor_names], dtype=torch.float64)
    entropies = torch.tensor([mutual_info_score(factors[f].numpy(), factors[f].numpy()) for f in factor_names],
                             dtype=torch.float64).clamp_min(1e-12)
    normalised = information / entropies.view(-1, 1)
    if len(code_names) > 1:
        top = normalised.topk(2, dim=1).values
        gaps = top[:, 0] - top[:, 1]
    else:
        gaps = normalised[:, 0]
    tracked = {code: factor_names[int(normalised[:, index].argmax())] for index, code in enumerate(code_names)}
    return float(gaps.mean()), {f: float(g) for f, g in zip(factor_names, gaps)}, tracked


def q_readings(run, plugin, data, batch: int = 500) -> dict[str, torch.Tensor]:
    """Q's reading of every code dimension on the real images, discretised."""
    from ganforge.data import to_model_range

    readings: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(data), batch):
        params = plugin.predict_codes(run, to_model_range(data.images[start:start + batch]).to(run.device))
        for name, code in plugin.codes.items():
            if code.kind == "categorical":
                readings.setdefault(name, []).append(params[name].argmax(dim=1).cpu())
            else:
                for column in range(code.size):  # the predicted mean comes first in every built-in continuous code
                    label = name if code.size == 1 else f"{name}[{column}]"
                    readings.setdefault(label, []).append(params[name][:, column].float().cpu())
    joined = {name: torch.cat(parts) for name, parts in readings.items()}
    return {name: values if values.dtype == torch.long else discretise(values) for name, values in joined.items()}


def mig(run, data, settings) -> dict[str, float]:
    plugin = run.plugins.get("infogan")
    if plugin is None or len(data.labels) < 2:
        return {}  # needs codes, and several known factors
    readings = q_readings(run, plugin, data)
    score, gaps, tracked = mutual_information_gap(readings, data.labels)
    settings.record("mig", real_images=len(data), real_part=settings.part, bins=BINS, step=run.step,
                    tracked=", ".join(f"{code} -> {factor}" for code, factor in tracked.items()),
                    library="scikit-learn mutual_info_score")
    return {"mig": score, **{f"mig/{factor}": gap for factor, gap in gaps.items()}}


@hookimpl
def ganforge_register_metrics(register):
    register("mig", mig)
