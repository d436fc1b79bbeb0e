"""Re-judge a saved comparison under new waivers or tolerances, without replaying.

A saved report keeps, per diverging tensor, its tolerance and the statistics over the elements
that failed it: the largest abs and rel error, and the values at the worst element. From those
alone a new tolerance ``(rtol, atol)`` decides a ``value`` divergence when:

* it now passes: every failing element had ``|a - e| <= max_abs_err <= atol`` (and none was
  non-finite), so each is within ``atol + rtol * |e|``;
* it still fails: the worst element, whose values are saved, is outside the new tolerance.

Anything else needs a replay, and so does any call whose tolerance got tighter on some path
(elements that agreed before were not saved), and any divergence past the report's kept detail.
Decision divergences and engine errors do not depend on tolerances; waivers re-apply to every
kept divergence. Nothing here replays or prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from harness.calls import OUTPUT_NAMES
from harness.compare import Tolerance, TolerancePolicy
from harness.results import CallComparison, RunResult, TensorDivergence, TraceResult

__all__ = ["Undecided", "Rejudged", "rejudge_run", "rejudge_trace"]

Judge = Callable[[CallComparison], CallComparison]


@dataclass(frozen=True, slots=True)
class Undecided:
    """A saved divergence (or a whole trace) whose verdict needs a replay; ``why`` says why."""

    trace: str
    call_index: int | None
    why: str


@dataclass(frozen=True, slots=True)
class Rejudged:
    """The re-decided run, and what the saved statistics could not decide."""

    run: RunResult
    undecided: tuple[Undecided, ...]

    @property
    def exit_code(self) -> int:
        """1 for a divergence still unwaived, else 3 when something needs a replay, else 0."""
        if not self.run.ok:
            return 1
        return 3 if self.undecided else self.run.exit_code


def _within(actual: float, expected: float, tol: Tolerance) -> bool:
    return abs(actual - expected) <= tol.atol + tol.rtol * abs(expected)


def _value_verdict(divergence: TensorDivergence, tol: Tolerance) -> bool | None:
    """True: still diverges; False: now passes; None: the saved statistics cannot tell."""
    if divergence.num_nonfinite == 0 and divergence.max_abs_err is not None \
            and divergence.max_abs_err <= tol.atol:
        return False
    worst = (divergence.actual_value, divergence.expected_value)
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in worst):
        if not _within(float(worst[0]), float(worst[1]), tol):
            return True
    elif divergence.num_nonfinite:
        return True  # a non-finite error never passes a finite tolerance
    return None


def _tighter(old: Tolerance, new: Tolerance) -> bool:
    return new.rtol < old.rtol or new.atol < old.atol


def _retolerance(call: CallComparison, policy: TolerancePolicy,
                 undecided: list[Undecided]) -> CallComparison | None:
    """The call under ``policy``: None when no divergence remains; undecided ones are kept."""
    kept: list[TensorDivergence] = []
    for divergence in call.tensor_divergences:
        if divergence.kind != "value":
            kept.append(divergence)
            continue
        tol = policy.tolerance_for(divergence.path, divergence.expected_dtype or "")
        verdict = _value_verdict(divergence, tol)
        if verdict is None:
            undecided.append(Undecided(call.trace, call.call_index,
                                       f"{divergence.path}: the saved statistics do not decide "
                                       f"rtol={tol.rtol:g}, atol={tol.atol:g}"))
        if verdict is not False:
            kept.append(replace(divergence, rtol=tol.rtol, atol=tol.atol))
    if not kept and call.event_divergence is None and call.engine_error is None:
        return None
    return replace(call, tensor_divergences=tuple(kept))


def rejudge_trace(trace: TraceResult, judge: Judge | None, policy: TolerancePolicy | None,
                  old_policy: TolerancePolicy | None) -> tuple[TraceResult, list[Undecided]]:
    """One trace's saved divergences re-decided; see the module docstring."""
    undecided: list[Undecided] = []
    calls: list[CallComparison] = []
    if trace.num_unwaived_calls > len(trace.unwaived):
        undecided.append(Undecided(trace.trace_path, None,
                                   f"{trace.num_unwaived_calls - len(trace.unwaived)} diverging "
                                   f"call(s) past the report's kept detail"))
    if policy is not None and old_policy is not None:
        paths = {(name, "float32") for name in OUTPUT_NAMES} | {
            (d.path, d.expected_dtype or "") for call in trace.divergences
            for d in call.tensor_divergences}
        tighter = sorted(path for path, dtype in paths
                         if _tighter(old_policy.tolerance_for(path, dtype),
                                     policy.tolerance_for(path, dtype)))
        if tighter:
            undecided.append(Undecided(trace.trace_path, None,
                                       f"tolerance tighter than the saved run's on "
                                       f"{', '.join(tighter)}: calls that agreed were not saved"))
    for call in trace.divergences:
        call = replace(call, waiver_id=None)
        if policy is not None:
            call = _retolerance(call, policy, undecided)
            if call is None:
                continue
        calls.append(judge(call) if judge is not None else call)
    dropped = max(trace.num_unwaived_calls - len(trace.unwaived), 0)
    return (replace(trace, divergences=tuple(calls),
                    num_unwaived_calls=sum(not c.waived for c in calls) + dropped), undecided)


def rejudge_run(run: RunResult, *, judge: Judge | None = None,
                policy: TolerancePolicy | None = None) -> Rejudged:
    """Re-decide every trace of a saved run under ``judge`` (waivers) and ``policy``."""
    old_policy = TolerancePolicy.from_mapping(run.tolerances) if policy is not None else None
    traces, undecided = [], []
    for trace in run.traces:
        judged, open_items = rejudge_trace(trace, judge, policy, old_policy)
        traces.append(judged)
        undecided.extend(open_items)
    tolerances = policy.to_dict() if policy is not None else run.tolerances
    return Rejudged(replace(run, traces=tuple(traces), tolerances=tolerances), tuple(undecided))
