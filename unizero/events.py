"""Typed, frozen cache events: what a world model decided on each lookup, store and clear.

Both world models emit the same event types, so the harness can diff decisions structurally.
Slot numbers are carried as information only; the comparator does not fail on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

__all__ = ["POOL_ROOT", "POOL_RECURRENT", "Lookup", "Store", "Trim", "Clear", "CacheEvent",
           "EventLog", "event_to_dict", "event_from_dict"]

POOL_ROOT = "root"
POOL_RECURRENT = "recurrent"


@dataclass(frozen=True, slots=True)
class Lookup:
    """One cache lookup for one env. ``pool`` is the pool that served it, None on a miss.

    ``size`` is the valid length of the context used (the matched cache's, or 1 on a miss);
    ``forced`` marks a reanalysis miss that skipped the lookup.
    """

    env: int
    key: int
    path: str
    hit: bool
    pool: str | None
    size: int
    forced: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """One store into a pool. ``evicted`` is the key removed from the lookup map, if any."""

    env: int
    key: int
    pool: str
    slot: int
    evicted: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Trim:
    """A context trim on store: ``size_before`` valid tokens became ``size_after``."""

    env: int
    pool: str
    size_before: int
    size_after: int


@dataclass(frozen=True, slots=True)
class Clear:
    """A clear. ``scope`` is ``all``, ``recurrent`` or ``root_env``; ``reason`` says who asked
    (``after_root``, ``periodic``, ``episode_end``, ``epoch``, ``clear_caches``)."""

    scope: str
    reason: str = ""
    env: int | None = None


CacheEvent = Union[Lookup, Store, Trim, Clear]
_TYPES = {cls.__name__.lower(): cls for cls in (Lookup, Store, Trim, Clear)}


def event_to_dict(event: CacheEvent) -> dict[str, Any]:
    """Plain-data form of an event (``type`` plus its fields)."""
    return {"type": type(event).__name__.lower(), **asdict(event)}


def event_from_dict(data: dict[str, Any]) -> CacheEvent:
    """Inverse of :func:`event_to_dict`; raises ValueError naming an unknown type."""
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind not in _TYPES:
        raise ValueError(f"unknown cache event type {kind!r}; expected one of {sorted(_TYPES)}")
    return _TYPES[kind](**fields)


class EventLog:
    """Collects events while recording is on; ``take_events()`` drains them.

    Off by default so a model nobody inspects pays only one attribute test per event site.
    """

    __slots__ = ("recording", "_events")

    def __init__(self, recording: bool = False) -> None:
        self.recording = recording
        self._events: list[CacheEvent] = []

    def emit(self, event: CacheEvent) -> None:
        self._events.append(event)

    def take_events(self) -> list[CacheEvent]:
        events, self._events = self._events, []
        return events
