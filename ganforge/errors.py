"""Errors a user can cause, reported as one line and an exit code instead of a traceback.

Exit codes mean one thing in every command (:data:`EXIT_CODES`, shown in ``--help`` and the
README): whose move it is to fix what went wrong.
"""

from __future__ import annotations

OK, USER_MISTAKE, PLUGIN_FAULT, GANFORGE_BUG = 0, 2, 3, 1

#: Every exit code a ``ganforge`` command can end with, and what it means.
EXIT_CODES = {
    OK: "success",
    GANFORGE_BUG: "a bug in ganforge itself: the traceback is printed; please report it",
    USER_MISTAKE: "a user's mistake: the recipe, a --set, the command's arguments, the data, the run directory",
    PLUGIN_FAULT: "a plugin's fault: it failed to import, broke its contract or raised; the message names it",
    130: "stopped by SIGINT (Ctrl-C) after finishing the step and writing a checkpoint",
    143: "stopped by SIGTERM, likewise",
}


def exit_code_table() -> str:
    """The table as lines of text, for ``--help``."""
    return "\n".join(f"{code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())


def on_one_line(text: str) -> str:
    """``text`` with every character that is not printable written as its escape (``\\x1e``): a
    recipe key or name typed with a control character, which ``str.splitlines`` and terminals
    treat as a line break, must not split the one-line message that quotes it."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class GanforgeError(Exception):
    """A mistake the user can fix: the CLI prints ``str(error)`` on one line and exits with
    ``exit_code``. Subclasses say whose mistake it was."""

    exit_code = USER_MISTAKE

    def __str__(self) -> str:
        # ``hints`` are further clauses added on the way up (how to resume, for example).
        return on_one_line("; ".join([super().__str__(), *getattr(self, "hints", ())]))

    def hint(self, text: str) -> "GanforgeError":
        """Add a clause to the one-line message; returns the error, to ``raise`` it again."""
        self.hints = [*getattr(self, "hints", ()), text]
        return self


class RecipeError(GanforgeError):
    """A recipe (or a ``--set`` override) that cannot be run: unknown key, wrong type, unknown name."""

    def __init__(self, message: str, *, source: str = "", key: str = ""):
        self.source = source
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, source: str) -> "RecipeError":
        """The same error, now naming the file it came from."""
        return type(self)(self.detail, source=source, key=self.key)


class DataError(GanforgeError):
    """A dataset that is missing, incomplete or unreadable."""


class UsageError(GanforgeError):
    """A command's arguments that cannot be followed: an unknown code to traverse, a run
    directory that already holds a run."""


class PluginError(GanforgeError):
    """A plugin that cannot be loaded, or that breaks the hook contract."""

    exit_code = PLUGIN_FAULT


class UnknownNameError(RecipeError):
    """A name that no plugin registered; the message lists the known ones."""
