"""Writing TOML: ``tomllib`` only reads, and a resolved recipe holds only plain values."""

from __future__ import annotations

import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A TOML basic string; unprintable characters (which TOML forbids raw, or which would break a
    message's line) escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(ch if ch.isprintable() else _escape(ch) for ch in escaped)
    return f'"{escaped}"'


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(values: dict[str, Any], prefix: str = "") -> str:
    """Plain values first, then sub-tables under their ``[dotted.header]``."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    blocks = ["\n".join(lines)] if lines else []
    for key, table in values.items():
        if isinstance(table, dict):
            header = f"{prefix}.{_key(key)}" if prefix else _key(key)
            body = dump_toml(table, header)
            has_plain = any(not isinstance(v, dict) for v in table.values())
            blocks.append(f"[{header}]\n{body}" if has_plain or not table else body)
    return "\n\n".join(block for block in blocks if block) + ("\n" if not prefix else "")
