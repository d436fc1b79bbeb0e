"""The one report model: every fact a report shows, built once from a run.

:func:`build_report` turns a :class:`~harness.results.RunResult` (plus the waiver report and
extra notes) into a :class:`Report`: the verdict sentence and the counts behind it, the run's
header facts, one row per trace with its timings and pool counters, the diverging calls (which
are shown in full and which only listed, under one pair of caps), the calls grouped by cause
where causal attribution ran, the waivers and the notes. The console, Markdown and HTML forms
only lay a :class:`Report` out, so one run reads the same in all three.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness import exit_codes
from harness.coverage import coverage_rows
from harness.report.facts import (call_status, decision_diff_lines, decision_or_error,
                                  engine_total, error_text, fmt_rate, format_number, short_name,
                                  tensor_cells, time_ratio, tolerance_summary, worst_tensor)
from harness.results import CallComparison, EngineTiming, PoolStats, RunResult, TraceResult

__all__ = ["Caps", "Verdict", "CallView", "CauseGroup", "TimingRow", "TraceRow", "WaivedGroup",
           "Waivers", "Report", "build_report", "call_view", "noise_floor_text", "engine_roles", "verdict_of"]

_CALL_KIND_ORDER = ("root", "recurrent", "clear", "weights")
_EXIT_MEANING = {exit_codes.OK: "equivalent", exit_codes.DIVERGENCE: "divergence",
                 exit_codes.INSUFFICIENT_EVIDENCE: "insufficient evidence"}


@dataclass(frozen=True, slots=True)
class Caps:
    """How much a report shows: unwaived calls in full (shared by all traces) and calls listed
    per trace; the rest is counted and left to the JSON report."""

    max_detailed_calls: int = 10
    max_listed_calls: int = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    """The run's verdict: ``label`` (``EQUIVALENT``, ``DIVERGED``, ``INSUFFICIENT EVIDENCE``),
    the ``sentence`` that leads every form, and the ``counts`` line under it."""

    label: str
    sentence: str
    counts: str
    exit_code: int
    num_traces: int
    num_calls: int
    num_unwaived: int
    num_waived: int


@dataclass(frozen=True, slots=True)
class CallView:
    """One diverging call as every form shows it.

    Attributes:
        call: the record.
        title: ``call 3 (recurrent, envs [0, 1]): both, unwaived``.
        status: ``unwaived`` or ``waived by <id>``.
        tensor_rows: cells of ``facts.TENSOR_COLUMNS`` per tensor divergence.
        decision: the decision summary with its event positions, None when decisions agree.
        decision_lines: the capped DeepDiff lines.
        error: ``engine error: ...`` (which side raised, type and message), None if none.
        worst_path, worst_error: the tensor with the largest max abs error and that error.
        summary: the decision summary, else the error, else ``-`` (for one-line listings).
        reference: ``(control, candidate)`` max abs distance to the reference engine.
        detailed: shown in full (within ``Caps.max_detailed_calls``).
    """

    call: CallComparison
    title: str
    status: str
    tensor_rows: tuple[tuple[str, ...], ...]
    decision: str | None
    decision_lines: tuple[str, ...]
    error: str | None
    worst_path: str | None
    worst_error: str
    summary: str
    reference: tuple[str, str] | None
    detailed: bool


@dataclass(frozen=True, slots=True)
class CauseGroup:
    """Kept diverging calls that causal attribution gave one label (``None``: not attributed)."""

    cause: str | None
    num_unwaived: int
    num_waived: int
    first_trace: str
    first_call: int


@dataclass(frozen=True, slots=True)
class TimingRow:
    """One call kind of one trace: both engines' timings and the median ratio."""

    call_kind: str
    num_calls: int
    control: EngineTiming | None
    candidate: EngineTiming | None
    ratio: str


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One trace: its numbers, its engines' times and pools, and its diverging calls.

    ``has_reference``: some listed call was measured against the reference engine, so the
    listings carry a column for it.
    """

    trace: TraceResult
    name: str
    status: str
    control: str
    candidate: str
    num_unwaived: int
    num_waived: int
    focus: CallView | None
    control_hits: str
    candidate_hits: str
    pool_rates: tuple[tuple[str, str, str], ...]
    control_total_s: float
    candidate_total_s: float
    total_ratio: str
    timings: tuple[TimingRow, ...]
    pools: tuple[PoolStats, ...]
    calls: tuple[CallView, ...]
    num_unlisted: int
    num_unwaived_not_detailed: int
    has_reference: bool


@dataclass(frozen=True, slots=True)
class WaivedGroup:
    """Waived calls of one trace under one waiver: expected, so one line per group."""

    trace: str
    waiver_id: str
    num_calls: int
    first_call: int
    last_call: int
    kinds: str


@dataclass(frozen=True, slots=True)
class Waivers:
    """Waivers used (counted from the run), and expired/stale ones when a waiver report came."""

    source: str | None
    used: tuple[tuple[str, int], ...]
    expired: tuple[str, ...] | None
    stale: tuple[str, ...] | None
    groups: tuple[WaivedGroup, ...]


@dataclass(frozen=True, slots=True)
class CoverageRow:
    """One row of the coverage table (docs/coverage.md), counted over every trace of the run.

    Attributes:
        name: the path or quirk (``root_first_step``, ``quirk-4``).
        refactor: ``match`` (required by the gate), ``fixed`` (corrected on purpose), or why
            no trace can show it (``unobservable``, ``unreachable``, ``not_modelled``).
        count: calls or events that exercised it (counted on the control's events).
    """

    name: str
    refactor: str
    count: int

    @property
    def missing(self) -> bool:
        """A row the refactor must match that no trace exercised."""
        return self.refactor == "match" and self.count < 1


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a report form shows, in the order the forms show it.

    ``detail_groups`` holds the calls shown in full, by cause (one ``None`` group when no call
    was attributed), each group in trace and call order.
    """

    run: RunResult
    verdict: Verdict
    header: tuple[tuple[str, str], ...]
    traces: tuple[TraceRow, ...]
    causes: tuple[CauseGroup, ...]
    waivers: Waivers
    notes: tuple[tuple[str | None, str], ...]
    caps: Caps
    detail_groups: tuple[tuple[str | None, tuple[CallView, ...]], ...]
    coverage: tuple[CoverageRow, ...] = ()


def verdict_of(run: RunResult) -> Verdict:
    """The verdict sentence and counts of ``run``; the exit code is ``run.exit_code``."""
    num_traces, num_calls = len(run.traces), sum(t.num_calls for t in run.traces)
    unwaived, waived = (sum(t.num_unwaived for t in run.traces),
                        sum(t.num_waived for t in run.traces))
    code = run.exit_code
    if code == exit_codes.DIVERGENCE:
        label = "DIVERGED"
        sentence = (f"DIVERGED: {unwaived} unwaived diverging call(s) in "
                    f"{sum(not t.ok for t in run.traces)} trace(s)")
    elif code == exit_codes.INSUFFICIENT_EVIDENCE:
        label = "INSUFFICIENT EVIDENCE"
        sentence = ("INSUFFICIENT EVIDENCE: no trace was compared" if not run.traces else
                    f"INSUFFICIENT EVIDENCE: {len(run.empty_traces)} of {num_traces} trace(s) "
                    f"replayed no call")
    else:
        label = "EQUIVALENT"
        sentence = (f"EQUIVALENT: {num_traces} trace(s), {num_calls} calls, {waived} waived "
                    f"divergence(s)")
    counts = (f"{num_traces} trace(s), {num_calls} calls, {unwaived} unwaived and {waived} waived "
              f"diverging call(s); exit code {code} ({_EXIT_MEANING.get(code, 'unknown')})")
    return Verdict(label, sentence, counts, code, num_traces, num_calls, unwaived, waived)


def engine_roles(run: RunResult, trace: TraceResult) -> tuple[str, str]:
    """The engine names under which ``trace`` recorded the control's and candidate's timings
    and pool counters.

    Usually ``run.control_engine`` and ``run.candidate_engine``; but an engine built with a
    manager records as ``refactored[pkg.mod:Class]`` and a self-check candidate as ``legacy#2``,
    so when the candidate's name is absent (or equals the control's) the one other engine name
    found in the trace is the candidate.
    """
    control, candidate = run.control_engine, run.candidate_engine
    names = {t.engine for t in trace.timings} | {s.engine for s in trace.pool_stats}
    others = sorted(names - {control})
    if (candidate not in names or candidate == control) and len(others) == 1:
        candidate = others[0]
    return control, candidate


def call_view(call: CallComparison, *, detailed: bool = True) -> CallView:
    """``call`` as every form shows it."""
    event = call.event_divergence
    decision = None if event is None else (
        f"{event.summary} (first differing event {event.first_index}; "
        f"{event.num_control_events} control / {event.num_candidate_events} candidate events)")
    worst = worst_tensor(call)
    reference = None if call.reference is None else (
        format_number(call.reference.control_max_abs),
        format_number(call.reference.candidate_max_abs))
    title = (f"call {call.call_index} ({call.call_kind}, envs {list(call.env_ids)}): "
             f"{call.classification}, {call_status(call)}")
    return CallView(call, title, call_status(call),
                    tuple(tensor_cells(div) for div in call.tensor_divergences), decision,
                    tuple(decision_diff_lines(event)) if event is not None else (),
                    error_text(call), None if worst is None else worst.path,
                    format_number(None if worst is None else worst.max_abs_err),
                    decision_or_error(call), reference, detailed)


def _hit_rates(trace: TraceResult, engine: str) -> str:
    parts = [f"{stats.pool} {fmt_rate(stats.hit_rate)}" for stats in trace.pool_stats
             if stats.engine == engine and stats.hit_rate is not None]
    return ", ".join(parts) or "-"


def _pool_rate(trace: TraceResult, engine: str, pool: str) -> str:
    return next((fmt_rate(s.hit_rate) for s in trace.pool_stats
                 if s.engine == engine and s.pool == pool and s.hit_rate is not None), "-")


def _timing_rows(trace: TraceResult, control: str, candidate: str) -> tuple[TimingRow, ...]:
    by_kind: dict[str, dict[str, EngineTiming]] = {}
    for timing in trace.timings:
        by_kind.setdefault(timing.call_kind, {})[timing.engine] = timing
    order = [kind for kind in _CALL_KIND_ORDER if kind in by_kind]
    order += sorted(kind for kind in by_kind if kind not in _CALL_KIND_ORDER)
    rows = []
    for kind in order:
        t_control, t_candidate = by_kind[kind].get(control), by_kind[kind].get(candidate)
        calls = max(t.num_calls for t in (t_control, t_candidate) if t is not None)
        rows.append(TimingRow(kind, calls, t_control, t_candidate,
                              time_ratio(t_control and t_control.median_s,
                                         t_candidate and t_candidate.median_s)))
    return tuple(rows)


def _trace_row(run: RunResult, trace: TraceResult, detailed: set[int], caps: Caps) -> TraceRow:
    """``detailed``: positions in ``trace.divergences`` of the calls shown in full."""
    control, candidate = engine_roles(run, trace)
    listed = trace.divergences[:caps.max_listed_calls]
    calls = tuple(call_view(call, detailed=position in detailed)
                  for position, call in enumerate(listed))
    focus_position = next((position for position, call in enumerate(listed) if not call.waived),
                          0)
    focus = calls[focus_position] if calls else None
    num_dropped = trace.num_unwaived - len(trace.unwaived)
    t_control, t_candidate = engine_total(trace, control), engine_total(trace, candidate)
    pools = {s.pool for s in trace.pool_stats}
    pool_order = [p for p in ("root", "recurrent") if p in pools] + sorted(
        pools - {"root", "recurrent"})
    status = "DIVERGED" if not trace.ok else "NO CALLS" if trace.num_calls == 0 else "OK"
    return TraceRow(
        trace=trace, name=short_name(trace.trace_path), status=status, control=control,
        candidate=candidate, num_unwaived=trace.num_unwaived, num_waived=trace.num_waived,
        focus=focus, control_hits=_hit_rates(trace, control),
        candidate_hits=_hit_rates(trace, candidate),
        pool_rates=tuple((pool, _pool_rate(trace, control, pool),
                          _pool_rate(trace, candidate, pool)) for pool in pool_order),
        control_total_s=t_control, candidate_total_s=t_candidate,
        total_ratio=time_ratio(t_control, t_candidate),
        timings=_timing_rows(trace, control, candidate),
        pools=tuple(sorted(trace.pool_stats, key=lambda s: (s.pool != "root", s.pool,
                                                            s.engine != control))),
        calls=calls, num_unlisted=len(trace.divergences) - len(listed) + max(num_dropped, 0),
        num_unwaived_not_detailed=trace.num_unwaived - sum(
            view.detailed for view in calls if not view.call.waived),
        has_reference=any(view.reference is not None for view in calls))


def _causes(run: RunResult) -> tuple[CauseGroup, ...]:
    calls = [call for trace in run.traces for call in trace.divergences]
    if not any(call.cause is not None for call in calls):
        return ()
    groups: dict[str | None, list[CallComparison]] = {}
    for call in calls:
        groups.setdefault(call.cause, []).append(call)
    return tuple(CauseGroup(cause, sum(not c.waived for c in group), sum(c.waived for c in group),
                            group[0].trace, group[0].call_index)
                 for cause, group in groups.items())


def _waivers(run: RunResult, waiver_report: Mapping[str, Any] | None) -> Waivers:
    waived = [call for trace in run.traces for call in trace.divergences if call.waived]
    used = Counter(call.waiver_id for call in waived)
    grouped: dict[tuple[str, str], list[CallComparison]] = {}
    for call in waived:
        grouped.setdefault((call.trace, str(call.waiver_id)), []).append(call)
    groups = tuple(WaivedGroup(Path(trace).name, waiver, len(group), group[0].call_index,
                               group[-1].call_index,
                               ", ".join(sorted({f"{c.call_kind} {c.classification}"
                                                 for c in group})))
                   for (trace, waiver), group in grouped.items())
    if waiver_report is None:
        return Waivers(None, tuple(sorted(used.items())), None, None, groups)
    return Waivers(str(waiver_report.get("source", "-")), tuple(sorted(used.items())),
                   tuple(waiver_report.get("expired", ())), tuple(waiver_report.get("stale", ())),
                   groups)


def noise_floor_text(trace: TraceResult) -> str:
    """The measured noise floor, exact (it is the floor tolerances are checked against)."""
    return "not measured" if trace.noise_floor is None else repr(float(trace.noise_floor))


def _notes(run: RunResult, extra: Sequence[str]) -> tuple[tuple[str | None, str], ...]:
    notes: list[tuple[str | None, str]] = [] if run.traces else [(None, "No trace was compared.")]
    for trace in run.traces:
        # A note that starts with its trace's path (a cut trace's) is shown as it is.
        notes += [(None if note.startswith(trace.trace_path) else trace.trace_path, note)
                  for note in trace.notes]
        if trace.num_calls == 0:
            notes.append((trace.trace_path, "replayed no call: no evidence either way"))
        if trace.self_check:
            notes.append((trace.trace_path, f"self-check: noise floor (max |a-e| on equal "
                                            f"tensors) = {noise_floor_text(trace)}"))
        if trace.num_slot_differences:
            notes.append((trace.trace_path, f"{trace.num_slot_differences} store(s) landed in "
                                            f"other slots (information, not a divergence)"))
    return tuple(notes) + tuple((None, text) for text in extra)


def _header(run: RunResult) -> tuple[tuple[str, str], ...]:
    shard = "-" if run.shard is None else (f"{run.shard.index + 1} of {run.shard.count} "
                                           f"(set {run.shard.set_id})")
    return (("control engine", run.control_engine), ("candidate engine", run.candidate_engine),
            ("cache manager", run.manager_spec or "default"),
            ("replay", f"{run.loop} loop"), ("shard", shard),
            ("reference engine", run.reference_engine or "-"),
            ("tolerances", tolerance_summary(run.tolerances)),
            ("schema", run.schema_version), ("created", run.created_at.isoformat()),
            ("exit code", str(run.exit_code)))


def build_report(run: RunResult, *, waiver_report: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = (), caps: Caps = Caps()) -> Report:
    """Build the facts of ``run`` once, for every report form.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output; its ``source``, ``expired``
            and ``stale`` are shown (the calls each waiver covered are counted from ``run``).
            Without it, expired and stale waivers are reported as not known.
        notes: extra one-line remarks from the caller, shown after the run's own.
        caps: how many calls are shown in full and listed.
    """
    unwaived = [(index, position) for index, trace in enumerate(run.traces)
                for position, call in enumerate(trace.divergences[:caps.max_listed_calls])
                if not call.waived]
    detailed = set(unwaived[:caps.max_detailed_calls])
    rows = tuple(_trace_row(run, trace, {position for index_, position in detailed
                                         if index_ == index}, caps)
                 for index, trace in enumerate(run.traces))
    groups: dict[str | None, list[CallView]] = {}
    for view in (view for row in rows for view in row.calls if view.detailed):
        groups.setdefault(view.call.cause, []).append(view)
    return Report(run=run, verdict=verdict_of(run), header=_header(run), traces=rows,
                  causes=_causes(run), waivers=_waivers(run, waiver_report),
                  notes=_notes(run, notes), caps=caps,
                  detail_groups=tuple((cause, tuple(views)) for cause, views in groups.items()),
                  coverage=_coverage(run))


def _coverage(run: RunResult) -> tuple[CoverageRow, ...]:
    counts: Counter[str] = Counter()
    for trace in run.traces:
        counts.update(trace.coverage)
    return tuple(CoverageRow(name, refactor, count)
                 for name, _, refactor, count in coverage_rows(counts))
