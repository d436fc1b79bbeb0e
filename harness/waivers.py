"""Waivers: the reviewed file of expected divergences (default ``waivers.toml`` at the repo root).

Each ``[[waiver]]`` has an ``id``, a ``reason``, an ``expires`` date and a scope: ``trace`` (glob
on the trace path), ``call_kind``, ``class`` (``tensor``, ``decision``, ``both``, ``error`` or
``any``), ``tensor`` (glob on tensor paths), ``calls`` (inclusive call-index range) and a ``cap``:
the largest abs error allowed, or ``"decision"`` for a decision divergence whatever the tensor
error. A divergence is waived by the first live waiver whose scope matches and whose cap holds;
an expired waiver waives nothing and is reported; one that matched nothing is stale.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.compare.tensors import glob_regex
from harness.results import CallComparison, RunResult
from harness.tomlfile import read_toml

__all__ = ["Waiver", "WaiverSet", "WaiverError", "load_waivers", "DEFAULT_WAIVERS", "waiver_report"]

DEFAULT_WAIVERS = Path(__file__).resolve().parents[1] / "waivers.toml"
_CLASSES = ("tensor", "decision", "both", "error", "any")
_FIELDS = {"id", "reason", "expires", "trace", "call_kind", "class", "tensor", "calls", "cap"}


class WaiverError(ValueError):
    """A malformed waiver file; the message names the waiver and field."""


@dataclass(frozen=True, slots=True)
class Waiver:
    id: str
    reason: str
    expires: dt.date
    trace: str = "*"
    call_kind: str | None = None
    divergence_class: str = "any"
    tensor: str = "*"
    calls: tuple[int, int] = (0, 2**62)
    cap: float | str = "decision"

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def in_scope(self, call: CallComparison) -> bool:
        if not glob_regex(self.trace).fullmatch(call.trace) and \
                not glob_regex(self.trace).fullmatch(Path(call.trace).name):
            return False
        if self.call_kind is not None and call.call_kind != self.call_kind:
            return False
        if self.divergence_class != "any" and call.classification != self.divergence_class:
            return False
        if not self.calls[0] <= call.call_index <= self.calls[1]:
            return False
        pattern = glob_regex(self.tensor)
        return all(pattern.fullmatch(d.path) for d in call.tensor_divergences)

    def cap_holds(self, call: CallComparison) -> bool:
        if self.cap == "decision":
            return True
        if call.event_divergence is not None or call.engine_error is not None:
            return False
        return all(d.max_abs_err is not None and math.isfinite(d.max_abs_err)
                   and d.max_abs_err <= self.cap for d in call.tensor_divergences)


def _parse(entry: Mapping[str, Any], where: str) -> Waiver:
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise WaiverError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    for name in ("id", "reason", "expires"):
        if name not in entry:
            raise WaiverError(f"{where}: missing required field {name!r}")
    expires = entry["expires"]
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise WaiverError(f"{where}.expires: expected a TOML date like 2027-01-31, got {expires!r}")
    klass = entry.get("class", "any")
    if klass not in _CLASSES:
        raise WaiverError(f"{where}.class: expected one of {', '.join(_CLASSES)}, got {klass!r}")
    calls = entry.get("calls", [0, 2**62])
    if (not isinstance(calls, list) or len(calls) != 2 or not all(isinstance(c, int) for c in calls)
            or calls[0] > calls[1]):
        raise WaiverError(f"{where}.calls: expected [first, last] call indices, got {calls!r}")
    cap = entry.get("cap", "decision")
    if not (cap == "decision" or (isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap >= 0)):
        raise WaiverError(f"{where}.cap: expected a non-negative number or \"decision\", got {cap!r}")
    return Waiver(id=str(entry["id"]), reason=str(entry["reason"]), expires=expires,
                  trace=str(entry.get("trace", "*")), call_kind=entry.get("call_kind"),
                  divergence_class=klass, tensor=str(entry.get("tensor", "*")),
                  calls=(calls[0], calls[1]), cap=cap if cap == "decision" else float(cap))


class WaiverSet:
    """The waivers in force; ``judge`` marks a divergence waived when one covers it."""

    def __init__(self, waivers: Iterable[Waiver], *, today: dt.date | None = None,
                 source: str = "<none>") -> None:
        self.waivers = tuple(waivers)
        self.today = today or dt.date.today()
        self.source = source
        ids = [w.id for w in self.waivers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise WaiverError(f"{source}: duplicate waiver id(s) {', '.join(duplicates)}")

    def judge(self, call: CallComparison) -> CallComparison:
        for waiver in self.waivers:
            if not waiver.expired(self.today) and waiver.in_scope(call) and waiver.cap_holds(call):
                return replace(call, waiver_id=waiver.id)
        return call

    @property
    def active(self) -> tuple[Waiver, ...]:
        return tuple(w for w in self.waivers if not w.expired(self.today))

    @property
    def expired(self) -> tuple[Waiver, ...]:
        return tuple(w for w in self.waivers if w.expired(self.today))


def load_waivers(path: str | Path | None, *, today: dt.date | None = None) -> WaiverSet:
    """Read a waiver file; ``None`` reads the project's ``waivers.toml`` if present."""
    if path is None:
        if not DEFAULT_WAIVERS.exists():
            return WaiverSet((), today=today)
        path = DEFAULT_WAIVERS
    path = Path(path)
    data = read_toml(path, WaiverError, "waiver file")
    entries = data.get("waiver", [])
    if not isinstance(entries, list):
        raise WaiverError(f"{path}: expected [[waiver]] tables")
    return WaiverSet((_parse(e, f"{path}: waiver {i} ({e.get('id', '?')})") for i, e in enumerate(entries)),
                     today=today, source=str(path))


def waiver_report(waivers: WaiverSet, run: RunResult) -> dict[str, Any]:
    """Which waivers were used (and how often), which expired, which are stale."""
    used: dict[str, int] = {}
    for trace in run.traces:
        for call in trace.divergences:
            if call.waiver_id is not None:
                used[call.waiver_id] = used.get(call.waiver_id, 0) + 1
    return {"source": waivers.source,
            "used": used,
            "expired": [w.id for w in waivers.expired],
            "stale": [w.id for w in waivers.active if w.id not in used]}
