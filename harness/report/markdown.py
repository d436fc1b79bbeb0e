"""GitHub-flavoured Markdown layout of the report model, for CI job summaries and PR comments.

The page leads with the verdict sentence and the counts line, then the run's header facts, one
summary row per trace, the timings per call kind, the diverging calls by cause (where causal
attribution ran), the calls shown in full (tensor table and decision diff), the other diverging
calls of each trace listed, the waivers and the notes. Every fact comes from
:func:`~harness.report.model.build_report`; output is deterministic (the only time in it is the
run's ``created_at``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from harness.report.facts import TENSOR_COLUMNS, fmt_ms, fmt_total_ms
from harness.report.model import Caps, CallView, Report, TraceRow, build_report
from harness.results import RunResult

__all__ = ["render_markdown", "render_report_markdown"]



def _cell(value: Any) -> str:
    """Text for a table cell: pipes escaped, HTML-significant characters as entities, one line."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _code(value: Any, *, in_table: bool = True) -> str:
    """An inline code span that survives backticks; in a table its pipes are escaped (GFM
    unescapes ``\\|`` inside table cells, code spans included, and nowhere else)."""
    text = str(value).replace("\n", " ")
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Cells are inserted as given: callers pass them through ``_cell`` or ``_code``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _fenced(lines: Sequence[str]) -> list[str]:
    fence = "```"
    while any(fence in line for line in lines):
        fence += "`"
    return [fence + "text", *lines, fence]


def _header(report: Report) -> list[str]:
    facts = "; ".join(f"{term} {_code(value, in_table=False)}" for term, value in report.header
                      if term not in ("tolerances", "created"))
    facts_dict = dict(report.header)
    return [f"**{report.verdict.sentence}**", "", report.verdict.counts, "",
            f"kvmigrate compare: {facts}; created {_cell(facts_dict['created'])}", "",
            f"Tolerances: {_cell(facts_dict['tolerances'])}", ""]


def _summary(report: Report) -> list[str]:
    header = ["trace", "calls", "tensors compared", "unwaived", "waived", "first divergence",
              "control hit rate", "candidate hit rate", "control total ms", "candidate total ms",
              "ratio control/candidate"]
    rows = [[_code(row.trace.trace_path), str(row.trace.num_calls),
             str(row.trace.num_tensors_compared), str(row.num_unwaived), str(row.num_waived),
             "-" if row.focus is None else str(row.focus.call.call_index),
             _cell(row.control_hits), _cell(row.candidate_hits),
             fmt_total_ms(row.control_total_s), fmt_total_ms(row.candidate_total_s),
             row.total_ratio] for row in report.traces]
    return ["## Traces", "", *_table(header, rows), ""]


def _timings(report: Report) -> list[str]:
    header = ["trace", "call kind", "calls", "control median ms", "control p95 ms",
              "candidate median ms", "candidate p95 ms", "ratio control/candidate (median)"]
    rows = []
    for row in report.traces:
        for timing in row.timings:
            control, candidate = timing.control, timing.candidate
            rows.append([_code(row.trace.trace_path), _cell(timing.call_kind),
                         str(timing.num_calls),
                         fmt_ms(control and control.median_s), fmt_ms(control and control.p95_s),
                         fmt_ms(candidate and candidate.median_s),
                         fmt_ms(candidate and candidate.p95_s), timing.ratio])
    if not rows:
        return ["## Time per call", "", "No timings recorded.", ""]
    return ["## Time per call (interleaved; ms)", "", *_table(header, rows), ""]


def _causes(report: Report) -> list[str]:
    if not report.causes:
        return []
    rows = [[_cell(group.cause or "not attributed"), str(group.num_unwaived),
             str(group.num_waived), f"{_code(group.first_trace)} call {group.first_call}"]
            for group in report.causes]
    return ["## Diverging calls by cause", "",
            *_table(["cause", "unwaived", "waived", "first"], rows), ""]


def _call_detail(view: CallView) -> list[str]:
    lines: list[str] = []
    if view.call.cause is not None:
        lines += [f"Cause: {_code(view.call.cause, in_table=False)}", ""]
    if view.error:
        lines += [f"{_cell(view.error[:1].upper() + view.error[1:])}", ""]
    if view.tensor_rows:
        rows = [[_code(cells[0]), *(_cell(cell) for cell in cells[1:])]
                for cells in view.tensor_rows]
        lines += [*_table(TENSOR_COLUMNS, rows), ""]
    if view.decision is not None:
        lines += [f"Cache decisions: {_cell(view.decision)}", "", *_fenced(view.decision_lines),
                  ""]
        event = view.call.event_divergence
        if event is not None and event.slot_differences:
            lines += [f"{len(event.slot_differences)} store(s) landed in other slots "
                      f"(information, not a divergence).", ""]
    if view.reference is not None:
        lines += [f"Max abs distance to the reference engine: control {view.reference[0]}, "
                  f"candidate {view.reference[1]}.", ""]
    return lines


def _details(report: Report) -> list[str]:
    lines = ["## Diverging calls in detail", ""]
    if not any(views for _, views in report.detail_groups):
        return lines + ["No unwaived call diverged.", ""]
    for cause, views in report.detail_groups:
        if cause is not None:
            lines += [f"### Cause {_code(cause, in_table=False)}", ""]
        for view in views:
            lines += [f"### {_code(view.call.trace, in_table=False)}: {_cell(view.title)}", ""]
            lines += _call_detail(view)
    return lines


def _listed(row: TraceRow) -> list[str]:
    others = [view for view in row.calls if not view.detailed]
    if not others and row.num_unlisted <= 0:
        return []
    header = ["call", "kind", "envs", "class", "waiver", "cause", "worst tensor", "max abs",
              "decision or error"]
    rows = [[str(view.call.call_index), _cell(view.call.call_kind),
             _cell(list(view.call.env_ids)), view.call.classification, _cell(view.status),
             _cell(view.call.cause or "-"),
             "-" if view.worst_path is None else _code(view.worst_path), view.worst_error,
             _cell(view.summary)] for view in others]
    if row.has_reference:
        header.insert(-1, "max abs to reference: control \\| candidate")
        for cells, view in zip(rows, others):
            cells.insert(-1, _cell(" | ".join(view.reference or ("-", "-"))))
    lines = [f"### {_code(row.trace.trace_path, in_table=False)}: other diverging calls "
             f"({len(others)} listed)", ""]
    if rows:
        lines += _table(header, rows)
    if row.num_unlisted > 0:
        lines += ["", f"... {row.num_unlisted} more diverging call(s); see the JSON report."]
    return lines + [""]


def _waivers(report: Report) -> list[str]:
    waivers = report.waivers
    lines = ["## Waivers", ""]
    if waivers.source is not None:
        lines += [f"Source: {_code(waivers.source, in_table=False)}", ""]
    if waivers.used:
        lines += [*_table(["waiver", "calls waived"],
                          [[_code(wid), str(count)] for wid, count in waivers.used]), ""]
    else:
        lines += ["No waiver was used.", ""]
    if waivers.expired is None or waivers.stale is None:
        return lines + ["Expired and stale waivers: not known (no waiver report given).", ""]
    for label, ids in (("Expired", waivers.expired), ("Stale", waivers.stale)):
        listed = ", ".join(_code(wid, in_table=False) for wid in ids) if ids else "none"
        lines.append(f"- {label}: {listed}")
    return lines + [""]


def _notes(report: Report) -> list[str]:
    items = [_cell(text) if path is None else f"{_code(path, in_table=False)}: {_cell(text)}"
             for path, text in report.notes]
    if not items:
        return []
    return ["## Notes", "", *(f"- {item}" for item in items), ""]


def _coverage(report: Report) -> list[str]:
    if not report.coverage:
        return []
    lines = ["## Coverage", "",
             "Paths and quirks of legacy (docs/coverage.md): the gate requires every `match` row.",
             "", "| path or quirk | refactor | count |", "|---|---|---|"]
    lines += [f"| {_code(row.name)} | {row.refactor} | "
              f"{'**0 (never exercised)**' if row.missing else row.count} |"
              for row in report.coverage]
    return lines + [""]


def render_report_markdown(report: Report) -> str:
    """Lay out a built :class:`~harness.report.model.Report` as Markdown."""
    lines = [*_header(report), *_summary(report), *_timings(report), *_causes(report),
             *_details(report)]
    for row in report.traces:
        lines += _listed(row)
    lines += [*_coverage(report), *_waivers(report), *_notes(report)]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def render_markdown(run: RunResult, *, waiver_report: Mapping[str, Any] | None = None,
                    notes: Sequence[str] = (), caps: Caps = Caps()) -> str:
    """Render ``run`` as GitHub-flavoured Markdown.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output (``source``, ``expired``,
            ``stale``); without it expired and stale waivers are reported as not known.
        notes: extra one-line remarks.
        caps: how many calls are shown in full and listed.

    Returns:
        The page, starting with the bold verdict sentence and ending with a newline.
    """
    return render_report_markdown(build_report(run, waiver_report=waiver_report, notes=notes,
                                               caps=caps))
