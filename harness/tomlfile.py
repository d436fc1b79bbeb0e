"""Reading the harness's TOML inputs (scenarios, waivers, gate criteria, tolerances, rollout
record) with one-line errors that name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["read_toml"]


def read_toml(path: str | Path, error: type[Exception], what: str) -> dict[str, Any]:
    """Parse ``path``; a missing, unreadable or invalid file raises ``error`` in one line.

    Args:
        error: the caller's user-error class (maps to exit code 2).
        what: how the message names the file, e.g. ``"waiver file"``.
    """
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None
