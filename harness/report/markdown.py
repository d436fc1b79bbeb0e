"""GitHub-flavoured Markdown rendering of a comparison run, for CI job summaries and PR comments.

The page leads with the verdict line, then one summary row per trace, the timings per call kind,
the first divergence of each trace in detail (tensor table and decision diff), a short list of
the other diverging calls, the waivers and the notes. Output is deterministic: the only time in
it is ``run.created_at``.

The plain-text helpers here (verdict, number formats, tensor sides, decision-diff lines) are
shared with the HTML renderer, so the two forms state the same facts in the same words.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from harness.report.console import engine_total, fmt_ms
from harness.results import (CallComparison, EngineTiming, EventDivergence, RunResult,
                             TensorDivergence, TraceResult)

__all__ = ["render_markdown", "verdict_line", "engine_roles", "num_unwaived", "num_waived",
           "format_number", "side_values", "tensor_cells", "time_ratio", "hit_rates",
           "kind_timings", "tolerance_summary", "decision_diff_lines", "waivers_used",
           "focus_call", "worst_tensor", "decision_or_error", "run_notes", "TENSOR_COLUMNS",
           "max_listed_calls"]

max_listed_calls = 20
_MAX_DIFF_LINES = 12
_MAX_DIFF_VALUE_CHARS = 120
_CALL_KIND_ORDER = ("root", "recurrent", "clear", "weights")
TENSOR_COLUMNS = ("tensor", "class", "mismatched/total", "max abs", "mean abs", "max rel",
                   "mean rel", "worst index", "candidate", "control")


# --- facts shared with the HTML renderer -----------------------------------------------------

def num_unwaived(trace: TraceResult) -> int:
    """Unwaived diverging calls, counting those dropped from the kept list."""
    return max(trace.num_unwaived_calls, len(trace.unwaived))


def num_waived(trace: TraceResult) -> int:
    """Waived diverging calls among the kept ones."""
    return sum(call.waived for call in trace.divergences)


def verdict_line(run: RunResult) -> str:
    """``EQUIVALENT: ...`` or ``DIVERGED: ...`` with the counts behind it, as plain text."""
    calls = sum(trace.num_calls for trace in run.traces)
    waived = sum(num_waived(trace) for trace in run.traces)
    if run.ok:
        return (f"EQUIVALENT: {len(run.traces)} trace(s), {calls} calls, "
                f"{waived} waived divergence(s)")
    unwaived = sum(num_unwaived(trace) for trace in run.traces)
    failed = sum(not trace.ok for trace in run.traces)
    return (f"DIVERGED: {unwaived} unwaived diverging call(s) in {failed} of {len(run.traces)} "
            f"trace(s), {calls} calls, {waived} waived divergence(s)")


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


def focus_call(trace: TraceResult) -> CallComparison | None:
    """The call to read first: the earliest unwaived divergence, else the earliest waived one."""
    return trace.first_unwaived or trace.first_divergence


def format_number(value: float | int | bool | None, spec: str = ".3g") -> str:
    """``-`` for None; ints as they are; floats with ``spec`` (``nan``, ``inf`` spelled out)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return format(value, spec)


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else str(list(shape))


def side_values(div: TensorDivergence) -> tuple[str, str]:
    """What candidate and control hold where they differ: values, dtypes, shapes or presence."""
    if div.kind == "value":
        return format_number(div.actual_value, ".9g"), format_number(div.expected_value, ".9g")
    if div.kind == "dtype":
        return str(div.actual_dtype), str(div.expected_dtype)
    if div.kind == "shape":
        return _shape_text(div.actual_shape), _shape_text(div.expected_shape)
    return _presence(div.actual_dtype, div.actual_shape), _presence(div.expected_dtype,
                                                                     div.expected_shape)


def _presence(dtype: str | None, shape: tuple[int, ...] | None) -> str:
    return "absent" if dtype is None else f"{dtype} {_shape_text(shape)}"


def decision_or_error(call: CallComparison) -> str:
    """The one-line decision diff, else the engine error, else ``-``."""
    if call.event_divergence is not None:
        return call.event_divergence.summary
    return call.engine_error or "-"


def worst_tensor(call: CallComparison) -> TensorDivergence | None:
    """The tensor divergence with the largest finite max abs error, None when none has one."""
    measured = [div for div in call.tensor_divergences if div.max_abs_err is not None]
    return max(measured, key=lambda div: div.max_abs_err or 0.0, default=None)


def tensor_cells(div: TensorDivergence) -> tuple[str, ...]:
    """One tensor divergence as the cells of ``TENSOR_COLUMNS``."""
    candidate, control = side_values(div)
    mismatched = f"{div.num_mismatched}/{div.num_elements}" if div.kind == "value" else "-"
    if div.num_nonfinite:
        mismatched += f" ({div.num_nonfinite} non-finite)"
    index = "-" if div.worst_index is None else str(list(div.worst_index))
    return (div.path, div.kind, mismatched, format_number(div.max_abs_err),
            format_number(div.mean_abs_err), format_number(div.max_rel_err),
            format_number(div.mean_rel_err), index, candidate, control)


def time_ratio(control_s: float, candidate_s: float) -> str:
    """``control / candidate`` as ``1.23x`` (above 1: the candidate is faster); ``-`` if unknown."""
    return f"{control_s / candidate_s:.2f}x" if control_s > 0 and candidate_s > 0 else "-"


def hit_rates(trace: TraceResult, engine: str) -> str:
    """``root 32.1%, recurrent 100.0%`` for one engine (pools never queried are left out)."""
    parts = [f"{stats.pool} {stats.hit_rate:.1%}" for stats in trace.pool_stats
             if stats.engine == engine and stats.hit_rate is not None]
    return ", ".join(parts) or "-"


def kind_timings(trace: TraceResult, control: str, candidate: str
                 ) -> list[tuple[str, EngineTiming | None, EngineTiming | None]]:
    """``(call kind, control timing, candidate timing)`` in the order root, recurrent, clear,
    weights, then any other kind alphabetically."""
    by_kind: dict[str, dict[str, EngineTiming]] = {}
    for timing in trace.timings:
        by_kind.setdefault(timing.call_kind, {})[timing.engine] = timing
    order = [kind for kind in _CALL_KIND_ORDER if kind in by_kind]
    order += sorted(kind for kind in by_kind if kind not in _CALL_KIND_ORDER)
    return [(kind, by_kind[kind].get(control), by_kind[kind].get(candidate)) for kind in order]


def tolerance_summary(tolerances: Mapping[str, Any]) -> str:
    """The tolerance policy in one line: NaN policy, then path overrides or dtype defaults."""
    parts = []
    if "nan" in tolerances:
        parts.append(f"NaN policy {tolerances['nan']}")
    paths = tolerances.get("paths") or {}
    if paths:
        overrides = ", ".join(f"{pattern} rtol={spec.get('rtol')} atol={spec.get('atol')}"
                              for pattern, spec in paths.items())
        parts.append(f"overrides: {overrides}")
    else:
        parts.append("dtype defaults (no path overrides)")
    for key in sorted(set(tolerances) - {"nan", "paths"}):
        parts.append(f"{key}: {json.dumps(tolerances[key], sort_keys=True, default=str)}")
    return "; ".join(parts)


def _compact(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > _MAX_DIFF_VALUE_CHARS:
        text = text[:_MAX_DIFF_VALUE_CHARS - 1] + "…"
    return text


def decision_diff_lines(event: EventDivergence, limit: int = _MAX_DIFF_LINES) -> list[str]:
    """The DeepDiff of one call's decisions, one change a line (control -> candidate), capped."""
    lines: list[str] = []
    for change, entries in event.deepdiff.items():
        if not isinstance(entries, Mapping):  # e.g. a set-type change: paths without values
            paths = entries if isinstance(entries, list) else [entries]
            lines += [f"{change} {path}" for path in paths]
            continue
        for path, detail in entries.items():
            if isinstance(detail, Mapping) and {"old_value", "new_value"} <= set(detail):
                what = f"{_compact(detail['old_value'])} -> {_compact(detail['new_value'])}"
            else:
                what = _compact(detail)
            lines.append(f"{change} {path}: {what}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more change(s) in the JSON report"]
    return lines


def run_notes(run: RunResult) -> list[tuple[str | None, str]]:
    """``(trace path or None, text)``: the traces' notes, self-check floors, slot differences."""
    notes: list[tuple[str | None, str]] = [] if run.traces else [(None, "No trace was compared.")]
    for trace in run.traces:
        notes += [(trace.trace_path, note) for note in trace.notes]
        if trace.self_check:
            notes.append((trace.trace_path, f"self-check; noise floor (max abs diff on equal "
                                            f"tensors) = {format_number(trace.noise_floor)}"))
        if trace.num_slot_differences:
            notes.append((trace.trace_path, f"{trace.num_slot_differences} store(s) landed in "
                                            f"other slots (information, not a divergence)"))
    return notes


def waivers_used(run: RunResult) -> dict[str, int]:
    """Waiver id -> kept diverging calls it waived, in id order (derived from the run itself)."""
    counts = Counter(call.waiver_id for trace in run.traces for call in trace.divergences
                     if call.waiver_id is not None)
    return dict(sorted(counts.items()))


# --- Markdown ---------------------------------------------------------------------------------

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


def _header(run: RunResult) -> list[str]:
    manager = run.manager_spec or "default"
    return [f"**{verdict_line(run)}**", "",
            f"kvmigrate compare: control {_code(run.control_engine, in_table=False)} vs "
            f"candidate {_code(run.candidate_engine, in_table=False)}, manager "
            f"{_code(manager, in_table=False)}; schema {_code(run.schema_version, in_table=False)}"
            f"; created {_cell(run.created_at.isoformat())}",
            "", f"Tolerances: {_cell(tolerance_summary(run.tolerances))}", ""]


def _summary(run: RunResult) -> list[str]:
    header = ["trace", "calls", "tensors compared", "unwaived", "waived", "first divergence",
              "control hit rate", "candidate hit rate", "control total ms", "candidate total ms",
              "ratio control/candidate"]
    rows = []
    for trace in run.traces:
        control, candidate = engine_roles(run, trace)
        first = focus_call(trace)
        t_control, t_candidate = engine_total(trace, control), engine_total(trace, candidate)
        rows.append([_code(trace.trace_path), str(trace.num_calls),
                     str(trace.num_tensors_compared), str(num_unwaived(trace)),
                     str(num_waived(trace)), "-" if first is None else str(first.call_index),
                     _cell(hit_rates(trace, control)), _cell(hit_rates(trace, candidate)),
                     f"{t_control * 1e3:.1f}", f"{t_candidate * 1e3:.1f}",
                     time_ratio(t_control, t_candidate)])
    return ["## Traces", "", *_table(header, rows), ""]


def _timings(run: RunResult) -> list[str]:
    header = ["trace", "call kind", "calls", "control median ms", "control p95 ms",
              "candidate median ms", "candidate p95 ms", "ratio control/candidate (median)"]
    rows = []
    for trace in run.traces:
        control, candidate = engine_roles(run, trace)
        for kind, t_control, t_candidate in kind_timings(trace, control, candidate):
            calls = max(t.num_calls for t in (t_control, t_candidate) if t is not None)
            medians = [None if t is None else t.median_s for t in (t_control, t_candidate)]
            p95s = [None if t is None else t.p95_s for t in (t_control, t_candidate)]
            rows.append([_code(trace.trace_path), _cell(kind), str(calls),
                         fmt_ms(medians[0]), fmt_ms(p95s[0]), fmt_ms(medians[1]), fmt_ms(p95s[1]),
                         time_ratio(medians[0] or 0.0, medians[1] or 0.0)])
    if not rows:
        return ["## Time per call", "", "No timings recorded.", ""]
    return ["## Time per call (interleaved; ms)", "", *_table(header, rows), ""]


def _call_title(call: CallComparison) -> str:
    status = f"waived by {call.waiver_id}" if call.waived else "unwaived"
    return (f"call {call.call_index} ({call.call_kind}, envs {list(call.env_ids)}): "
            f"{call.classification}, {status}")


def _call_detail(call: CallComparison) -> list[str]:
    lines: list[str] = []
    if call.engine_error:
        lines += [f"Engine error: {_cell(call.engine_error)}", ""]
    if call.tensor_divergences:
        rows = [[_code(cells[0]), *(_cell(cell) for cell in cells[1:])]
                for cells in map(tensor_cells, call.tensor_divergences)]
        lines += [*_table(TENSOR_COLUMNS, rows), ""]
    event = call.event_divergence
    if event is not None:
        lines += [f"Cache decisions: {_cell(event.summary)} (first differing event "
                  f"{event.first_index}; {event.num_control_events} control / "
                  f"{event.num_candidate_events} candidate events)", ""]
        lines += [*_fenced(decision_diff_lines(event)), ""]
        if event.slot_differences:
            lines += [f"{len(event.slot_differences)} store(s) landed in other slots "
                      f"(information, not a divergence).", ""]
    return lines


def _first_divergences(run: RunResult) -> list[str]:
    lines = ["## First divergence per trace", ""]
    diverged = [(trace, focus_call(trace)) for trace in run.traces if trace.divergences]
    if not diverged:
        return lines + ["No trace diverged.", ""]
    for trace, call in diverged:
        assert call is not None, f"{trace.trace_path}: divergences without a first call"
        lines += [f"### {_code(trace.trace_path, in_table=False)}: {_cell(_call_title(call))}",
                  ""]
        lines += _call_detail(call)
        others = [other for other in trace.divergences if other is not call]
        if others:
            lines += _other_calls(trace, others)
    return lines


def _other_calls(trace: TraceResult, others: Sequence[CallComparison]) -> list[str]:
    rows = []
    for call in others[:max_listed_calls]:
        worst = worst_tensor(call)
        rows.append([str(call.call_index), _cell(call.call_kind), _cell(list(call.env_ids)),
                     call.classification, _cell(call.waiver_id or "unwaived"),
                     "-" if worst is None else _code(worst.path),
                     format_number(None if worst is None else worst.max_abs_err),
                     _cell(decision_or_error(call))])
    lines = [f"Other diverging calls in this trace ({len(others)}):", ""]
    lines += _table(["call", "kind", "envs", "class", "waiver", "worst tensor", "max abs",
                     "decision or error"], rows)
    hidden = len(others) - len(rows) + max(0, num_unwaived(trace) - len(trace.unwaived))
    if hidden > 0:
        lines += ["", f"... {hidden} more diverging call(s); see the JSON or HTML report."]
    return lines + [""]


def _waivers(run: RunResult, waiver_report: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Waivers", ""]
    used = dict(waiver_report.get("used", {})) if waiver_report else waivers_used(run)
    if waiver_report is not None:
        lines += [f"Source: {_code(waiver_report.get('source', '-'), in_table=False)}", ""]
    if used:
        lines += [*_table(["waiver", "calls waived"],
                          [[_code(wid), str(count)] for wid, count in sorted(used.items())]), ""]
    else:
        lines += ["No waiver was used.", ""]
    if waiver_report is None:
        return lines + ["Expired and stale waivers: not known (no waiver report given).", ""]
    for label in ("expired", "stale"):
        ids = list(waiver_report.get(label, []))
        listed = ", ".join(_code(wid, in_table=False) for wid in ids) if ids else "none"
        lines.append(f"- {label.capitalize()}: {listed}")
    return lines + [""]


def _notes(run: RunResult) -> list[str]:
    items = [text if path is None else f"{_code(path, in_table=False)}: {_cell(text)}"
             for path, text in run_notes(run)]
    if not items:
        return []
    return ["## Notes", "", *(f"- {item}" for item in items), ""]


def render_markdown(run: RunResult, *, waiver_report: Mapping[str, Any] | None = None) -> str:
    """Render ``run`` as GitHub-flavoured Markdown.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output (``source``, ``used``,
            ``expired``, ``stale``); without it the waivers used are counted from the run and
            expired/stale ones are reported as unknown.

    Returns:
        The page, starting with the bold verdict line and ending with a newline.
    """
    lines = [*_header(run), *_summary(run), *_timings(run), *_first_divergences(run),
             *_waivers(run, waiver_report), *_notes(run)]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
