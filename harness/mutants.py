"""The mutation catalogue: faulty KV-cache managers that the comparison must catch.

Each mutant is a small subclass of the refactored ``KVCacheManager`` (or of one of its pools)
with exactly ONE fault, the same constructor and the same API, so the harness plugs it in with
``ReplayOptions(manager="harness.mutants:Name")`` like any candidate. A mutant reaches into the
layer it breaks; that is its whole job, so the usual "each type owns its data" habit is waived
inside this file only.

A mutant whose observable behaviour (outputs and cache decisions, slots excluded) equals the
honest manager's on every possible call sequence is *equivalent*: its ``equivalent_reason``
says why, and the suite expects it to survive. The comparator is never taught to look at
internals (slots, pointers) to catch one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from refactored.cache_events import EntryStored
from refactored.cache_pool import KVCachePool, SlotStorage
from refactored.eviction import FifoEviction
from refactored.kv_cache_manager import KVCacheManager, cache_key
from unizero.config import WorldModelConfig
from unizero.events import POOL_ROOT
from unizero.kv_cache import KeysValues

__all__ = ["Mutant", "CATALOGUE", "mutant_named",
           "AliasingManager", "SizelessCopyManager", "TinyRecurrentPoolManager",
           "NoRecurrentFallbackManager", "LruManager", "WrongBytesKeyManager",
           "EnvSwapRootManager", "EnvSwapFallbackManager", "ClearAllKeepsRootsManager",
           "NoRecurrentClearManager", "EpisodeEndClearsNeighbourManager",
           "EpisodeEndClearsAllManager", "FirstWriteWinsManager", "FifoResetOnClearManager"]


@dataclass(frozen=True, slots=True)
class Mutant:
    """One faulty manager of the catalogue.

    Attributes:
        name: short label used in the report.
        spec: ``package.module:Class`` the harness loads in place of ``KVCacheManager``.
        description: the one fault, in words.
        equivalent_reason: why no workload can tell it from the honest manager, or None for a
            mutant the suite must catch.
    """

    name: str
    spec: str
    description: str
    equivalent_reason: str | None = None

    @property
    def equivalent(self) -> bool:
        return self.equivalent_reason is not None


# ---------------------------------------------------------------------------- storage faults
class _AliasingStorage(SlotStorage):
    """Keeps the caller's KeysValues object itself instead of copying it."""

    def write(self, slot: int, kv: KeysValues) -> KeysValues:
        self._entries[slot] = kv
        return kv


class _SizelessStorage(SlotStorage):
    """Copies the K/V tensors but leaves the slot's previous fill sizes (0 for a new slot)."""

    def write(self, slot: int, kv: KeysValues) -> KeysValues:
        previous = self[slot]
        sizes = ([(layer.k.size, layer.v.size) for layer in previous.layers]
                 if previous is not None else [(0, 0)] * len(kv))
        entry = super().write(slot, kv)
        for layer, (k_size, v_size) in zip(entry.layers, sizes):
            layer.k.size, layer.v.size = k_size, v_size
        return entry


def _swap_storage(manager: KVCacheManager, storage_cls: type[SlotStorage]) -> None:
    """Give every keyed pool of ``manager`` an empty storage of ``storage_cls``."""
    for pool in (*manager.init_pools, manager.recur_pool):
        pool._pool = storage_cls(pool.num_slots, pool._pool._geometry, pool._pool._device)


def _rebuilt(pool: KVCachePool, pool_cls: type[KVCachePool] = KVCachePool,
             num_slots: int | None = None) -> KVCachePool:
    """An empty ``pool_cls`` with ``pool``'s name, strategy, stats, geometry, device and event
    queue (the manager's, so its ``take_events()`` still reports the rebuilt pool)."""
    storage = pool._pool
    return pool_cls(num_slots or pool.num_slots, pool.name, pool.strategy_name, pool.stats,
                    geometry=storage._geometry, device=storage._device, events=pool.events)


class AliasingManager(KVCacheManager):
    """``set_*`` stores the caller's KeysValues object instead of a private copy (upstream bug).

    The world model hands ``set_*`` buffers it reuses (batch rows, a scratch), so an entry
    changes after it is stored: a hit reads whatever the buffer holds by then.
    """

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(config, env_num, enable_stats, **kwargs)
        _swap_storage(self, _AliasingStorage)


class SizelessCopyManager(KVCacheManager):
    """A store copies the K/V tensors but not the fill sizes."""

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(config, env_num, enable_stats, **kwargs)
        _swap_storage(self, _SizelessStorage)


# ---------------------------------------------------------------------------- sizing faults
class TinyRecurrentPoolManager(KVCacheManager):
    """The recurrent pool is sized ``num_simulations`` (one env's search), not ``x env_num``."""

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(config, env_num, enable_stats, **kwargs)
        self.recur_pool = _rebuilt(self.recur_pool, num_slots=config.num_simulations)


class LruManager(KVCacheManager):
    """Keyed pools evict the least recently used entry instead of legacy's FIFO order."""

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True,
                 *, eviction: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, env_num, enable_stats, eviction="lru", **kwargs)


class FifoResetOnClearManager(KVCacheManager):
    """Clearing a pool resets its FIFO write pointer to slot 0 (legacy never resets it)."""

    def clear_all(self) -> None:
        super().clear_all()
        self._reset_pointers(*self.init_pools, self.recur_pool)

    def clear_recur_cache(self) -> None:
        super().clear_recur_cache()
        self._reset_pointers(self.recur_pool)

    def clear_init_caches(self) -> None:
        super().clear_init_caches()
        self._reset_pointers(*self.init_pools)

    def clear_init_cache(self, env_id: int) -> None:
        super().clear_init_cache(env_id)
        self._reset_pointers(self.init_pools[env_id])

    @staticmethod
    def _reset_pointers(*pools: KVCachePool) -> None:
        for pool in pools:
            if isinstance(pool._strategy, FifoEviction):
                pool._strategy.pointer = 0


# ---------------------------------------------------------------------------- key faults
class WrongBytesKeyManager(KVCacheManager):
    """Keys hash the latent rounded to float16 instead of its float32 bytes.

    Lossy: latents that differ below float16 precision share a key.
    """

    @staticmethod
    def make_key(state: np.ndarray | torch.Tensor) -> int:
        if isinstance(state, torch.Tensor):
            state = state.detach().reshape(-1).cpu().numpy()
        return cache_key(np.asarray(state).astype(np.float16))


# ---------------------------------------------------------------------------- lookup faults
class NoRecurrentFallbackManager(KVCacheManager):
    """``hierarchical_get`` consults only the env's root pool, never the recurrent pool."""

    def hierarchical_get(self, env_id: int, cache_key: int) -> tuple[KeysValues | None, str | None]:
        entry = self.get_init_cache(env_id, cache_key)
        return (entry, POOL_ROOT) if entry is not None else (None, None)


class EnvSwapRootManager(KVCacheManager):
    """``get_init_cache`` (the root call's lookup) reads the next env's root pool."""

    def get_init_cache(self, env_id: int, cache_key: int) -> KeysValues | None:
        return super().get_init_cache((self._check_env_id(env_id) + 1) % self.env_num, cache_key)


class EnvSwapFallbackManager(KVCacheManager):
    """``hierarchical_get`` (the recurrent call's lookup) reads the next env's root pool."""

    def hierarchical_get(self, env_id: int, cache_key: int) -> tuple[KeysValues | None, str | None]:
        return super().hierarchical_get((self._check_env_id(env_id) + 1) % self.env_num, cache_key)


# ---------------------------------------------------------------------------- lifecycle faults
class ClearAllKeepsRootsManager(KVCacheManager):
    """``clear_all`` (periodic and epoch clears) forgets recurrent keys but keeps root keys."""

    def clear_all(self) -> None:
        self.recur_pool.clear()
        self.keys_values_wm_list.clear()


class NoRecurrentClearManager(KVCacheManager):
    """``clear_recur_cache`` (after every root call) does nothing: keys live across searches."""

    def clear_recur_cache(self) -> None:
        pass


class EpisodeEndClearsNeighbourManager(KVCacheManager):
    """``clear_init_cache(env_id)`` (episode end) clears env ``env_id + 1``'s root pool."""

    def clear_init_cache(self, env_id: int) -> None:
        super().clear_init_cache((self._check_env_id(env_id) + 1) % self.env_num)


class EpisodeEndClearsAllManager(KVCacheManager):
    """``clear_init_cache(env_id)`` (episode end) clears every env's root pool."""

    def clear_init_cache(self, env_id: int) -> None:
        self._check_env_id(env_id)
        self.clear_init_caches()


class _FirstWriteWinsPool(KVCachePool):
    """Storing a key that is already live keeps the old entry (no write, no eviction), and
    reports the store as done into the key's slot."""

    def put(self, key: int, kv: KeysValues) -> int:
        slot = self.slot_of(key)
        if slot is None:
            return super().put(key, kv)
        self.events.emit(EntryStored(self.name, key, slot, None))
        return slot


class FirstWriteWinsManager(KVCacheManager):
    """Re-storing a live key keeps its first entry instead of replacing it."""

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(config, env_num, enable_stats, **kwargs)
        self.init_pools = [_rebuilt(pool, _FirstWriteWinsPool) for pool in self.init_pools]
        self.recur_pool = _rebuilt(self.recur_pool, _FirstWriteWinsPool)


# ---------------------------------------------------------------------------- the catalogue
_FIFO_RESET_EQUIVALENT = (
    "every clear empties the whole pool it resets, so the pointer restarts over empty slots "
    "either way: the mutant's slots are the honest slots rotated by the old pointer, and every "
    "decision (hit, key, evicted key, size) and output is invariant under that rotation; only "
    "Store.slot differs, which is information, never a decision")


def _mutant(cls: type, description: str, equivalent_reason: str | None = None) -> Mutant:
    name = cls.__name__.removesuffix("Manager")
    return Mutant(name, f"{__name__}:{cls.__name__}", description, equivalent_reason)


CATALOGUE: tuple[Mutant, ...] = (
    _mutant(AliasingManager, "set_* stores the caller's KeysValues, not a copy"),
    _mutant(SizelessCopyManager, "a store copies K/V tensors but not fill sizes"),
    _mutant(TinyRecurrentPoolManager, "recurrent pool sized num_simulations, not x env_num"),
    _mutant(NoRecurrentFallbackManager, "hierarchical_get skips the recurrent pool"),
    _mutant(LruManager, "LRU eviction instead of FIFO"),
    _mutant(WrongBytesKeyManager, "keys hash float16-rounded latents"),
    _mutant(EnvSwapRootManager, "root-call lookups read env+1's root pool"),
    _mutant(EnvSwapFallbackManager, "recurrent-call root lookups read env+1's root pool"),
    _mutant(ClearAllKeepsRootsManager, "clear_all keeps root keys"),
    _mutant(NoRecurrentClearManager, "recurrent keys survive the root call"),
    _mutant(EpisodeEndClearsNeighbourManager, "an episode end clears env+1's root pool"),
    _mutant(EpisodeEndClearsAllManager, "an episode end clears every env's root pool"),
    _mutant(FirstWriteWinsManager, "re-storing a live key keeps the old entry"),
    _mutant(FifoResetOnClearManager, "a clear resets the FIFO pointer to slot 0",
            _FIFO_RESET_EQUIVALENT),
)


def mutant_named(name: str) -> Mutant:
    """The catalogue entry called ``name``.

    Raises:
        KeyError: naming the known mutants, if none is called ``name``.
    """
    for mutant in CATALOGUE:
        if mutant.name == name:
            return mutant
    raise KeyError(f"mutant {name!r}: expected one of {', '.join(m.name for m in CATALOGUE)}")
