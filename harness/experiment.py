"""The accumulator of one comparison: judges, waives, counts, times and collects coverage.

GitHub Scientist's ``Result``: every observed call pair goes through :meth:`observe`, which
sorts it into matched / mismatched (waived or not) in one place. The trace replay
(:mod:`harness.replay`) and the live shadow/validate wrapper (:mod:`harness.shadow`) both feed
one of these and read their :class:`~harness.results.TraceResult` from it, so the two drivers
cannot judge, count or time differently.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Callable, Iterable, Mapping

import numpy as np

from harness.causenames import LATENT_DRIFT, STORAGE_ALIASING
from harness.calls import RecordedCall
from harness.compare import TolerancePolicy, compare_events, slot_differences
from harness.compare.call import CallVerdict, compare_observations
from harness.compare.tensors import NoiseFloor
from harness.coverage import CoverageCounter
from harness.observation import Observation
from harness.results import (CallComparison, EngineTiming, PoolStats, ReferenceDistance,
                             TraceResult)
from reference.distance import max_distance
from unizero.events import CacheEvent, Lookup, Store

__all__ = ["TraceAccumulator", "Judge", "Explain", "lookup_counts"]

Judge = Callable[[CallComparison], CallComparison]
Explain = Callable[[RecordedCall, Observation], str]
"""Labels a diverging call's cause from the candidate's observation (:mod:`harness.causes`)."""


def lookup_counts(events: Iterable) -> tuple[int, int]:
    """``(hits, lookups)`` over one call's events; a forced miss is a lookup without a hit."""
    hits = lookups = 0
    for event in events:
        if isinstance(event, Lookup):
            lookups += 1
            hits += event.hit
    return hits, lookups


def _without_keys(events: Iterable[CacheEvent]) -> list[CacheEvent]:
    """The events with every cache key blanked (which keys, not which decisions)."""
    out: list[CacheEvent] = []
    for event in events:
        if isinstance(event, Lookup):
            event = replace(event, key=0)
        elif isinstance(event, Store):
            event = replace(event, key=0, evicted=None if event.evicted is None else 0)
        out.append(event)
    return out


def _key_drift(verdict: CallVerdict, control: Observation, candidate: Observation,
               drifted: bool) -> bool:
    """Cause ``latent-drift``: the outputs agree within tolerance and the decisions agree in
    everything but the keys, which differ because the latents they hash differ in their last
    bits: the latents fed in (``drifted``) or the latents put out (the keys stored)."""
    if verdict.tensor_divergences or verdict.engine_error is not None \
            or verdict.event_divergence is None:
        return False
    a, b = control.outputs.get("latent"), candidate.outputs.get("latent")
    outputs_drifted = (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                       and a.tobytes() != b.tobytes())
    return (drifted or outputs_drifted) and compare_events(
        _without_keys(candidate.events), _without_keys(control.events)) is None


class _PoolCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], Counter] = defaultdict(Counter)

    def observe(self, engine: str, events: Iterable) -> None:
        for event in events:
            if isinstance(event, Lookup) and not event.forced:
                # A lookup queries the root pool first, then (recurrent path) the recurrent pool.
                root = self.counts[(engine, "root")]
                root["queries"] += 1
                root["hits" if event.pool == "root" else "misses"] += 1
                if event.path == "recurrent" and event.pool != "root":
                    recur = self.counts[(engine, "recurrent")]
                    recur["queries"] += 1
                    recur["hits" if event.pool == "recurrent" else "misses"] += 1
            elif isinstance(event, Store) and event.evicted is not None:
                self.counts[(engine, event.pool)]["evictions"] += 1

    def result(self) -> tuple[PoolStats, ...]:
        return tuple(PoolStats(engine=engine, pool=pool, num_hits=c["hits"], num_misses=c["misses"],
                               num_queries=c["queries"], num_evictions=c["evictions"])
                     for (engine, pool), c in sorted(self.counts.items()))


def _timings(samples: Mapping[tuple[str, str], array]) -> tuple[EngineTiming, ...]:
    out = []
    for (engine, kind), values in sorted(samples.items()):
        arr = np.asarray(values)
        out.append(EngineTiming(engine=engine, call_kind=kind, num_calls=len(values),
                                median_s=float(np.median(arr)), p95_s=float(np.percentile(arr, 95)),
                                total_s=float(arr.sum())))
    return tuple(out)


class TraceAccumulator:
    """Collects the comparison of one stream of calls (a trace, or a live run).

    Args:
        label: the name divergences carry as their trace (waiver ``trace`` globs match it).
        control, candidate: engine names for timings and pool statistics.
        policy: tensor tolerances and NaN policy.
        judge: marks expected divergences waived (e.g. ``WaiverSet.judge``); None waives nothing.
        max_kept: diverging calls kept in detail; all are counted.
        recorded: the calls were recorded as succeeding (a replay), so an exception on both
            sides still diverges; False for a live run, where the same exception agrees.
        explain: labels each divergence's cause (before waivers judge it, so a waiver scoped
            by cause can match); None leaves causes unlabelled.
    """

    def __init__(self, label: str, control: str, candidate: str, policy: TolerancePolicy, *,
                 judge: Judge | None = None, max_kept: int = 200, recorded: bool = True,
                 explain: Explain | None = None) -> None:
        self.label, self.control, self.candidate = label, control, candidate
        self.explain = explain
        self.recorded = recorded
        self.policy, self.judge, self.max_kept = policy, judge, max_kept
        self.noise = NoiseFloor()
        self._pools = _PoolCounter()
        self._coverage = CoverageCounter()
        # Per-call series in flat typed arrays: a few bytes per call, no object per sample.
        self._samples: dict[tuple[str, str], array] = defaultdict(lambda: array("d"))
        self._max_errors = array("d")
        self._decisions: list[tuple[int, int, int, int]] = []
        self._kept: list[CallComparison] = []
        self._notes: list[str] = []
        self.num_calls = self.num_tensors = self.num_slots = 0
        self.num_unwaived = self.num_waived = 0

    def observe(self, recorded: RecordedCall, control: Observation, candidate: Observation, *,
                drifted: bool = False,
                reference: Observation | None = None) -> CallComparison | None:
        """Judge one call; return its (judged) divergence, None when the two agree.

        Args:
            drifted: the two engines were fed latents that agree within tolerance but not in
                every bit (closed loop: each its own earlier output); see :func:`_key_drift`.
            reference: the uncached reference's observation of the call: a divergence then
                records how far each side is from it.
        """
        self.num_calls += 1
        self._samples[(self.control, recorded.kind)].append(control.elapsed_s)
        self._samples[(self.candidate, recorded.kind)].append(candidate.elapsed_s)
        self._coverage.observe(recorded, control.events)
        self._pools.observe(self.control, control.events)
        self._pools.observe(self.candidate, candidate.events)
        self.num_slots += len(slot_differences(candidate.events, control.events))
        self._decisions.append(lookup_counts(control.events) + lookup_counts(candidate.events))
        verdict = compare_observations(control, candidate, self.policy, self.noise,
                                       same_error_agrees=not self.recorded)
        self.num_tensors += verdict.num_tensors
        self._max_errors.append(verdict.max_abs_err)
        findings = control.findings + candidate.findings
        if not verdict.diverged and not findings:
            return None
        cause = (STORAGE_ALIASING if findings
                 else LATENT_DRIFT if _key_drift(verdict, control, candidate, drifted)
                 else self.explain(recorded, candidate) if self.explain is not None else None)
        found = CallComparison(trace=self.label, call_index=recorded.index,
                               call_kind=recorded.kind, env_ids=recorded.env_ids,
                               tensor_divergences=verdict.tensor_divergences,
                               event_divergence=verdict.event_divergence,
                               engine_error=verdict.engine_error, cause=cause,
                               findings=findings,
                               reference=None if reference is None else ReferenceDistance(
                                   max_distance(control.outputs, reference.outputs),
                                   max_distance(candidate.outputs, reference.outputs)))
        if self.judge is not None:
            found = self.judge(found)
        if found.waived:
            self.num_waived += 1
        else:
            self.num_unwaived += 1
        if len(self._kept) < self.max_kept:
            self._kept.append(found)
        return found

    def note(self, text: str) -> None:
        """A one-line remark for the report (a truncated trace, a switched-off shadow, ...)."""
        self._notes.append(text)

    @property
    def divergences(self) -> tuple[CallComparison, ...]:
        return tuple(self._kept)

    def result(self, *, trace_path: str, trace_digest: str, self_check: bool = False,
               truncated: bool = False) -> TraceResult:
        return TraceResult(trace_path=trace_path, trace_digest=trace_digest,
                           num_calls=self.num_calls, num_tensors_compared=self.num_tensors,
                           divergences=tuple(self._kept), timings=_timings(self._samples),
                           pool_stats=self._pools.result(), self_check=self_check,
                           noise_floor=self.noise.max_abs_diff,
                           num_slot_differences=self.num_slots,
                           num_unwaived_calls=self.num_unwaived, coverage=dict(self._coverage.counts),
                           notes=tuple(self._notes), truncated=truncated,
                           max_errors=tuple(self._max_errors), decisions=tuple(self._decisions))
