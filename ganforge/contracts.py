"""Contract checks: what a plugin registered is tried on a tiny batch before a run relies on it.

A latent distribution, a model family, an adversarial loss, a dataset or a metric that breaks its
interface would otherwise fail deep inside a training step, in some other plugin's code, or not at
all (an ``nll`` that forgets to sum quietly halves a term's weight). ``ganforge check`` and every
run call these first; a violation is one :class:`ContractError` line naming the registered name,
the package it came from, the member at fault and what was expected.

Every check draws from its own generator and leaves the models' training state and torch's
global generator as it found them, so checking a run never changes what it trains.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from .errors import GanforgeError, PluginError
from .latents import LatentDistribution
from .pluginmanager import one_line

CHECK_BATCH = 8
LOSS_CHECK_BATCH = 4  # logits a loss is checked on, before the first step
TRAVERSAL_STEPS = 5
KINDS = ("categorical", "continuous", "binary")


class ContractError(PluginError):
    """A registered plugin object that does not do what its interface promises."""


def shape_of(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


class Contract:
    """Checks on one plugin object, each failure prefixed with ``who`` (``code 'alpha': beta (pkg)``)."""

    def __init__(self, who: str):
        self.who = who

    def fail(self, member: str, problem: str) -> ContractError:
        return ContractError(f"{self.who}: {member} {problem}")

    def call(self, member: str, function: Callable, *args: Any, allowed: tuple[type, ...] = (), **kwargs: Any) -> Any:
        """``function(*args)``, a failure reported as this member's; ``allowed`` exceptions pass through."""
        try:
            return function(*args, **kwargs)
        except allowed:
            raise
        except GanforgeError:
            raise
        except Exception as error:
            raise self.fail(member, f"raised {type(error).__name__}: {one_line(error)}") from error

    def tensor(self, member: str, value: Any, shape: tuple[int, ...], why: str = "",
               device: torch.device | None = None, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """``value`` is a finite tensor of ``shape`` (and ``dtype``, on ``device``)."""
        reason = f": {why}" if why else ""
        if not isinstance(value, torch.Tensor):
            raise self.fail(member, f"returned {type(value).__name__}, expected a tensor of shape {shape}{reason}")
        if tuple(value.shape) != shape:
            raise self.fail(member, f"returned shape {shape_of(value)}, expected {shape}{reason}")
        if dtype is not None and value.dtype != dtype:
            raise self.fail(member, f"returned {value.dtype}, expected {dtype}")
        if device is not None and value.device.type != device.type:
            raise self.fail(member, f"returned a tensor on {value.device}, expected {device}"
                                    " (draw on the CPU from the generator, then .to(device))")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise self.fail(member, "returned values that are not finite (nan or inf)")
        return value


# -- latent distributions -----------------------------------------------------------------------


def check_latent(distribution: LatentDistribution, who: str, device: torch.device) -> None:
    """Every member of the latent interface on a batch of :data:`CHECK_BATCH`.

    ``nll``, ``traversal_values`` and ``encode`` may raise ``NotImplementedError`` (a distribution
    that can only be sampled); whoever needs them checks for that (InfoGAN refuses such a code).
    """
    contract = Contract(who)
    n = CHECK_BATCH
    if distribution.kind not in KINDS:
        raise contract.fail("kind", f"is {distribution.kind!r}, expected one of {', '.join(map(repr, KINDS))}")
    widths = {}
    for member in ("input_dim", "param_dim"):
        width = contract.call(member, getattr, distribution, member)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise contract.fail(member, f"is {width!r}, expected a positive integer")
        widths[member] = width
    input_dim, param_dim = widths["input_dim"], widths["param_dim"]
    rng = torch.Generator().manual_seed(0)
    value = contract.call("sample", distribution.sample, n, rng, device)
    contract.tensor("sample", value, (n, input_dim), f"(n, input_dim) with input_dim = {input_dim}", device)
    again = contract.call("sample", distribution.sample, n, torch.Generator().manual_seed(0), device)
    if isinstance(again, torch.Tensor) and again.shape == value.shape and not torch.equal(again, value):
        raise contract.fail("sample", "gave different values from the same seed: draw only from the generator it is"
                                      " given (ganforge.sampling helps with torch.distributions)")
    _check_nll(contract, distribution, value, param_dim, device)
    try:
        values = contract.call("traversal_values", distribution.traversal_values, TRAVERSAL_STEPS,
                               allowed=(NotImplementedError,))
    except NotImplementedError:
        values = None
    if values is not None:
        columns = values.shape[0] if isinstance(values, torch.Tensor) and values.dim() == 2 else TRAVERSAL_STEPS
        contract.tensor("traversal_values", values, (columns, input_dim), "(columns, input_dim)")
    entropy = contract.call("entropy", distribution.entropy)
    if entropy is not None and (isinstance(entropy, bool) or not isinstance(entropy, (int, float))
                                or not math.isfinite(entropy)):
        raise contract.fail("entropy", f"returned {entropy!r}, expected a finite number of nats or None")
    try:
        # 0 is a value of most codes; a distribution may refuse it (ValueError), never crash on it.
        row = contract.call("encode", distribution.encode, 0, allowed=(ValueError, TypeError, NotImplementedError))
    except (ValueError, TypeError, NotImplementedError):
        row = None
    if row is not None:
        contract.tensor("encode", row, (1, input_dim), "one row of generator input")
    described = contract.call("describe", distribution.describe)
    if not isinstance(described, str) or "\n" in described:
        raise contract.fail("describe", f"returned {described!r}, expected one line of text")


def _check_nll(contract: Contract, distribution: LatentDistribution, value: torch.Tensor, param_dim: int,
               device: torch.device) -> None:
    """``nll`` on ``param_dim`` raw parameters: (n,) finite values whose gradient reaches them."""
    n = value.shape[0]
    params = (torch.randn(n, param_dim, generator=torch.Generator().manual_seed(1)) * 0.5).to(device)
    params.requires_grad_(True)
    try:
        nll = contract.call("nll", distribution.nll, value, params, allowed=(NotImplementedError,))
    except NotImplementedError:
        return
    except ContractError as error:
        raise error.hint(f"it was given params of shape ({n}, {param_dim}): param_dim must be the number of"
                         " parameters nll reads") from None
    contract.tensor("nll", nll, (n,), "one value per sample, summed over the code's dimensions", dtype=None)
    if not nll.is_floating_point():
        raise contract.fail("nll", f"returned {nll.dtype}, expected a floating-point tensor")
    if not nll.requires_grad:
        raise contract.fail("nll", "does not depend on params (no gradient reaches them): Q could not learn the code")
    (gradient,) = torch.autograd.grad(nll.sum(), params, allow_unused=True)
    if gradient is None or not torch.isfinite(gradient).all():
        raise contract.fail("nll", "gives no finite gradient with respect to params")


# -- models, losses, datasets, metrics ------------------------------------------------------------


@torch.no_grad()
def check_models(generator: torch.nn.Module, discriminator: torch.nn.Module, image_shape: tuple[int, int, int],
                 input_dim: int, who: str, device: torch.device,
                 conditions: dict[str, torch.Tensor] | None = None) -> None:
    """A generator maps (2, input_dim) to (2, C, H, W) in [-1, 1]; the discriminator gives (2,)
    logits and (2, feature_dim) features. Both in eval mode, so no batch statistic moves.
    ``conditions`` (two samples of every latent) go to a generator that takes them."""
    contract = Contract(f"model {who}")
    n = 2
    modes = (generator.training, discriminator.training)
    generator.eval(), discriminator.eval()
    try:
        z = torch.randn(n, input_dim, generator=torch.Generator().manual_seed(0)).to(device)
        extra = {} if conditions is None else {"conditions": conditions}
        images = contract.call("generator", generator, z, **extra)
        contract.tensor("generator", images, (n, *image_shape), f"(batch, *image_shape) for input_dim = {input_dim}")
        if images.abs().max() > 1 + 1e-4:
            raise contract.fail("generator", f"returned values up to {float(images.abs().max()):.3g}, expected images"
                                             " in [-1, 1] (end with tanh)")
        features = contract.call("discriminator.features", discriminator.features, images)
        feature_dim = getattr(discriminator, "feature_dim", None)
        contract.tensor("discriminator.features", features, (n, feature_dim), "(batch, feature_dim)")
        logits = contract.call("discriminator.adversarial", discriminator.adversarial, features)
        contract.tensor("discriminator.adversarial", logits, (n,), "one logit per image: squeeze the last dimension")
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])


def check_loss(loss: Any, who: str) -> None:
    """Both objectives give a finite scalar with a gradient to the logits they take."""
    contract = Contract(f"loss {who}")
    rng = torch.Generator().manual_seed(0)
    real = torch.randn(LOSS_CHECK_BATCH, generator=rng).requires_grad_()
    fake = torch.randn(LOSS_CHECK_BATCH, generator=rng).requires_grad_()
    for member in ("discriminator_loss", "generator_loss"):
        function = getattr(loss, member, None)
        if not callable(function):
            raise contract.fail(member, "is missing: a loss has discriminator_loss(real_logits, fake_logits) and"
                                        " generator_loss(fake_logits)")
        wanted = inspect.signature(function).parameters
        if "ctx" in wanted:
            continue  # it needs a whole training step to be tried
        arguments = {name: logits for name, logits in (("real_logits", real), ("fake_logits", fake)) if name in wanted}
        value = contract.call(member, function, **arguments)
        contract.tensor(member, value, (), "a scalar: reduce over the batch", dtype=None)
        if not value.requires_grad:
            raise contract.fail(member, "does not depend on the logits (no gradient would train the networks)")


def check_data(data: Any, who: str) -> None:
    """A dataset loader returned a non-empty :class:`ganforge.data.ImageData` of int64 labels."""
    from .data import ImageData

    contract = Contract(f"dataset {who}")
    if not isinstance(data, ImageData):
        raise contract.fail("load", f"returned {type(data).__name__}, expected ganforge.data.ImageData")
    if len(data) == 0:
        raise contract.fail("load", "returned no images")
    if not 1 <= data.image_shape[0] <= 4:
        raise contract.fail("load", f"returned images of shape {tuple(data.images.shape)}, expected (N, C, H, W)"
                                    " with 1 to 4 channels")
    for name, labels in data.labels.items():
        if labels.dtype != torch.int64:
            raise contract.fail("load", f"returned label {name!r} as {labels.dtype}, expected torch.int64")


def check_metric_result(result: Any, who: str) -> dict[str, float]:
    """A metric's result as a dict of names to floats."""
    contract = Contract(f"metric {who}")
    if not isinstance(result, dict):
        raise contract.fail("result", f"is {type(result).__name__}, expected a dict of names to floats")
    checked = {}
    for name, value in result.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise contract.fail("result", f"holds {name!r}: {value!r}, expected a name and a float")
        checked[name] = float(value)
    return checked
