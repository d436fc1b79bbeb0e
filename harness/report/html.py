"""Self-contained HTML rendering of a comparison run: one file, inline CSS and SVG, no scripts.

The page opens offline: nothing is fetched (no JS, CSS, fonts or images from elsewhere). It holds
the verdict and run metadata, then per trace its numbers, four plots
(:mod:`harness.report.html_plots`: per-call max error; per-engine cache-decision timeline with
the diverging calls, and the coverage counts; latency per call kind per engine; hit rate per
pool per engine), the timing and pool tables, and the diverging calls with expandable tensor
tables and decision diffs; then waivers and notes. Every piece of text from the run is
escaped. Every fact comes from the report model (:func:`harness.report.model.build_report`), as
in the console and Markdown forms.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable, Mapping, Sequence

from harness.report import html_plots as plots
from harness.report import svg
from harness.report.facts import TENSOR_COLUMNS, fmt_ms, fmt_rate, fmt_total_ms
from harness.report.model import (Caps, CallView, Report, TraceRow, build_report,
                                  noise_floor_text)
from harness.results import CallComparison, RunResult

__all__ = ["render_html", "render_report_html"]

_STYLE = """
:root { color-scheme: light; --ink: #1f2328; --muted: #57606a; --line: #d0d7de; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: #f6f8fa; }
main { max-width: 1160px; margin: 0 auto; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; word-break: break-all; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.verdict { font-size: 17px; font-weight: 600; padding: 8px 12px; border-radius: 6px;
           margin: 8px 0; }
.verdict.ok { background: #dafbe1; border: 1px solid #4ac26b; }
.verdict.bad { background: #ffebe9; border: 1px solid #ff8182; }
.verdict.unknown { background: #fff8c5; border: 1px solid #d4a72c; }
p.counts { margin: 4px 0 8px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; word-break: break-word; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.nowrap { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.unwaived td:first-child { border-left: 4px solid #d62728; }
tr.waived td:first-child { border-left: 4px solid #e49b0f; }
tr.detail > td { background: #fbfbfc; }
.scroll { overflow-x: auto; }
code, pre { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; margin: 4px 0; }
figure { margin: 16px 0; } figcaption { color: var(--muted); font-size: 13px; max-width: 1100px; }
figcaption b { color: var(--ink); }
.key { font-weight: 600; } .key.unwaived { color: #d62728; } .key.waived { color: #b07400; }
.key.control { color: #4e79a7; } .key.candidate { color: #8a4f80; }
details > summary { cursor: pointer; color: #0969da; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]],
           numeric: Sequence[int] = ()) -> str:
    """A table from plain-text header cells and pre-escaped HTML row cells."""
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{cell}</td>' if index in numeric else f"<td>{cell}</td>"
        for index, cell in enumerate(row)) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _facts(items: Iterable[tuple[str, str]]) -> str:
    """A definition list from plain-text terms and pre-escaped HTML values."""
    return '<dl class="facts">' + "".join(f"<dt>{_e(term)}</dt><dd>{value}</dd>"
                                           for term, value in items) + "</dl>"


def _call_anchor(dom_id: str, call: CallComparison) -> str:
    return f'<a href="#{dom_id}-call-{call.call_index}">call {call.call_index}</a>'


def _header(report: Report) -> str:
    code_terms = {"control engine", "candidate engine", "cache manager", "schema"}
    facts = _facts([(term, f"<code>{_e(value)}</code>" if term in code_terms else _e(value))
                    for term, value in report.header] + [("traces", str(len(report.traces)))])
    verdict = report.verdict
    css = {"EQUIVALENT": "ok", "DIVERGED": "bad"}.get(verdict.label, "unknown")
    return (f"<header><h1>kvmigrate compare: {_e(report.run.control_engine)} vs "
            f"{_e(report.run.candidate_engine)}</h1><p class=\"verdict {css}\" role=\"status\">"
            f"{_e(verdict.sentence)}</p><p class=\"counts\">{_e(verdict.counts)}</p>{facts}"
            f"</header>")


def _overview(report: Report) -> str:
    rows = []
    for index, row in enumerate(report.traces, 1):
        first = row.focus
        rows.append([f'<a href="#t{index}">{_e(row.trace.trace_path)}</a>', _e(row.status),
                     str(row.trace.num_calls), str(row.trace.num_tensors_compared),
                     str(row.num_unwaived), str(row.num_waived),
                     "-" if first is None else _call_anchor(f"t{index}", first.call),
                     fmt_total_ms(row.control_total_s), fmt_total_ms(row.candidate_total_s),
                     row.total_ratio])
    if not rows:
        return "<h2>Traces</h2><p>No trace was compared.</p>"
    header = ["trace", "verdict", "calls", "tensors compared", "unwaived", "waived",
              "first divergence", "control total ms", "candidate total ms",
              "ratio control/candidate"]
    return "<h2>Traces</h2>" + _table(header, rows, numeric=(2, 3, 4, 5, 7, 8, 9))


def _causes(report: Report) -> str:
    if not report.causes:
        return ""
    rows = [[_e(group.cause or "not attributed"), str(group.num_unwaived), str(group.num_waived),
             f"<code>{_e(group.first_trace)}</code> call {group.first_call}"]
            for group in report.causes]
    return ('<section id="causes"><h2>Diverging calls by cause</h2>'
            + _table(["cause", "unwaived", "waived", "first"], rows, numeric=(1, 2))
            + "</section>")


def _trace_facts(row: TraceRow, dom_id: str) -> str:
    trace, first = row.trace, row.focus
    first_text = "-" if first is None else (
        f"{_call_anchor(dom_id, first.call)} ({_e(first.call.call_kind)}, "
        f"{_e(first.call.classification)}, {_e(first.status)})")
    items = [("digest", f"<code>{_e(trace.trace_digest)}</code>"),
             ("calls / tensors compared", f"{trace.num_calls} / {trace.num_tensors_compared}"),
             ("unwaived / waived diverging calls", f"{row.num_unwaived} / {row.num_waived}"),
             ("first divergence", first_text),
             ("control hit rate", f"{_e(row.control_hits)} ({_e(row.control)})"),
             ("candidate hit rate", f"{_e(row.candidate_hits)} ({_e(row.candidate)})"),
             ("total time", f"{_e(row.control)} {fmt_total_ms(row.control_total_s)} ms, "
                            f"{_e(row.candidate)} {fmt_total_ms(row.candidate_total_s)} ms, "
                            f"ratio control/candidate {row.total_ratio}"),
             ("slot differences (information)", str(trace.num_slot_differences))]
    if trace.self_check:
        items.append(("self-check noise floor", _e(noise_floor_text(trace))))
    return _facts(items)


def _timing_table(row: TraceRow) -> str:
    rows = []
    for timing in row.timings:
        stats = [(fmt_ms(t.median_s), fmt_ms(t.p95_s), fmt_ms(t.total_s)) if t else ("-",) * 3
                 for t in (timing.control, timing.candidate)]
        rows.append([_e(timing.call_kind), str(timing.num_calls), *stats[0], *stats[1],
                     timing.ratio])
    header = ["call kind", "calls", "control median ms", "control p95 ms", "control total ms",
              "candidate median ms", "candidate p95 ms", "candidate total ms",
              "ratio control/candidate (median)"]
    table = _table(header, rows, numeric=range(1, 9)) if rows else "<p>No timings recorded.</p>"
    return (f"<h3>Time per call</h3><p>Control: <code>{_e(row.control)}</code>; candidate: "
            f"<code>{_e(row.candidate)}</code>.</p>{table}")


def _pool_table(row: TraceRow) -> str:
    rows = [[_e(s.pool), _e(s.engine), str(s.num_hits), str(s.num_misses), str(s.num_queries),
             str(s.num_evictions), fmt_rate(s.hit_rate)] for s in row.pools]
    header = ["pool", "engine", "hits", "misses", "queries", "evictions", "hit rate"]
    return "<h3>Cache pools</h3>" + (_table(header, rows, numeric=range(2, 7)) if rows
                                     else "<p>No pool counters recorded.</p>")


def _call_detail(view: CallView) -> str:
    parts = []
    if view.call.cause is not None:
        parts.append(f"<p><b>Cause:</b> <code>{_e(view.call.cause)}</code></p>")
    if view.error:
        parts.append(f"<p><b>Engine error or probe finding:</b> {_e(view.error)}</p>")
    if view.tensor_rows:
        rows = [[f"<code>{_e(cells[0])}</code>", *map(_e, cells[1:])]
                for cells in view.tensor_rows]
        parts.append(_table(TENSOR_COLUMNS, rows, numeric=range(3, 7)))
    event = view.call.event_divergence
    if event is not None and view.decision is not None:
        parts.append(f"<p><b>Cache decisions:</b> {_e(view.decision)}</p>")
        parts.append("<pre>" + _e("\n".join(view.decision_lines)) + "</pre>")
        if event.slot_differences:
            rows = [[str(d.env), _e(d.pool), f"0x{d.key:016x}", str(d.control_slot),
                     str(d.candidate_slot)] for d in event.slot_differences]
            parts.append("<p>Stores in other slots (information, not a divergence):</p>"
                         + _table(["env", "pool", "key", "control slot", "candidate slot"], rows))
    if view.reference is not None:
        parts.append(f"<p>Max abs distance to the reference engine: control "
                     f"{_e(view.reference[0])}, candidate {_e(view.reference[1])}</p>")
    return "".join(parts)


_DIVERGENCE_COLUMNS = ("call", "kind", "envs", "class", "status", "cause", "tensors",
                       "worst tensor", "max abs", "decision or error")
_REFERENCE_COLUMN = "max abs to reference: control | candidate"


def _divergence_rows(view: CallView, dom_id: str, columns: Sequence[str]) -> str:
    """The summary row of one diverging call and the row under it that expands to its detail;
    the calls the report shows in full start open."""
    call = view.call
    worst_path = "-" if view.worst_path is None else f"<code>{_e(view.worst_path)}</code>"
    reference = "" if len(columns) == len(_DIVERGENCE_COLUMNS) else (
        f'<td class="nowrap">{_e(" | ".join(view.reference or ("-", "-")))}</td>')
    return (f'<tr id="{dom_id}-call-{call.call_index}" '
            f'class="{"waived" if call.waived else "unwaived"}">'
            f'<td class="num">{call.call_index}</td><td>{_e(call.call_kind)}</td>'
            f'<td class="nowrap">{_e(list(call.env_ids))}</td><td>{_e(call.classification)}</td>'
            f'<td class="nowrap">{_e(view.status)}</td><td>{_e(call.cause or "-")}</td>'
            f'<td class="num">{len(call.tensor_divergences)}</td><td>{worst_path}</td>'
            f'<td class="num">{_e(view.worst_error)}</td>{reference}<td>{_e(view.summary)}</td>'
            f'</tr><tr class="detail"><td colspan="{len(columns)}">'
            f'<details{" open" if view.detailed else ""}><summary>call {call.call_index}: '
            f"tensor table and decision diff</summary>{_call_detail(view)}</details></td></tr>")


def _divergence_table(row: TraceRow, dom_id: str) -> str:
    if not row.calls:
        more = (f"<p>{row.num_unlisted} diverging call(s) are not listed here; see the JSON "
                f"report.</p>" if row.num_unlisted > 0 else "<p>None.</p>")
        return f"<h3>Diverging calls</h3>{more}"
    columns = _DIVERGENCE_COLUMNS
    if row.has_reference:
        columns = (*columns[:-1], _REFERENCE_COLUMN, columns[-1])
    head = "".join(f"<th>{_e(name)}</th>" for name in columns)
    rows = "".join(_divergence_rows(view, dom_id, columns) for view in row.calls)
    more = (f"<p>{row.num_unlisted} more diverging call(s) are not listed here; see the JSON "
            f"report.</p>" if row.num_unlisted > 0 else "")
    return (f'<h3>Diverging calls ({len(row.calls)} listed)</h3><div class="scroll"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}")


def _trace_section(row: TraceRow, dom_id: str) -> str:
    trace = row.trace
    notes = "".join(f"<li>{_e(note)}</li>" for note in trace.notes)
    return (f'<section id="{dom_id}" aria-labelledby="{dom_id}-h"><h2 id="{dom_id}-h">'
            f"{_e(trace.trace_path)}: {_e(row.status)}</h2>{_trace_facts(row, dom_id)}"
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "")
            + plots.error_figure(trace, dom_id) + plots.timeline_figure(row, dom_id)
            + plots.coverage_figure(trace, dom_id) + plots.latency_figure(row, dom_id)
            + plots.hit_rate_figure(row, dom_id) + _timing_table(row)
            + _pool_table(row) + _divergence_table(row, dom_id) + "</section>")


def _waivers(report: Report) -> str:
    waivers = report.waivers
    parts = ["<section id=\"waivers\"><h2>Waivers</h2>"]
    if waivers.source is not None:
        parts.append(f"<p>Source: <code>{_e(waivers.source)}</code></p>")
    parts.append(_table(["waiver", "calls waived"],
                        [[f"<code>{_e(wid)}</code>", str(n)] for wid, n in waivers.used],
                        numeric=(1,)) if waivers.used else "<p>No waiver was used.</p>")
    if waivers.expired is None or waivers.stale is None:
        parts.append("<p>Expired and stale waivers: not known (no waiver report given).</p>")
    else:
        for label, ids in (("Expired", waivers.expired), ("Stale", waivers.stale)):
            listed = ", ".join(f"<code>{_e(wid)}</code>" for wid in ids)
            parts.append(f"<p>{label}: {listed or 'none'}</p>")
    return "".join(parts) + "</section>"


def _coverage(report: Report) -> str:
    if not report.coverage:
        return ""
    rows = [[f"<code>{_e(row.name)}</code>", _e(row.refactor),
             "<b>0 (never exercised)</b>" if row.missing else str(row.count)]
            for row in report.coverage]
    return ('<section id="coverage"><h2>Coverage</h2><p>Paths and quirks of legacy '
            '(docs/coverage.md): the gate requires every <code>match</code> row.</p>'
            + _table(["path or quirk", "refactor", "count"], rows, numeric=(2,)) + "</section>")


def _notes(report: Report) -> str:
    items = [_e(text) if path is None else f"<code>{_e(path)}</code>: {_e(text)}"
             for path, text in report.notes]
    body = ("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" if items
            else "<p>None.</p>")
    return f'<section id="notes"><h2>Notes</h2>{body}</section>'


def render_report_html(report: Report) -> str:
    """Lay out a built :class:`~harness.report.model.Report` as one self-contained page."""
    sections = "".join(_trace_section(row, f"t{index}")
                       for index, row in enumerate(report.traces, 1))
    title = f"kvmigrate compare: {report.verdict.label}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}{svg.STYLE}</style></head><body><main>"
            f"{_header(report)}{_overview(report)}{_causes(report)}{sections}"
            f"{_coverage(report)}{_waivers(report)}{_notes(report)}</main></body></html>\n")


def render_html(run: RunResult, *, waiver_report: Mapping[str, Any] | None = None,
                notes: Sequence[str] = (), caps: Caps = Caps()) -> str:
    """Render ``run`` as one self-contained HTML page.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output (``source``, ``expired``,
            ``stale``); without it expired and stale waivers are reported as not known.
        notes: extra one-line remarks.
        caps: how many calls are shown in full (their detail starts open) and listed.

    Returns:
        The page: UTF-8 text with inline CSS and SVG, no scripts and no external references.
    """
    return render_report_html(build_report(run, waiver_report=waiver_report, notes=notes,
                                           caps=caps))
