"""The records of a comparison run: frozen dataclasses that msgspec reads and writes.

A run (:class:`RunResult`) holds one :class:`TraceResult` per replayed trace; a trace holds the
diverging calls (:class:`CallComparison`) in call order, each with its tensor divergences and
its decision (cache event) divergence. Renderers (``harness.report``) and the gate read these
records; nothing here formats for people beyond the one-line event summary the comparator
writes. Naming: *expected* is the control engine, *actual* the candidate.

Types and bounds are declared on the fields (``Count``, ``Text``, ...) and checked when a report
is read (:mod:`harness.results.codec`). Derived values (``classification``, ``waived``, ``ok``,
``exit_code``, ``hit_rate``, ``first_divergence_call``) are fields computed in
``__post_init__`` (``init=False``): written to JSON for its readers, recomputed on reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta

from harness import exit_codes
from harness.results.codec import (NonFiniteText, check_finite, from_builtins, mark_non_finite,
                                   to_builtins)

__all__ = ["SCHEMA_VERSION", "EXIT_EQUIVALENT", "EXIT_DIVERGENCE", "EXIT_INSUFFICIENT_EVIDENCE",
           "TensorDivergence", "SlotDifference", "EventDivergence", "ReferenceDistance",
           "CallComparison", "EngineTiming", "PoolStats", "TraceResult", "ShardInfo",
           "RunResult"]

SCHEMA_VERSION = "kvmigrate.compare/1"
EXIT_EQUIVALENT = exit_codes.OK
EXIT_DIVERGENCE = exit_codes.DIVERGENCE
EXIT_INSUFFICIENT_EVIDENCE = exit_codes.INSUFFICIENT_EVIDENCE

# Bounds a report must respect: generous for real runs, small enough that a corrupt or hostile
# report is refused before it is rendered or re-judged.
MAX_COUNT = 2 ** 48
MAX_CALLS = 50_000_000
MAX_RECORDS = 1_000_000

Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Text = Annotated[str, Meta(max_length=4096)]
LongText = Annotated[str, Meta(max_length=65536)]
Shape = Annotated[tuple[Count, ...], Meta(max_length=32)]
Seconds = Annotated[float, Meta(ge=0.0)]
Tolerance = Annotated[float, Meta(ge=0.0)]
Scalar = float | int | bool
TensorDivergenceKind = Literal["missing", "dtype", "shape", "value"]
Classification = Literal["error", "probe", "tensor", "decision", "both"]
LoopMode = Literal["open", "closed"]


class _Record:
    """JSON round trip shared by the records (thin wrappers over the msgspec codec)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-native data (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return to_builtins(self)

    @classmethod
    def from_dict(cls, data: Any):
        """The record from :meth:`to_dict` data; ReportError (a ValueError) names the field."""
        return from_builtins(data, cls, cls.__name__)


def _set(record: object, name: str, value: Any) -> None:
    """Set a derived field of a frozen record (only ever from its ``__post_init__``)."""
    object.__setattr__(record, name, value)


@dataclass(frozen=True, slots=True)
class TensorDivergence(_Record):
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
        actual_value, expected_value: the two values there; the only floats that may be NaN or
            infinite (written to JSON as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
    """

    path: Text
    kind: TensorDivergenceKind
    actual_dtype: Text | None
    expected_dtype: Text | None
    actual_shape: Shape | None
    expected_shape: Shape | None
    rtol: Tolerance
    atol: Tolerance
    num_mismatched: Count = 0
    num_elements: Count = 0
    num_nonfinite: Count = 0
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    max_rel_err: float | None = None
    mean_rel_err: float | None = None
    worst_flat_index: Count | None = None
    worst_index: Shape | None = None
    actual_value: Scalar | NonFiniteText | None = None
    expected_value: Scalar | NonFiniteText | None = None

    _FINITE: ClassVar[tuple[str, ...]] = ("rtol", "atol", "max_abs_err", "mean_abs_err",
                                          "max_rel_err", "mean_rel_err")

    def __post_init__(self) -> None:
        for name in self._FINITE:
            check_finite("TensorDivergence", name, getattr(self, name))
        _set(self, "actual_value", mark_non_finite(self.actual_value))
        _set(self, "expected_value", mark_non_finite(self.expected_value))


@dataclass(frozen=True, slots=True)
class SlotDifference(_Record):
    """Information only: the same store landed in different slots in the two engines."""

    env: Count
    pool: Text
    key: Annotated[int, Meta(ge=0)]
    control_slot: Count
    candidate_slot: Count

    def __post_init__(self) -> None:
        if self.key >= 2 ** 64:
            raise ValueError(f"SlotDifference.key: expected a 64-bit cache key, got {self.key}")


@dataclass(frozen=True, slots=True)
class EventDivergence(_Record):
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

    summary: LongText
    first_index: Count
    num_control_events: Count
    num_candidate_events: Count
    deepdiff: dict[str, Any]
    slot_differences: Annotated[tuple[SlotDifference, ...], Meta(max_length=MAX_RECORDS)] = ()


@dataclass(frozen=True, slots=True)
class ReferenceDistance(_Record):
    """How far each side of a call is from an uncached reference engine (a full recompute).

    Attributes:
        control_max_abs, candidate_max_abs: largest ``|x - reference|`` over the call's output
            tensors; None where that side was not measured.
    """

    control_max_abs: Annotated[float, Meta(ge=0.0)] | None = None
    candidate_max_abs: Annotated[float, Meta(ge=0.0)] | None = None

    def __post_init__(self) -> None:
        check_finite("ReferenceDistance", "control_max_abs", self.control_max_abs)
        check_finite("ReferenceDistance", "candidate_max_abs", self.candidate_max_abs)


@dataclass(frozen=True, slots=True)
class CallComparison(_Record):
    """One diverging call: its tensor divergences and/or its decision divergence.

    Attributes:
        trace: name of the trace the call belongs to.
        call_index: position of the call in the trace.
        call_kind: ``root``, ``recurrent``, ``clear`` or ``weights``.
        env_ids: envs the call touched.
        tensor_divergences: in comparison order.
        event_divergence: the decision diff, None when decisions agree.
        waiver_id: id of the waiver that covers this divergence, None when unwaived.
        engine_error: an exception one engine raised and the other did not (or a different
            one): which side raised, the exception type and its message.
        cause: a label from causal attribution (``quirk-1``, ``unexplained``), None if not run.
        reference: each side's distance to the uncached reference engine, None if not run.
        classification: derived: ``error``, ``tensor``, ``decision`` or ``both``.
        waived: derived: ``waiver_id is not None``.
    """

    trace: Text
    call_index: Count
    call_kind: Text
    env_ids: Annotated[tuple[Count, ...], Meta(max_length=65536)]
    tensor_divergences: Annotated[tuple[TensorDivergence, ...], Meta(max_length=MAX_RECORDS)] = ()
    event_divergence: EventDivergence | None = None
    waiver_id: Text | None = None
    engine_error: LongText | None = None
    cause: Text | None = None
    reference: ReferenceDistance | None = None
    findings: Annotated[tuple[LongText, ...], Meta(max_length=1024)] = ()
    classification: Classification = field(init=False, default="tensor")
    waived: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if (not self.tensor_divergences and self.event_divergence is None
                and self.engine_error is None and not self.findings):
            raise ValueError(f"CallComparison for {self.trace} call {self.call_index} has no "
                             f"divergence; record only diverging calls")
        if self.engine_error is not None:
            classification = "error"
        elif not self.tensor_divergences and self.event_divergence is None:
            classification = "probe"
        elif self.event_divergence is None:
            classification = "tensor"
        else:
            classification = "both" if self.tensor_divergences else "decision"
        _set(self, "classification", classification)
        _set(self, "waived", self.waiver_id is not None)


@dataclass(frozen=True, slots=True)
class EngineTiming(_Record):
    """Wall time of one engine on one call kind, over ``num_calls`` calls."""

    engine: Text
    call_kind: Text
    num_calls: Count
    median_s: Seconds
    p95_s: Seconds
    total_s: Seconds

    def __post_init__(self) -> None:
        for name in ("median_s", "p95_s", "total_s"):
            check_finite("EngineTiming", name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class PoolStats(_Record):
    """Cache pool counters of one engine over one trace.

    Attributes:
        hit_rate: derived: ``num_hits / num_queries``; None when the pool was never queried.
    """

    engine: Text
    pool: Text
    num_hits: Count
    num_misses: Count
    num_queries: Count
    num_evictions: Count
    hit_rate: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        _set(self, "hit_rate", self.num_hits / self.num_queries if self.num_queries else None)


Decisions = tuple[Count, Count, Count, Count]


@dataclass(frozen=True, slots=True)
class TraceResult(_Record):
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
        ok: derived: no unwaived diverging call (kept or counted).
        first_divergence_call: derived: index of the earliest diverging call, waived or not.
    """

    trace_path: Text
    trace_digest: Text
    num_calls: Count
    num_tensors_compared: Count
    divergences: Annotated[tuple[CallComparison, ...], Meta(max_length=MAX_RECORDS)] = ()
    timings: Annotated[tuple[EngineTiming, ...], Meta(max_length=4096)] = ()
    pool_stats: Annotated[tuple[PoolStats, ...], Meta(max_length=4096)] = ()
    self_check: bool = False
    noise_floor: Annotated[float, Meta(ge=0.0)] | None = None
    num_slot_differences: Count = 0
    num_unwaived_calls: Count = 0
    coverage: Annotated[dict[Text, Count], Meta(max_length=4096)] = field(default_factory=dict)
    notes: Annotated[tuple[LongText, ...], Meta(max_length=4096)] = ()
    truncated: bool = False
    max_errors: Annotated[tuple[Annotated[float, Meta(ge=0.0)], ...],
                          Meta(max_length=MAX_CALLS)] = ()
    decisions: Annotated[tuple[Decisions, ...], Meta(max_length=MAX_CALLS)] = ()
    ok: bool = field(init=False, default=True)
    first_divergence_call: Count | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        indices = [call.call_index for call in self.divergences]
        if indices != sorted(set(indices)):
            raise ValueError(f"TraceResult {self.trace_path}: divergences must be one per call "
                             f"in call order, got call indices {indices}")
        check_finite("TraceResult", "noise_floor", self.noise_floor)
        if not all(map(math.isfinite, self.max_errors)):
            where = next(i for i, value in enumerate(self.max_errors) if not math.isfinite(value))
            raise ValueError(f"TraceResult.max_errors[{where}]: expected a finite number, "
                             f"got {self.max_errors[where]!r}")
        _set(self, "ok", self.num_unwaived == 0)
        _set(self, "first_divergence_call", indices[0] if indices else None)

    @property
    def unwaived(self) -> tuple[CallComparison, ...]:
        """The kept diverging calls that no waiver covers, in call order."""
        return tuple(call for call in self.divergences if not call.waived)

    @property
    def num_unwaived(self) -> int:
        """Unwaived diverging calls: the counted ones, or the kept ones if more were kept."""
        return max(self.num_unwaived_calls, sum(not call.waived for call in self.divergences))

    @property
    def num_waived(self) -> int:
        """Waived diverging calls among the kept ones."""
        return sum(call.waived for call in self.divergences)

    @property
    def first_divergence(self) -> CallComparison | None:
        """The earliest diverging call, waived or not."""
        return self.divergences[0] if self.divergences else None

    @property
    def first_unwaived(self) -> CallComparison | None:
        """The earliest unwaived diverging call: where to start looking for the bug."""
        return next((call for call in self.divergences if not call.waived), None)


@dataclass(frozen=True, slots=True)
class ShardInfo(_Record):
    """Which part of a sharded comparison a run is: shard ``index`` of ``count`` of one set.

    Attributes:
        index: 0-based shard number.
        count: shards in the set.
        set_id: names the set (the same for every shard of one comparison).
    """

    index: Count
    count: Annotated[int, Meta(ge=1, le=MAX_COUNT)]
    set_id: Text

    def __post_init__(self) -> None:
        if self.index >= self.count:
            raise ValueError(f"ShardInfo.index: expected 0 <= index < count ({self.count}), "
                             f"got {self.index}")


@dataclass(frozen=True, slots=True)
class RunResult(_Record):
    """One comparison run over one or more traces; its exit code is decided here only.

    Attributes:
        created_at: timezone-aware time the run started.
        control_engine, candidate_engine: engine registry names.
        manager_spec: the candidate cache manager (``package.module:Attr``), None for default.
        tolerances: the tolerance policy as ``TolerancePolicy.to_dict()`` wrote it (read-only by
            convention), so a saved run can be re-judged with the same policy.
        traces: one result per trace, in replay order.
        schema_version: ``kvmigrate.compare/<major>``.
        loop: the replay mode: ``open`` (every engine fed the recorded inputs) or ``closed``
            (each engine fed its own earlier outputs).
        shard: which shard of a sharded comparison this run is; None when not sharded.
        reference_engine: the uncached reference engine the calls were measured against.
        ok: derived: no trace has an unwaived divergence.
        exit_code: derived: see :attr:`exit_code`.
    """

    created_at: datetime
    control_engine: Text
    candidate_engine: Text
    manager_spec: Text | None
    tolerances: dict[str, Any]
    traces: Annotated[tuple[TraceResult, ...], Meta(max_length=MAX_RECORDS)]
    schema_version: Text = SCHEMA_VERSION
    loop: LoopMode = "open"
    shard: ShardInfo | None = None
    reference_engine: Text | None = None
    ok: bool = field(init=False, default=True)
    exit_code: int = field(init=False, default=EXIT_EQUIVALENT)

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None:
            raise ValueError(f"created_at must be timezone-aware, got naive {self.created_at}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"unsupported result schema {self.schema_version!r}; this version "
                             f"reads {SCHEMA_VERSION!r}")
        ok = all(trace.ok for trace in self.traces)
        _set(self, "ok", ok)
        # The one place the exit status of a comparison is decided: a divergence outranks
        # missing evidence, and nothing compared is never equivalent.
        if not ok:
            code = EXIT_DIVERGENCE
        elif not self.traces or any(trace.num_calls == 0 for trace in self.traces):
            code = EXIT_INSUFFICIENT_EVIDENCE
        else:
            code = EXIT_EQUIVALENT
        _set(self, "exit_code", code)

    @property
    def empty_traces(self) -> tuple[TraceResult, ...]:
        """Traces that replayed no call (insufficient evidence)."""
        return tuple(trace for trace in self.traces if trace.num_calls == 0)
