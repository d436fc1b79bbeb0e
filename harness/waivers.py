"""Waivers: the reviewed file of expected divergences (default ``waivers.toml`` at the repo root).

Each ``[[waiver]]`` has an ``id``, a ``reason``, an ``expires`` date and a scope: ``trace`` (glob
on the trace path), ``call_kind``, ``class`` (``tensor``, ``decision``, ``both``, ``error``,
``probe`` or ``any``), ``tensor`` (glob on tensor paths), ``calls`` (inclusive call-index range),
``cause`` (a cause label such as ``quirk-1``, :mod:`harness.causenames`) and a ``cap``: the
largest abs error allowed, or ``"decision"`` for a decision divergence whatever the tensor error.
Every scope is optional: ``id``, ``reason``, ``expires`` and ``cause = "quirk-1"`` waive exactly
the divergences labelled quirk-1, wherever they fall; an ``unexplained`` divergence is never
covered by a cause waiver. A divergence is waived by the first live waiver whose scope matches
and whose cap holds; an expired waiver waives nothing and is reported; one that matched nothing
is stale.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from harness.causenames import WAIVABLE_CAUSES, cause_covers
from harness.errors import UserError
from harness.globmatch import compile_glob
from harness.results import CallComparison, RunResult
from harness.schemas import WaiverEntry, WaiverFile
from harness.tomlfile import load_toml

__all__ = ["Waiver", "WaiverSet", "WaiverError", "load_waivers", "DEFAULT_WAIVERS", "waiver_report"]

DEFAULT_WAIVERS = Path(__file__).resolve().parents[1] / "waivers.toml"


class WaiverError(UserError):
    """A malformed waiver file; the message names the waiver and field."""


@dataclass(frozen=True, slots=True)
class Waiver:
    """One waiver: its identity, expiry, scope and cap (see the module docstring)."""

    id: str
    reason: str
    expires: dt.date
    trace: str = "*"
    call_kind: str | None = None
    divergence_class: str = "any"
    tensor: str = "*"
    calls: tuple[int, int] = (0, 2**62)
    cap: float | str = "decision"
    cause: str | None = None

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def in_scope(self, call: CallComparison) -> bool:
        if self.cause is not None and not cause_covers(self.cause, call.cause):
            return False
        trace = compile_glob(self.trace)
        if not trace.fullmatch(call.trace) and not trace.fullmatch(Path(call.trace).name):
            return False
        if self.call_kind is not None and call.call_kind != self.call_kind:
            return False
        if self.divergence_class != "any" and call.classification != self.divergence_class:
            return False
        if not self.calls[0] <= call.call_index <= self.calls[1]:
            return False
        pattern = compile_glob(self.tensor)
        return all(pattern.fullmatch(d.path) for d in call.tensor_divergences)

    def cap_holds(self, call: CallComparison) -> bool:
        if self.cap == "decision":
            return True
        if call.event_divergence is not None or call.engine_error is not None:
            return False
        return all(d.max_abs_err is not None and math.isfinite(d.max_abs_err)
                   and d.max_abs_err <= self.cap for d in call.tensor_divergences)


def _waiver(entry: WaiverEntry, where: str) -> Waiver:
    if entry.calls[0] > entry.calls[1]:
        raise WaiverError(f"{where}.calls: expected [first, last] with first <= last, "
                          f"got {list(entry.calls)!r}")
    if entry.cause is not None and entry.cause not in WAIVABLE_CAUSES:
        raise WaiverError(f"{where}.cause: expected one of {', '.join(WAIVABLE_CAUSES)}, got "
                          f"{entry.cause!r} (an unexplained divergence is never waived by cause)")
    return Waiver(id=entry.id, reason=entry.reason, expires=entry.expires, trace=entry.trace,
                  call_kind=entry.call_kind, divergence_class=entry.divergence_class,
                  tensor=entry.tensor, calls=entry.calls,
                  cap=entry.cap if entry.cap == "decision" else float(entry.cap),
                  cause=entry.cause)


class WaiverSet:
    """The waivers in force; ``judge`` marks a divergence waived when one covers it."""

    def __init__(self, waivers: Iterable[Waiver], *, today: dt.date | None = None,
                 source: str = "<none>") -> None:
        self.waivers = tuple(waivers)
        self.today = today or dt.date.today()
        self.source = source
        counts = Counter(w.id for w in self.waivers)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
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
    document = load_toml(path, WaiverFile, WaiverError, "waiver file")
    return WaiverSet((_waiver(entry, f"{path}: waiver[{index}]")
                      for index, entry in enumerate(document.waiver)),
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
