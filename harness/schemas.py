"""Typed schemas of the harness's configuration and record files, checked by
:func:`harness.tomlfile.convert` (msgspec, strict) before any field is used.

A schema fixes each key's type and range, refuses unknown and missing keys, and refuses NaN and
infinities wherever a number is bounded. What depends on the rest of the harness (which engine
names exist, whether a rollout move is legal) is checked afterwards by the file's owner; the
schema guarantees that owner only ever sees well-typed values.

Load with :func:`harness.tomlfile.load_toml`, e.g.
``load_toml(path, GateFile, GateConfigError, "gate config")``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection
from typing import Annotated, Any, Literal

import msgspec

from harness.tomlfile import convert, load_toml

__all__ = ["WaiverEntry", "WaiverFile", "RolloutEntryFields", "RolloutFile", "GatePhaseTable",
           "GateFile", "ToleranceTable", "ToleranceFile", "LimitsTable", "Count", "PhaseNumber",
           "load_gate_file", "load_tolerance_file", "load_rollout_file", "load_waiver_file"]

_MAX_COUNT = 2**62
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_COUNT)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=_MAX_COUNT)]
PhaseNumber = Annotated[int, msgspec.Meta(ge=0, le=99)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=1_000)]
Glob = Annotated[str, msgspec.Meta(max_length=4_096)]
# Bounded both ways, so NaN (which compares false) and the infinities are refused.
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, le=1e300)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0.0, le=1e300)]


class _Schema(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base: immutable, unknown keys refused."""


class WaiverEntry(_Schema, rename={"divergence_class": "class"}):
    """One ``[[waiver]]`` of a waiver file (harness/waivers.py gives the meaning)."""

    id: Name
    reason: Text
    expires: dt.date
    trace: Glob = "*"
    call_kind: Name | None = None
    divergence_class: Literal["tensor", "decision", "both", "error", "probe", "any"] = "any"
    tensor: Glob = "*"
    calls: tuple[Count, Count] = (0, _MAX_COUNT)
    cap: NonNegative | Literal["decision"] = "decision"
    cause: Name | None = None


class WaiverFile(_Schema):
    """A waiver file: any number of ``[[waiver]]`` tables."""

    waiver: list[WaiverEntry] = msgspec.field(default_factory=list)


class RolloutEntryFields(_Schema):
    """One ``[[history]]`` move of the rollout record."""

    action: Literal["advance", "rollback"]
    from_phase: PhaseNumber
    to_phase: PhaseNumber
    date: Name
    reason: Text
    signoff: Name | None = None
    signoff_digest: Name | None = None


class RolloutFile(_Schema):
    """The rollout record (``rollout.toml``)."""

    schema: Literal["kvmigrate.rollout/1"]
    phase: PhaseNumber
    history: list[RolloutEntryFields] = msgspec.field(default_factory=list)


class GatePhaseTable(_Schema):
    """One ``[phase.N]`` table of ``gate.toml`` (harness/gate.py gives the meaning)."""

    name: Name
    control: Name
    candidate: Name
    min_traces: Positive
    min_calls: Positive
    required_paths: list[Name] | None = None
    description: str = ""
    trace_producer: Name | None = None
    max_unwaived_divergences: Count | None = None
    max_engine_errors: Count | None = None
    max_active_waivers: Count | None = None
    allow_expired_waivers: bool = False
    min_speedup: PositiveFloat | None = None


class GateFile(_Schema):
    """``gate.toml``: ``[phase.N]`` tables keyed by ASCII phase numbers; each table is checked
    on its own by :func:`load_gate_file` so that an error names its phase."""

    phase: dict[Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,2}$")], dict[str, Any]]


class ToleranceTable(_Schema):
    """``{rtol = ..., atol = ...}`` for one tensor path pattern."""

    rtol: NonNegative
    atol: NonNegative


# A plain str in this union: msgspec 0.22 crashes in the garbage collector when a
# length-constrained str shares a union with an array and a Struct.
ToleranceSpec = str | tuple[NonNegative, NonNegative] | ToleranceTable


class ToleranceFile(_Schema):
    """A tolerance file: the NaN policy and per-path tolerances (``"rtol,atol"``,
    ``[rtol, atol]`` or a table)."""

    nan: Literal["equal", "fail"] = "equal"
    paths: dict[Glob, ToleranceSpec] = msgspec.field(default_factory=dict)


LimitsTable = dict[Name, Annotated[int, msgspec.Meta(ge=1, le=2**62)]]
"""A ``[limits]`` table: limit name -> positive int (names checked by ``Limits.replace``)."""


def load_gate_file(path: str | os.PathLike[str], error: type[Exception],
                   phases: Collection[int] | None = None) -> dict[int, GatePhaseTable]:
    """The typed ``[phase.N]`` tables of a gate config (N in ``phases`` when given); errors
    name ``[phase.N].field``."""
    document = load_toml(path, GateFile, error, "gate config")
    for key in document.phase:
        if phases is not None and int(key) not in phases:
            raise error(f"{os.fspath(path)}: [phase.{key}]: expected a phase in {sorted(phases)}")
    return {int(key): convert(table, GatePhaseTable, error=error,
                              where=f"{os.fspath(path)}: [phase.{key}]")
            for key, table in document.phase.items()}


def load_tolerance_file(path: str | os.PathLike[str], error: type[Exception]) -> ToleranceFile:
    """The typed tolerance file; an error in a path's tolerance names the pattern."""
    document = load_toml(path, _ToleranceTop, error, "tolerance file")
    paths = {pattern: convert(spec, ToleranceSpec, error=error,
                              where=f"{os.fspath(path)}: paths.{pattern!r}")
             for pattern, spec in document.paths.items()}
    return ToleranceFile(nan=document.nan, paths=paths)


def load_rollout_file(path: str | os.PathLike[str], error: type[Exception]) -> RolloutFile:
    """The typed rollout record (the caller checks that its moves chain up)."""
    return load_toml(path, RolloutFile, error, "rollout record")


def load_waiver_file(path: str | os.PathLike[str], error: type[Exception]) -> WaiverFile:
    """The typed waiver file (the caller checks call ranges and duplicate ids)."""
    return load_toml(path, WaiverFile, error, "waiver file")


class _ToleranceTop(_Schema):
    nan: Literal["equal", "fail"] = "equal"
    paths: dict[Glob, Any] = msgspec.field(default_factory=dict)
