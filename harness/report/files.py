"""Writing report files atomically: JSON always, Markdown and HTML on request."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.results import RunResult, dump_run

__all__ = ["atomic_write_text", "write_reports", "run_to_json"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run_to_json(run: RunResult) -> str:
    """The report as indented JSON text (see :func:`harness.results.dump_run`)."""
    return dump_run(run).decode("utf-8")


def write_reports(run: RunResult, *, json_path: Path, markdown_path: str | None = None,
                  html_path: str | None = None, waiver_report: dict | None = None) -> list[Path]:
    """Write the JSON report (and the optional forms); returns the paths written."""
    written = [json_path]
    atomic_write_text(json_path, run_to_json(run))
    if markdown_path:
        from harness.report.markdown import render_markdown
        atomic_write_text(Path(markdown_path), render_markdown(run, waiver_report=waiver_report))
        written.append(Path(markdown_path))
    if html_path:
        from harness.report.html import render_html
        atomic_write_text(Path(html_path), render_html(run, waiver_report=waiver_report))
        written.append(Path(html_path))
    return written
