"""Plugin tables declared by a PluginSpec: options checked by the core, rules in one place,
capabilities found without names, the older registration still working, docs drawn from specs."""

from __future__ import annotations

import pytest
import torch

from ganforge import hookimpl
from ganforge.checks import between
from ganforge.errors import PluginError, RecipeError
from ganforge.plugin_docs import DOC, options_markdown
from ganforge.plugin_spec import CLASS_LABEL, CODE_READER, LIPSCHITZ, Option, PluginSpec
from ganforge.testing import build_run, tiny_recipe
from ganforge_plugins.infogan.metrics import categorical_clustering

from .conftest import assert_one_line_cli_error, invoke, make_host, write_recipe


def check(tmp_path, **sections):
    return invoke("check", write_recipe(tmp_path / "r.toml", tiny_recipe(tmp_path / "runs", **sections)))


def test_the_option_tables_in_the_docs_are_drawn_from_the_specs():
    assert DOC.read_text() == options_markdown(make_host()), "run: python -m ganforge.plugin_docs"


def test_an_option_outside_its_declared_range_is_a_one_line_recipe_error(tmp_path):
    assert_one_line_cli_error(check(tmp_path, plugins={"ema": {"decay": 1.5}}), 2, "plugins.ema.decay",
                              "between 0 and 1", "1.5")
    assert_one_line_cli_error(check(tmp_path, plugins={"wgan-gp": {"critic_steps": 0}}, loss={"name": "wasserstein"}),
                              2, "plugins.wgan-gp.critic_steps", "from 1 to 100")
    assert_one_line_cli_error(check(tmp_path, plugins={"ema": {"decai": 0.9}}), 2, "plugins.ema.decai",
                              "did you mean 'decay'")
    assert_one_line_cli_error(check(tmp_path, plugins={"diffaugment": {"policy": ["colour", "zoom"]}}), 2,
                              "plugins.diffaugment.policy[1]", "'zoom'")


class Reader:
    """A code reader from another package: one categorical code read from the image's brightness."""

    def __init__(self, settings):
        self.codes = {"c": type("Code", (), {"kind": "categorical", "size": settings["categories"]})()}

    @hookimpl
    def ganforge_step_end(self, run):
        pass

    def predict_codes(self, run, images):
        brightness = images.flatten(1).mean(1)
        bins = ((brightness + 1) / 2 * self.codes["c"].size).long().clamp(0, self.codes["c"].size - 1)
        return {"c": torch.nn.functional.one_hot(bins, self.codes["c"].size).float()}


class ReaderPackage:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register(PluginSpec("reader", Reader, {"categories": Option(4, "how many", between(2, 10))},
                            provides=frozenset({CODE_READER})))


def test_a_third_party_code_reader_is_found_by_its_capability_and_scored(tmp_path):
    plain = build_run(tiny_recipe(tmp_path), ReaderPackage())
    assert plain.provider(CODE_READER) is None and categorical_clustering(plain, plain.data) == {}
    run = build_run(tiny_recipe(tmp_path, plugins={"reader": {"categories": 3}}), ReaderPackage())
    assert run.providers(CODE_READER) == [run.plugins["reader"]]
    scores = categorical_clustering(run, run.data)
    assert set(scores) == {"c/accuracy", "c/nmi", "c/purity"} and 0 < scores["c/accuracy"] <= 1


class OldStyle:
    provides = (LIPSCHITZ,)  # read from the object, as before specs

    def __init__(self, settings):
        self.strength = settings["strength"]

    @hookimpl
    def ganforge_step_end(self, run):
        pass


class OldPackage:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register("old-style", OldStyle, defaults={"strength": 1.0})


def test_a_plugin_registered_with_defaults_still_trains_and_provides(tmp_path):
    run = build_run(tiny_recipe(tmp_path, plugins={"old-style": {"strength": 2}}, loss={"name": "wasserstein"}),
                    OldPackage())
    assert run.plugins["old-style"].strength == 2.0 and not run.specs["old-style"].declared
    with pytest.raises(RecipeError) as caught:
        build_run(tiny_recipe(tmp_path, plugins={"old-style": {"strength": "high"}}), OldPackage())
    assert caught.value.key == "plugins.old-style.strength"


class Labeller:
    def __init__(self, settings):
        self.classes = 10

    @hookimpl
    def ganforge_step_end(self, run):
        pass


class LabelPackage:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register(PluginSpec("labeller", Labeller, provides=frozenset({CLASS_LABEL})))
        register(PluginSpec("needs-codes", Labeller, requires={CODE_READER: "it scores the codes"}))


def test_combinations_are_refused_by_capability_not_by_name(tmp_path):
    with pytest.raises(RecipeError) as caught:
        build_run(tiny_recipe(tmp_path, plugins={"conditional": {}, "labeller": {}}), LabelPackage())
    assert caught.value.key == "plugins.conditional" and "[plugins.labeller]" in str(caught.value)
    with pytest.raises(RecipeError) as caught:
        build_run(tiny_recipe(tmp_path, plugins={"needs-codes": {}}), LabelPackage())
    assert caught.value.key == "plugins.needs-codes" and "'code-reader'" in str(caught.value)
    assert build_run(tiny_recipe(tmp_path, plugins={"needs-codes": {}, "infogan": {"codes": [
        {"name": "c", "dist": "categorical", "size": 3}]}}), LabelPackage()).provider(CODE_READER) is not None


def family_with(**declared):
    """A model family: dcgan-28's networks, its build function declaring ``declared``."""
    from ganforge_plugins.models.dcgan import build_dcgan_28

    def build(image_shape, input_dim):
        return build_dcgan_28(image_shape, input_dim)

    for attribute, value in declared.items():
        setattr(build, attribute, value)

    class FamilyPackage:
        @hookimpl
        def ganforge_register_models(self, register):
            register("declaring", build)

    return FamilyPackage()


def test_a_model_family_provides_and_conflicts_as_a_plugin_does(tmp_path):
    recipe = tiny_recipe(tmp_path, model={"name": "declaring"}, plugins={"needs-codes": {}})
    assert build_run(recipe, LabelPackage(), family_with(provides=frozenset({CODE_READER}))).plugins["needs-codes"]
    with pytest.raises(RecipeError) as caught:
        build_run(recipe, LabelPackage(), family_with())
    assert caught.value.key == "plugins.needs-codes" and "from the model family or another plugin" in str(caught.value)
    with pytest.raises(RecipeError) as caught:
        build_run(tiny_recipe(tmp_path, model={"name": "declaring"}, plugins={"labeller": {}}), LabelPackage(),
                  family_with(conflicts={CLASS_LABEL: "it draws no classes"}))
    assert caught.value.key == "model.name" and str(caught.value).endswith(
        "'declaring' cannot be combined with [plugins.labeller]: it draws no classes")


class Hoarder(Labeller):
    def state_dict(self):
        return {}


class HoarderPackage:
    @hookimpl
    def ganforge_register_run_plugins(self, register):
        register(PluginSpec("hoarder", Hoarder))


def test_state_a_spec_does_not_declare_is_a_plugin_error(tmp_path):
    with pytest.raises(PluginError, match="stateful=True"):
        build_run(tiny_recipe(tmp_path, plugins={"hoarder": {}}), HoarderPackage())
