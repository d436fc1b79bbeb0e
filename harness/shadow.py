"""Live phases 1 and 2: run a candidate world model beside the control inside a real loop.

``ShadowWorldModel(control, candidate, mode=...)`` has the world-model API, so a collector or
training loop uses it in place of its world model (``run_scenario`` does). Every call goes to
the control with the caller's own arguments and the control's result is returned unchanged; the
candidate gets a copy of the inputs, and both calls are compared by the replay's comparator
(:func:`harness.replay.compare_call`: tensors with the tolerance policy, cache decisions).

* ``mode="shadow"`` (the guide's phase 1): divergences are recorded, never raised. The time the
  shadow adds (candidate call, input copies, comparison) is measured against the control's; past
  ``overhead_budget`` (after ``min_calls_before_budget`` calls) the candidate is switched off
  for good (its caches are stale from then on), with a warning and ``disabled_reason`` set.
* ``mode="validate"`` (the guide's phase 2, ``cache_validation_mode``): an unwaived divergence
  raises :class:`DivergenceError`, whose message is the rendered diff. Validation never
  switches itself off, so it takes no overhead budget.

If the control raises, the candidate still runs and is compared (the same exception on both
sides is agreement), then the control's exception propagates.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from harness.calls import (Call, ClearCall, ReanalyzeCall, RecordedCall, RecurrentCall, RootCall,
                           WeightsCall, invoke)
from harness.compare import TolerancePolicy
from harness.compare.tensors import NoiseFloor
from harness.engines import Observation, check_isolation
from harness.replay import compare_call, coverage_of
from harness.results import CallComparison, EngineTiming, RunResult, TraceResult
from unizero.world_model import InferenceOutput

__all__ = ["ShadowWorldModel", "ShadowStats", "DivergenceError", "Mode"]

logger = logging.getLogger(__name__)
Mode = Literal["shadow", "validate"]
Judge = Callable[[CallComparison], CallComparison]


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


def _copy(value: Any, dtype: Any = None) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.array(arr, dtype=dtype, copy=True)


def _arrays(result: Any) -> dict[str, np.ndarray]:
    if not isinstance(result, InferenceOutput):
        return {}
    return {name: value.detach().cpu().numpy() for name, value in result.as_dict().items()}


class ShadowWorldModel:
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
        self.control, self.candidate, self.mode = control, candidate, mode
        self.overhead_budget = overhead_budget
        self.min_calls_before_budget = min_calls_before_budget
        self.policy = policy or TolerancePolicy()
        self.judge, self.label, self.max_kept = judge, label, max_kept
        candidate.load_weights({k: v.detach().clone() for k, v in control.net.state_dict().items()})
        check_isolation(SimpleNamespace(name="control", model=control),
                        SimpleNamespace(name="candidate", model=candidate))
        control.record_events(True)
        candidate.record_events(True)
        control.take_events()
        candidate.take_events()
        self._noise = NoiseFloor()
        self._kept: list[CallComparison] = []
        self._pending_events: list = []
        self._coverage: Counter = Counter()
        self._samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._counts = Counter()
        self._control_s = self._shadow_s = 0.0
        self._started = datetime.now(timezone.utc)
        self.disabled_reason: str | None = None

    # ------------------------------------------------------------------ world-model API
    @property
    def net(self) -> torch.nn.Module:
        return self.control.net

    @property
    def config(self) -> Any:
        return self.control.config

    @property
    def device(self) -> torch.device:
        return self.control.device

    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        current = _copy(current_obs, np.float32)
        rows = current.shape[0] if current.ndim else 1
        call = RootCall(last_obs=_copy(last_obs, np.float32),
                        last_actions=_copy(last_actions, np.int64), current_obs=current,
                        start_pos=_copy(np.zeros(rows) if start_pos is None else start_pos, np.int64))
        return self._run(call, lambda: self.control.initial_inference(
            last_obs, last_actions, current_obs, start_pos))

    def recurrent_inference(self, latent_state: np.ndarray, actions: Any, simulation_index: int = 0,
                            search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        rows = np.asarray(latent_state).shape[0]
        call = RecurrentCall(
            latent_state=np.array(latent_state, copy=True), actions=_copy(actions, np.int64),
            search_depth=_copy(np.zeros(rows) if search_depth is None else search_depth, np.int64),
            start_pos=_copy(np.zeros(rows) if start_pos is None else start_pos, np.int64),
            simulation_index=int(simulation_index))
        return self._run(call, lambda: self.control.recurrent_inference(
            latent_state, actions, simulation_index, search_depth, start_pos))

    def clear_caches(self, reason: str = "clear_caches") -> None:
        self._run(ClearCall(op="all", reason=reason), lambda: self.control.clear_caches(reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        self._run(ClearCall(op="root_env", reason=reason, env=int(env_id)),
                  lambda: self.control.clear_root_cache(env_id, reason))

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        self._run(ClearCall(op="epoch", reason="epoch"),
                  self.control.recompute_pos_emb_diff_and_clear_cache)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        state = {name: _copy(value) for name, value in state_dict.items()}
        self._run(WeightsCall(state=state), lambda: self.control.load_weights(state_dict))

    def set_reanalyze_phase(self, on: bool) -> None:
        self._run(ReanalyzeCall(on=bool(on)), lambda: self.control.set_reanalyze_phase(on))

    def record_events(self, on: bool = True) -> None:
        """Events are always recorded (the comparison needs them); kept for API parity."""

    def take_events(self) -> list:
        """The control's cache events since the last call, so a recorder can wrap the shadow."""
        events, self._pending_events = self._pending_events, []
        return events

    # ------------------------------------------------------------------ the shadow
    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None

    @property
    def divergences(self) -> tuple[CallComparison, ...]:
        """The first ``max_kept`` diverging calls, waived or not, in call order."""
        return tuple(self._kept)

    def stats(self) -> ShadowStats:
        counts = self._counts
        return ShadowStats(num_calls=counts["calls"], num_compared=counts["compared"],
                           num_unwaived_calls=counts["unwaived"], num_waived_calls=counts["waived"],
                           control_s=self._control_s, shadow_s=self._shadow_s,
                           overhead=self._shadow_s / self._control_s if self._control_s > 0 else None,
                           disabled_reason=self.disabled_reason)

    def _run(self, call: Call, control_fn: Callable[[], Any]) -> Any:
        index = self._counts["calls"]
        self._counts["calls"] += 1
        start = time.perf_counter()
        try:
            result, control_error = control_fn(), None
        except Exception as exc:  # noqa: BLE001 - compared, then re-raised below
            result, control_error = None, exc
        control_s = time.perf_counter() - start
        self._control_s += control_s
        events = tuple(self.control.take_events())
        self._pending_events.extend(events)
        if self.disabled:
            if control_error is not None:
                raise control_error
            return result
        shadow_start = time.perf_counter()
        control = Observation(_arrays(result), events, control_s,
                              error=None if control_error is None
                              else f"{type(control_error).__name__}: {control_error}")
        candidate = self._run_candidate(call)
        found = self._compare(RecordedCall(index=index, call=call, outputs={}, events=()),
                              control, candidate)
        self._samples[("control", call.kind)].append(control_s)
        self._samples[("candidate", call.kind)].append(candidate.elapsed_s)
        self._shadow_s += time.perf_counter() - shadow_start
        if found is not None and not found.waived and self.mode == "validate":
            raise DivergenceError(found) from control_error
        if control_error is not None:
            raise control_error
        self._check_budget()
        return result

    def _run_candidate(self, call: Call) -> Observation:
        start = time.perf_counter()
        try:
            outputs = invoke(self.candidate, call)
        except Exception as exc:  # noqa: BLE001 - a candidate failure is an observation
            self.candidate.take_events()
            return Observation({}, (), time.perf_counter() - start,
                               error=f"{type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - start
        arrays = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
        return Observation(arrays, tuple(self.candidate.take_events()), elapsed)

    def _compare(self, recorded: RecordedCall, control: Observation,
                 candidate: Observation) -> CallComparison | None:
        self._counts["compared"] += 1
        coverage_of(recorded, control, self._coverage)
        found, num_tensors, _ = compare_call(self.label, recorded, control, candidate,
                                             self.policy, self._noise)
        self._counts["tensors"] += num_tensors
        if found is None:
            return None
        found = self.judge(found) if self.judge else found
        self._counts["waived" if found.waived else "unwaived"] += 1
        if len(self._kept) < self.max_kept:
            self._kept.append(found)
        return found

    def _check_budget(self) -> None:
        budget, counts = self.overhead_budget, self._counts
        if budget is None or counts["calls"] < self.min_calls_before_budget or self._control_s <= 0:
            return
        overhead = self._shadow_s / self._control_s
        if overhead > budget:
            self.disabled_reason = (
                f"shadow overhead {overhead:.2f}x the control's time over {counts['calls']} "
                f"calls exceeds the budget of {budget:g}x; the candidate is off from call "
                f"{counts['calls']} on (its caches are stale: it is not switched back on)")
            logger.warning("ShadowWorldModel %s: %s", self.label, self.disabled_reason)

    # ------------------------------------------------------------------ reports
    def trace_result(self) -> TraceResult:
        """The run so far as a replay result, for the console, Markdown and HTML reports."""
        timings = []
        for (engine, kind), values in sorted(self._samples.items()):
            arr = np.asarray(values)
            timings.append(EngineTiming(engine=engine, call_kind=kind, num_calls=len(values),
                                        median_s=float(np.median(arr)),
                                        p95_s=float(np.percentile(arr, 95)),
                                        total_s=float(arr.sum())))
        notes = (self.disabled_reason,) if self.disabled_reason else ()
        return TraceResult(trace_path=self.label, trace_digest="live run (no trace file)",
                           num_calls=self._counts["compared"],
                           num_tensors_compared=self._counts["tensors"],
                           divergences=tuple(self._kept), timings=tuple(timings),
                           num_unwaived_calls=self._counts["unwaived"],
                           noise_floor=self._noise.max_abs_diff,
                           coverage=dict(self._coverage), notes=notes)

    def run_result(self) -> RunResult:
        """One-trace :class:`RunResult` (engines named ``control`` and ``candidate``)."""
        return RunResult(created_at=self._started, control_engine="control",
                         candidate_engine="candidate", manager_spec=None,
                         tolerances=self.policy.to_dict(), traces=(self.trace_result(),))
