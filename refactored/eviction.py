"""Eviction strategies: which slot of a fixed-size pool the next store writes.

A strategy only sees slot numbers; the pool owns keys and storage and tells the strategy what
happened to a slot (written, read, released). Adding a strategy is one class plus one entry in
``EVICTION_STRATEGIES``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Protocol

__all__ = ["EvictionStrategy", "FifoEviction", "LruEviction", "EVICTION_STRATEGIES",
           "make_eviction_strategy"]


class EvictionStrategy(Protocol):
    """Chooses the slot to write; kept informed of slot writes, hits and releases."""

    num_slots: int

    def select_slot(self, current_slot: int | None) -> int:
        """The slot the next store writes.

        Args:
            current_slot: the slot already holding the key being stored, or None.
        """
        ...

    def on_write(self, slot: int) -> None:
        """``slot`` now holds a live key."""
        ...

    def on_access(self, slot: int) -> None:
        """A lookup hit ``slot``."""
        ...

    def on_release(self, slot: int) -> None:
        """``slot`` no longer holds a live key (its key moved away or the pool was cleared)."""
        ...


def _check_num_slots(num_slots: int) -> int:
    if not isinstance(num_slots, int) or isinstance(num_slots, bool) or num_slots <= 0:
        raise ValueError(f"num_slots: expected a positive int, got {num_slots!r}")
    return num_slots


class FifoEviction:
    """Legacy order: a circular write pointer that never resets (legacy-spec §4.1, quirk 2).

    The slot written is always the pointer, whatever the key and whatever was cleared; the
    pointer then advances by one modulo the pool size.
    """

    __slots__ = ("num_slots", "pointer")

    def __init__(self, num_slots: int) -> None:
        self.num_slots = _check_num_slots(num_slots)
        self.pointer = 0

    def select_slot(self, current_slot: int | None) -> int:
        return self.pointer

    def on_write(self, slot: int) -> None:
        self.pointer = (slot + 1) % self.num_slots

    def on_access(self, slot: int) -> None:
        pass

    def on_release(self, slot: int) -> None:
        pass


class LruEviction:
    """Least recently used: free slots first (lowest number first), then the stalest slot.

    Both a store and a lookup hit make a slot the most recent. Re-storing a live key overwrites
    its own slot, so an update never evicts another entry.
    """

    __slots__ = ("num_slots", "_recency", "_free_heap", "_free")

    def __init__(self, num_slots: int) -> None:
        self.num_slots = _check_num_slots(num_slots)
        self._recency: OrderedDict[int, None] = OrderedDict()  # occupied slots, stalest first
        self._free_heap = list(range(num_slots))  # ascending, hence already a heap
        self._free = set(self._free_heap)

    def select_slot(self, current_slot: int | None) -> int:
        if current_slot is not None:
            return current_slot
        while self._free_heap:
            slot = self._free_heap[0]
            if slot in self._free:
                return slot
            heapq.heappop(self._free_heap)  # stale entry: the slot was written since release
        return next(iter(self._recency))

    def on_write(self, slot: int) -> None:
        self._free.discard(slot)
        self._recency[slot] = None
        self._recency.move_to_end(slot)

    def on_access(self, slot: int) -> None:
        self._recency.move_to_end(slot)

    def on_release(self, slot: int) -> None:
        self._recency.pop(slot, None)
        if slot not in self._free:
            self._free.add(slot)
            heapq.heappush(self._free_heap, slot)


EVICTION_STRATEGIES: dict[str, type[EvictionStrategy]] = {
    "fifo": FifoEviction,
    "lru": LruEviction,
}


def make_eviction_strategy(name: str, num_slots: int) -> EvictionStrategy:
    """Build the registered strategy ``name`` for a pool of ``num_slots`` slots.

    Raises:
        ValueError: if ``name`` is not registered.
    """
    try:
        cls = EVICTION_STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"eviction: expected one of {sorted(EVICTION_STRATEGIES)}, "
                         f"got {name!r}") from None
    return cls(num_slots)
