"""Swapping a discriminator's batch norms for per-sample normalisation.

A gradient penalty is computed per sample; batch norm makes each output depend on the rest of the
batch, so the penalised critic (WGAN-GP, R1, R2) normalises each sample on its own (Gulrajani et
al. 2017 use layer norm), and a spectrally normalised one has none (Miyato et al. 2018). Any model
family's discriminator can be adapted this way after it is built.
"""

from __future__ import annotations

from torch import nn

NORMALISATIONS = ("layer", "instance", "none")


def per_sample_discriminator(run, kind: str, plugin: str, why: str) -> None:
    """Replace the batch norms on D's road to its logits by ``kind`` in ``ganforge_models_built``
    and say so in ``ganforge check``: the trunk's, and those of heads that add to the logits (a
    projection). A head with outputs of its own (InfoGAN's Q, an auxiliary classifier) keeps its
    batch norms: neither a gradient penalty nor a Lipschitz bound is taken through it, and Q needs
    them where D's features are sums over positions (the ResNet D), unnormalised. D's optimizer
    groups are made afresh, in the layers' order, so that checkpoints keep the layout they always
    had (the core would otherwise complete them itself). Harmless when another plugin did it
    first: there is then no batch norm left to replace, and nothing to say."""
    discriminator = run.discriminator
    replaced = sum(replace_batch_norms(module, kind) for module in (discriminator.trunk, *discriminator.logit_heads()))
    if replaced:
        run.parameter_groups["D"] = run.discriminator_groups()
        shape = "removed" if kind == "none" else f"{kind} norms"
        run.note(f"{plugin}: the discriminator's {replaced} batch norms are {shape}: {why}")


def per_sample_norm(batch_norm: nn.modules.batchnorm._BatchNorm, kind: str) -> nn.Module:
    """The replacement of one batch norm layer: layer norm over (C, H, W) is GroupNorm with one
    group; for features (1-D batch norm) layer and instance norm are the same LayerNorm."""
    channels = batch_norm.num_features
    if kind == "none":
        return nn.Identity()
    if isinstance(batch_norm, nn.BatchNorm1d):
        return nn.LayerNorm(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.GroupNorm(channels, channels)  # instance norm with a learned scale and shift


def replace_batch_norms(module: nn.Module, kind: str) -> int:
    """Replace every batch norm inside ``module`` (in place); returns how many there were."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            replacement = per_sample_norm(child, kind).to(next(child.parameters(), child.running_mean).device)
            setattr(module, name, replacement)
            count += 1
        else:
            count += replace_batch_norms(child, kind)
    return count
