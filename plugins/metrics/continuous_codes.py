"""What each continuous code controls, measured on the generated images.

For every continuous generator input besides the noise, ``sweeps`` rows of latents are drawn; in
each row the code sweeps [-1, 1] while everything else stays fixed, and every image is measured
with image moments as Morpho-MNIST does it (Castro et al. 2019): slant, width, height and stroke
mass (ink). Reported per code: the mean over rows of the rank correlation (Spearman) between the
code and each measure, and how often the feature network keeps calling the image what it called
most of its row (did the digit stay the same digit).
"""

from __future__ import annotations

import torch

from ganforge import hookimpl

SWEEP = torch.linspace(-1.0, 1.0, 9)
MEASURES = ("slant", "width", "height", "mass")


def image_moments(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Slant, width, height and ink of each image (N, 1, H, W) in [-1, 1], from its moments.

    Ink is the image in [0, 1]. Slant is the horizontal shear of the ink: the regression of x on y,
    positive when the top leans right. Width and height are four standard deviations of the ink
    along x and y (a uniform bar of length L has 4 sd ~ 1.15 L). Mass is the ink's sum.
    """
    ink = images.add(1).div(2).clamp(0, 1)[:, 0]
    n, h, w = ink.shape
    mass = ink.sum(dim=(1, 2)).clamp_min(1e-6)
    ys = torch.arange(h, dtype=ink.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=ink.dtype).view(1, 1, w)
    mean_x = (ink * xs).sum(dim=(1, 2)) / mass
    mean_y = (ink * ys).sum(dim=(1, 2)) / mass
    dx, dy = xs - mean_x.view(n, 1, 1), ys - mean_y.view(n, 1, 1)
    var_x = (ink * dx**2).sum(dim=(1, 2)) / mass
    var_y = (ink * dy**2).sum(dim=(1, 2)) / mass
    cov = (ink * dx * dy).sum(dim=(1, 2)) / mass
    # Rows grow downwards: a top leaning right has x falling as y grows, hence the minus.
    slant = -cov / var_y.clamp_min(1e-6)
    return {"slant": slant, "width": 4 * var_x.sqrt(), "height": 4 * var_y.sqrt(), "mass": mass}


def rank_correlation(measure: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ of each row of ``measure`` (rows, S) against 0..S-1."""
    ranks = measure.argsort(dim=1).argsort(dim=1).float()
    order = torch.arange(measure.shape[1], dtype=torch.float32)
    ranks, order = ranks - ranks.mean(1, keepdim=True), order - order.mean()
    return (ranks * order).sum(1) / (ranks.norm(dim=1) * order.norm()).clamp_min(1e-12)


def continuous_codes(run, settings, sweeps: int = 120) -> dict[str, float]:
    codes = [name for name, dist in run.inputs.items() if name != "z" and dist.kind == "continuous"
             and dist.input_dim == 1]
    if not codes:
        return {}
    evaluator = settings.evaluator()
    steps = len(SWEEP)
    results = {}
    for name in codes:
        base = run.sample_latents(sweeps, torch.Generator().manual_seed(settings.seed))
        latents = {key: value.repeat_interleave(steps, dim=0) for key, value in base.items()}
        latents[name] = SWEEP.repeat(sweeps).view(-1, 1).to(run.device)
        images = run.generate(latents).mul(2).sub(1).cpu()
        measures = image_moments(images)
        strongest = None
        for measure in MEASURES:
            rho = float(rank_correlation(measures[measure].view(sweeps, steps)).mean())
            results[f"{name}/rho_{measure}"] = rho
            strongest = measure if strongest is None or abs(rho) > abs(results[f"{name}/rho_{strongest}"]) else strongest
        classes = evaluator.classify(images).view(sweeps, steps)
        majority = classes.mode(dim=1).values.view(-1, 1)
        results[f"{name}/kept"] = float((classes == majority).float().mean())
        settings.record(f"continuous-codes/{name}", **settings.network_facts(), sweeps=sweeps,
                        values=f"{steps} from -1 to 1", strongest=strongest, step=run.step, seed=settings.seed)
    return results


@hookimpl
def ganforge_register_metrics(register):
    register("continuous-codes", continuous_codes)
