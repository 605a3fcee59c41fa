"""What the core needs from models: a discriminator with shared features, and heads on them."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


class Discriminator(nn.Module):
    """A discriminator split into a shared trunk and an adversarial head.

    Subclasses set ``feature_dim`` and implement :meth:`features` (images to ``(B, feature_dim)``)
    and :meth:`adversarial` (features to ``(B,)`` logits). Extra heads (a Q head, a classifier)
    attach to the same features.
    """

    feature_dim: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adversarial(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.adversarial(self.features(images))


@dataclass
class DiscriminatorOutput:
    """One discriminator pass: adversarial logits, the shared features and every head's output."""

    logits: torch.Tensor
    features: torch.Tensor
    heads: dict[str, torch.Tensor] = field(default_factory=dict)


def takes_conditions(module: nn.Module) -> bool:
    """Whether ``module``'s forward has a ``conditions`` parameter (labels, codes: see the hooks)."""
    return "conditions" in inspect.signature(module.forward).parameters


def takes_truncation(module: nn.Module) -> bool:
    """Whether ``module``'s forward has a ``truncation`` parameter: a generator that truncates its
    own latents (StyleGAN's w) for ``ganforge sample --truncation``, instead of the noise ``z``."""
    return "truncation" in inspect.signature(module.forward).parameters


class DiscriminatorWithHeads(nn.Module):
    """The discriminator plus the plugins' heads and networks, trained and checkpointed as one module.

    A head whose forward takes ``conditions`` receives the pass's conditions (a dict of tensors: the
    sampled latents for fakes, ``ganforge_real_conditions`` for real images); a head with
    ``adds_to_logits = True`` returns ``(B,)`` values that are added to the adversarial logits (a
    projection discriminator's class term).
    """

    def __init__(self, trunk: Discriminator, heads: dict[str, nn.Module], networks: dict[str, nn.Module] | None = None):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)
        # Trained and checkpointed with D, never run by its passes (ganforge_discriminator_networks).
        self.networks = nn.ModuleDict(networks or {})
        # Read once here: attribute lookups on the heads inside forward would break under wrapping.
        self._conditioned = {name: takes_conditions(head) for name, head in heads.items()}
        self._to_logits = [name for name, head in heads.items() if getattr(head, "adds_to_logits", False)]

    def logit_heads(self) -> list[nn.Module]:
        """The heads whose outputs are added to the adversarial logits: with the trunk, the road
        from an image to its score (what a Lipschitz bound or a gradient penalty is about)."""
        return [self.heads[name] for name in self._to_logits]

    def forward(self, images: torch.Tensor, conditions: dict[str, torch.Tensor] | None = None) -> DiscriminatorOutput:
        features = self.trunk.features(images)
        conditions = conditions or {}
        heads = {name: head(features, conditions=conditions) if self._conditioned[name] else head(features)
                 for name, head in self.heads.items()}
        logits = self.trunk.adversarial(features)
        for name in self._to_logits:
            logits = logits + heads[name]
        return DiscriminatorOutput(logits, features, heads)


def unwrap(module: nn.Module) -> nn.Module:
    """The module itself under DistributedDataParallel (``.module``) and ``torch.compile``
    (``._orig_mod``): checkpoints and attribute reads use it, so their keys carry no prefix."""
    while True:
        inner = getattr(module, "module", None) if isinstance(module, nn.parallel.DistributedDataParallel) else None
        inner = inner if inner is not None else getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner


@contextlib.contextmanager
def frozen_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Batch norm in ``module`` normalises with the batch's own statistics but leaves its running
    statistics alone: for passes that are not the discriminator's real/fake training passes (the
    generator's, a consistency or penalty pass), whose images must not shape what evaluation uses."""
    norms = [layer for layer in unwrap(module).modules()
             if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats]
    for layer in norms:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in norms:
            layer.track_running_stats = True


def _chunked_batch_norm(layer: nn.modules.batchnorm._BatchNorm, sizes: list[int], updates: list[bool],
                        images: torch.Tensor) -> torch.Tensor:
    """``layer`` in training mode over a batch that is several passes' batches put together: each
    chunk is normalised by its own statistics, and only the chunks marked in ``updates`` move the
    running statistics, in order, exactly as separate passes would."""
    if not layer.training:
        return type(layer).forward(layer, images)
    pieces = []
    for piece, update in zip(images.split(sizes), updates):
        tracking = update and layer.track_running_stats
        momentum = layer.momentum
        if tracking:
            layer.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative moving average, as _BatchNorm.forward computes it
                momentum = 1.0 / float(layer.num_batches_tracked)
        pieces.append(nn.functional.batch_norm(
            piece, layer.running_mean if tracking else None, layer.running_var if tracking else None,
            layer.weight, layer.bias, True, momentum or 0.0, layer.eps))
    return torch.cat(pieces)


def _per_chunk(layer: nn.Module, sizes: list[int], images: torch.Tensor) -> torch.Tensor:
    """``layer`` applied to each chunk of a batch put together from several passes' batches."""
    return torch.cat([type(layer).forward(layer, piece) for piece in images.split(sizes)])


@contextlib.contextmanager
def batch_norm_per_chunk(module: nn.Module, sizes: list[int], updates: list[bool]) -> Iterator[None]:
    """One forward pass of ``module`` over several batches put together (``sizes``) that gives
    what separate passes would: batch norm normalises each chunk by its own statistics, and only
    chunks whose ``updates`` entry is true move the running statistics; a layer that marks itself
    ``mixes_batch = True`` (its output for one image depends on the others in its batch, as
    StyleGAN's minibatch standard deviation does) sees each chunk alone. Layers that see each image
    alone (convolutions, linear layers, layer or instance norm) need nothing: the batch is one
    matrix product instead of several, which is the point."""
    layers = list(unwrap(module).modules())
    norms = [layer for layer in layers if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    mixers = [layer for layer in layers if getattr(layer, "mixes_batch", False) and layer not in norms]
    for layer in norms:
        layer.forward = functools.partial(_chunked_batch_norm, layer, list(sizes), list(updates))
    for layer in mixers:
        layer.forward = functools.partial(_per_chunk, layer, list(sizes))
    try:
        yield
    finally:
        for layer in norms + mixers:
            del layer.forward


def float32(output: DiscriminatorOutput) -> DiscriminatorOutput:
    """``output`` in float32 (from a pass under bf16 autocast), still attached to its graph."""
    return DiscriminatorOutput(output.logits.float(), output.features.float(),
                               {name: value.float() for name, value in output.heads.items()})


def split_output(output: DiscriminatorOutput, sizes: list[int]) -> list[DiscriminatorOutput]:
    """A pass over batches put together, split back into one output per batch."""
    logits, features = output.logits.split(sizes), output.features.split(sizes)
    heads = {name: value.split(sizes) for name, value in output.heads.items()}
    return [DiscriminatorOutput(logits[index], features[index], {name: parts[index] for name, parts in heads.items()})
            for index in range(len(sizes))]


def init_weights_dcgan(module: nn.Module) -> None:
    """N(0, 0.02) for conv and linear weights, N(1, 0.02) for norm scales, as in DCGAN and InfoGAN."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
