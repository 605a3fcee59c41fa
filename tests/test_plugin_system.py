"""The plugin host: registries, entry points, disabling, and plugins that break the contract."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import types

import pytest

from ganforge import hookimpl
from ganforge.errors import PluginError, UnknownNameError
from ganforge.pluginmanager import DISABLE_ENV, make_plugin_host
from ganforge.registry import Registry

from .conftest import make_host


def test_registry_rejects_a_duplicate_name_naming_both_plugins():
    registry = Registry("model")
    registry.add("dcgan", object(), "first")
    with pytest.raises(PluginError, match="'dcgan' is registered twice: by plugin 'first' and by plugin 'second'"):
        registry.add("dcgan", object(), "second")


def test_registry_answers_an_unknown_name_with_did_you_mean_and_the_known_names():
    registry = Registry("model")
    registry.add("dcgan", 1, "p")
    registry.add("dcgan-28", 2, "p")
    with pytest.raises(UnknownNameError) as caught:
        registry.get("dcgn")
    assert "did you mean 'dcgan'?" in str(caught.value)
    assert "known: dcgan, dcgan-28" in str(caught.value)


def test_builtins_fill_every_registry(host):
    assert {"dcgan", "dcgan-28"} <= set(host.models.names())
    assert {"non-saturating", "hinge", "wasserstein"} <= set(host.losses.names())
    assert {"mnist", "fashion-mnist", "cifar10", "image-folder", "shapes"} <= set(host.datasets.names())
    assert {"normal", "uniform"} <= set(host.latents.names())
    assert host.models.entry("dcgan").plugin == "dcgan"
    assert host.registered_by("losses") == {"losses": ["hinge", "least-squares", "minimax", "non-saturating", "wasserstein"]}


def test_two_plugins_registering_one_name_is_an_error():
    class Copycat:
        @hookimpl
        def ganforge_register_losses(self, register):
            register("hinge", object())

    with pytest.raises(PluginError, match="'hinge' is registered twice.*'copycat'"):
        make_host(("copycat", Copycat()))


def test_a_misspelt_hook_name_is_an_error_naming_the_plugin():
    class Typo:
        @hookimpl
        def ganforge_register_model(self, register):  # missing the final "s"
            pass

    with pytest.raises(PluginError, match="plugin 'typo'.*ganforge_register_model"):
        make_host(("typo", Typo()))


def test_a_hook_that_raises_is_reported_with_the_plugin_name():
    class Broken:
        @hookimpl
        def ganforge_register_datasets(self, register):
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match="plugin 'broken' failed in ganforge_register_datasets: RuntimeError: boom"):
        make_host(("broken", Broken()))


def test_plugins_may_accept_a_subset_of_the_arguments():
    class NoArguments:
        def __init__(self):
            self.called = False

        @hookimpl
        def ganforge_register_metrics(self):
            self.called = True

    plugin = NoArguments()
    make_host(("quiet", plugin))
    assert plugin.called


# -- entry points, with a fake distribution over real modules -----------------------------------


class FakeDistribution:
    def __init__(self, name, entry_points):
        self.metadata = {"Name": name, "Version": "9.9"}
        self.entry_points = entry_points


@pytest.fixture
def plugin_modules(tmp_path, monkeypatch):
    """Two importable modules: one plugin that registers a loss, one that fails to import."""
    (tmp_path / "gf_good_plugin.py").write_text(textwrap.dedent("""
        from ganforge import hookimpl
        from ganforge_plugins.objectives.losses import Hinge

        @hookimpl
        def ganforge_register_losses(register):
            register("good-hinge", Hinge())
    """))
    (tmp_path / "gf_broken_plugin.py").write_text("import a_module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("gf_good_plugin", "gf_broken_plugin"):
        sys.modules.pop(name, None)


def fake_distributions(monkeypatch, *entry_points):
    dist = FakeDistribution("gf-thirdparty", [
        importlib.metadata.EntryPoint(name, value, "ganforge") for name, value in entry_points
    ])
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])


def test_entry_point_plugins_are_loaded_with_their_distribution(plugin_modules, monkeypatch):
    fake_distributions(monkeypatch, ("good", "gf_good_plugin"))
    host = make_plugin_host()
    assert host.losses.entry("good-hinge").plugin == "good"
    assert host.info["good"].distribution == "gf-thirdparty"
    assert host.info["good"].version == "9.9"


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(plugin_modules, monkeypatch):
    fake_distributions(monkeypatch, ("good", "gf_good_plugin"), ("broken", "gf_broken_plugin"))
    with pytest.raises(PluginError) as caught:
        make_plugin_host()
    message = str(caught.value)
    assert "plugin 'broken' from gf-thirdparty 9.9 failed to import" in message
    assert f"{DISABLE_ENV}=broken" in message


def test_a_broken_plugin_can_be_disabled_by_environment_variable(plugin_modules, monkeypatch):
    fake_distributions(monkeypatch, ("good", "gf_good_plugin"), ("broken", "gf_broken_plugin"))
    monkeypatch.setenv(DISABLE_ENV, "broken")
    host = make_plugin_host()
    assert "good-hinge" in host.losses
    assert "broken" not in host.info


def test_disabling_a_builtin_removes_what_it_registered(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "losses, latents")
    host = make_host()
    assert len(host.losses) == 0
    assert "normal" not in host.latents


def test_the_installed_entry_points_provide_the_builtins():
    host = make_plugin_host()
    assert {"dcgan", "losses", "datasets", "shapes", "latents"} <= set(host.info)
    assert host.info["dcgan"].distribution == "ganforge"


def test_the_core_imports_nothing_from_the_builtin_plugins():
    import pathlib

    core = pathlib.Path(__file__).resolve().parents[1] / "ganforge"
    offenders = [path.name for path in core.glob("*.py") if "ganforge_plugins" in path.read_text()]
    assert offenders == []


def test_module_plugins_are_supported_like_objects():
    module = types.ModuleType("gf_inline")

    @hookimpl
    def ganforge_register_latents(register):
        register("inline-normal", object)

    module.ganforge_register_latents = ganforge_register_latents
    host = make_host(("inline", module))
    assert host.latents.entry("inline-normal").plugin == "inline"


# -- a third-party plugin that fails while training, through the ganforge command ------------------


@pytest.fixture
def failing_plugins(tmp_path, monkeypatch):
    """Installed beside the real plugins: ``boom``, whose G loss-term hook raises at step 2, and
    ``tables``, whose ``[plugins.flaky]`` object raises in ``step_end`` at step 2."""
    (tmp_path / "gf_boom_plugin.py").write_text(textwrap.dedent("""
        from ganforge import hookimpl

        @hookimpl
        def ganforge_generator_loss_terms(ctx):
            if ctx.step == 2:
                raise RuntimeError("the G term of boom failed\\non two lines")
            return []
    """))
    (tmp_path / "gf_tables_plugin.py").write_text(textwrap.dedent("""
        from ganforge import hookimpl

        class Flaky:
            def __init__(self, settings):
                pass

            @hookimpl
            def ganforge_step_end(self, step):
                if step == 2:
                    raise KeyError("missing")

        @hookimpl
        def ganforge_register_run_plugins(register):
            register("flaky", Flaky, defaults={})
    """))
    # Installed for real: a .dist-info folder on the path is what pip leaves behind.
    dist_info = tmp_path / "gf_thirdparty-9.9.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-thirdparty\nVersion: 9.9\n")
    (dist_info / "entry_points.txt").write_text("[ganforge]\nboom = gf_boom_plugin\ntables = gf_tables_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("gf_boom_plugin", "gf_tables_plugin"):
        sys.modules.pop(name, None)


def run_command(tmp_path, **sections):
    from .conftest import invoke, tiny_recipe, write_recipe

    values = tiny_recipe(tmp_path / "runs", train={"steps": 3}, **sections)
    return invoke("run", write_recipe(tmp_path / "tiny.toml", values))


def test_a_hook_failing_at_run_time_names_the_plugin_its_distribution_and_how_to_disable_it(tmp_path, failing_plugins):
    from .conftest import assert_one_line_cli_error

    assert_one_line_cli_error(
        run_command(tmp_path), 3,
        "error: plugin 'boom' from gf-thirdparty 9.9 failed in ganforge_generator_loss_terms: RuntimeError:"
        f" the G term of boom failed on two lines; {DISABLE_ENV}=boom switches it off")


def test_a_failing_per_run_plugin_is_named_with_the_distribution_of_its_table(tmp_path, failing_plugins, monkeypatch):
    from .conftest import assert_one_line_cli_error

    monkeypatch.setenv(DISABLE_ENV, "boom")
    assert_one_line_cli_error(
        run_command(tmp_path, plugins={"flaky": {}}), 3,
        "error: plugin 'flaky.run' from gf-thirdparty 9.9 failed in ganforge_step_end: KeyError: 'missing'")


def test_the_broken_plugin_disabled_the_run_trains(tmp_path, failing_plugins, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "boom")
    result = run_command(tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "done: 3 steps" in result.stdout
