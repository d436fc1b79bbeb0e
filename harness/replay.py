"""Replay one trace through a control and a candidate engine, call by call, and compare.

Each engine keeps its own cache state across the whole trace and is fed the recorded inputs
(cloned per engine). The two engines run interleaved, alternating which goes first, so their
timings see the same machine state. Memory stays flat: records stream from disk and only the
first ``max_kept`` diverging calls keep their detail.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from harness.calls import RecordedCall, RootCall, WeightsCall, call_from_record
from harness.compare import TolerancePolicy, compare_events, slot_differences
from harness.compare.tensors import NoiseFloor
from harness.engines import Engine, Observation, build_engine, check_isolation
from harness.recorder import TRACE_SCHEMA
from harness.results import CallComparison, EngineTiming, PoolStats, TraceResult
from harness.trace import TraceError, open_trace
from unizero.config import WorldModelConfig
from unizero.events import Clear, Lookup, Store, Trim

__all__ = ["ReplayOptions", "replay_trace", "candidate_name", "file_digest", "coverage_of",
           "lookup_counts", "COVERAGE_PATHS"]

COVERAGE_PATHS = ("root_first_step", "root_continuing", "hit_root_pool", "hit_recurrent_pool",
                  "miss", "forced_miss", "eviction", "trim", "clear_after_root", "clear_periodic",
                  "clear_episode_end", "clear_epoch", "weights_update", "reanalyze")

Judge = Callable[[CallComparison], CallComparison]


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how to judge it."""

    control: str = "legacy"
    candidate: str = "refactored"
    manager: str | None = None
    policy: TolerancePolicy = field(default_factory=TolerancePolicy)
    device: str = "cpu"
    self_check: bool = False
    max_kept: int = 200


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def coverage_of(recorded: RecordedCall, observation: Observation, counts: Counter) -> None:
    """Count the cache paths one call exercised, from the control's observation."""
    call = recorded.call
    if isinstance(call, RootCall):
        first = int(np.max(call.last_actions)) == -1
        counts["root_first_step" if first else "root_continuing"] += 1
    elif isinstance(call, WeightsCall):
        counts["weights_update" if not call.initial else "weights_initial"] += 1
    elif recorded.kind == "reanalyze":
        counts["reanalyze"] += 1
    for event in observation.events:
        if isinstance(event, Lookup):
            if event.hit:
                counts[f"hit_{event.pool}_pool"] += 1
            else:
                counts["forced_miss" if event.forced else "miss"] += 1
        elif isinstance(event, Store) and event.evicted is not None:
            counts["eviction"] += 1
        elif isinstance(event, Trim):
            counts["trim"] += 1
        elif isinstance(event, Clear):
            counts[f"clear_{event.reason}"] += 1


def lookup_counts(events: Iterable) -> tuple[int, int]:
    """``(hits, lookups)`` over one call's events; a forced miss is a lookup without a hit."""
    hits = lookups = 0
    for event in events:
        if isinstance(event, Lookup):
            lookups += 1
            hits += event.hit
    return hits, lookups


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


def _timings(samples: Mapping[tuple[str, str], Sequence[float]]) -> tuple[EngineTiming, ...]:
    out = []
    for (engine, kind), values in sorted(samples.items()):
        arr = np.asarray(values)
        out.append(EngineTiming(engine=engine, call_kind=kind, num_calls=len(values),
                                median_s=float(np.median(arr)), p95_s=float(np.percentile(arr, 95)),
                                total_s=float(arr.sum())))
    return tuple(out)


def _bit_identical(actual: object, expected: object) -> bool:
    return (isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)
            and actual.dtype == expected.dtype and actual.shape == expected.shape
            and actual.tobytes() == expected.tobytes())


def compare_call(trace: str, recorded: RecordedCall, control: Observation, candidate: Observation,
                 policy: TolerancePolicy, noise: NoiseFloor) -> tuple[CallComparison | None, int, float]:
    """Compare one call; returns (divergence or None, tensors compared, max abs error).

    The one comparator of replays and of the live shadow/validate runtime (:mod:`harness.shadow`).
    """
    error = None
    if control.error or candidate.error:
        if control.error != candidate.error:
            error = f"control: {control.error or 'ok'}; candidate: {candidate.error or 'ok'}"
    divergences, max_err = [], 0.0
    names = sorted(set(control.outputs) | set(candidate.outputs))
    for name in names:
        actual, expected = candidate.outputs.get(name), control.outputs.get(name)
        if _bit_identical(actual, expected):  # the common case: no statistics needed
            noise.observe(0.0)
            continue
        found = policy.compare(name, actual, expected, noise_floor=noise)
        if found is not None:
            divergences.append(found)
            if found.max_abs_err is not None and np.isfinite(found.max_abs_err):
                max_err = max(max_err, float(found.max_abs_err))
        elif name in control.outputs and name in candidate.outputs:
            diff = np.abs(np.asarray(candidate.outputs[name], dtype=np.float64)
                          - np.asarray(control.outputs[name], dtype=np.float64))
            if diff.size and np.isfinite(diff).all():
                max_err = max(max_err, float(diff.max()))
    event_divergence = compare_events(candidate.events, control.events)
    if error is None and not divergences and event_divergence is None:
        return None, len(names), max_err
    return (CallComparison(trace=trace, call_index=recorded.index, call_kind=recorded.kind,
                           env_ids=recorded.env_ids, tensor_divergences=tuple(divergences),
                           event_divergence=event_divergence, engine_error=error),
            len(names), max_err)


def candidate_name(options: ReplayOptions) -> str:
    """The name the candidate's timings and pool stats are recorded under."""
    if options.self_check:
        return f"{options.control}#2"
    return options.candidate if options.manager is None else f"{options.candidate}[{options.manager}]"


def _build_engines(config: WorldModelConfig, options: ReplayOptions) -> tuple[Engine, Engine]:
    control = build_engine(options.control, config, device=options.device)
    if options.self_check:
        candidate = build_engine(options.control, config, device=options.device)
        candidate.name = candidate_name(options)
    else:
        candidate = build_engine(options.candidate, config, device=options.device,
                                 manager=options.manager)
    check_isolation(control, candidate)
    return control, candidate


def replay_trace(path: str, options: ReplayOptions, *, judge: Judge | None = None,
                 progress: Callable[[int, int], None] | None = None) -> TraceResult:
    """Replay ``path`` through both engines and return its comparison.

    Raises:
        TraceError: the file is not a readable trace (named, with record and offset).
    """
    with open_trace(path) as reader:
        header = reader.header
        if not isinstance(header, dict) or header.get("schema") != TRACE_SCHEMA:
            found = header.get("schema") if isinstance(header, dict) else header
            raise TraceError(path, f"header.schema: expected {TRACE_SCHEMA!r}, got {found!r}")
        config = WorldModelConfig.from_dict(header.get("config"), where=f"{path}: header.config")
        control, candidate = _build_engines(config, options)
        noise, pools, coverage = NoiseFloor(), _PoolCounter(), Counter()
        # Per-call series in flat typed arrays: a few bytes per call, no object per sample.
        samples: dict[tuple[str, str], array] = defaultdict(lambda: array("d"))
        kept: list[CallComparison] = []
        num_unwaived = num_compared = num_slots = num_calls = 0
        max_errors = array("d")
        decisions: list[tuple[int, int, int, int]] = []
        for record in reader:
            recorded = call_from_record(record.index, record.kind, record.meta, record.arrays, where=path)
            pair = (control, candidate) if record.index % 2 == 0 else (candidate, control)
            first, second = (engine.apply(recorded) for engine in pair)
            obs_control, obs_candidate = (first, second) if pair[0] is control else (second, first)
            samples[(control.name, recorded.kind)].append(obs_control.elapsed_s)
            samples[(candidate.name, recorded.kind)].append(obs_candidate.elapsed_s)
            coverage_of(recorded, obs_control, coverage)
            pools.observe(control.name, obs_control.events)
            pools.observe(candidate.name, obs_candidate.events)
            num_slots += len(slot_differences(obs_candidate.events, obs_control.events))
            found, compared, max_err = compare_call(path, recorded, obs_control, obs_candidate,
                                                    options.policy, noise)
            num_compared += compared
            max_errors.append(max_err)
            decisions.append(lookup_counts(obs_control.events)
                             + lookup_counts(obs_candidate.events))
            num_calls += 1
            if found is not None:
                found = judge(found) if judge else found
                num_unwaived += not found.waived
                if len(kept) < options.max_kept:
                    kept.append(found)
            if progress:
                progress(num_calls, reader.num_records)
        notes = (reader.tail_note,) if reader.truncated else ()
    return TraceResult(trace_path=path, trace_digest=file_digest(path), num_calls=num_calls,
                       num_tensors_compared=num_compared, divergences=tuple(kept),
                       timings=_timings(samples), pool_stats=pools.result(),
                       self_check=options.self_check, noise_floor=noise.max_abs_diff,
                       num_slot_differences=num_slots, num_unwaived_calls=num_unwaived,
                       coverage=dict(coverage), notes=notes, truncated=reader.truncated,
                       max_errors=tuple(max_errors),
                       decisions=tuple(decisions))


def rejudge(result: TraceResult, judge: Judge) -> TraceResult:
    """Apply a (new) judge to a saved result's kept divergences."""
    judged = tuple(judge(replace(call, waiver_id=None)) for call in result.divergences)
    dropped = result.num_unwaived_calls - len(result.unwaived)
    return replace(result, divergences=judged,
                   num_unwaived_calls=sum(not c.waived for c in judged) + max(dropped, 0))
