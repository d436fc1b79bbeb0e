"""The four plots of a trace in the HTML report, as figures with their captions.

Per-call max error; the per-engine cache-decision timeline with the diverging calls; the
coverage counts; latency per call kind per engine; hit rate per pool per engine. The SVG is
drawn by :mod:`harness.report.svg`; the numbers come from the report model's trace rows.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from harness.report import svg
from harness.report.facts import call_status, fmt_ms, fmt_rate
from harness.report.model import TraceRow
from harness.results import CallComparison, TraceResult

__all__ = ["error_figure", "timeline_figure", "coverage_figure", "latency_figure",
           "hit_rate_figure"]

_CLASSES = ("decision", "tensor", "both", "error")


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _figure(svg_markup: str, caption: str) -> str:
    return f"<figure>{svg_markup}<figcaption>{caption}</figcaption></figure>"


def _mark_for(call: CallComparison, y: float, *, with_error: bool) -> svg.Mark:
    tip = f"call {call.call_index} ({call.call_kind}): {call.classification}, {call_status(call)}"
    if with_error:
        tip += f"; max abs error {y:.3g}"
    return svg.Mark(call.call_index, y, "c-waived" if call.waived else "c-unwaived",
                    "diamond" if call.waived else "triangle", tip)


_MARK_KEY = ('<span class="key unwaived">▲ unwaived diverging call</span>, '
             '<span class="key waived">◆ waived diverging call</span>')


def error_figure(trace: TraceResult, dom_id: str) -> str:
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


def timeline_figure(row: TraceRow, dom_id: str) -> str:
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


def coverage_figure(trace: TraceResult, dom_id: str) -> str:
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


def latency_figure(row: TraceRow, dom_id: str) -> str:
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


def hit_rate_figure(row: TraceRow, dom_id: str) -> str:
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
