"""How the report states one fact in words and numbers: shared by every report form.

Rounding lives here and nowhere else, so the console, Markdown and HTML forms of one run print
the same digits: times in ms with 3 decimals per call and 1 decimal in totals, rates with one
decimal percent, errors with 3 significant digits, values at the worst index with 9.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from harness.results import CallComparison, EventDivergence, TensorDivergence, TraceResult

__all__ = ["TENSOR_COLUMNS", "format_number", "fmt_ms", "fmt_total_ms", "fmt_rate",
           "time_ratio", "short_name", "side_values", "tensor_cells", "worst_tensor",
           "decision_or_error", "decision_diff_lines", "tolerance_summary", "engine_total",
           "call_status", "error_text"]

TENSOR_COLUMNS = ("tensor", "class", "mismatched/total", "max abs", "mean abs", "max rel",
                  "mean rel", "worst index", "candidate", "control")
_MAX_DIFF_LINES = 12
_MAX_DIFF_VALUE_CHARS = 120


def format_number(value: float | int | bool | None, spec: str = ".3g") -> str:
    """``-`` for None; ints as they are; floats with ``spec`` (``nan``, ``inf`` spelled out)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return format(float(value), spec)


def fmt_ms(seconds: float | None) -> str:
    """A per-call time in ms with 3 decimals; ``-`` when unknown."""
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def fmt_total_ms(seconds: float) -> str:
    """A total time in ms with 1 decimal."""
    return f"{seconds * 1e3:.1f}"


def fmt_rate(rate: float | None) -> str:
    """A rate as a percent with 1 decimal; ``-`` when unknown."""
    return "-" if rate is None else f"{rate:.1%}"


def time_ratio(control_s: float | None, candidate_s: float | None) -> str:
    """``control / candidate`` as ``1.23x`` (above 1: the candidate is faster); ``-`` if unknown."""
    if not control_s or not candidate_s or control_s <= 0 or candidate_s <= 0:
        return "-"
    return f"{control_s / candidate_s:.2f}x"


def short_name(trace_path: str) -> str:
    """A trace's name without folder and the .kvtrace suffix, for narrow tables."""
    name = Path(trace_path).name
    return name[: -len(".kvtrace")] if name.endswith(".kvtrace") else name


def engine_total(trace: TraceResult, engine: str) -> float:
    """Seconds ``engine`` spent on all calls of ``trace``."""
    return sum(t.total_s for t in trace.timings if t.engine == engine)


def call_status(call: CallComparison) -> str:
    """``waived by <id>`` or ``unwaived``."""
    return f"waived by {call.waiver_id}" if call.waived else "unwaived"


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else str(list(shape))


def _presence(dtype: str | None, shape: tuple[int, ...] | None) -> str:
    return "absent" if dtype is None else f"{dtype} {_shape_text(shape)}"


def side_values(div: TensorDivergence) -> tuple[str, str]:
    """What candidate and control hold where they differ: values, dtypes, shapes or presence."""
    if div.kind == "value":
        return format_number(div.actual_value, ".9g"), format_number(div.expected_value, ".9g")
    if div.kind == "dtype":
        return str(div.actual_dtype), str(div.expected_dtype)
    if div.kind == "shape":
        return _shape_text(div.actual_shape), _shape_text(div.expected_shape)
    return (_presence(div.actual_dtype, div.actual_shape),
            _presence(div.expected_dtype, div.expected_shape))


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


def worst_tensor(call: CallComparison) -> TensorDivergence | None:
    """The tensor divergence with the largest finite max abs error, None when none has one."""
    measured = [div for div in call.tensor_divergences if div.max_abs_err is not None]
    return max(measured, key=lambda div: div.max_abs_err or 0.0, default=None)


def error_text(call: CallComparison) -> str | None:
    """The engine error (which side raised, type and message) and the probes' findings, as the
    report states them; None when there are neither."""
    parts = [] if call.engine_error is None else [f"engine error: {call.engine_error}"]
    parts += [f"probe: {finding}" for finding in call.findings]
    return "; ".join(parts) or None


def decision_or_error(call: CallComparison) -> str:
    """The one-line decision diff, else the engine error, else ``-``."""
    if call.event_divergence is not None:
        return call.event_divergence.summary
    return error_text(call) or "-"


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


def tolerance_summary(tolerances: Mapping[str, Any]) -> str:
    """The tolerance policy in one line: NaN policy, then path overrides or dtype defaults."""
    parts = []
    if "nan" in tolerances:
        parts.append(f"NaN policy {tolerances['nan']}")
    paths = tolerances.get("paths") or {}
    if paths:
        overrides = ", ".join(f"{pattern} rtol={spec.get('rtol')} atol={spec.get('atol')}"
                              if isinstance(spec, Mapping) else f"{pattern} {spec}"
                              for pattern, spec in paths.items())
        parts.append(f"overrides: {overrides}")
    else:
        parts.append("dtype defaults (no path overrides)")
    for key in sorted(set(tolerances) - {"nan", "paths"}):
        parts.append(f"{key}: {json.dumps(tolerances[key], sort_keys=True, default=str)}")
    return "; ".join(parts)
