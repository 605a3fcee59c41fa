"""Registries: every named thing a plugin contributes, with who contributed it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from .errors import PluginError, UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str:
    """' did you mean 'x'?' when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


#: Where to look when a name a package should provide is not registered.
NOT_INSTALLED_HINT = ("a package that provides it must be installed in this environment and declare a 'ganforge'"
                      " entry point (`ganforge plugins` lists what was found)")


def unknown_name_message(kind: str, name: object, known: list[str], plugin_hint: bool = False) -> str:
    """"unknown model 'dcgn'; did you mean 'dcgan'? known: dcgan, infogan-28", and with
    ``plugin_hint`` where a plugin that should provide the name may be missing."""
    hint = did_you_mean(name, known) if isinstance(name, str) else ""
    choices = ", ".join(known) if known else "(none registered)"
    message = f"unknown {kind} {name!r};{hint} known: {choices}"
    return f"{message}; {NOT_INSTALLED_HINT}" if plugin_hint and not hint else message


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    plugin: str
    extra: dict[str, Any]


class Registry(Generic[T]):
    """Names to values, each recorded with the plugin that registered it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, plugin: str, **extra: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        if name in self._entries:
            first = self._entries[name].plugin
            raise PluginError(f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}")
        self._entries[name] = Entry(name, value, plugin, extra)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names(), plugin_hint=True)) from None

    def get(self, name: str) -> T:
        return self.entry(name).value

    def names(self) -> list[str]:
        return sorted(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(name for name, entry in self._entries.items() if entry.plugin == plugin)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._entries)
