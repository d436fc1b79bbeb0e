"""Self-contained HTML rendering of a comparison run: one file, inline CSS and SVG, no scripts.

The page opens offline: nothing is fetched (no JS, CSS, fonts or images from elsewhere). It holds
the verdict and run metadata, then per trace its numbers, four plots drawn by
:mod:`harness.report.svg` (per-call max error; per-engine cache-decision timeline with the
diverging calls, and the coverage counts; latency per call kind per engine; hit rate per pool per
engine), the timing and pool tables, and
the diverging calls with expandable tensor tables and decision diffs; then waivers and notes.
Every piece of text from the run is escaped. The facts and their wording are shared with the
Markdown form (:mod:`harness.report.markdown`).
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any, Iterable, Mapping, Sequence

from harness.report import svg
from harness.report.console import engine_total, fmt_ms
from harness.report.markdown import (TENSOR_COLUMNS, decision_diff_lines, decision_or_error,
                                     engine_roles, focus_call, format_number, hit_rates,
                                     kind_timings, num_unwaived, num_waived, run_notes,
                                     tensor_cells, time_ratio, tolerance_summary, verdict_line,
                                     waivers_used, worst_tensor)
from harness.results import CallComparison, RunResult, TraceResult

__all__ = ["render_html", "max_table_calls"]

max_table_calls = 200
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


def _header(run: RunResult) -> str:
    manager = run.manager_spec or "default (refactored KVCacheManager)"
    facts = _facts([
        ("control engine", f"<code>{_e(run.control_engine)}</code>"),
        ("candidate engine", f"<code>{_e(run.candidate_engine)}</code>"),
        ("cache manager", f"<code>{_e(manager)}</code>"),
        ("tolerances", _e(tolerance_summary(run.tolerances))),
        ("schema", f"<code>{_e(run.schema_version)}</code>"),
        ("created", _e(run.created_at.isoformat())),
        ("traces", str(len(run.traces))),
        ("exit code", str(run.exit_code)),
    ])
    css = "ok" if run.ok else "bad"
    return (f"<header><h1>kvmigrate compare: {_e(run.control_engine)} vs "
            f"{_e(run.candidate_engine)}</h1><p class=\"verdict {css}\" role=\"status\">"
            f"{_e(verdict_line(run))}</p>{facts}</header>")


def _overview(run: RunResult) -> str:
    rows = []
    for index, trace in enumerate(run.traces, 1):
        control, candidate = engine_roles(run, trace)
        first = focus_call(trace)
        t_control, t_candidate = engine_total(trace, control), engine_total(trace, candidate)
        rows.append([f'<a href="#t{index}">{_e(trace.trace_path)}</a>',
                     "OK" if trace.ok else "DIVERGED", str(trace.num_calls),
                     str(trace.num_tensors_compared), str(num_unwaived(trace)),
                     str(num_waived(trace)),
                     "-" if first is None else _call_anchor(f"t{index}", first),
                     f"{t_control * 1e3:.1f}", f"{t_candidate * 1e3:.1f}",
                     time_ratio(t_control, t_candidate)])
    if not rows:
        return "<h2>Traces</h2><p>No trace was compared.</p>"
    header = ["trace", "verdict", "calls", "tensors compared", "unwaived", "waived",
              "first divergence", "control total ms", "candidate total ms",
              "ratio control/candidate"]
    return "<h2>Traces</h2>" + _table(header, rows, numeric=(2, 3, 4, 5, 7, 8, 9))


def _trace_facts(run: RunResult, trace: TraceResult, dom_id: str) -> str:
    control, candidate = engine_roles(run, trace)
    first = focus_call(trace)
    first_text = "-" if first is None else (
        f"{_call_anchor(dom_id, first)} ({_e(first.call_kind)}, {_e(first.classification)}, "
        f"{'waived by ' + _e(first.waiver_id) if first.waived else 'unwaived'})")
    t_control, t_candidate = engine_total(trace, control), engine_total(trace, candidate)
    items = [("digest", f"<code>{_e(trace.trace_digest)}</code>"),
             ("calls / tensors compared", f"{trace.num_calls} / {trace.num_tensors_compared}"),
             ("unwaived / waived diverging calls", f"{num_unwaived(trace)} / {num_waived(trace)}"),
             ("first divergence", first_text),
             ("control hit rate", f"{_e(hit_rates(trace, control))} ({_e(control)})"),
             ("candidate hit rate", f"{_e(hit_rates(trace, candidate))} ({_e(candidate)})"),
             ("total time", f"{_e(control)} {t_control * 1e3:.1f} ms, {_e(candidate)} "
                            f"{t_candidate * 1e3:.1f} ms, ratio control/candidate "
                            f"{time_ratio(t_control, t_candidate)}"),
             ("slot differences (information)", str(trace.num_slot_differences))]
    if trace.self_check:
        items.append(("self-check noise floor", _e(format_number(trace.noise_floor))))
    return _facts(items)


def _mark_for(call: CallComparison, y: float, *, with_error: bool) -> svg.Mark:
    status = f"waived by {call.waiver_id}" if call.waived else "unwaived"
    tip = f"call {call.call_index} ({call.call_kind}): {call.classification}, {status}"
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


def _timeline_figure(run: RunResult, trace: TraceResult, dom_id: str) -> str:
    control, candidate = engine_roles(run, trace)
    lanes = [_decision_lane("control", control, [c[:2] for c in trace.decisions]),
             _decision_lane("candidate", candidate, [c[2:] for c in trace.decisions])]
    marks = [_mark_for(call, 0, with_error=False) for call in trace.divergences]
    waived = sum(call.waived for call in trace.divergences)
    note = f"{num_unwaived(trace)} unwaived, {waived} waived" if marks else "none"
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
    dropped = num_unwaived(trace) - len(trace.unwaived)
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


def _engine_css(run: RunResult, engine: str) -> str:
    return "c-control" if engine == run.control_engine else "c-candidate"


def _latency_figure(run: RunResult, trace: TraceResult, dom_id: str) -> str:
    panels = []
    for kind, t_control, t_candidate in kind_timings(trace, *engine_roles(run, trace)):
        bars = []
        for role, timing in (("control", t_control), ("candidate", t_candidate)):
            if timing is None:
                continue
            bars.append(svg.Bar(
                label=role, value=timing.median_s * 1e3, whisker=timing.p95_s * 1e3,
                text=f"{timing.median_s * 1e3:.3g} / {timing.p95_s * 1e3:.3g}",
                css=_engine_css(run, timing.engine),
                tooltip=f"{timing.engine} {kind}: median {fmt_ms(timing.median_s)} ms, p95 "
                        f"{fmt_ms(timing.p95_s)} ms over {timing.num_calls} calls, total "
                        f"{fmt_ms(timing.total_s)} ms"))
        ratio = time_ratio(t_control.median_s if t_control else 0.0,
                           t_candidate.median_s if t_candidate else 0.0)
        calls = max(b.num_calls for b in (t_control, t_candidate) if b is not None)
        panels.append((f"{kind}: {calls} call{'' if calls == 1 else 's'}, ratio {ratio}", bars))
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
                         f"{_engine_key(run, trace)}")


def _engine_key(run: RunResult, trace: TraceResult) -> str:
    control, candidate = engine_roles(run, trace)
    return (f'Engines: <span class="key control">■ {_e(control)} (control)</span>, '
            f'<span class="key candidate">■ {_e(candidate)} (candidate)</span>.')


def _hit_rate_figure(run: RunResult, trace: TraceResult, dom_id: str) -> str:
    pools: dict[str, list[svg.Bar]] = {}
    for stats in sorted(trace.pool_stats,
                        key=lambda s: (s.pool != "root", s.pool, s.engine != run.control_engine)):
        rate = stats.hit_rate
        role = "control" if stats.engine == run.control_engine else "candidate"
        pools.setdefault(stats.pool, []).append(svg.Bar(
            label=role, value=rate,
            text="not queried" if rate is None else
            f"{rate:.1%} ({stats.num_hits}/{stats.num_queries})",
            css=_engine_css(run, stats.engine),
            tooltip=f"{stats.engine} {stats.pool} pool: {stats.num_hits} hits, "
                    f"{stats.num_misses} misses, {stats.num_queries} queries, "
                    f"{stats.num_evictions} evictions"))
    plot = svg.grouped_bars([(f"{pool} pool", bars) for pool, bars in pools.items()],
                            title="Hit rate per pool per engine",
                            description=f"Cache hit rate of each pool for each engine over "
                                        f"{trace.trace_path}.", dom_id=f"{dom_id}-hits")
    text = ("Hit rate = hits / queries per pool; a lookup queries the root pool first, then, on "
            "the recurrent path, the recurrent pool. Labels give the rate and hits/queries.")
    return _figure(plot, f"<b>Plot 4. Hit rate per pool.</b> {_e(text)} {_engine_key(run, trace)}")


def _timing_table(run: RunResult, trace: TraceResult) -> str:
    control, candidate = engine_roles(run, trace)
    rows = []
    for kind, t_control, t_candidate in kind_timings(trace, control, candidate):
        stats = [(fmt_ms(t.median_s), fmt_ms(t.p95_s), fmt_ms(t.total_s)) if t else ("-",) * 3
                 for t in (t_control, t_candidate)]
        calls = max(t.num_calls for t in (t_control, t_candidate) if t is not None)
        rows.append([_e(kind), str(calls), *stats[0], *stats[1],
                     time_ratio(t_control.median_s if t_control else 0.0,
                                t_candidate.median_s if t_candidate else 0.0)])
    header = ["call kind", "calls", "control median ms", "control p95 ms", "control total ms",
              "candidate median ms", "candidate p95 ms", "candidate total ms",
              "ratio control/candidate (median)"]
    table = _table(header, rows, numeric=range(1, 9)) if rows else "<p>No timings recorded.</p>"
    return (f"<h3>Time per call</h3><p>Control: <code>{_e(control)}</code>; candidate: "
            f"<code>{_e(candidate)}</code>.</p>{table}")


def _pool_table(trace: TraceResult) -> str:
    rows = [[_e(s.pool), _e(s.engine), str(s.num_hits), str(s.num_misses), str(s.num_queries),
             str(s.num_evictions), "-" if s.hit_rate is None else f"{s.hit_rate:.1%}"]
            for s in sorted(trace.pool_stats, key=lambda s: (s.pool != "root", s.pool))]
    header = ["pool", "engine", "hits", "misses", "queries", "evictions", "hit rate"]
    return "<h3>Cache pools</h3>" + (_table(header, rows, numeric=range(2, 7)) if rows
                                     else "<p>No pool counters recorded.</p>")


def _call_detail(call: CallComparison) -> str:
    parts = []
    if call.engine_error:
        parts.append(f"<p><b>Engine error:</b> {_e(call.engine_error)}</p>")
    if call.tensor_divergences:
        rows = [[f"<code>{_e(cells[0])}</code>", *map(_e, cells[1:])]
                for cells in map(tensor_cells, call.tensor_divergences)]
        parts.append(_table(TENSOR_COLUMNS, rows, numeric=range(3, 7)))
    event = call.event_divergence
    if event is not None:
        parts.append(f"<p><b>Cache decisions:</b> {_e(event.summary)} (first differing event "
                     f"{event.first_index}; {event.num_control_events} control / "
                     f"{event.num_candidate_events} candidate events)</p>")
        parts.append("<pre>" + _e("\n".join(decision_diff_lines(event))) + "</pre>")
        if event.slot_differences:
            rows = [[str(d.env), _e(d.pool), f"0x{d.key:016x}", str(d.control_slot),
                     str(d.candidate_slot)] for d in event.slot_differences]
            parts.append("<p>Stores in other slots (information, not a divergence):</p>"
                         + _table(["env", "pool", "key", "control slot", "candidate slot"], rows))
    return "".join(parts)


_DIVERGENCE_COLUMNS = ("call", "kind", "envs", "class", "status", "tensors", "worst tensor",
                       "max abs", "decision or error")


def _divergence_rows(call: CallComparison, dom_id: str, *, open_details: bool) -> str:
    """The summary row of one diverging call and the row under it that expands to its detail."""
    worst = worst_tensor(call)
    status = f"waived by {call.waiver_id}" if call.waived else "unwaived"
    worst_path = "-" if worst is None else f"<code>{_e(worst.path)}</code>"
    worst_err = format_number(None if worst is None else worst.max_abs_err)
    return (f'<tr id="{dom_id}-call-{call.call_index}" '
            f'class="{"waived" if call.waived else "unwaived"}">'
            f'<td class="num">{call.call_index}</td><td>{_e(call.call_kind)}</td>'
            f'<td class="nowrap">{_e(list(call.env_ids))}</td><td>{_e(call.classification)}</td>'
            f'<td class="nowrap">{_e(status)}</td>'
            f'<td class="num">{len(call.tensor_divergences)}</td><td>{worst_path}</td>'
            f'<td class="num">{_e(worst_err)}</td><td>{_e(decision_or_error(call))}</td></tr>'
            f'<tr class="detail"><td colspan="{len(_DIVERGENCE_COLUMNS)}">'
            f'<details{" open" if open_details else ""}><summary>call {call.call_index}: '
            f"tensor table and decision diff</summary>{_call_detail(call)}</details></td></tr>")


def _divergence_table(trace: TraceResult, dom_id: str) -> str:
    if not trace.divergences:
        return "<h3>Diverging calls</h3><p>None.</p>"
    focus = focus_call(trace)
    shown = trace.divergences[:max_table_calls]
    head = "".join(f"<th>{name}</th>" for name in _DIVERGENCE_COLUMNS)
    rows = "".join(_divergence_rows(call, dom_id, open_details=call is focus) for call in shown)
    hidden = len(trace.divergences) - len(shown) + num_unwaived(trace) - len(trace.unwaived)
    more = (f"<p>{hidden} more diverging call(s) are not listed here; see the JSON report.</p>"
            if hidden > 0 else "")
    return (f'<h3>Diverging calls ({len(shown)} listed)</h3><div class="scroll"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{more}")


def _trace_section(run: RunResult, trace: TraceResult, dom_id: str) -> str:
    verdict = "OK" if trace.ok else "DIVERGED"
    notes = "".join(f"<li>{_e(note)}</li>" for note in trace.notes)
    return (f'<section id="{dom_id}" aria-labelledby="{dom_id}-h"><h2 id="{dom_id}-h">'
            f"{_e(trace.trace_path)}: {verdict}</h2>{_trace_facts(run, trace, dom_id)}"
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "")
            + _error_figure(trace, dom_id) + _timeline_figure(run, trace, dom_id)
            + _coverage_figure(trace, dom_id) + _latency_figure(run, trace, dom_id)
            + _hit_rate_figure(run, trace, dom_id) + _timing_table(run, trace)
            + _pool_table(trace) + _divergence_table(trace, dom_id) + "</section>")


def _waivers(run: RunResult, waiver_report: Mapping[str, Any] | None) -> str:
    used = dict(waiver_report.get("used", {})) if waiver_report else waivers_used(run)
    parts = ["<section id=\"waivers\"><h2>Waivers</h2>"]
    if waiver_report is not None:
        parts.append(f"<p>Source: <code>{_e(waiver_report.get('source', '-'))}</code></p>")
    parts.append(_table(["waiver", "calls waived"],
                        [[f"<code>{_e(wid)}</code>", str(n)] for wid, n in sorted(used.items())],
                        numeric=(1,)) if used else "<p>No waiver was used.</p>")
    if waiver_report is None:
        parts.append("<p>Expired and stale waivers: not known (no waiver report given).</p>")
    else:
        for label in ("expired", "stale"):
            ids = [f"<code>{_e(wid)}</code>" for wid in waiver_report.get(label, [])]
            parts.append(f"<p>{label.capitalize()}: {', '.join(ids) or 'none'}</p>")
    return "".join(parts) + "</section>"


def _notes(run: RunResult) -> str:
    items = [_e(text) if path is None else f"<code>{_e(path)}</code>: {_e(text)}"
             for path, text in run_notes(run)]
    body = ("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" if items
            else "<p>None.</p>")
    return f'<section id="notes"><h2>Notes</h2>{body}</section>'


def render_html(run: RunResult, *, waiver_report: Mapping[str, Any] | None = None) -> str:
    """Render ``run`` as one self-contained HTML page.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output (``source``, ``used``,
            ``expired``, ``stale``); without it the waivers used are counted from the run and
            expired/stale ones are reported as unknown.

    Returns:
        The page: UTF-8 text with inline CSS and SVG, no scripts and no external references.
    """
    sections = "".join(_trace_section(run, trace, f"t{index}")
                       for index, trace in enumerate(run.traces, 1))
    title = f"kvmigrate compare: {'EQUIVALENT' if run.ok else 'DIVERGED'}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}{svg.STYLE}</style></head><body><main>"
            f"{_header(run)}{_overview(run)}{sections}{_waivers(run, waiver_report)}{_notes(run)}"
            f"</main></body></html>\n")
