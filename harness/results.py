"""The one result model of a comparison run: frozen records with a JSON round trip.

A run (:class:`RunResult`) holds one :class:`TraceResult` per replayed trace; a trace holds the
diverging calls (:class:`CallComparison`) in call order, each with its tensor divergences and
its decision (cache event) divergence. Renderers (console, Markdown, HTML) and the gate read
these records; nothing here formats for people beyond the one-line event summary the
comparator writes.

Every record has ``to_dict()`` returning JSON-native data (``json.dumps(..., allow_nan=False)``
accepts it) and ``from_dict()`` inverting it, so a saved run can be merged and re-judged.
Non-finite floats (a NaN or inf found at the worst index) are written as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``. Derived values (``classification``, ``waived``, ``ok``,
``exit_code``, ``hit_rate``, ``first_divergence``) are written for readers of the JSON and
ignored on reading. Naming: *expected* is the control engine, *actual* the candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping

__all__ = ["SCHEMA_VERSION", "EXIT_EQUIVALENT", "EXIT_DIVERGENCE", "TensorDivergence",
           "SlotDifference", "EventDivergence", "CallComparison", "EngineTiming", "PoolStats",
           "TraceResult", "RunResult"]

SCHEMA_VERSION = "kvmigrate.compare/1"
EXIT_EQUIVALENT = 0
EXIT_DIVERGENCE = 1

TensorDivergenceKind = Literal["missing", "dtype", "shape", "value"]
Classification = Literal["tensor", "decision", "both"]
Scalar = float | int | bool

_NON_FINITE_TO_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_NON_FINITE_FROM_JSON = {text: float(name) for name, text in _NON_FINITE_TO_JSON.items()}


def _number_to_json(value: Scalar | None) -> Scalar | str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE_TO_JSON[repr(value)]
    return value


def _number_from_json(value: Scalar | str | None) -> Scalar | None:
    if isinstance(value, str):
        if value not in _NON_FINITE_FROM_JSON:
            raise ValueError(f"expected a number or one of {sorted(_NON_FINITE_FROM_JSON)}, "
                             f"got {value!r}")
        return _NON_FINITE_FROM_JSON[value]
    return value


def _get(data: Mapping[str, Any], key: str, record: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise ValueError(f"{record} record is missing field {key!r}; "
                         f"it has {sorted(data)}") from None


def _shape_or_none(value: list[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


@dataclass(frozen=True, slots=True)
class TensorDivergence:
    """One tensor that differs between candidate (actual) and control (expected).

    ``kind`` says which check failed first, in order: ``missing`` (the path exists on one side
    only; that side's dtype and shape are None), ``dtype``, ``shape``, ``value``. Error
    statistics are set for ``value`` divergences only and cover the mismatched elements only.

    Attributes:
        path: tensor path, e.g. ``latent`` or ``kv.layer1.k[env3]``.
        kind: the failed check.
        actual_dtype, expected_dtype: dtype names (``float32``, ``bfloat16``, ``int64``...).
        actual_shape, expected_shape: shapes as compared (the valid region for KV tensors).
        rtol, atol: the tolerance applied.
        num_mismatched: elements outside tolerance.
        num_elements: elements compared.
        num_nonfinite: mismatched elements whose error is not finite (a NaN or inf on one side,
            or infs of opposite sign); they are excluded from the error statistics.
        max_abs_err, mean_abs_err: ``|a - e|`` over mismatched elements with a finite error.
        max_rel_err, mean_rel_err: ``|a - e| / |e|`` over those with ``e != 0`` as well.
        worst_flat_index, worst_index: the mismatched element with the largest absolute error
            (a non-finite error ranks first; ties go to the lowest index), flat and per-dim.
        actual_value, expected_value: the two values there.
    """

    path: str
    kind: TensorDivergenceKind
    actual_dtype: str | None
    expected_dtype: str | None
    actual_shape: tuple[int, ...] | None
    expected_shape: tuple[int, ...] | None
    rtol: float
    atol: float
    num_mismatched: int = 0
    num_elements: int = 0
    num_nonfinite: int = 0
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    max_rel_err: float | None = None
    mean_rel_err: float | None = None
    worst_flat_index: int | None = None
    worst_index: tuple[int, ...] | None = None
    actual_value: Scalar | None = None
    expected_value: Scalar | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "kind": self.kind,
            "actual_dtype": self.actual_dtype, "expected_dtype": self.expected_dtype,
            "actual_shape": None if self.actual_shape is None else list(self.actual_shape),
            "expected_shape": None if self.expected_shape is None else list(self.expected_shape),
            "rtol": self.rtol, "atol": self.atol,
            "num_mismatched": self.num_mismatched, "num_elements": self.num_elements,
            "num_nonfinite": self.num_nonfinite,
            "max_abs_err": self.max_abs_err, "mean_abs_err": self.mean_abs_err,
            "max_rel_err": self.max_rel_err, "mean_rel_err": self.mean_rel_err,
            "worst_flat_index": self.worst_flat_index,
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "actual_value": _number_to_json(self.actual_value),
            "expected_value": _number_to_json(self.expected_value),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorDivergence:
        name = cls.__name__
        return cls(
            path=_get(data, "path", name), kind=_get(data, "kind", name),
            actual_dtype=_get(data, "actual_dtype", name),
            expected_dtype=_get(data, "expected_dtype", name),
            actual_shape=_shape_or_none(_get(data, "actual_shape", name)),
            expected_shape=_shape_or_none(_get(data, "expected_shape", name)),
            rtol=_get(data, "rtol", name), atol=_get(data, "atol", name),
            num_mismatched=_get(data, "num_mismatched", name),
            num_elements=_get(data, "num_elements", name),
            num_nonfinite=_get(data, "num_nonfinite", name),
            max_abs_err=_get(data, "max_abs_err", name),
            mean_abs_err=_get(data, "mean_abs_err", name),
            max_rel_err=_get(data, "max_rel_err", name),
            mean_rel_err=_get(data, "mean_rel_err", name),
            worst_flat_index=_get(data, "worst_flat_index", name),
            worst_index=_shape_or_none(_get(data, "worst_index", name)),
            actual_value=_number_from_json(_get(data, "actual_value", name)),
            expected_value=_number_from_json(_get(data, "expected_value", name)),
        )


@dataclass(frozen=True, slots=True)
class SlotDifference:
    """Information only: the same store landed in different slots in the two engines."""

    env: int
    pool: str
    key: int
    control_slot: int
    candidate_slot: int

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "pool": self.pool, "key": self.key,
                "control_slot": self.control_slot, "candidate_slot": self.candidate_slot}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlotDifference:
        name = cls.__name__
        return cls(env=_get(data, "env", name), pool=_get(data, "pool", name),
                   key=_get(data, "key", name), control_slot=_get(data, "control_slot", name),
                   candidate_slot=_get(data, "candidate_slot", name))


@dataclass(frozen=True, slots=True)
class EventDivergence:
    """The cache decisions of one call differ.

    Attributes:
        summary: one line naming the first differing decision, e.g.
            ``env 1 lookup key 0x1a2b3c4d…: control hit (recurrent pool), candidate miss``.
        first_index: position of the first differing event in the two event lists.
        num_control_events, num_candidate_events: list lengths.
        deepdiff: DeepDiff (control as t1, candidate as t2, slots left out) as JSON-native data;
            read-only by convention.
        slot_differences: stores that agree on every decision but landed in other slots.
    """

    summary: str
    first_index: int
    num_control_events: int
    num_candidate_events: int
    deepdiff: dict[str, Any]
    slot_differences: tuple[SlotDifference, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "first_index": self.first_index,
                "num_control_events": self.num_control_events,
                "num_candidate_events": self.num_candidate_events, "deepdiff": self.deepdiff,
                "slot_differences": [slot.to_dict() for slot in self.slot_differences]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventDivergence:
        name = cls.__name__
        return cls(summary=_get(data, "summary", name),
                   first_index=_get(data, "first_index", name),
                   num_control_events=_get(data, "num_control_events", name),
                   num_candidate_events=_get(data, "num_candidate_events", name),
                   deepdiff=_get(data, "deepdiff", name),
                   slot_differences=tuple(SlotDifference.from_dict(item)
                                          for item in _get(data, "slot_differences", name)))


@dataclass(frozen=True, slots=True)
class CallComparison:
    """One diverging call: its tensor divergences and/or its decision divergence.

    Attributes:
        trace: name of the trace the call belongs to.
        call_index: position of the call in the trace.
        call_kind: ``root``, ``recurrent``, ``clear`` or ``weights``.
        env_ids: envs the call touched.
        tensor_divergences: in comparison order.
        event_divergence: the decision diff, None when decisions agree.
        waiver_id: id of the waiver that covers this divergence, None when unwaived.
        engine_error: an exception one engine raised and the other did not (or a different one).
    """

    trace: str
    call_index: int
    call_kind: str
    env_ids: tuple[int, ...]
    tensor_divergences: tuple[TensorDivergence, ...] = ()
    event_divergence: EventDivergence | None = None
    waiver_id: str | None = None
    engine_error: str | None = None

    def __post_init__(self) -> None:
        if not self.tensor_divergences and self.event_divergence is None and self.engine_error is None:
            raise ValueError(f"CallComparison for {self.trace} call {self.call_index} has no "
                             f"divergence; record only diverging calls")

    @property
    def waived(self) -> bool:
        return self.waiver_id is not None

    @property
    def classification(self) -> Classification:
        """``error``, ``tensor``, ``decision`` or ``both``: which comparisons failed."""
        if self.engine_error is not None:
            return "error"
        if self.event_divergence is None:
            return "tensor"
        return "both" if self.tensor_divergences else "decision"

    def to_dict(self) -> dict[str, Any]:
        return {"trace": self.trace, "call_index": self.call_index, "call_kind": self.call_kind,
                "env_ids": list(self.env_ids),
                "classification": self.classification,
                "tensor_divergences": [item.to_dict() for item in self.tensor_divergences],
                "event_divergence": (None if self.event_divergence is None
                                     else self.event_divergence.to_dict()),
                "waived": self.waived, "waiver_id": self.waiver_id,
                "engine_error": self.engine_error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallComparison:
        name = cls.__name__
        event = _get(data, "event_divergence", name)
        return cls(trace=_get(data, "trace", name), call_index=_get(data, "call_index", name),
                   call_kind=_get(data, "call_kind", name),
                   env_ids=tuple(_get(data, "env_ids", name)),
                   tensor_divergences=tuple(TensorDivergence.from_dict(item) for item
                                            in _get(data, "tensor_divergences", name)),
                   event_divergence=None if event is None else EventDivergence.from_dict(event),
                   waiver_id=_get(data, "waiver_id", name),
                   engine_error=data.get("engine_error"))


@dataclass(frozen=True, slots=True)
class EngineTiming:
    """Wall time of one engine on one call kind, over ``num_calls`` calls."""

    engine: str
    call_kind: str
    num_calls: int
    median_s: float
    p95_s: float
    total_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "call_kind": self.call_kind, "num_calls": self.num_calls,
                "median_s": self.median_s, "p95_s": self.p95_s, "total_s": self.total_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineTiming:
        name = cls.__name__
        return cls(engine=_get(data, "engine", name), call_kind=_get(data, "call_kind", name),
                   num_calls=_get(data, "num_calls", name), median_s=_get(data, "median_s", name),
                   p95_s=_get(data, "p95_s", name), total_s=_get(data, "total_s", name))


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Cache pool counters of one engine over one trace."""

    engine: str
    pool: str
    num_hits: int
    num_misses: int
    num_queries: int
    num_evictions: int

    @property
    def hit_rate(self) -> float | None:
        """``num_hits / num_queries``; None when the pool was never queried."""
        return self.num_hits / self.num_queries if self.num_queries else None

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "pool": self.pool, "num_hits": self.num_hits,
                "num_misses": self.num_misses, "num_queries": self.num_queries,
                "num_evictions": self.num_evictions, "hit_rate": self.hit_rate}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolStats:
        name = cls.__name__
        return cls(engine=_get(data, "engine", name), pool=_get(data, "pool", name),
                   num_hits=_get(data, "num_hits", name),
                   num_misses=_get(data, "num_misses", name),
                   num_queries=_get(data, "num_queries", name),
                   num_evictions=_get(data, "num_evictions", name))


def _decision_counts(item: list[int], index: int) -> tuple[int, int, int, int]:
    if len(item) != 4:
        raise ValueError(f"TraceResult decisions[{index}]: expected [control_hits, "
                         f"control_lookups, candidate_hits, candidate_lookups], got {item!r}")
    control_hits, control_lookups, candidate_hits, candidate_lookups = item
    return control_hits, control_lookups, candidate_hits, candidate_lookups


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The comparison of one trace.

    Attributes:
        trace_path: the trace file as given.
        trace_digest: content digest of the trace file.
        num_calls: calls replayed.
        num_tensors_compared: tensor comparisons made (KV rows count one each).
        divergences: diverging calls, one record per call, in call order.
        timings: per engine per call kind.
        pool_stats: per engine per pool.
        self_check: True when the control was replayed against itself (noise-floor run).
        noise_floor: largest ``|a - e|`` seen on tensors judged equal; None if not measured.
        num_slot_differences: stores that agreed on every decision but not on the slot
            (information, never a failure).
        num_unwaived_calls: unwaived diverging calls, including those past the kept detail cap.
        coverage: how often each cache path was exercised (counted on the control's events).
        notes: one-line remarks (a truncated trace, a tolerance below the noise floor, ...).
        truncated: the trace file ends before its end-of-trace (a killed capture): only the
            complete records before the cut were replayed.
        max_errors: per call, the largest abs error seen on any compared tensor (for plots).
        decisions: per call, ``(control_hits, control_lookups, candidate_hits,
            candidate_lookups)`` counted from each engine's lookup events (a forced miss is a
            lookup without a hit; a call without lookups gives zeros), for the decision
            timeline; empty when not recorded (live runs, results from before the field).
    """

    trace_path: str
    trace_digest: str
    num_calls: int
    num_tensors_compared: int
    divergences: tuple[CallComparison, ...] = ()
    timings: tuple[EngineTiming, ...] = ()
    pool_stats: tuple[PoolStats, ...] = ()
    self_check: bool = False
    noise_floor: float | None = None
    num_slot_differences: int = 0
    num_unwaived_calls: int = 0
    coverage: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    truncated: bool = False
    max_errors: tuple[float, ...] = ()
    decisions: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        indices = [call.call_index for call in self.divergences]
        if indices != sorted(set(indices)):
            raise ValueError(f"TraceResult {self.trace_path}: divergences must be one per call "
                             f"in call order, got call indices {indices}")

    @property
    def unwaived(self) -> tuple[CallComparison, ...]:
        return tuple(call for call in self.divergences if not call.waived)

    @property
    def first_divergence(self) -> CallComparison | None:
        """The earliest diverging call, waived or not."""
        return self.divergences[0] if self.divergences else None

    @property
    def first_unwaived(self) -> CallComparison | None:
        """The earliest unwaived diverging call: where to start looking for the bug."""
        unwaived = self.unwaived
        return unwaived[0] if unwaived else None

    @property
    def ok(self) -> bool:
        """True when every divergence is waived."""
        return not self.unwaived and self.num_unwaived_calls == 0

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {"trace_path": self.trace_path, "trace_digest": self.trace_digest,
                "num_calls": self.num_calls, "num_tensors_compared": self.num_tensors_compared,
                "ok": self.ok,
                "first_divergence_call": None if first is None else first.call_index,
                "divergences": [call.to_dict() for call in self.divergences],
                "timings": [timing.to_dict() for timing in self.timings],
                "pool_stats": [stats.to_dict() for stats in self.pool_stats],
                "self_check": self.self_check, "noise_floor": self.noise_floor,
                "num_slot_differences": self.num_slot_differences,
                "num_unwaived_calls": self.num_unwaived_calls,
                "coverage": dict(self.coverage), "notes": list(self.notes),
                "truncated": self.truncated,
                "max_errors": list(self.max_errors),
                "decisions": [list(counts) for counts in self.decisions]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceResult:
        name = cls.__name__
        return cls(trace_path=_get(data, "trace_path", name),
                   trace_digest=_get(data, "trace_digest", name),
                   num_calls=_get(data, "num_calls", name),
                   num_tensors_compared=_get(data, "num_tensors_compared", name),
                   divergences=tuple(CallComparison.from_dict(item)
                                     for item in _get(data, "divergences", name)),
                   timings=tuple(EngineTiming.from_dict(item)
                                 for item in _get(data, "timings", name)),
                   pool_stats=tuple(PoolStats.from_dict(item)
                                    for item in _get(data, "pool_stats", name)),
                   self_check=_get(data, "self_check", name),
                   noise_floor=_get(data, "noise_floor", name),
                   num_slot_differences=_get(data, "num_slot_differences", name),
                   num_unwaived_calls=data.get("num_unwaived_calls", 0),
                   coverage=dict(data.get("coverage", {})), notes=tuple(data.get("notes", ())),
                   truncated=bool(data.get("truncated", False)),
                   max_errors=tuple(data.get("max_errors", ())),
                   decisions=tuple(_decision_counts(item, index)
                                   for index, item in enumerate(data.get("decisions", ()))))


@dataclass(frozen=True, slots=True)
class RunResult:
    """One comparison run over one or more traces; its exit code is decided here only.

    Attributes:
        created_at: timezone-aware time the run started.
        control_engine, candidate_engine: engine registry names.
        manager_spec: the candidate cache manager (``package.module:Attr``), None for default.
        tolerances: the tolerance policy as ``TolerancePolicy.to_dict()`` wrote it (read-only by
            convention), so a saved run can be re-judged with the same policy.
        traces: one result per trace, in replay order.
        schema_version: ``kvmigrate.compare/<major>``.
    """

    created_at: datetime
    control_engine: str
    candidate_engine: str
    manager_spec: str | None
    tolerances: dict[str, Any]
    traces: tuple[TraceResult, ...]
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError(f"created_at must be timezone-aware, got naive {self.created_at}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"unsupported result schema {self.schema_version!r}; this version "
                             f"reads {SCHEMA_VERSION!r}")

    @property
    def ok(self) -> bool:
        return all(trace.ok for trace in self.traces)

    @property
    def exit_code(self) -> int:
        """``EXIT_EQUIVALENT`` (0) unless any trace has an unwaived divergence (1)."""
        return EXIT_EQUIVALENT if self.ok else EXIT_DIVERGENCE

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "created_at": self.created_at.isoformat(),
                "control_engine": self.control_engine, "candidate_engine": self.candidate_engine,
                "manager_spec": self.manager_spec, "tolerances": self.tolerances,
                "ok": self.ok, "exit_code": self.exit_code,
                "traces": [trace.to_dict() for trace in self.traces]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        name = cls.__name__
        return cls(schema_version=_get(data, "schema_version", name),
                   created_at=datetime.fromisoformat(_get(data, "created_at", name)),
                   control_engine=_get(data, "control_engine", name),
                   candidate_engine=_get(data, "candidate_engine", name),
                   manager_spec=_get(data, "manager_spec", name),
                   tolerances=_get(data, "tolerances", name),
                   traces=tuple(TraceResult.from_dict(item)
                                for item in _get(data, "traces", name)))
