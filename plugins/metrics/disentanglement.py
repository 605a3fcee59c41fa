"""Disentanglement of InfoGAN's codes on data whose factors are known (``shapes``).

Q reads each code back from the real images (its argmax for a categorical code, its predicted
mean for each dimension of a continuous one); the mutual information gap (MIG, Chen et al. 2018)
compares those readings with the true factors: for each factor, the gap between the two codes
that carry most information about it, over the factor's entropy, averaged over factors. 1 when
each factor is carried by one code alone, near 0 when no code, or several equally, carry it.
Mutual information is scikit-learn's ``mutual_info_score`` on discretised values (20 bins).

The FactorVAE score (Kim and Mnih 2018) asks the converse: fix one factor, draw a batch of images
sharing its value, and see which code dimension varies least (each dimension scaled by its spread
over the whole dataset); a majority-vote classifier from that dimension to the fixed factor is
fitted on one set of votes and its accuracy measured on another. 1 when every factor has a
dimension of its own; about 1/(number of factors) for a representation that ignores them.
Batches are drawn from the dataset itself (images sharing the factor's value), as for dSprites
where the dataset holds every combination.
"""

from __future__ import annotations

import torch

from ganforge import hookimpl
from ganforge.plugin_spec import CODE_READER

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


def q_readings(run, plugin, data, batch: int = 500, discretised: bool = True) -> dict[str, torch.Tensor]:
    """Q's reading of every code dimension on the real images (a categorical code's argmax, a
    continuous dimension's predicted mean), discretised unless told otherwise."""
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
    if not discretised:
        return joined
    return {name: values if values.dtype == torch.long else discretise(values) for name, values in joined.items()}


def mig(run, data, settings) -> dict[str, float]:
    plugin = run.provider(CODE_READER)
    if plugin is None or len(data.labels) < 2:
        return {}  # needs codes, and several known factors
    readings = q_readings(run, plugin, data)
    score, gaps, tracked = mutual_information_gap(readings, data.labels)
    settings.record("mig", real_images=len(data), real_part=settings.part, bins=BINS, step=run.step,
                    tracked=", ".join(f"{code} -> {factor}" for code, factor in tracked.items()),
                    library="scikit-learn mutual_info_score")
    return {"mig": score, **{f"mig/{factor}": gap for factor, gap in gaps.items()}}


FACTORVAE_BATCH = 64  # images sharing the fixed factor's value, per vote (Kim and Mnih 2018)
FACTORVAE_VOTES = (10_000, 5_000)  # votes to fit the classifier on, and to score it on


def factorvae_score(representation: torch.Tensor, factors: dict[str, torch.Tensor], generator: torch.Generator,
                    batch: int = FACTORVAE_BATCH, votes: tuple[int, int] = FACTORVAE_VOTES
                    ) -> tuple[float, dict[str, float]]:
    """The FactorVAE score of ``representation`` (N, D) against ``factors`` (each (N,) of
    integers), and the held-out accuracy for each factor."""
    representation = representation.double()
    spread = representation.std(dim=0)
    active = spread > 0  # a dimension that never moves tells nothing (and cannot be scaled)
    names = list(factors)
    if not active.any():
        return 1.0 / len(names), {name: 0.0 for name in names}
    scaled = representation[:, active] / spread[active]
    n = len(representation)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` votes: the factor fixed, and the dimension of least variance over the batch."""
        fixed = torch.randint(len(names), (count,), generator=generator)
        least = torch.empty(count, dtype=torch.long)
        for k, name in enumerate(names):
            chosen = (fixed == k).nonzero().flatten()
            if not len(chosen):
                continue
            values = factors[name]
            order = values.argsort(stable=True)
            sizes = torch.bincount(values, minlength=int(values.max()) + 1)
            starts = sizes.cumsum(0) - sizes
            value = values[torch.randint(n, (len(chosen),), generator=generator)]  # a value as often as it occurs
            offsets = (torch.rand(len(chosen), batch, generator=generator) * sizes[value].unsqueeze(1)).long()
            members = order[starts[value].unsqueeze(1) + offsets]
            least[chosen] = scaled[members].var(dim=1).argmin(dim=1)
        return least, fixed

    table = torch.zeros(int(active.sum()), len(names))
    least, fixed = draw(votes[0])
    table.index_put_((least, fixed), torch.ones(len(least)), accumulate=True)
    classifier = table.argmax(dim=1)  # each dimension votes for the factor it was least variable under
    least, fixed = draw(votes[1])
    correct = classifier[least] == fixed
    per_factor = {name: float(correct[fixed == k].float().mean()) if (fixed == k).any() else 0.0
                  for k, name in enumerate(names)}
    return float(correct.float().mean()), per_factor


def factorvae(run, data, settings) -> dict[str, float]:
    plugin = run.provider(CODE_READER)
    if plugin is None or len(data.labels) < 2:
        return {}
    readings = q_readings(run, plugin, data, discretised=False)
    representation = torch.stack([values.double() for values in readings.values()], dim=1)
    generator = torch.Generator().manual_seed(settings.seed)
    score, per_factor = factorvae_score(representation, data.labels, generator)
    settings.record("factorvae", real_images=len(data), real_part=settings.part, batch=FACTORVAE_BATCH,
                    votes=f"{FACTORVAE_VOTES[0]} to fit, {FACTORVAE_VOTES[1]} to score", step=run.step,
                    dimensions=", ".join(readings), seed=settings.seed)
    return {"factorvae": score, **{f"factorvae/{name}": value for name, value in per_factor.items()}}


@hookimpl
def ganforge_register_metrics(register):
    register("mig", mig)
    register("factorvae", factorvae)
