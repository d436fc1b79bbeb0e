"""Live phases 1 and 2: run a candidate world model beside the control inside a real loop.

``ShadowWorldModel(control, candidate, mode=...)`` has the world-model API
(:class:`~harness.proxy.WorldModelProxy`), so a collector or training loop uses it in place of
its world model (``run_scenario`` does). Every call goes to the control and the control's result
is returned unchanged; the candidate gets a copy of the inputs, and both observations go to the
same accumulator a replay feeds (:class:`~harness.experiment.TraceAccumulator`).

* ``mode="shadow"`` (the guide's phase 1): divergences are recorded, never raised. The time the
  shadow adds (candidate call, input copies, comparison) is measured against the control's; past
  ``overhead_budget`` (after ``min_calls_before_budget`` calls) the candidate is switched off
  for good (its caches are stale from then on), with a warning and ``disabled_reason`` set.
* ``mode="validate"`` (the guide's phase 2, ``cache_validation_mode``): an unwaived divergence
  raises :class:`DivergenceError`, whose message is the rendered diff. Validation never
  switches itself off, so it takes no overhead budget.

An engine that raises is a divergence of class ``error``, as in a replay, except that the same
exception on both sides agrees (both refused the caller's input). If the control raised, the
comparison is recorded and then the control's own exception propagates: the caller's code must
see its own error, not the harness's account of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import torch

from harness.calls import Call, RecordedCall
from harness.compare import TolerancePolicy
from harness.engines import WorldModelEngine, check_isolation, clone_call
from harness.experiment import Judge, TraceAccumulator
from harness.proxy import WorldModelProxy, copy_array
from harness.results import CallComparison, RunResult, TraceResult

__all__ = ["ShadowWorldModel", "ShadowStats", "DivergenceError", "Mode"]

logger = logging.getLogger(__name__)
Mode = Literal["shadow", "validate"]


class DivergenceError(AssertionError):
    """The candidate diverged from the control in validate mode; the message is the diff.

    An ``AssertionError`` because it replaces the guide's ``assert torch.allclose(...)``.

    Attributes:
        comparison: the diverging call, as the replay reports it.
    """

    def __init__(self, comparison: CallComparison) -> None:
        from harness.report.console import DivergencePanel
        from harness.report.text import render_text
        self.comparison = comparison
        super().__init__(render_text(DivergencePanel(comparison, first=True)))


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """What the shadow has seen so far.

    Attributes:
        num_calls: calls made through the wrapper; ``num_compared`` of them ran the candidate.
        num_unwaived_calls, num_waived_calls: diverging calls.
        control_s: time in the control's calls.
        shadow_s: time the shadow added (candidate call, input copies, comparison).
        overhead: ``shadow_s / control_s`` (None before any timed call).
        disabled_reason: why the candidate was switched off, None while it runs.
    """

    num_calls: int
    num_compared: int
    num_unwaived_calls: int
    num_waived_calls: int
    control_s: float
    shadow_s: float
    overhead: float | None
    disabled_reason: str | None


class ShadowWorldModel(WorldModelProxy):
    """A control world model with a candidate running beside it (see the module docstring).

    Args:
        control: the world model whose results are returned (legacy in phases 1-2).
        candidate: the world model under test; its weights are set to the control's (copied).
        mode: ``shadow`` (record) or ``validate`` (raise on an unwaived divergence).
        overhead_budget: shadow mode only: the largest ``shadow_s / control_s`` tolerated;
            None for no limit. The candidate does the control's work again, so 1.0 is the floor.
        min_calls_before_budget: calls before the budget is enforced (first calls are slow).
        policy: tensor tolerances (the replay's defaults when None).
        judge: marks expected divergences waived, e.g. ``load_waivers(None).judge``.
        label: the name divergences carry as their trace (waiver ``trace`` globs match it).
        max_kept: diverging calls kept in detail (all are counted).
    """

    def __init__(self, control: Any, candidate: Any, *, mode: Mode = "shadow",
                 overhead_budget: float | None = None, min_calls_before_budget: int = 20,
                 policy: TolerancePolicy | None = None, judge: Judge | None = None,
                 label: str = "live", max_kept: int = 200) -> None:
        if mode not in ("shadow", "validate"):
            raise ValueError(f"mode: expected 'shadow' or 'validate', got {mode!r}")
        if overhead_budget is not None and mode == "validate":
            raise ValueError("overhead_budget: validate mode checks every call and never "
                             "switches itself off; use mode='shadow' for a budget")
        if overhead_budget is not None and not overhead_budget > 0:
            raise ValueError(f"overhead_budget: expected a positive ratio, got {overhead_budget!r}")
        super().__init__(self._run, control)
        self.control, self.candidate, self.mode = control, candidate, mode
        self.overhead_budget = overhead_budget
        self.min_calls_before_budget = min_calls_before_budget
        self.policy = policy or TolerancePolicy()
        self.label = label
        candidate.load_weights({k: torch.as_tensor(copy_array(v))
                                for k, v in control.net.state_dict().items()})
        self._control = WorldModelEngine("control", control)
        self._candidate = WorldModelEngine("candidate", candidate)
        check_isolation(self._control, self._candidate)
        self._accumulator = TraceAccumulator(label, "control", "candidate", self.policy,
                                             judge=judge, max_kept=max_kept, recorded=False)
        self._pending_events: list = []
        self._num_calls = 0
        self._control_s = self._shadow_s = 0.0
        self._started = datetime.now(timezone.utc)
        self.disabled_reason: str | None = None

    def record_events(self, on: bool = True) -> None:
        """Events are always recorded (the comparison needs them); kept for API parity."""

    def take_events(self) -> list:
        """The control's cache events since the last call, so a recorder can wrap the shadow."""
        events, self._pending_events = self._pending_events, []
        return events

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None

    @property
    def divergences(self) -> tuple[CallComparison, ...]:
        """The first ``max_kept`` diverging calls, waived or not, in call order."""
        return self._accumulator.divergences

    def stats(self) -> ShadowStats:
        acc = self._accumulator
        return ShadowStats(num_calls=self._num_calls, num_compared=acc.num_calls,
                           num_unwaived_calls=acc.num_unwaived, num_waived_calls=acc.num_waived,
                           control_s=self._control_s, shadow_s=self._shadow_s,
                           overhead=self._shadow_s / self._control_s if self._control_s > 0 else None,
                           disabled_reason=self.disabled_reason)

    def _run(self, call: Call) -> dict[str, torch.Tensor]:
        index = self._num_calls
        self._num_calls += 1
        outputs, control, control_exc = self._control.run(call)
        self._control_s += control.elapsed_s
        self._pending_events.extend(control.events)
        if not self.disabled:
            shadow_start = time.perf_counter()
            candidate = self._candidate.run(clone_call(call))[1]
            found = self._accumulator.observe(RecordedCall(index, call, {}, ()), control, candidate)
            self._shadow_s += time.perf_counter() - shadow_start
            if control_exc is None and found is not None and not found.waived \
                    and self.mode == "validate":
                raise DivergenceError(found)
            self._check_budget()
        if control_exc is not None:
            raise control_exc
        assert outputs is not None
        return outputs

    def _check_budget(self) -> None:
        budget, num_calls = self.overhead_budget, self._num_calls
        if budget is None or num_calls < self.min_calls_before_budget or self._control_s <= 0:
            return
        overhead = self._shadow_s / self._control_s
        if overhead > budget:
            self.disabled_reason = (
                f"shadow overhead {overhead:.2f}x the control's time over {num_calls} "
                f"calls exceeds the budget of {budget:g}x; the candidate is off from call "
                f"{num_calls} on (its caches are stale: it is not switched back on)")
            logger.warning("ShadowWorldModel %s: %s", self.label, self.disabled_reason)
            self._accumulator.note(self.disabled_reason)

    def trace_result(self) -> TraceResult:
        """The run so far as a replay result, for the console, Markdown and HTML reports."""
        return self._accumulator.result(trace_path=self.label,
                                        trace_digest="live run (no trace file)")

    def run_result(self) -> RunResult:
        """One-trace :class:`RunResult` (engines named ``control`` and ``candidate``)."""
        return RunResult(created_at=self._started, control_engine="control",
                         candidate_engine="candidate", manager_spec=None,
                         tolerances=self.policy.to_dict(), traces=(self.trace_result(),))
