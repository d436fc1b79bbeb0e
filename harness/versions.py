"""Versions of what ran: interpreter, packages and source revision (for sign-offs)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

from harness.paths import ROOT

__all__ = ["versions"]

_DISTRIBUTIONS = ("kvmigrate", "torch", "numpy", "rich", "deepdiff", "xxhash", "gymnasium",
                  "msgspec")


def _git_state() -> dict[str, Any]:
    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def versions() -> dict[str, Any]:
    """Interpreter, packages and source revision the gate ran with."""
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return {**out, **_git_state()}
