"""The option tables of every ``[plugins.<name>]`` table, drawn from the plugins' specs.

``ganforge plugins --options`` prints them for the plugins installed here; docs/plugin-options.md
is the same for the built-in plugins (``python -m ganforge.plugin_docs`` writes it, and a test
keeps it current), so the docs cannot drift from what the core checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .checks import accepted, type_name
from .plugin_spec import CAPABILITIES, Option, PluginSpec
from .pluginmanager import BUILTIN_DISTRIBUTION, PluginHost, make_plugin_host, plugin_specs
from .toml_writer import _value

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugin-options.md"


def shown_default(option: Option) -> str:
    return "{}" if option.default == {} else _value(option.default)


def what_it_declares(spec: PluginSpec) -> list[str]:
    """The spec's rules, as sentences: provides, requires, conflicts, objectives, state."""
    lines = []
    provided = spec.provides if not callable(spec.provides) else None
    if provided:
        lines.append(f"provides {', '.join(f'`{name}`' for name in sorted(provided))}")
    elif callable(spec.provides):
        lines.append(f"provides {(spec.provides.__doc__ or 'what its settings say').strip()}")
    lines += [f"requires `{need}`: {why}" for need, why in spec.requires.items()]
    lines += [f"not with `{other}`: {why}" for other, why in spec.conflicts.items()]
    if spec.losses:
        lines.append(f"trains with `loss.name` {' or '.join(f'`{loss}`' for loss in spec.losses)}")
    if spec.stateful:
        lines.append("keeps state in checkpoints")
    if not spec.changes_training:
        lines.append("only observes: a resumed run may add or drop its table")
    if not spec.declared:
        lines.append("registered without a PluginSpec: its options are typed by their defaults only")
    return lines


def option_rows(spec: PluginSpec) -> list[tuple[str, str, str, str, str]]:
    """``(key, type, accepted values, default, what it does)`` for each option."""
    return [(key, type_name(option.kind), "; ".join(filter(None, map(accepted, option.checks()))),
             shown_default(option), option.doc) for key, option in spec.options.items()]


def options_markdown(host: PluginHost) -> str:
    parts = ["# Plugin tables and their options",
             "",
             "Every `[plugins.<name>]` table a recipe can switch on, with each key's type, default and",
             "meaning, as the plugin declares them in its `PluginSpec` (ganforge/plugin_spec.py). The core",
             "checks a table against these before anything is built. Written by",
             "`python -m ganforge.plugin_docs`; `ganforge plugins --options` shows the same for the plugins",
             "installed on a machine.",
             "",
             "Capabilities a plugin can provide, which others ask for with `run.providers(name)`:",
             ""]
    parts += [f"- `{name}`: {what}" for name, what in CAPABILITIES.items()]
    for name, spec in sorted(plugin_specs(host).items()):
        parts += ["", f"## `[plugins.{name}]`", "", f"{spec.doc[:1].upper()}{spec.doc[1:]}." if spec.doc else ""]
        declared = what_it_declares(spec)
        if declared:
            parts += ["", *(f"- {line[:1].upper()}{line[1:]}." for line in declared)]
        rows = option_rows(spec)
        if rows:
            parts += ["", "| key | type | accepts | default | what it does |", "|---|---|---|---|---|"]
            parts += [f"| `{key}` | {kind} | {accepts} | `{default}` | {doc.replace('|', chr(92) + '|')} |"
                      for key, kind, accepts, default, doc in rows]
    return "\n".join(parts).replace("\n\n\n", "\n\n") + "\n"


def builtin_host() -> PluginHost:
    return make_plugin_host(distributions={BUILTIN_DISTRIBUTION})


if __name__ == "__main__":
    DOC.write_text(options_markdown(builtin_host()))
    print(f"wrote {DOC}", file=sys.stderr)
