"""Errors a user can cause, reported as one line and an exit code instead of a traceback."""

from __future__ import annotations


class GanforgeError(Exception):
    """A mistake the user can fix: the CLI prints ``str(error)`` on one line and exits non-zero."""

    exit_code = 1


class RecipeError(GanforgeError):
    """A recipe (or a ``--set`` override) that cannot be run: unknown key, wrong type, unknown name."""

    exit_code = 2

    def __init__(self, message: str, *, source: str = "", key: str = ""):
        self.source = source
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)

    def located(self, source: str) -> "RecipeError":
        """The same error, now naming the file it came from."""
        return RecipeError(self.detail, source=source, key=self.key)


class DataError(GanforgeError):
    """A dataset that is missing, incomplete or unreadable."""

    exit_code = 2


class PluginError(GanforgeError):
    """A plugin that cannot be loaded, or that breaks the hook contract."""

    exit_code = 3


class UnknownNameError(RecipeError):
    """A name that no plugin registered; the message lists the known ones."""
