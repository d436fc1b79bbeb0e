"""The gate's sign-off: the sign-off files, and the console form.

The JSON sign-off (schema ``kvmigrate.signoff/1``) is the record; the Markdown form puts the
criteria table above the comparison page of :mod:`harness.report.markdown`, and the HTML form is
the comparison page of :mod:`harness.report.html` (either is skipped when its renderer is absent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from harness.gate import GateResult
from harness.fileio import atomic_write_text

__all__ = ["write_signoff", "GateReport"]


def _markdown_preamble(result: GateResult) -> str:
    c = result.criteria
    lines = [f"# Gate phase {c.phase} ({c.name}): {result.verdict} (exit {result.exit_code})", "",
             c.description, "", "| criterion | required | observed | status |",
             "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.required} | {r.observed.replace('|', '/')} | {r.status} |"
              for r in result.results]
    lines += ["", "| trace | digest | producer |", "|---|---|---|"]
    lines += [f"| `{t['path']}` | `{t['digest']}` | {t['producer']} |"
              for t in result.inputs["traces"]]
    return "\n".join(lines) + "\n\n---\n\n"


def write_signoff(result: GateResult, json_path: Path, *, with_html: bool = True) -> list[Path]:
    """Write the sign-off JSON, and its Markdown and HTML forms when those renderers exist.

    The HTML form (about 100 kB) is left out with ``with_html=False``, as the rollout's
    committed archive does.
    """
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    written = [json_path]
    try:
        from harness.report.markdown import render_markdown
    except ImportError:
        render_markdown = None
    if render_markdown is not None:
        path = json_path.with_suffix(".md")
        atomic_write_text(path, _markdown_preamble(result)
                          + render_markdown(result.run, waiver_report=result.waivers))
        written.append(path)
    try:
        from harness.report.html import render_html
    except ImportError:
        render_html = None
    if render_html is not None and with_html:
        path = json_path.with_suffix(".html")
        atomic_write_text(path, render_html(result.run, waiver_report=result.waivers))
        written.append(path)
    return written


class GateReport:
    """Console form of a gate result: one row per criterion, then the verdict."""

    _STYLES = {"pass": "green", "fail": "bold red", "insufficient": "bold yellow", "info": "dim"}

    def __init__(self, result: GateResult) -> None:
        self.result = result

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        result = self.result
        c = result.criteria
        table = Table(title=f"gate phase {c.phase} ({c.name}): control {c.control} vs "
                            f"candidate {c.candidate}", title_justify="left")
        for column in ("criterion", "required", "observed", "status"):
            table.add_column(column, overflow="fold")
        for r in result.results:
            table.add_row(r.name, r.required, r.observed, Text(r.status, style=self._STYLES[r.status]))
        yield table
        style = {"PASS": "bold green", "FAIL": "bold red"}.get(result.verdict, "bold yellow")
        yield Text(f"GATE {result.verdict}: phase {c.phase} ({c.name}), "
                   f"{len(result.run.traces)} trace(s), exit {result.exit_code}", style=style)
