"""One owner for the world model's KV caches: per-env root pools, the recurrent pool, scratch.

Replaces legacy's scattered dicts, reverse lists, write pointers and three copy helpers
(legacy-spec §4, §8.3) with ``KVCacheManager``:

* ``init_pools[env_id]`` — one root pool per env, ``config.init_pool_size`` slots;
* ``recur_pool`` — one recurrent pool shared by all envs, ``config.recur_pool_size`` slots;
* ``wm_pool`` — keyless circular scratch copies, ``config.wm_pool_size`` slots.

Keyed pools use ``config.eviction`` (or the ``eviction`` override); 'fifo' writes slots in
exactly legacy's order. Unlike legacy, each pool's key->slot and slot->key maps stay consistent,
so a stale slot->key entry never deletes a live key (quirk 1).

The manager reports what it decided as typed events (``refactored.cache_events``): every store
(slot written, key evicted to make room), scratch write and pool clear is queued in order, and
the owner drains them with ``take_events()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from refactored.cache_events import ManagerEvent, ManagerEventQueue
from refactored.cache_pool import KVCachePool, ScratchPool
from refactored.cache_stats import CacheStats, NullStats
from refactored.eviction import EVICTION_STRATEGIES
from unizero.config import WorldModelConfig
from unizero.events import POOL_RECURRENT, POOL_ROOT
from unizero.hashing import hash_state
from unizero.kv_cache import KeysValues

__all__ = ["KVCacheManager", "cache_key"]

logger = logging.getLogger(__name__)

_Method = TypeVar("_Method", bound=Callable[..., Any])


def cache_key(state: np.ndarray | torch.Tensor) -> int:
    """The cache key of a latent: XXH64 (seed 0) over its raw bytes, as legacy (spec §3)."""
    return hash_state(state)


def _synchronized(method: _Method) -> _Method:
    """Run ``method`` under the manager's lock (an RLock, or a null context when not shared)."""

    @functools.wraps(method)
    def locked(self: "KVCacheManager", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class KVCacheManager:
    """Root, recurrent and scratch KV-cache pools of one world model.

    Entries are private copies: ``set_*`` copies the caller's KeysValues into pool storage, and
    ``get_*`` returns the pool's own storage, which callers must treat as read-only (copy it,
    e.g. through ``set_wm_cache``, before modifying it).

    Args:
        config: world-model config; gives pool sizes, eviction and the expected KV geometry
            ``(num_layers, 1, num_heads, context_length, head_dim)``.
        env_num: number of envs; must equal ``config.env_num`` (pool sizes derive from it).
        enable_stats: count hits/misses/evictions per pool; off uses ``NullStats``.
        thread_safe: serialise every public method with one ``threading.RLock``. The lock
            guards maps, pointers and stats; an entry returned by a get may still be
            overwritten by a later store from another thread.
        device: device of pool storage; None uses the device of the first entry stored.
        eviction: strategy name overriding ``config.eviction``.
        enable_events: queue decision events for ``take_events()``; turn off when nobody
            drains them (the queue would only grow).

    Raises:
        TypeError: if ``config`` is not a WorldModelConfig.
        ValueError: if ``env_num`` or ``eviction`` is invalid.
    """

    def __init__(self, config: WorldModelConfig, env_num: int, enable_stats: bool = True, *,
                 thread_safe: bool = False, device: torch.device | str | None = None,
                 eviction: str | None = None, enable_events: bool = True) -> None:
        if not isinstance(config, WorldModelConfig):
            raise TypeError(f"config: expected a WorldModelConfig, got {type(config).__name__}")
        if not isinstance(env_num, int) or isinstance(env_num, bool) or env_num <= 0:
            raise ValueError(f"env_num: expected a positive int, got {env_num!r}")
        if env_num != config.env_num:
            raise ValueError(f"env_num: expected config.env_num={config.env_num} (pool sizes "
                             f"derive from it), got {env_num}")
        strategy = config.eviction if eviction is None else eviction
        if strategy not in EVICTION_STRATEGIES:
            raise ValueError(f"eviction: expected one of {sorted(EVICTION_STRATEGIES)}, "
                             f"got {strategy!r}")
        self.config = config
        self.env_num = env_num
        self.eviction = strategy
        self.enable_stats = bool(enable_stats)
        self.thread_safe = bool(thread_safe)
        self._lock: Any = threading.RLock() if thread_safe else contextlib.nullcontext()
        self.events = ManagerEventQueue(enable_events)  # shared by every pool below
        # Every stored single-env cache has this geometry (legacy-spec §8): [1, H, C, hd].
        geometry = (config.num_layers, 1, config.num_heads, config.context_length, config.head_dim)
        self.init_pools = [
            KVCachePool(config.init_pool_size, f"init[{env_id}]", strategy, self._new_stats(),
                        geometry=geometry, device=device, events=self.events)
            for env_id in range(env_num)]
        self.recur_pool = KVCachePool(config.recur_pool_size, "recur", strategy,
                                      self._new_stats(), geometry=geometry, device=device,
                                      events=self.events)
        self.wm_pool = ScratchPool(config.wm_pool_size, "wm", geometry=geometry, device=device,
                                   events=self.events)
        # Backward compatibility (guide step 2): the world model aliases these two lists.
        self.keys_values_wm_list: list[KeysValues] = []
        self.keys_values_wm_size_list: list[int] = []

    def _new_stats(self) -> CacheStats | NullStats:
        return CacheStats() if self.enable_stats else NullStats()

    @staticmethod
    def make_key(state: np.ndarray | torch.Tensor) -> int:
        """The cache key of a latent (XXH64 over its float32 bytes, as legacy)."""
        return cache_key(state)

    def __repr__(self) -> str:
        return (f"KVCacheManager(env_num={self.env_num}, init={self.config.init_pool_size}, "
                f"recur={self.recur_pool.num_slots}, wm={self.wm_pool.num_slots}, "
                f"eviction={self.eviction!r}, thread_safe={self.thread_safe})")

    @_synchronized
    def take_events(self) -> list[ManagerEvent]:
        """Drain the events queued since the last call, oldest first.

        Returns:
            ``EntryStored`` per ``set_init_cache``/``set_recur_cache`` (pool, key, slot, evicted
            key), ``ScratchWritten`` per ``set_wm_cache``, ``PoolCleared`` per keyed pool a
            ``clear_*`` call emptied.
        """
        return self.events.take_events()

    # ------------------------------------------------------------------ root pools
    @_synchronized
    def set_init_cache(self, env_id: int, cache_key: int, kv_cache: KeysValues) -> int:
        """Store a copy of ``kv_cache`` in env ``env_id``'s root pool; returns the slot.

        Queues an ``EntryStored`` (pool ``init[<env_id>]``) naming the key evicted, if any.
        """
        pool = self.init_pools[self._check_env_id(env_id)]
        return pool.put(cache_key, self._check_kv(kv_cache))

    @_synchronized
    def get_init_cache(self, env_id: int, cache_key: int) -> KeysValues | None:
        """Env ``env_id``'s root entry for ``cache_key`` (read-only), or None."""
        return self.init_pools[self._check_env_id(env_id)].get(cache_key)

    # ------------------------------------------------------------------ recurrent pool
    @_synchronized
    def set_recur_cache(self, cache_key: int, kv_cache: KeysValues) -> int:
        """Store a copy of ``kv_cache`` in the shared recurrent pool; returns the slot.

        Queues an ``EntryStored`` (pool ``recur``) naming the key evicted, if any.
        """
        return self.recur_pool.put(cache_key, self._check_kv(kv_cache))

    @_synchronized
    def get_recur_cache(self, cache_key: int) -> KeysValues | None:
        """The recurrent entry for ``cache_key`` (read-only), or None."""
        return self.recur_pool.get(cache_key)

    # ------------------------------------------------------------------ scratch pool
    @_synchronized
    def set_wm_cache(self, kv_cache: KeysValues) -> int:
        """Copy ``kv_cache`` into the next scratch slot (circular); returns the slot."""
        return self.wm_pool.write(self._check_kv(kv_cache))

    @_synchronized
    def get_wm_cache(self, slot: int) -> KeysValues:
        """The scratch entry in ``slot``; raises ValueError if out of range or never written."""
        return self.wm_pool.read(slot)

    # ------------------------------------------------------------------ lookup
    @_synchronized
    def hierarchical_get(self, env_id: int,
                         cache_key: int) -> tuple[KeysValues | None, str | None]:
        """Look in env ``env_id``'s root pool, then in the recurrent pool (legacy-spec §7).

        Returns:
            ``(entry, POOL_ROOT)``, ``(entry, POOL_RECURRENT)`` or ``(None, None)``.
        """
        entry = self.init_pools[self._check_env_id(env_id)].get(cache_key)
        if entry is not None:
            return entry, POOL_ROOT
        entry = self.recur_pool.get(cache_key)
        if entry is not None:
            return entry, POOL_RECURRENT
        return None, None

    # ------------------------------------------------------------------ clearing
    @_synchronized
    def clear_all(self) -> None:
        """Forget every root and recurrent key and empty ``keys_values_wm_list``.

        As legacy ``clear_caches``: write pointers and ``keys_values_wm_size_list`` are kept.
        """
        for pool in self.init_pools:
            pool.clear()
        self.recur_pool.clear()
        self.keys_values_wm_list.clear()  # in place: the world model holds this list

    @_synchronized
    def clear_recur_cache(self) -> None:
        """Forget every recurrent key (legacy does this after each root call)."""
        self.recur_pool.clear()

    @_synchronized
    def clear_init_caches(self) -> None:
        """Forget every env's root keys."""
        for pool in self.init_pools:
            pool.clear()

    @_synchronized
    def clear_init_cache(self, env_id: int) -> None:
        """Forget env ``env_id``'s root keys (the collector's episode-end reset)."""
        self.init_pools[self._check_env_id(env_id)].clear()

    # ------------------------------------------------------------------ stats
    @_synchronized
    def get_stats_summary(self) -> dict[str, dict[str, int | float]]:
        """Counters per pool, plus ``init`` (all root pools) and ``total`` (every keyed pool).

        Keys: ``init[0]`` … ``init[env_num-1]``, ``init``, ``recur``, ``total``; each value has
        ``hits``, ``misses``, ``evictions``, ``queries`` and ``hit_rate``. All zero when stats
        are off.
        """
        pools = [*self.init_pools, self.recur_pool]
        summary = {pool.name: pool.stats.as_dict() for pool in pools}
        summary["init"] = CacheStats.merged(pool.stats for pool in self.init_pools).as_dict()
        summary["total"] = CacheStats.merged(pool.stats for pool in pools).as_dict()
        return summary

    @_synchronized
    def reset_stats(self) -> None:
        for pool in (*self.init_pools, self.recur_pool):
            pool.stats.reset()

    def maybe_log_stats(self, step: int) -> bool:
        """Log the summary when cache logging is on and ``step`` is a multiple of
        ``config.cache_log_interval``; returns whether it logged."""
        if not self.config.enable_cache_logging or step % self.config.cache_log_interval:
            return False
        return self._log_cache_stats()

    def _log_cache_stats(self) -> bool:
        """Log the summary at INFO when cache logging is on (built only if INFO is enabled)."""
        if not self.config.enable_cache_logging or not logger.isEnabledFor(logging.INFO):
            return False
        logger.info("KV cache stats: %s", self.get_stats_summary())
        return True

    # ------------------------------------------------------------------ validation
    def _check_env_id(self, env_id: Any) -> int:
        if not isinstance(env_id, (int, np.integer)) or isinstance(env_id, bool) \
                or not 0 <= int(env_id) < self.env_num:
            raise ValueError(f"env_id: expected an int in [0, {self.env_num}), got {env_id!r}")
        return int(env_id)

    def _check_kv(self, kv: Any) -> KeysValues:
        """Reject a cache whose layers, heads or head_dim differ from the config's."""
        if not isinstance(kv, KeysValues):
            raise TypeError(f"kv_cache: expected a KeysValues, got {type(kv).__name__}")
        config = self.config
        packed = kv.as_packed()
        if packed is not None and len(kv) == config.num_layers and packed.shape[3] == config.num_heads \
                and packed.shape[5] == config.head_dim:
            return kv  # packed: every layer's K and V share this one checked shape
        if len(kv) != config.num_layers:
            raise ValueError(f"kv_cache: expected {config.num_layers} layers (config.num_layers), "
                             f"got {len(kv)}")
        first = kv[0].k.tensor.shape
        for index, layer in enumerate(kv.layers):
            for part, tensor in (("K", layer.k.tensor), ("V", layer.v.tensor)):
                shape = tensor.shape
                if len(shape) != 4 or shape[1] != config.num_heads or shape[3] != config.head_dim:
                    raise ValueError(
                        f"kv_cache layer {index} {part}: expected shape [B, {config.num_heads}, T, "
                        f"{config.head_dim}] (config.num_heads, config.head_dim), got {list(shape)}")
                if shape != first:
                    raise ValueError(f"kv_cache layer {index} {part}: expected the shape of layer 0 "
                                     f"K {list(first)}, got {list(shape)}")
        return kv
