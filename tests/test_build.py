"""Building a run: the optimizer groups follow the networks as ganforge_models_built left them."""

from __future__ import annotations

from torch import nn

from ganforge import hookimpl
from ganforge.testing import build_run, tiny_recipe


class SwapsALayer:
    """Replaces D's first batch norm by a layer norm in ganforge_models_built, and leaves the
    optimizer groups alone; a second object sets the heads' rate first, which must survive."""

    @hookimpl
    def ganforge_models_built(self, run):
        trunk = run.discriminator.trunk
        name, batch_norm = next((n, m) for n, m in trunk.named_modules() if isinstance(m, nn.BatchNorm2d))
        parent = trunk.get_submodule(name.rpartition(".")[0]) if "." in name else trunk
        self.removed = list(batch_norm.parameters())
        self.added = nn.GroupNorm(1, batch_norm.num_features)
        setattr(parent, name.rpartition(".")[2], self.added)


class EditsTheRate:
    @hookimpl(tryfirst=True)
    def ganforge_models_built(self, run):
        run.parameter_groups["G"][0]["lr"] = 3e-4


def test_a_plugin_that_swaps_layers_need_not_rebuild_the_optimizer_groups(tmp_path):
    swap = SwapsALayer()
    run = build_run(tiny_recipe(tmp_path), ("swap", swap), ("rate", EditsTheRate()))
    trained = {id(p) for group in run.optimizer_d.param_groups for p in group["params"]}
    assert {id(p) for p in swap.added.parameters()} <= trained
    assert not {id(p) for p in swap.removed} & trained
    assert trained == {id(p) for p in run.discriminator.parameters()}
    assert run.optimizer_g.param_groups[0]["lr"] == 3e-4


class RecordsTheLayout:
    """A model family whose builder asks for ``input_layout``: the DCGAN networks, and what it got."""

    def __init__(self):
        self.layouts: list[dict[str, int]] = []

    def build(self, image_shape, input_dim, input_layout):
        from plugins.models.dcgan import build_dcgan_28
        self.layouts.append(dict(input_layout))
        return build_dcgan_28(image_shape, input_dim)

    @hookimpl
    def ganforge_register_models(self, register):
        register("records-layout", self.build)


def test_a_family_that_asks_for_the_input_layout_gets_each_input_in_row_order(tmp_path):
    family = RecordsTheLayout()
    codes = [{"name": "width", "dist": "uniform", "size": 1}, {"name": "digit", "dist": "categorical", "size": 10}]
    run = build_run(tiny_recipe(tmp_path, model={"name": "records-layout"}, plugins={"infogan": {"codes": codes}}),
                    ("layout", family))
    layout = family.layouts[-1]
    assert list(layout) == list(run.inputs) == ["z", "digit", "width"]
    assert layout == {"z": run.recipe.latent.noise_dim, "digit": 10, "width": 1}
    assert sum(layout.values()) == run.input_dim
