"""Building the plugin manager: hookspecs, entry points, registries.

Built-in plugins and third-party ones arrive the same way, through the ``ganforge`` entry-point
group. Each run (and each test) builds a fresh :class:`PluginHost`; nothing is module-global.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .errors import GanforgeError, PluginError
from .registry import Registry

ENTRY_POINT_GROUP = "ganforge"
DISABLE_ENV = "GANFORGE_DISABLE_PLUGINS"

#: Registration hooks, by registry: ``ganforge_register_<kind>`` fills ``host.<kind>``.
REGISTRY_KINDS = {
    "models": "model",
    "losses": "loss",
    "datasets": "dataset",
    "latents": "latent distribution",
    "metrics": "metric",
    "run_plugins": "plugin table",
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from, for messages and for ``ganforge plugins``."""

    name: str
    distribution: str = ""
    version: str = ""

    def describe(self) -> str:
        origin = f" from {self.distribution} {self.version}".rstrip() if self.distribution else ""
        return f"plugin {self.name!r}{origin}"


def disabled_plugins() -> set[str]:
    """Entry-point names listed in ``$GANFORGE_DISABLE_PLUGINS`` (comma separated)."""
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


@dataclass
class PluginHost:
    """A plugin manager with its registries filled."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)
    models: Registry = field(default_factory=lambda: Registry("model"))
    losses: Registry = field(default_factory=lambda: Registry("loss"))
    datasets: Registry = field(default_factory=lambda: Registry("dataset"))
    latents: Registry = field(default_factory=lambda: Registry("latent distribution"))
    metrics: Registry = field(default_factory=lambda: Registry("metric"))
    run_plugins: Registry = field(default_factory=lambda: Registry("plugin table"))

    @property
    def hook(self):
        return self.pm.hook

    def describe(self, plugin_name: str) -> str:
        return self.info.get(plugin_name, PluginInfo(plugin_name)).describe()

    def register(self, plugin: Any, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object, naming it in the error if its hooks do not match the specs."""
        self.info[name] = info or PluginInfo(name)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            raise PluginError(f"{self.describe(name)} does not match the hook specs: {error}") from None
        except ValueError as error:  # pluggy: name already registered
            raise PluginError(f"{self.describe(name)} cannot be registered: {error}") from None

    def plugins(self) -> list[tuple[str, Any]]:
        return sorted(self.pm.list_name_plugin(), key=lambda item: item[0])

    def hooks_of(self, plugin: Any) -> list[str]:
        return sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def registered_by(self, plugin_name: str) -> dict[str, list[str]]:
        """The names each registry holds from one plugin, e.g. ``{"models": ["dcgan"]}``."""
        found = {kind: getattr(self, kind).by_plugin(plugin_name) for kind in REGISTRY_KINDS}
        return {kind: names for kind, names in found.items() if names}

    def call_registration_hooks(self) -> None:
        """Fill the registries: each plugin's ``register`` call is recorded under its name."""
        for kind in REGISTRY_KINDS:
            registry: Registry = getattr(self, kind)
            caller = getattr(self.pm.hook, f"ganforge_register_{kind}")
            for impl in reversed(caller.get_hookimpls()):  # oldest registration first
                arguments = {"register": _register_callback(registry, impl.plugin_name)}
                self.guarded(impl.plugin_name, impl.function, **{name: arguments[name] for name in impl.argnames})

    def guarded(self, plugin_name: str, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call a plugin's function (a hook, a factory, a loader); name the plugin if it fails."""
        try:
            return function(*args, **kwargs)
        except GanforgeError:
            raise
        except Exception as error:
            raise PluginError(
                f"{self.describe(plugin_name)} failed in {getattr(function, '__name__', function)}:"
                f" {type(error).__name__}: {error}"
            ) from error


def _register_callback(registry: Registry, plugin_name: str) -> Callable:
    def register(name: str, value: Any, defaults: dict | None = None) -> None:
        extra = {} if defaults is None else {"defaults": dict(defaults)}
        registry.add(name, value, plugin_name, **extra)

    return register


def _entry_points() -> Iterable[tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]]:
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points:
            key = (dist.metadata["Name"] or "", entry_point.name)
            if entry_point.group == ENTRY_POINT_GROUP and key not in seen:
                seen.add(key)
                yield entry_point, dist


def make_plugin_host(*, entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()) -> PluginHost:
    """A fresh plugin manager with the hookspecs, the entry-point plugins (minus the disabled
    ones) and ``plugins`` (``(name, object)`` pairs) registered, and the registries filled.

    Tests pass ``entry_points=False`` and the plugins they need, so nothing installed on the
    machine leaks into them.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    disabled = disabled_plugins()
    if entry_points:
        for entry_point, dist in _entry_points():
            if entry_point.name in disabled:
                continue
            info = PluginInfo(entry_point.name, dist.metadata["Name"] or "", dist.version or "")
            if entry_point.name in host.info:
                raise PluginError(
                    f"{info.describe()} has the same entry-point name as {host.describe(entry_point.name)};"
                    f" disable one with {DISABLE_ENV}={entry_point.name}"
                )
            try:
                plugin = entry_point.load()
            except Exception as error:
                raise PluginError(
                    f"{info.describe()} failed to import ({entry_point.value}): {type(error).__name__}: {error};"
                    f" disable it with {DISABLE_ENV}={entry_point.name}"
                ) from None
            host.register(plugin, entry_point.name, info)
    for name, plugin in plugins:
        if name not in disabled:
            host.register(plugin, name)
    host.call_registration_hooks()
    return host
