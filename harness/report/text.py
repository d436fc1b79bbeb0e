"""Plain-text rendering of rich report objects, for exception messages and test failures."""

from __future__ import annotations

from io import StringIO

from rich.console import Console, RenderableType

__all__ = ["render_text"]


def render_text(renderable: RenderableType, width: int = 100) -> str:
    """``renderable`` as a rich console would print it, without colour or control codes."""
    buffer = StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())
