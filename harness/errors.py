"""The harness's user-error base class. It imports nothing, so every layer can subclass it.

A :class:`UserError` is bad input or usage: the CLI prints its one-line message on stderr and
exits with code 2 (:mod:`harness.exit_codes`), never a traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "UsageError"]


class UserError(ValueError):
    """Bad input: a file, field or option that cannot be acted on; the message is one line."""


class UsageError(UserError):
    """A command line that cannot be acted on (bad option value, no such file)."""
