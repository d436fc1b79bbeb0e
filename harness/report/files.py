"""Writing report files atomically: JSON always, Markdown and HTML on request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from harness.fileio import atomic_write_text, check_output_path
from harness.results import RunResult, dump_run

__all__ = ["write_reports", "run_to_json", "check_report_paths"]

PathLike = str | os.PathLike[str]


def run_to_json(run: RunResult) -> str:
    """The report as indented JSON text (see :func:`harness.results.dump_run`)."""
    return dump_run(run).decode("utf-8")


def _targets(json_path: PathLike | None, markdown_path: PathLike | None,
             html_path: PathLike | None) -> list[tuple[Path, str]]:
    named = ((json_path, "JSON report"), (markdown_path, "Markdown report"),
             (html_path, "HTML report"))
    return [(Path(path), what) for path, what in named if path]


def check_report_paths(*, json_path: PathLike | None, markdown_path: PathLike | None = None,
                       html_path: PathLike | None = None, inputs: Iterable[PathLike] = ()) -> None:
    """Refuse, before any work, a report path that would overwrite an input or cannot be made."""
    inputs = list(inputs)
    for path, what in _targets(json_path, markdown_path, html_path):
        check_output_path(path, what, inputs=inputs)


def write_reports(run: RunResult, *, json_path: PathLike, markdown_path: PathLike | None = None,
                  html_path: PathLike | None = None, waiver_report: dict | None = None,
                  inputs: Iterable[PathLike] = ()) -> list[Path]:
    """Write the JSON report (and the optional forms) atomically; returns the paths written.

    Raises:
        OutputFileError: a path is one of ``inputs``, a directory, or lies under a file.
    """
    inputs = list(inputs)
    written = []
    for path, what in _targets(json_path, markdown_path, html_path):
        if what == "JSON report":
            text = run_to_json(run)
        elif what == "Markdown report":
            from harness.report.markdown import render_markdown
            text = render_markdown(run, waiver_report=waiver_report)
        else:
            from harness.report.html import render_html
            text = render_html(run, waiver_report=waiver_report)
        written.append(atomic_write_text(path, text, what=what, inputs=inputs))
    return written
