"""Self-contained HTML rendering of a comparison run: one file, inline CSS and SVG, no scripts.

The page opens offline: nothing is fetched (no JS, CSS, fonts or images from elsewhere). It holds
the verdict and run metadata, then per trace its numbers, four plots drawn by
:mod:`harness.report.svg` (per-call max error; per-engine cache-decision timeline with the
diverging calls, and the coverage counts; latency per call kind per engine; hit rate per pool per
engine), the timing and pool tables, and
the diverging calls with expandable tensor tables and decision diffs; then waivers and notes.
Every piece of text from the run is escaped. Every fact comes from the report model
(:func:`harness.report.model.build_report`), as in the console and Markdown forms.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any, Iterable, Mapping, Sequence

from harness.report import svg
from harness.report.facts import (TENSOR_COLUMNS, call_status, fmt_ms, fmt_rate, fmt_total_ms,
                                  format_number)
from harness.report.model import Caps, CallView, Report, TraceRow, build_report
from harness.results import CallComparison, RunResult, TraceResult

__all__ = ["render_html", "render_report_html"]

_CLASSES = ("decision", "tensor", "both", "error")
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


def _figure(svg_markup: str, caption: str) -> str:
    return f"<figure>{svg_markup}<figcaption>{caption}</figcaption></figure>"


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
        items.append(("self-check noise floor", _e(format_number(trace.noise_floor))))
    return _facts(items)


def _mark_for(call: CallComparison, y: float, *, with_error: bool) -> svg.Mark:
    tip = f"call {call.call_index} ({call.call_kind}): {call.classification}, {call_status(call)}"
    if with_error:
        tip += f"; max abs error {y:.3g}"
    return svg.Mark(call.call_index, y, "c-waived" if call.waived else "c-unwaived",
                    "diamond" if call.waived else "triangle", tip)


_MARK_KEY = ('<span class="key unwaived">▲ unwaived diverging call</span>, '
             '<span class="key waived">◆ waived diverging call</span>')


def _error_figure(trace: TraceResult, dom_id: str) -> str:
    values = list(trace.max_errors)
    marks = [_mark_for(call, values[call.call_index], with_error=True)
             for call in trace.divergences if call.call_index < len(values)]
    plot = svg.error_plot(values, marks, title="Per-call max error",
                          description=f"Largest absolute difference between candidate and control "
                                      f"outputs for each of {len(values)} calls of "
                                      f"{trace.trace_path}, log scale, diverging calls marked.",
                          dom_id=f"{dom_id}-errors")
    positive = [(v, i) for i, v in enumerate(values) if v > 0]
    if not values:
        text = "No per-call errors are recorded for this trace (no calls, or an older result)."
    elif not positive:
        text = (f"All {len(values)} calls have a max abs error of exactly 0 (bit-identical "
                f"outputs), so there is no log scale to draw: the line lies on the 0 lane.")
    else:
        largest, where = max(positive)
        text = (f"Log scale; calls whose error is exactly 0 lie on the 0 lane under the dashed "
                f"line. {len(positive)} of {len(values)} calls have a non-zero error, the largest "
                f"{largest:.3g} at call {where}. The error includes differences within "
                f"tolerance: a non-zero error alone is not a divergence.")
        if len(values) > svg.ERROR_PLOT_COLUMNS:
            text += " Each pixel column shows the largest error among the calls it covers."
    key = f" Marks: {_MARK_KEY}." if marks else ""
    return _figure(plot, f"<b>Plot 1. Per-call max error.</b> {_e(text)}{key}")


# Call outcomes of one engine, least to most severe: a bucket of calls shows its worst.
_OUTCOMES = (("d-none", "no lookup"), ("d-hit", "all lookups hit"),
             ("d-some", "some lookups missed"), ("d-miss", "all lookups missed"))
_OUTCOME_SHAPES = ("a stub", "a short bar", "a taller bar", "a full-height bar")


def _outcome(hits: int, lookups: int) -> int:
    """Index into ``_OUTCOMES`` of one call's ``hits`` out of ``lookups``."""
    if lookups == 0:
        return 0
    return 1 if hits == lookups else 2 if hits else 3


def _decision_lane(role: str, engine: str, counts: list[tuple[int, int]]) -> svg.Lane:
    """The timeline lane of one engine from its per-call ``(hits, lookups)``."""
    levels = [_outcome(hits, lookups) for hits, lookups in counts]

    def describe(start: int, stop: int) -> str:
        if stop - start == 1:
            hits, lookups = counts[start]
            found = f"{hits} of {lookups} lookups hit" if lookups else "no lookup"
            return f"call {start}, {role} ({engine}): {found}"
        tally = [0] * len(_OUTCOMES)
        for level in levels[start:stop]:
            tally[level] += 1
        parts = [f"{n} {text}" for n, (_, text) in zip(tally, _OUTCOMES) if n]
        return (f"calls {start}-{stop - 1}, {role} ({engine}): worst "
                f"{_OUTCOMES[max(levels[start:stop])][1]}; {', '.join(reversed(parts))}")

    hits, lookups = sum(c[0] for c in counts), sum(c[1] for c in counts)
    note = f"{hits / lookups:.1%} of {lookups} lookups hit" if lookups else "no lookup"
    return svg.Lane(role, note if counts else "-", levels, describe)


def _decision_text(trace: TraceResult, num_calls: int) -> str:
    decisions = trace.decisions
    if not num_calls:
        return "No call was replayed."
    if not decisions:
        return ("This result holds no per-call decision counts (a live run, or a result written "
                "before they were recorded), so only the diverging calls are drawn.")
    keys = ", ".join(f"{text} ({shape})" for shape, (_, text) in zip(_OUTCOME_SHAPES, _OUTCOMES))
    differ = sum(c[:2] != c[2:] for c in decisions)
    text = (f"One thin bar per call and engine, its height (and colour) giving the outcome of "
            f"the call's cache lookups, counted from the engine's lookup events: {keys}. A "
            f"lookup hits when any pool serves it; a forced miss is a miss. Calls without a "
            f"lookup are first root steps, clears, weight loads and reanalysis switches. The "
            f"engines' hit/lookup counts differ on {differ} of {len(decisions)} calls; a "
            f"decision divergence with equal counts (another eviction, say) shows in the "
            f"bottom row only.")
    if num_calls > svg.TIMELINE_COLUMNS:
        text += (f" The {num_calls} calls are more than the {svg.TIMELINE_COLUMNS} columns, so "
                 f"each column covers about {num_calls / svg.TIMELINE_COLUMNS:.0f} calls and "
                 f"shows the worst outcome among them (all missed, then some missed, then all "
                 f"hit, then no lookup): a column drawn as a miss may hold hits too; its tooltip "
                 f"gives the counts.")
    return text


def _timeline_figure(row: TraceRow, dom_id: str) -> str:
    trace, control, candidate = row.trace, row.control, row.candidate
    lanes = [_decision_lane("control", control, [c[:2] for c in trace.decisions]),
             _decision_lane("candidate", candidate, [c[2:] for c in trace.decisions])]
    marks = [_mark_for(call, 0, with_error=False) for call in trace.divergences]
    waived = sum(call.waived for call in trace.divergences)
    note = f"{row.num_unwaived} unwaived, {waived} waived" if marks else "none"
    num_calls = max([trace.num_calls, len(trace.decisions)]
                    + [call.call_index + 1 for call in trace.divergences])
    plot = svg.level_timeline(
        num_calls, lanes, _OUTCOMES, marks, "diverging", note,
        title="Cache decisions per call per engine",
        description=f"For each of {num_calls} calls of {trace.trace_path}: whether the "
                    f"control's and the candidate's cache lookups all hit, partly missed, all "
                    f"missed or did not happen; below, the calls that diverged.",
        dom_id=f"{dom_id}-timeline")
    text = _decision_text(trace, num_calls)
    by_class = Counter(call.classification for call in trace.divergences)
    if trace.divergences:
        text += (" Diverging calls by class (each mark's tooltip names its class): "
                 + ", ".join(f"{name} {by_class[name]}" for name in _CLASSES if by_class[name])
                 + ".")
    else:
        text += " No call diverged."
    dropped = row.num_unwaived - len(trace.unwaived)
    if dropped > 0:
        text += (f" {dropped} further unwaived diverging call(s) were not kept in the result "
                 f"and are not drawn.")
    key = f" Marks: {_MARK_KEY}." if marks else ""
    return _figure(plot, f"<b>Plot 2a. Cache-decision timeline per engine.</b> {_e(text)}{key} "
                         f"Engines: control <code>{_e(control)}</code>, candidate "
                         f"<code>{_e(candidate)}</code>.")


def _coverage_figure(trace: TraceResult, dom_id: str) -> str:
    items = sorted(trace.coverage.items())
    plot = svg.hbar_chart(items, title="Cache paths exercised (coverage)",
                          description=f"How often each cache path (hit per pool, miss, trim, "
                                      f"eviction, clear reason, call type) occurred in "
                                      f"{trace.trace_path}.", dom_id=f"{dom_id}-coverage")
    text = ("Counts over the whole trace, taken from the control engine's cache events; the "
            "candidate made the same decisions except at the diverging calls above.")
    if not items:
        text = "No coverage counts are recorded for this trace."
    return _figure(plot, f"<b>Plot 2b. Cache paths exercised.</b> {_e(text)}")


def _engine_css(row: TraceRow, engine: str) -> str:
    return "c-control" if engine == row.control else "c-candidate"


def _latency_figure(row: TraceRow, dom_id: str) -> str:
    trace, panels = row.trace, []
    for timing_row in row.timings:
        kind, t_control, t_candidate = (timing_row.call_kind, timing_row.control,
                                        timing_row.candidate)
        bars = []
        for role, timing in (("control", t_control), ("candidate", t_candidate)):
            if timing is None:
                continue
            bars.append(svg.Bar(
                label=role, value=timing.median_s * 1e3, whisker=timing.p95_s * 1e3,
                text=f"{timing.median_s * 1e3:.3g} / {timing.p95_s * 1e3:.3g}",
                css=_engine_css(row, timing.engine),
                tooltip=f"{timing.engine} {kind}: median {fmt_ms(timing.median_s)} ms, p95 "
                        f"{fmt_ms(timing.p95_s)} ms over {timing.num_calls} calls, total "
                        f"{fmt_ms(timing.total_s)} ms"))
        calls = timing_row.num_calls
        panels.append((f"{kind}: {calls} call{'' if calls == 1 else 's'}, ratio "
                       f"{timing_row.ratio}", bars))
    plot = svg.range_panels(panels, unit="ms", title="Latency per call kind per engine",
                            description=f"Median (bar) and 95th percentile (whisker) wall time "
                                        f"per call of each engine for each call kind in "
                                        f"{trace.trace_path}.", dom_id=f"{dom_id}-latency")
    text = ("Bars are medians, whiskers reach the 95th percentile; labels read median / p95 in "
            "ms (3 significant digits; exact values in the table below). The result holds only "
            "these two statistics per engine and call kind, so whole distributions are not "
            "drawn. Each panel has its own scale. Ratio = control median / "
            "candidate median (above 1: the candidate is faster); calls were timed interleaved.")
    return _figure(plot, f"<b>Plot 3. Latency per call kind.</b> {_e(text)} "
                         f"{_engine_key(row)}")


def _engine_key(row: TraceRow) -> str:
    control, candidate = row.control, row.candidate
    return (f'Engines: <span class="key control">■ {_e(control)} (control)</span>, '
            f'<span class="key candidate">■ {_e(candidate)} (candidate)</span>.')


def _hit_rate_figure(row: TraceRow, dom_id: str) -> str:
    trace, pools = row.trace, {}
    for stats in row.pools:
        rate = stats.hit_rate
        role = "control" if stats.engine == row.control else "candidate"
        pools.setdefault(stats.pool, []).append(svg.Bar(
            label=role, value=rate,
            text="not queried" if rate is None else
            f"{fmt_rate(rate)} ({stats.num_hits}/{stats.num_queries})",
            css=_engine_css(row, stats.engine),
            tooltip=f"{stats.engine} {stats.pool} pool: {stats.num_hits} hits, "
                    f"{stats.num_misses} misses, {stats.num_queries} queries, "
                    f"{stats.num_evictions} evictions"))
    plot = svg.grouped_bars([(f"{pool} pool", bars) for pool, bars in pools.items()],
                            title="Hit rate per pool per engine",
                            description=f"Cache hit rate of each pool for each engine over "
                                        f"{trace.trace_path}.", dom_id=f"{dom_id}-hits")
    text = ("Hit rate = hits / queries per pool; a lookup queries the root pool first, then, on "
            "the recurrent path, the recurrent pool. Labels give the rate and hits/queries.")
    return _figure(plot, f"<b>Plot 4. Hit rate per pool.</b> {_e(text)} {_engine_key(row)}")


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
        parts.append(f"<p><b>Engine error:</b> {_e(view.call.engine_error)}</p>")
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


def _divergence_rows(view: CallView, dom_id: str) -> str:
    """The summary row of one diverging call and the row under it that expands to its detail;
    the calls the report shows in full start open."""
    call = view.call
    worst_path = "-" if view.worst_path is None else f"<code>{_e(view.worst_path)}</code>"
    return (f'<tr id="{dom_id}-call-{call.call_index}" '
            f'class="{"waived" if call.waived else "unwaived"}">'
            f'<td class="num">{call.call_index}</td><td>{_e(call.call_kind)}</td>'
            f'<td class="nowrap">{_e(list(call.env_ids))}</td><td>{_e(call.classification)}</td>'
            f'<td class="nowrap">{_e(view.status)}</td><td>{_e(call.cause or "-")}</td>'
            f'<td class="num">{len(call.tensor_divergences)}</td><td>{worst_path}</td>'
            f'<td class="num">{_e(view.worst_error)}</td><td>{_e(view.summary)}</td></tr>'
            f'<tr class="detail"><td colspan="{len(_DIVERGENCE_COLUMNS)}">'
            f'<details{" open" if view.detailed else ""}><summary>call {call.call_index}: '
            f"tensor table and decision diff</summary>{_call_detail(view)}</details></td></tr>")


def _divergence_table(row: TraceRow, dom_id: str) -> str:
    if not row.calls:
        more = (f"<p>{row.num_unlisted} diverging call(s) are not listed here; see the JSON "
                f"report.</p>" if row.num_unlisted > 0 else "<p>None.</p>")
        return f"<h3>Diverging calls</h3>{more}"
    head = "".join(f"<th>{name}</th>" for name in _DIVERGENCE_COLUMNS)
    rows = "".join(_divergence_rows(view, dom_id) for view in row.calls)
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
            + _error_figure(trace, dom_id) + _timeline_figure(row, dom_id)
            + _coverage_figure(trace, dom_id) + _latency_figure(row, dom_id)
            + _hit_rate_figure(row, dom_id) + _timing_table(row)
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
            f"{_waivers(report)}{_notes(report)}</main></body></html>\n")


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
