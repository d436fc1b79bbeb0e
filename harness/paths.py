"""Where things are: the project's default inputs, and trace arguments expanded to files."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

__all__ = ["ROOT", "DEFAULT_TRACE_DIR", "TRACE_SUFFIX", "display_path", "expand_traces"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE_DIR = ROOT / "scenarios" / "traces"
TRACE_SUFFIX = ".kvtrace"


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working directory when it lies below it (stable report names)."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def expand_traces(items: Sequence[str]) -> list[str]:
    """Files as given, folders expanded to their ``*.kvtrace`` files (sorted); globs expanded."""
    paths: list[str] = []
    for item in (display_path(item) for item in items):
        if os.path.isdir(item):
            paths.extend(sorted(str(p) for p in Path(item).glob(f"*{TRACE_SUFFIX}")))
        elif any(ch in item for ch in "*?["):
            paths.extend(sorted(glob.glob(item)))
        else:
            paths.append(item)
    return paths

