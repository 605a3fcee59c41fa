"""The speed-ups in the training step keep its arithmetic: one discriminator pass over several
batches equals separate passes (values, gradients, batch statistics), the views hook feeds that
pass, and a step never reads a tensor's value into Python (a device sync on a GPU)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ganforge import hookimpl
from ganforge.losses import LossTerm
from ganforge.models import batch_norm_per_chunk, frozen_batch_statistics, split_output
from ganforge.training import discriminator_passes, train_step

from .test_variant_hooks import INFOGAN, batch_norms, built_run
from .conftest import make_host
from .tolerance import D28_FORWARD_TERMS, D28_GRADIENT_TERMS, assert_close_to_rounding, by_layer


def small_network():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU(), nn.Linear(8, 1))


def gradients_by_layer(network: nn.Module) -> dict[str, list[torch.Tensor]]:
    return by_layer((name, p.grad) for name, p in network.named_parameters())


def running_statistics_by_layer(network: nn.Module) -> dict[str, list[torch.Tensor]]:
    return by_layer((name, b) for name, b in network.named_buffers() if b.is_floating_point())


def test_batch_norm_per_chunk_equals_separate_passes_values_gradients_and_statistics():
    separate, together = small_network(), small_network()
    together.load_state_dict(separate.state_dict())
    torch.manual_seed(1)
    batches = [torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8), torch.randn(3, 1, 8, 8)]
    updates = [True, True, False]

    outputs = []
    for images, update in zip(batches, updates):
        if update:
            outputs.append(separate(images))
        else:
            with frozen_batch_statistics(separate):
                outputs.append(separate(images))
    weights = torch.randn(13, 1)
    (torch.cat(outputs) * weights).sum().backward()

    with batch_norm_per_chunk(together, [5, 5, 3], updates):
        joined = together(torch.cat(batches))
    (joined * weights).sum().backward()

    # Reductions: conv 9 taps, batch norm over 5 x 4 x 4, linear 64 and 8 inputs, and back; the
    # conv's weight gradient sums over 13 x 4 x 4 positions: well under 1,000 in all.
    assert_close_to_rounding(joined, torch.cat(outputs), terms=1_000)
    joined_grads = gradients_by_layer(together)
    for layer, grads in gradients_by_layer(separate).items():
        assert_close_to_rounding(joined_grads[layer], grads, terms=1_000, what=layer)
    joined_statistics = running_statistics_by_layer(together)
    for layer, statistics in running_statistics_by_layer(separate).items():  # moved by chunks 1, 2 only
        assert_close_to_rounding(joined_statistics[layer], statistics, terms=1_000, what=layer)
    assert [int(b) for b in together.buffers() if not b.is_floating_point()] == [
        int(b) for b in separate.buffers() if not b.is_floating_point()]
    assert int(together[1].num_batches_tracked) == 2
    # Outside the context the layers are plain batch norm again.
    assert "forward" not in vars(together[1])


def test_batch_norm_per_chunk_in_eval_mode_uses_running_statistics():
    network = small_network().eval()
    images = torch.randn(6, 1, 8, 8)
    with batch_norm_per_chunk(network, [3, 3], [True, True]):
        joined = network(images)
    torch.testing.assert_close(joined, network(images))


class MirrorView:
    """An example plugin: D also sees the real batch mirrored, and a term pulls its logits on the
    mirror towards those on the originals."""

    @hookimpl
    def ganforge_discriminator_views(self, run, real):
        return [("mirror", real.flip(3))]

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.seen = ctx
        return [LossTerm("mirror", (ctx.views["mirror"].logits - ctx.d_real.logits.detach()).pow(2).mean())]


def test_ganforge_discriminator_views_share_the_pass_and_train_d_like_a_pass_of_their_own(tmp_path):
    plugin = MirrorView()
    run = built_run(tmp_path, make_host(("mirror", plugin)))
    before = copy.deepcopy(run.discriminator)
    norm = batch_norms(run.discriminator.trunk)[0]
    tracked = int(norm.num_batches_tracked)
    train_step(run)
    ctx = plugin.seen
    assert set(ctx.views) == {"mirror"} and int(norm.num_batches_tracked) == tracked + 2  # real, fake; not the view

    # The view's output equals a separate pass of D as it was, on the mirrored real batch.
    with frozen_batch_statistics(before):
        alone = before(ctx.real.flip(3), ctx.conditions)
    assert_close_to_rounding(ctx.views["mirror"].logits, alone.logits, terms=D28_FORWARD_TERMS)
    # Its term trains D: a gradient reaches the trunk through the view alone.
    trunk = next(before.trunk.parameters())
    term = (alone.logits - ctx.d_real.logits.detach()).pow(2).mean()
    (gradient,) = torch.autograd.grad(term, trunk)
    assert gradient.abs().sum() > 0


def test_two_views_of_one_name_are_a_plugin_error(tmp_path):
    from ganforge.errors import PluginError

    run = built_run(tmp_path, make_host(("a", MirrorView()), ("b", MirrorView())))
    with pytest.raises(PluginError, match="view of one name"):
        train_step(run)


def test_the_batched_d_pass_equals_separate_passes_on_a_real_run(tmp_path):
    """InfoGAN with its consistency view: D's outputs on real, fake and moved images in one pass
    equal three passes, and D's gradient from the step's objective is the same."""
    run = built_run(tmp_path, plugins={"infogan": {**INFOGAN, "consistency_weight": 1.0}})
    real, _, _ = run.batcher.next()
    fake = run.generate(run.sample_latents(len(real))) * 2 - 1
    moved = real.roll(1, dims=3)
    separate_net = copy.deepcopy(run.discriminator)
    batches = [(real, {}, True), (fake, {}, True), (moved, {}, False)]
    together = discriminator_passes(run, batches)
    separate = [separate_net(real), separate_net(fake)]
    with frozen_batch_statistics(separate_net):
        separate.append(separate_net(moved))
    for joined, alone in zip(together, separate):
        assert_close_to_rounding(joined.logits, alone.logits, terms=D28_FORWARD_TERMS)
        assert_close_to_rounding(joined.heads["q"], alone.heads["q"], terms=D28_FORWARD_TERMS)
    loss = lambda outputs: sum(o.logits.square().mean() + o.heads["q"].square().mean() for o in outputs)  # noqa: E731
    names = [name for name, _ in run.discriminator.named_parameters()]
    joined_grads = by_layer(zip(names, torch.autograd.grad(loss(together), list(run.discriminator.parameters()))))
    separate_grads = by_layer(zip(names, torch.autograd.grad(loss(separate), list(separate_net.parameters()))))
    for layer, grads in joined_grads.items():
        assert_close_to_rounding(grads, separate_grads[layer], terms=D28_GRADIENT_TERMS, what=layer)
    for a, b in zip(run.discriminator.buffers(), separate_net.buffers()):
        torch.testing.assert_close(a, b)


def test_split_output_returns_each_batch_its_rows():
    from ganforge.models import DiscriminatorOutput

    output = DiscriminatorOutput(torch.arange(5.0), torch.arange(10.0).view(5, 2), {"q": torch.arange(5.0) * 2})
    first, second = split_output(output, [2, 3])
    assert first.logits.tolist() == [0, 1] and second.heads["q"].tolist() == [4, 6, 8]
    assert second.features.shape == (3, 2)


# -- no value read per step ----------------------------------------------------------------------

#: Reading a tensor's value into Python: on a GPU each waits for every queued kernel.
VALUE_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
               torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy}


class ValueReads(TorchFunctionMode):
    """Records every read of a tensor's value made while active."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in VALUE_READS:
            self.reads.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_value_reads_are_recorded_so_the_next_test_can_fail():
    with ValueReads() as reads:
        float(torch.ones(()).sum())
        torch.zeros(2).tolist()
        bool(torch.ones(()) > 0)
    assert len(reads.reads) == 3


#: Where the step runs: the CPU always; a GPU where there is one, where torch's own sync check
#: also catches what no value read shows (a copy from pageable host memory, a blocking wait).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@contextlib.contextmanager
def device_syncs_are_errors(device: str):
    if device != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("plugins", [
    {"infogan": {**INFOGAN, "consistency_weight": 3.0, "real_info_weight": 1.0}},
    {"infogan": INFOGAN, "wgan-gp": {}, "ema": {}},
], ids=["infogan-with-real-terms", "infogan-wgan-gp-ema"])
def test_a_training_step_never_reads_a_tensor_value(tmp_path, plugins, device):
    """Losses stay tensors until the log cadence: no step syncs with the device."""
    loss = {"name": "wasserstein"} if "wgan-gp" in plugins else {}
    run = built_run(tmp_path, plugins=plugins, loss=loss, run={"device": device})
    train_step(run)  # first step: lazy set-up may read values
    with ValueReads() as reads, device_syncs_are_errors(device):
        for _ in range(3):
            train_step(run)
    assert reads.reads == []


# -- precision and compilation -------------------------------------------------------------------


class DtypeProbe:
    """Records what dtype D's first convolution computed in, and what the loss terms received."""

    def __init__(self):
        self.conv, self.seen = [], []

    @hookimpl
    def ganforge_train_start(self, run):
        conv = next(m for m in run.discriminator.modules() if isinstance(m, nn.Conv2d))
        conv.register_forward_hook(lambda module, args, output: self.conv.append(output.dtype))

    @hookimpl
    def ganforge_discriminator_loss_terms(self, ctx):
        self.seen += [ctx.fake.dtype, ctx.d_fake.logits.dtype, ctx.d_real.heads["q"].dtype]
        return []

    @hookimpl
    def ganforge_generator_loss_terms(self, ctx):
        self.seen += [ctx.fake.dtype, ctx.d_fake.logits.dtype, ctx.d_fake.heads["q"].dtype]
        return []


def one_step_gradients(tmp_path, precision):
    probe = DtypeProbe()
    run = built_run(tmp_path / precision, make_host(("probe", probe)),
                    plugins={"infogan": {**INFOGAN, "consistency_weight": 1.0}}, train={"precision": precision})
    probe.ganforge_train_start(run)
    logs = train_step(run)
    grads = {name: p.grad.clone() for name, p in run.generator.named_parameters()}
    return probe, logs, grads


def test_bf16_runs_the_passes_in_bf16_and_hands_every_loss_float32(tmp_path):
    probe, logs, grads = one_step_gradients(tmp_path, "bf16")
    _, reference_logs, reference = one_step_gradients(tmp_path, "fp32")
    assert set(probe.conv) == {torch.bfloat16}
    assert set(probe.seen) == {torch.float32}
    for name in ("loss/D/adv", "loss/D/info/digit", "loss/D/consistency/digit", "loss/G/adv", "loss/G/info/digit"):
        assert logs[name].dtype == torch.float32
        torch.testing.assert_close(logs[name], reference_logs[name], rtol=0.05, atol=0.02, msg=name)
    # The same first step from the same weights: the generator's gradient points the same way
    # (an unrelated gradient would be near 0). Layer weights only: the bias of a layer that batch
    # norm follows has a gradient of 0 in exact arithmetic, so only rounding noise to compare.
    for name, gradient in ((name, g) for name, g in grads.items() if g.dim() > 1):
        cosine = torch.nn.functional.cosine_similarity(gradient.flatten(), reference[name].flatten(), dim=0)
        assert gradient.abs().sum() > 0 and cosine > 0.9, (name, float(cosine))  # bf16 keeps 8 bits: 0.95 seen


def test_a_compiled_run_trains_like_an_eager_one_and_their_checkpoints_load_in_each_other(tmp_path):
    from .conftest import metric_records, run_tiny
    from .test_variant_hooks import last_checkpoint

    plugins = {"infogan": {**INFOGAN, "consistency_weight": 1.0}}
    steps = {"steps": 2, "log_every": 1, "sample_every": 1000, "checkpoint_every": 2, "keep_checkpoints": 0}
    eager = run_tiny(tmp_path / "eager", plugins=plugins, train=steps)
    # reduce-overhead: on a GPU it replays CUDA graphs; on the CPU inductor skips the graphs, so
    # this runs its kernels and the loop's marking of each step.
    compiled = run_tiny(tmp_path / "compiled", plugins=plugins,
                        train={**steps, "compile": True, "compile_mode": "reduce-overhead"})
    records = list(zip(metric_records(eager.directory), metric_records(compiled.directory)))
    assert [a["step"] for a, _ in records] == [1, 2]
    # The first step's losses come from the same weights: only the kernels' order of summation
    # differs. After one Adam step the weights differ too: Adam moves a weight whose gradient is
    # near 0 by about the learning rate whatever its size, so float-order differences there
    # become differences of up to a few 1e-3 in the second step's losses.
    first, second = records
    for name, value in first[0].items():
        if name.startswith("loss/"):  # G's and D's forward passes, each about D28_FORWARD_TERMS long
            assert_close_to_rounding(first[1][name], value, terms=2 * D28_FORWARD_TERMS, what=f"step 1 {name}")
    for name, value in second[0].items():
        if name.startswith("loss/"):
            assert second[1][name] == pytest.approx(value, rel=1e-2, abs=1e-5), (2, name)
    # Each checkpoint resumes under the other setting, and holds the same keys.
    saved = [torch.load(last_checkpoint(tmp_path / name), weights_only=True) for name in ("eager", "compiled")]
    assert saved[0]["generator"].keys() == saved[1]["generator"].keys()
    assert saved[0]["discriminator"].keys() == saved[1]["discriminator"].keys()
    more = {**steps, "steps": 3}
    assert run_tiny(tmp_path / "eager", plugins=plugins, resume=True, train={**more, "compile": True}).step == 3
    assert run_tiny(tmp_path / "compiled", plugins=plugins, resume=True, train=more).step == 3


#: The float32 operations on the way to the 64 px DCGAN's losses: G's transposed convolutions
#: (512 x 16 inputs at most) and batch norm over up to 16 x 32 x 32 values, D's convolutions (up to
#: 256 x 16) and head (512 x 16): about 90,000 reductions' lengths in all.
DCGAN64_LOSS_TERMS = 100_000


def test_memory_format_auto_is_channels_last_from_32_px_up_and_trains_the_same(tmp_path):
    def first_step(name, **train):
        run = built_run(tmp_path / name, data={"image_size": 64}, model={"name": "dcgan"}, train=train)
        weight = next(p for p in run.discriminator.parameters() if p.dim() == 4 and p.shape[1] > 1)
        return run, weight, train_step(run)

    run, weight, logs = first_step("auto")
    assert run.channels_last() and weight.is_contiguous(memory_format=torch.channels_last)
    _, plain_weight, plain_logs = first_step("contiguous", memory_format="contiguous")
    assert plain_weight.is_contiguous() and not plain_weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("loss/D/adv", "loss/G/adv"):
        assert_close_to_rounding(logs[name], plain_logs[name], terms=DCGAN64_LOSS_TERMS, what=name)
    assert not built_run(tmp_path / "small").channels_last()  # 28 px: mostly linear layers
