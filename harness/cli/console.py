"""The CLI's console and progress bars (the only place the harness decides how it prints)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["make_console", "make_progress", "replay_progress"]


def make_console() -> Console:
    """The CLI's console: the terminal's width, or 120 columns when output is a file or pipe
    (CI logs) unless COLUMNS says otherwise. Colour follows rich's rules (NO_COLOR honoured)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(highlight=False, width=width)


def make_progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


def replay_progress(progress: Progress) -> Callable[[str], Callable[[int, int], None]]:
    """A :data:`harness.run.ProgressFactory` drawing one bar per replayed trace."""
    def for_trace(path: str) -> Callable[[int, int], None]:
        task = progress.add_task(f"replay {Path(path).name}", total=None)
        return lambda done, total: progress.update(task, completed=done, total=total)
    return for_trace
