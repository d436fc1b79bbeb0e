"""Fixed-size KV-cache pools: slot storage, a keyed pool, and the circular scratch pool.

Layers, bottom up: ``SlotStorage`` holds private copies of KeysValues in numbered slots;
``KVCachePool`` adds the key→slot / slot→key maps, an eviction strategy and stats;
``ScratchPool`` is keyless circular storage (the legacy "wm" pool).

Storage layout: one tensor per pool, ``[num_slots, L, 2, B, H, T, hd]`` (2 = K, V), allocated
with ``torch.empty`` on the first store (legacy allocates uninitialised memory too, quirk 12).
Each slot's KeysValues is a set of views into it (``[B, H, T, hd]`` per layer and K/V), built
on the slot's first use and reused afterwards, so a batched gather is one index into the tensor.
An entry whose geometry or dtype differs from the storage's gets a private copy of its own.
"""

from __future__ import annotations

import numbers

import torch

from refactored.cache_events import (EntryStored, ManagerEvent, ManagerEventQueue, PoolCleared,
                                     ScratchWritten)
from refactored.cache_stats import CacheStats, NullStats
from refactored.eviction import make_eviction_strategy
from unizero.kv_cache import KeysValues

__all__ = ["Geometry", "SlotStorage", "KVCachePool", "ScratchPool"]

Geometry = tuple[int, int, int, int, int]  # (num_layers, B, H, T, head_dim)


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_keys_values(kv: object) -> KeysValues:
    if not isinstance(kv, KeysValues):
        raise TypeError(f"kv_cache: expected a KeysValues, got {type(kv).__name__}")
    if not kv.layers:
        raise ValueError("kv_cache: expected at least one layer, got a KeysValues with 0 layers")
    return kv


def _check_key(key: object) -> int:
    if type(key) is int:
        return key
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return int(key)  # e.g. a numpy integer scalar
    raise TypeError(f"cache_key: expected an int (an XXH64 digest from cache_key()), "
                    f"got {type(key).__name__} {key!r}")


def _private_copy(kv: KeysValues, device: torch.device) -> KeysValues:
    """A new KeysValues on ``device`` holding ``kv``'s full tensors and sizes."""
    num_layers, b, h, t, hd = kv.geometry
    out = KeysValues(b, h, t, h * hd, num_layers, device, kv[0].k.tensor.dtype)
    out.copy_from(kv)
    return out


class SlotStorage:
    """``num_slots`` private KeysValues copies backed by one preallocated tensor.

    Args:
        num_slots: number of slots.
        geometry: ``(L, B, H, T, hd)`` of the backing tensor; None takes the first entry's.
        device: device of the backing tensor; None takes the first entry's.
    """

    __slots__ = ("num_slots", "_geometry", "_device", "_tensor", "_views", "_entries")

    def __init__(self, num_slots: int, geometry: Geometry | None = None,
                 device: torch.device | str | None = None) -> None:
        self.num_slots = _check_positive("num_slots", num_slots)
        self._geometry = geometry
        self._device = torch.device(device) if device is not None else None
        self._tensor: torch.Tensor | None = None  # [num_slots, L, 2, B, H, T, hd]
        self._views: list[KeysValues | None] = [None] * num_slots
        self._entries: list[KeysValues | None] = [None] * num_slots

    def __len__(self) -> int:
        return self.num_slots

    def __getitem__(self, slot: int) -> KeysValues | None:
        """The entry last written to ``slot`` (None if never written); read-only for callers."""
        return self._entries[slot]

    @property
    def tensor(self) -> torch.Tensor | None:
        """Backing tensor ``[num_slots, L, 2, B, H, T, hd]``; None before the first store."""
        return self._tensor

    def write(self, slot: int, kv: KeysValues) -> KeysValues:
        """Copy ``kv`` (full tensors and sizes) into ``slot``; returns the stored entry."""
        if self._fits(kv):
            view = self._views[slot]
            if view is None:
                view = self._views[slot] = self._make_view(slot)
            view.copy_from(kv, valid_only=True)
            entry = view
        else:
            entry = _private_copy(kv, self._device or kv[0].k.tensor.device)
        self._entries[slot] = entry
        return entry

    def _fits(self, kv: KeysValues) -> bool:
        tensor, packed = self._tensor, kv.as_packed()
        if tensor is not None and packed is not None:  # fast path: one shape and dtype check
            return packed.shape == tensor.shape[1:] and packed.dtype == tensor.dtype
        if self._geometry is None:
            self._geometry = kv.geometry
        if kv.geometry != self._geometry:
            return False
        dtype = kv[0].k.tensor.dtype
        if self._tensor is None:
            device = self._device or kv[0].k.tensor.device
            self._tensor = torch.empty((self.num_slots, self._geometry[0], 2, *self._geometry[1:]),
                                       dtype=dtype, device=device)
        return self._tensor.dtype == dtype

    def _make_view(self, slot: int) -> KeysValues:
        assert self._tensor is not None, "backing tensor must exist before slot views"
        return KeysValues.from_packed(self._tensor[slot])  # layer views [B, H, T, hd]


class KVCachePool:
    """A fixed-size pool of private KV copies looked up by integer key.

    The key→slot and slot→key maps are always inverse to each other: storing a key that is
    already live moves it to the new slot and clears its old slot, and ``clear()`` empties both
    maps. (Legacy leaves stale slot→key entries that later delete live keys, quirk 1.)

    Args:
        num_slots: pool size.
        name: label used in stats summaries and messages.
        strategy: registered eviction strategy name ('fifo', 'lru').
        stats: a CacheStats, or a NullStats when stats are off.
        geometry: ``(L, B, H, T, hd)`` of the backing tensor; None takes the first entry's.
        device: device of the backing tensor; None takes the first entry's.
        events: the queue stores and clears are reported to (a manager passes its own, shared
            by all its pools); None gives the pool a queue of its own.
    """

    def __init__(self, num_slots: int, name: str, strategy: str,
                 stats: CacheStats | NullStats, *, geometry: Geometry | None = None,
                 device: torch.device | str | None = None,
                 events: ManagerEventQueue | None = None) -> None:
        self.num_slots = _check_positive("num_slots", num_slots)
        self.name = name
        self.strategy_name = strategy
        self._strategy = make_eviction_strategy(strategy, num_slots)
        self.stats = stats
        self._pool = SlotStorage(num_slots, geometry, device)
        self._key_to_index: dict[int, int] = {}
        self._index_to_key: list[int | None] = [None] * num_slots
        self.events = events if events is not None else ManagerEventQueue()

    def __repr__(self) -> str:
        return (f"KVCachePool(name={self.name!r}, num_slots={self.num_slots}, "
                f"strategy={self.strategy_name!r}, live={len(self._key_to_index)})")

    def __len__(self) -> int:
        """Number of live keys."""
        return len(self._key_to_index)

    def __contains__(self, key: object) -> bool:
        return key in self._key_to_index

    @property
    def storage(self) -> torch.Tensor | None:
        """Backing tensor ``[num_slots, L, 2, B, H, T, hd]``; None before the first store."""
        return self._pool.tensor

    def take_events(self) -> list[ManagerEvent]:
        """Drain the pool's event queue (the manager's whole queue when it is shared)."""
        return self.events.take_events()

    def slot_of(self, key: int) -> int | None:
        """The slot holding ``key`` (no stats, no recency update)."""
        return self._key_to_index.get(key)

    def key_at(self, slot: int) -> int | None:
        """The live key held by ``slot``, or None."""
        return self._index_to_key[slot]

    def keys(self) -> list[int]:
        """Live keys in slot order."""
        return [key for key in self._index_to_key if key is not None]

    def put(self, key: int, kv: KeysValues) -> int:
        """Store a private copy of ``kv`` under ``key``; returns the slot written.

        Queues an ``EntryStored`` naming the other key removed from the lookup map to make
        room, or None. Re-storing a key into its own slot replaces it without an eviction.
        """
        key = _check_key(key)
        _check_keys_values(kv)
        current = self._key_to_index.get(key)
        slot = self._strategy.select_slot(current)
        evicted = self._index_to_key[slot]
        if evicted == key:  # the key's own slot: a replacement, not an eviction
            evicted = None
        elif evicted is not None:
            del self._key_to_index[evicted]
            self._index_to_key[slot] = None
            self.stats.record_eviction()
        if current is not None and current != slot:
            self._index_to_key[current] = None
            del self._key_to_index[key]
            self._strategy.on_release(current)
        # Maps hold no stale entry from here on, so a failed copy leaves them consistent.
        self._pool.write(slot, kv)
        self._key_to_index[key] = slot
        self._index_to_key[slot] = key
        self._strategy.on_write(slot)
        if self.events.enabled:
            self.events.emit(EntryStored(self.name, key, slot, evicted))
        return slot

    def get(self, key: int) -> KeysValues | None:
        """The stored entry for ``key`` (the pool's own storage: do not modify), or None.

        Counts a hit or a miss; a hit refreshes the slot's recency.
        """
        slot = self._key_to_index.get(_check_key(key))
        if slot is None:
            self.stats.record_miss()
            return None
        self.stats.record_hit()
        self._strategy.on_access(slot)
        return self._pool[slot]

    def clear(self) -> None:
        """Forget every key. Storage stays allocated; the FIFO pointer does not move.

        Queues a ``PoolCleared`` with the number of keys forgotten.
        """
        num_keys = len(self._key_to_index)
        for slot in self._key_to_index.values():
            self._index_to_key[slot] = None
            self._strategy.on_release(slot)
        self._key_to_index.clear()
        self.events.emit(PoolCleared(self.name, num_keys))

    def check_consistency(self) -> None:
        """Assert that the two maps are exact inverses (used by tests)."""
        reverse = {key: slot for slot, key in enumerate(self._index_to_key) if key is not None}
        assert reverse == self._key_to_index, (
            f"{self.name}: key->slot {self._key_to_index} disagrees with slot->key "
            f"{self._index_to_key}")


class ScratchPool:
    """Keyless circular storage: each write takes the next slot (legacy "wm" pool).

    The pointer never resets, as legacy's ``shared_pool_index_wm``. Each write queues a
    ``ScratchWritten`` on ``events`` (the manager's queue, or one of the pool's own).
    """

    def __init__(self, num_slots: int, name: str, *, geometry: Geometry | None = None,
                 device: torch.device | str | None = None,
                 events: ManagerEventQueue | None = None) -> None:
        self.num_slots = _check_positive("num_slots", num_slots)
        self.name = name
        self.pointer = 0
        self.events = events if events is not None else ManagerEventQueue()
        self._pool = SlotStorage(num_slots, geometry, device)

    def __repr__(self) -> str:
        return f"ScratchPool(name={self.name!r}, num_slots={self.num_slots}, pointer={self.pointer})"

    @property
    def storage(self) -> torch.Tensor | None:
        return self._pool.tensor

    def write(self, kv: KeysValues) -> int:
        """Copy ``kv`` into the next slot; returns that slot."""
        _check_keys_values(kv)
        slot = self.pointer
        self._pool.write(slot, kv)
        self.pointer = (slot + 1) % self.num_slots
        self.events.emit(ScratchWritten(self.name, slot))
        return slot

    def read(self, slot: int) -> KeysValues:
        """The entry in ``slot`` (the pool's own storage: do not modify).

        Raises:
            ValueError: if ``slot`` is out of range or was never written.
        """
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < self.num_slots:
            raise ValueError(f"slot: expected an int in [0, {self.num_slots}) for pool "
                             f"{self.name!r}, got {slot!r}")
        entry = self._pool[slot]
        if entry is None:
            raise ValueError(f"slot: {slot} of pool {self.name!r} has never been written")
        return entry
