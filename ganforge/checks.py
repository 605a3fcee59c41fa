"""Checks of a single value, shared by the recipe's own keys and the plugins' options.

Each returns a complaint ("must be from 1 to 100") or ``None`` when the value is fine; the caller
adds the key and the value, so every message has the same shape wherever the key lives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from .errors import RecipeError
from .registry import did_you_mean
from .toml_writer import _key

MAX_INT = 2**31 - 1  # larger sizes are typos, and would overflow tensors long before training

Check = Callable[[Any], "str | None"]


def accepting(text: str) -> Callable[[Check], Check]:
    """Mark a check with what it accepts, as the option tables show it ("1 to 100")."""

    def mark(check: Check) -> Check:
        check.accepts = text
        return check

    return mark


def accepted(check: Check) -> str:
    return getattr(check, "accepts", "")


@accepting("> 0")
def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


@accepting(">= 0")
def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


@accepting("(0, 1]")
def learning_rate(value: Any) -> str | None:
    return None if 0 < value <= 1 else "must be more than 0 and at most 1"


@accepting("[0, 1)")
def below_one(value: Any) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1)"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        hint = did_you_mean(value, list(choices)) if isinstance(value, str) else ""
        return f"must be one of {', '.join(map(repr, choices))};{hint}".rstrip(";")

    return accepting(", ".join(f'"{choice}"' for choice in choices))(check)


def between(low: int, high: int) -> Callable[[Any], str | None]:
    """``low <= value <= high``: bounds that catch typos and sizes no machine could hold, before
    anything is allocated."""

    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high}"

    return accepting(f"{low} to {high}")(check)


def device_name(value: str) -> str | None:
    if not re.fullmatch(r"cpu|auto|cuda(:\d{1,4})?|mps", value):
        return "must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"
    if value == "mps" and not _mps_available():
        return "'mps' (Apple GPUs) is not available on this machine; use 'cpu' or 'auto'"
    return None


def _mps_available() -> bool:
    import torch

    return torch.backends.mps.is_available()


def not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def path_text(value: str) -> str | None:
    return "must not contain a NUL character" if "\0" in value else None


def folder_path(value: str) -> str | None:
    return not_empty(value) or path_text(value)


def safe_name(value: str) -> str | None:
    if value == "" or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        return None
    return "must be a folder name: letters, digits, '.', '_' and '-'"


def open_interval(low: float, high: float) -> Check:
    """``low < value < high`` (a decay, a probability that must not be 0 or 1)."""

    def check(value: Any) -> str | None:
        return None if low < value < high else f"must be between {low:g} and {high:g}, both excluded"

    return accepting(f"({low:g}, {high:g})")(check)


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be {low:g} or more"

    return accepting(f">= {low:g}")(check)


class Each:
    """Every item of a list passes ``item_check``; a plugin option's error names the item's key
    (``plugins.diffaugment.policy[1]``)."""

    def __init__(self, item_check: Check):
        self.item_check = item_check
        self.accepts = f"each: {accepted(item_check)}" if accepted(item_check) else ""

    def first_complaint(self, value: list) -> tuple[int, str] | None:
        for index, item in enumerate(value):
            if (complaint := self.item_check(item)) is not None:
                return index, complaint
        return None

    def __call__(self, value: list) -> str | None:
        found = self.first_complaint(value)
        return None if found is None else f"item {found[0]} {found[1]}"


@accepting("not empty")
def not_empty_list(value: list) -> str | None:
    return None if value else "must name at least one"


def type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "an array", dict: "a table"}.get(kind, kind.__name__)


def coerce(value: Any, kind: type, key: str) -> Any:
    """``value`` as ``kind``, where TOML's types allow it (an integer where a float is expected)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is float and isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"must be a finite number, got {value!r}", key=key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        shown = repr(value) if not isinstance(value, (dict, list)) else type_name(type(value))
        raise RecipeError(f"must be {type_name(kind)}, got {shown}", key=key)
    if kind is int and abs(value) > MAX_INT:
        raise RecipeError(f"{value} is out of range (at most {MAX_INT})", key=key)
    return value


def check_table_keys(table: dict, allowed: list[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise RecipeError(f"unknown key;{hint} allowed: {', '.join(allowed)}", key=f"{prefix}{shown_key(key)}")


def shown_key(key: str) -> str:
    """A key as messages show it: as TOML writes it, so a key holding a line break stays on one line."""
    return _key(key)
