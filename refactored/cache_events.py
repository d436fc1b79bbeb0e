"""Typed, frozen events a KVCacheManager queues for what it decided; its owner drains them.

As in vLLM's KV-cache core, side effects are reported, not left in mutable attributes: every
pool of a manager appends to the manager's one ``ManagerEventQueue`` when it stores, writes
scratch or clears, and the owner (the world model) drains the queue with ``take_events()``.
Events come out in the exact order the pools decided them.

These are the manager's own decisions (pool names, slots). The world model turns them into the
model-level ``unizero.events`` it reports, which the harness compares across implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["EntryStored", "ScratchWritten", "PoolCleared", "ManagerEvent", "ManagerEventQueue"]


@dataclass(frozen=True, slots=True)
class EntryStored:
    """A keyed pool stored a copy under ``key`` in ``slot``.

    Attributes:
        pool: the pool's name (``init[<env>]`` or ``recur``).
        key: the key stored.
        slot: the slot written.
        evicted: the other key removed from the lookup map to make room, or None (re-storing a
            key into its own slot replaces it without an eviction).
    """

    pool: str
    key: int
    slot: int
    evicted: int | None


@dataclass(frozen=True, slots=True)
class ScratchWritten:
    """The keyless scratch pool ``pool`` copied an entry into ``slot``."""

    pool: str
    slot: int


@dataclass(frozen=True, slots=True)
class PoolCleared:
    """Keyed pool ``pool`` forgot its ``num_keys`` live keys (storage and pointer stay)."""

    pool: str
    num_keys: int


ManagerEvent = Union[EntryStored, ScratchWritten, PoolCleared]


class ManagerEventQueue:
    """The queue a manager and its pools share; ``take_events()`` drains it.

    Args:
        enabled: queue events; off, nothing is kept (for an owner that never drains).
    """

    __slots__ = ("enabled", "_events")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)
        self._events: list[ManagerEvent] = []

    def __len__(self) -> int:
        return len(self._events)

    def emit(self, event: ManagerEvent) -> None:
        """Queue ``event`` (callers on hot paths test ``enabled`` first to skip building it)."""
        if self.enabled:
            self._events.append(event)

    def take_events(self) -> list[ManagerEvent]:
        """The queued events, oldest first; the queue is empty afterwards."""
        events, self._events = self._events, []
        return events
