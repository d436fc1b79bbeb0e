"""Behaviour of KVCacheManager, KVCachePool, the eviction strategies and the stats records.

Entries are identified by a value written into their tensors: ``make_kv(v)`` fills every K
with ``v`` and every V with ``v + 0.5``; ``value_of(entry)`` reads it back (and checks it).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from refactored.cache_events import EntryStored, ManagerEventQueue, PoolCleared, ScratchWritten
from refactored.cache_pool import KVCachePool
from refactored.cache_stats import CacheStats, NullStats
from refactored.eviction import EVICTION_STRATEGIES, FifoEviction, LruEviction
from refactored.kv_cache_manager import KVCacheManager, cache_key
from unizero.config import WorldModelConfig
from unizero.events import POOL_RECURRENT, POOL_ROOT
from unizero.hashing import hash_state
from unizero.kv_cache import KeysValues

HEADS, HEAD_DIM, TOKENS = 2, 4, 8
A, B, C, D, E, F = 101, 102, 103, 104, 105, 106


# ---------------------------------------------------------------------------------- factories
def make_config(**overrides) -> WorldModelConfig:
    fields = dict(embed_dim=HEADS * HEAD_DIM, num_heads=HEADS, num_layers=2, context_length=TOKENS,
                  max_tokens=20, env_num=2, num_simulations=3, game_segment_length=4)
    fields.update(overrides)
    return WorldModelConfig(**fields)


def make_manager(*, enable_stats: bool = True, thread_safe: bool = False,
                 eviction: str | None = None, **config_overrides) -> KVCacheManager:
    config = make_config(**config_overrides)
    return KVCacheManager(config, config.env_num, enable_stats, thread_safe=thread_safe,
                          eviction=eviction)


def make_kv(value: float, *, size: int = 3, num_layers: int = 2, heads: int = HEADS,
            tokens: int = TOKENS, head_dim: int = HEAD_DIM, dtype=torch.float32) -> KeysValues:
    kv = KeysValues(1, heads, tokens, heads * head_dim, num_layers, "cpu", dtype)
    for layer in kv.layers:
        layer.k.tensor.fill_(value)
        layer.v.tensor.fill_(value + 0.5)
        layer.k.size = layer.v.size = size
    return kv


def value_of(kv: KeysValues) -> float:
    """The constant a factory filled ``kv`` with, checked over every layer's valid region
    (pools copy only ``[:size]``; the tail of a slot is never read)."""
    value = kv[0].k.tensor.flatten()[0].item()
    for layer in kv.layers:
        k, v = layer.get()
        assert torch.all(k == value) and torch.all(v == value + 0.5)
    return value


def make_pool(num_slots: int, strategy: str = "fifo", num_layers: int = 1) -> KVCachePool:
    return KVCachePool(num_slots, "pool", strategy, CacheStats(),
                       geometry=(num_layers, 1, HEADS, TOKENS, HEAD_DIM))


def put_all(pool: KVCachePool, keys: list[int]) -> tuple[list[int], list[int | None]]:
    """Store ``keys`` in order; returns the slots and, from the drained events, the keys evicted
    (after checking that the queue held exactly one ``EntryStored`` per store, in order)."""
    slots = []
    for key in keys:
        slots.append(pool.put(key, make_kv(float(key), num_layers=1)))
        pool.check_consistency()
    events = pool.take_events()
    assert [(type(e), e.pool, e.key, e.slot) for e in events] == [
        (EntryStored, pool.name, key, slot) for key, slot in zip(keys, slots)]
    return slots, [event.evicted for event in events]


# ---------------------------------------------------------------------------------- sizing
def test_pool_sizes_default_to_legacy_sizing():
    manager = make_manager(env_num=3, num_simulations=5, game_segment_length=7)
    assert len(manager.init_pools) == 3
    assert [pool.num_slots for pool in manager.init_pools] == [7, 7, 7]  # game_segment_length
    assert manager.recur_pool.num_slots == 15                           # num_simulations * env_num
    assert manager.wm_pool.num_slots == 3                               # env_num


def test_pool_size_overrides_are_respected():
    manager = make_manager(init_pool_size_override=2, recur_pool_size_override=9,
                           wm_pool_size_override=5)
    assert [pool.num_slots for pool in manager.init_pools] == [2, 2]
    assert (manager.recur_pool.num_slots, manager.wm_pool.num_slots) == (9, 5)


def test_eviction_defaults_to_config_and_argument_overrides_it():
    assert make_manager().recur_pool.strategy_name == "fifo"
    assert make_manager(eviction="lru").recur_pool.strategy_name == "lru"
    manager = KVCacheManager(make_config(eviction="lru"), 2)
    assert {pool.strategy_name for pool in (*manager.init_pools, manager.recur_pool)} == {"lru"}


def test_eviction_registry_names_every_strategy_class():
    assert EVICTION_STRATEGIES == {"fifo": FifoEviction, "lru": LruEviction}


def test_backward_compatible_wm_lists_start_empty():
    manager = make_manager()
    assert manager.keys_values_wm_list == [] and manager.keys_values_wm_size_list == []


# ---------------------------------------------------------------------------------- root pools
def test_set_then_get_init_cache_returns_stored_contents_and_sizes():
    manager = make_manager()
    assert manager.set_init_cache(0, A, make_kv(1.0, size=5)) == 0
    entry = manager.get_init_cache(0, A)
    assert value_of(entry) == 1.0
    assert [(layer.k.size, layer.v.size) for layer in entry.layers] == [(5, 5), (5, 5)]


def test_get_init_cache_of_unknown_key_returns_none():
    assert make_manager().get_init_cache(0, A) is None


def test_root_pools_are_isolated_per_env():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    assert manager.get_init_cache(1, A) is None
    manager.set_init_cache(1, A, make_kv(2.0))
    assert (value_of(manager.get_init_cache(0, A)), value_of(manager.get_init_cache(1, A))) == (1.0, 2.0)


def test_set_init_cache_writes_slots_in_circular_order_per_env():
    manager = make_manager(game_segment_length=4)
    slots = [manager.set_init_cache(0, key, make_kv(0.0)) for key in range(6)]
    assert slots == [0, 1, 2, 3, 0, 1]
    assert manager.set_init_cache(1, 99, make_kv(0.0)) == 0  # env 1 has its own pointer


# ---------------------------------------------------------------------------------- FIFO
def test_fifo_pool_evicts_oldest_key_first_in_exact_order():
    slots, evicted = put_all(make_pool(3), [A, B, C, D, E, F, A])
    assert slots == [0, 1, 2, 0, 1, 2, 0]
    assert evicted == [None, None, None, A, B, C, D]


def test_fifo_pointer_is_not_reset_by_clear():
    pool = make_pool(4)
    put_all(pool, [A, B])
    pool.clear()
    assert len(pool) == 0 and pool.keys() == []
    assert pool.take_events() == [PoolCleared("pool", 2)]
    slots, evicted = put_all(pool, [C, D, E])
    assert slots == [2, 3, 0] and evicted == [None, None, None]


def test_fifo_duplicate_key_moves_to_new_slot_and_newest_wins():
    pool = make_pool(3)
    assert put_all(pool, [A])[0] == [0]
    assert pool.put(A, make_kv(7.0, num_layers=1)) == 1  # legacy: duplicates take a new slot
    assert pool.slot_of(A) == 1 and pool.key_at(0) is None
    assert value_of(pool.get(A)) == 7.0


def test_duplicate_key_is_never_deleted_by_its_old_slot():
    # Legacy quirk 1(a): A stored at 0 and again at 1 leaves reverse[0] == A; when the pointer
    # returns to slot 0, legacy deletes the live A (which points at slot 1). Here slot 0 was
    # cleared when A moved, so writing slot 0 evicts nothing.
    pool = make_pool(3)
    slots, evicted = put_all(pool, [A, A, B, C])
    assert slots == [0, 1, 2, 0] and evicted == [None, None, None, None]
    assert pool.slot_of(A) == 1 and pool.get(A) is not None


def test_stale_entry_from_before_clear_never_deletes_live_key():
    # Legacy quirk 1(b), spec §12 example: search 1 stores A, B, C; the root call clears the
    # map; search 2 stores B at 0, hits B, stores D at 1 (legacy's reverse[1] == B deletes B).
    pool = make_pool(3)
    put_all(pool, [A, B, C])
    pool.clear()
    assert pool.take_events() == [PoolCleared("pool", 3)]
    assert put_all(pool, [B])[0] == [0]
    assert pool.get(B) is not None
    assert put_all(pool, [D]) == ([1], [None])
    assert pool.get(B) is not None


def test_fifo_store_into_the_keys_own_slot_is_not_an_eviction():
    pool = make_pool(3)
    slots, evicted = put_all(pool, [A, B, C, A])
    assert slots == [0, 1, 2, 0] and evicted == [None] * 4
    assert pool.stats.evictions == 0 and pool.keys() == [A, B, C]


# ---------------------------------------------------------------------------------- LRU
def test_lru_pool_evicts_least_recently_used_in_exact_order():
    pool = make_pool(3, "lru")
    put_all(pool, [A, B, C])
    pool.get(A)                                   # recency, stalest first: B C A
    assert put_all(pool, [D]) == ([1], [B])       # C A D
    pool.get(C)                                   # A D C
    assert put_all(pool, [E, F]) == ([0, 1], [A, D])
    assert pool.keys() == [E, F, C]


def test_lru_uses_free_slots_first_in_slot_order():
    pool = make_pool(4, "lru")
    put_all(pool, [A, B, C])
    pool.get(A)
    pool.clear()
    assert pool.take_events() == [PoolCleared("pool", 3)]
    assert put_all(pool, [D, E, F]) == ([0, 1, 2], [None, None, None])


def test_lru_restore_of_live_key_overwrites_its_own_slot():
    pool = make_pool(2, "lru")
    put_all(pool, [A, B])
    pool.get(A)                                   # A is most recent, B stalest
    assert put_all(pool, [B]) == ([1], [None])    # update in place, A survives
    assert pool.keys() == [A, B] and pool.stats.evictions == 0


def test_lru_miss_does_not_change_recency():
    pool = make_pool(2, "lru")
    put_all(pool, [A, B])
    pool.get(C)
    assert put_all(pool, [D]) == ([0], [A])


@pytest.mark.parametrize("strategy", sorted(EVICTION_STRATEGIES))
def test_maps_stay_consistent_after_every_eviction(strategy):
    pool = make_pool(3, strategy)
    rng = np.random.default_rng(0)
    for step in range(300):
        key = int(rng.integers(0, 6))
        if step % 37 == 0:
            pool.clear()
        elif rng.random() < 0.5:
            pool.get(key)
        else:
            pool.put(key, make_kv(float(key), num_layers=1))
        pool.check_consistency()
        assert len(pool) <= 3
    assert pool.stats.evictions > 0


# ---------------------------------------------------------------------------------- storage
def test_pool_storage_is_one_tensor_and_entries_are_views_of_it():
    pool = make_pool(3, num_layers=2)
    assert pool.storage is None                   # allocated on first store
    slot = pool.put(A, make_kv(4.0))
    assert pool.storage.shape == (3, 2, 2, 1, HEADS, TOKENS, HEAD_DIM)  # [S, L, K/V, B, H, T, hd]
    entry = pool.get(A)
    assert entry[1].v.tensor.data_ptr() == pool.storage[slot, 1, 1].data_ptr()
    valid = entry.size  # only the valid positions are copied into a slot
    assert torch.all(pool.storage[slot, 0, 0, ..., :valid, :] == 4.0)
    assert torch.all(pool.storage[slot, 0, 1, ..., :valid, :] == 4.5)


def test_slot_entries_are_reused_after_wrap():
    pool = make_pool(2)
    put_all(pool, [A, B])
    first = pool.get(A)
    put_all(pool, [C])                            # overwrites slot 0
    assert pool.get(C) is first and value_of(first) == float(C)


def test_entry_of_other_geometry_or_dtype_is_stored_as_private_copy():
    manager = make_manager()
    short = make_kv(1.0, tokens=6)
    manager.set_recur_cache(A, short)
    manager.set_recur_cache(B, make_kv(2.0, dtype=torch.float64))
    short[0].k.tensor.fill_(-1.0)
    assert manager.get_recur_cache(A).geometry == (2, 1, HEADS, 6, HEAD_DIM)
    assert value_of(manager.get_recur_cache(A)) == 1.0
    assert manager.get_recur_cache(B)[0].k.tensor.dtype == torch.float64


def test_storage_uses_the_given_device():
    config = make_config()
    manager = KVCacheManager(config, config.env_num, device="cpu")
    manager.set_recur_cache(A, make_kv(1.0))
    assert manager.recur_pool.storage.device == torch.device("cpu")


# ---------------------------------------------------------------------------------- isolation
def test_mutating_callers_cache_after_set_does_not_change_stored_entry():
    manager = make_manager()
    kv = make_kv(1.0, size=3)
    manager.set_init_cache(0, A, kv)
    manager.set_recur_cache(B, kv)
    for layer in kv.layers:
        layer.k.tensor.fill_(9.0)
        layer.v.tensor.fill_(9.5)
        layer.k.size = layer.v.size = 7
    for entry in (manager.get_init_cache(0, A), manager.get_recur_cache(B)):
        assert entry is not kv and value_of(entry) == 1.0 and entry.size == 3


def test_get_returns_the_pools_own_storage():
    manager = make_manager()
    slot = manager.set_recur_cache(A, make_kv(1.0))
    entry = manager.get_recur_cache(A)
    assert entry is manager.get_recur_cache(A)
    assert entry is manager.recur_pool._pool[slot]


# ---------------------------------------------------------------------------------- scratch
def test_set_wm_cache_writes_scratch_slots_circularly():
    manager = make_manager(env_num=2)
    slots = [manager.set_wm_cache(make_kv(float(v))) for v in range(5)]
    assert slots == [0, 1, 0, 1, 0]
    assert (value_of(manager.get_wm_cache(0)), value_of(manager.get_wm_cache(1))) == (4.0, 3.0)
    assert manager.take_events() == [ScratchWritten("wm", slot) for slot in slots]


def test_get_wm_cache_returns_a_copy_not_the_callers_cache():
    manager = make_manager()
    kv = make_kv(1.0)
    slot = manager.set_wm_cache(kv)
    kv[0].k.tensor.fill_(0.0)
    assert manager.get_wm_cache(slot) is not kv and value_of(manager.get_wm_cache(slot)) == 1.0


def test_get_wm_cache_rejects_unwritten_or_out_of_range_slot():
    manager = make_manager()
    with pytest.raises(ValueError, match=r"slot: 0 of pool 'wm' has never been written"):
        manager.get_wm_cache(0)
    with pytest.raises(ValueError, match=r"slot: expected an int in \[0, 2\) .* got 2"):
        manager.get_wm_cache(2)


# ---------------------------------------------------------------------------------- lookup
def test_hierarchical_get_prefers_root_pool_over_recurrent():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_recur_cache(A, make_kv(2.0))
    entry, pool = manager.hierarchical_get(0, A)
    assert (value_of(entry), pool) == (1.0, POOL_ROOT)


def test_hierarchical_get_falls_back_to_recurrent_pool():
    manager = make_manager()
    manager.set_recur_cache(A, make_kv(2.0))
    entry, pool = manager.hierarchical_get(1, A)
    assert (value_of(entry), pool) == (2.0, POOL_RECURRENT)


def test_hierarchical_get_miss_returns_none_twice():
    assert make_manager().hierarchical_get(0, A) == (None, None)


def test_hierarchical_get_never_sees_another_envs_root_entries():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    assert manager.hierarchical_get(1, A) == (None, None)
    stats = manager.get_stats_summary()
    assert (stats["init[1]"]["misses"], stats["recur"]["misses"]) == (1, 1)


# ---------------------------------------------------------------------------------- clearing
def test_clear_all_forgets_every_key_and_empties_wm_list_in_place():
    manager = make_manager()
    aliased_list, aliased_sizes = manager.keys_values_wm_list, manager.keys_values_wm_size_list
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_init_cache(1, B, make_kv(1.0))
    manager.set_recur_cache(C, make_kv(1.0))
    aliased_list.append(make_kv(0.0))
    aliased_sizes.append(3)
    manager.clear_all()
    assert manager.hierarchical_get(0, A) == (None, None) and manager.get_init_cache(1, B) is None
    assert manager.get_recur_cache(C) is None
    assert manager.keys_values_wm_list is aliased_list and aliased_list == []
    assert aliased_sizes == [3]  # as legacy clear_caches
    assert manager.set_recur_cache(D, make_kv(1.0)) == 1  # FIFO pointer kept


def test_clear_recur_cache_keeps_root_entries():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_recur_cache(B, make_kv(1.0))
    manager.clear_recur_cache()
    assert manager.get_recur_cache(B) is None and manager.get_init_cache(0, A) is not None


def test_clear_init_caches_keeps_recurrent_entries():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_init_cache(1, A, make_kv(1.0))
    manager.set_recur_cache(B, make_kv(1.0))
    manager.clear_init_caches()
    assert manager.get_init_cache(0, A) is None and manager.get_init_cache(1, A) is None
    assert manager.get_recur_cache(B) is not None


def test_clear_init_cache_clears_only_that_env():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_init_cache(1, A, make_kv(2.0))
    manager.clear_init_cache(0)
    assert manager.get_init_cache(0, A) is None and value_of(manager.get_init_cache(1, A)) == 2.0


# ---------------------------------------------------------------------------------- stats
def test_stats_count_hits_misses_queries_and_hit_rate():
    manager = make_manager()
    manager.set_recur_cache(A, make_kv(1.0))
    for key in (A, A, A, B):
        manager.get_recur_cache(key)
    assert manager.get_stats_summary()["recur"] == {
        "hits": 3, "misses": 1, "evictions": 0, "queries": 4, "hit_rate": 0.75}


def test_stats_count_evictions_and_store_events_name_the_victim():
    manager = make_manager(num_simulations=1, env_num=2)  # recurrent pool of 2 slots
    for key in (A, B, C):
        manager.set_recur_cache(key, make_kv(1.0))
    manager.set_init_cache(0, D, make_kv(1.0))
    assert manager.take_events() == [
        EntryStored("recur", A, 0, None), EntryStored("recur", B, 1, None),
        EntryStored("recur", C, 0, A), EntryStored("init[0]", D, 0, None)]
    assert manager.get_stats_summary()["recur"]["evictions"] == 1


# ---------------------------------------------------------------------------------- events
def test_take_events_reports_every_pools_decisions_in_exact_order():
    manager = make_manager(num_simulations=1, env_num=2, game_segment_length=4)  # recur: 2 slots
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.set_recur_cache(B, make_kv(1.0))
    manager.set_recur_cache(C, make_kv(1.0))
    manager.set_wm_cache(make_kv(1.0))
    manager.set_recur_cache(D, make_kv(1.0))     # the FIFO pointer is back at slot 0: B goes
    manager.clear_recur_cache()
    manager.clear_init_cache(1)
    manager.clear_all()
    assert manager.take_events() == [
        EntryStored("init[0]", A, 0, None), EntryStored("recur", B, 0, None),
        EntryStored("recur", C, 1, None), ScratchWritten("wm", 0),
        EntryStored("recur", D, 0, B), PoolCleared("recur", 2), PoolCleared("init[1]", 0),
        PoolCleared("init[0]", 1), PoolCleared("init[1]", 0), PoolCleared("recur", 0)]
    assert manager.take_events() == []


def test_lookups_queue_no_events():
    manager = make_manager()
    manager.set_recur_cache(A, make_kv(1.0))
    manager.take_events()
    manager.get_recur_cache(A)
    manager.get_init_cache(0, A)
    manager.hierarchical_get(1, B)
    assert manager.take_events() == []


def test_events_can_be_switched_off_for_an_owner_that_never_drains():
    config = make_config()
    manager = KVCacheManager(config, config.env_num, enable_events=False)
    assert manager.set_recur_cache(A, make_kv(1.0)) == 0
    manager.clear_all()
    assert manager.take_events() == [] and len(manager.events) == 0


def test_a_pool_built_alone_has_a_queue_of_its_own():
    first, second = make_pool(2), make_pool(2)
    first.put(A, make_kv(1.0, num_layers=1))
    assert second.take_events() == [] and first.take_events() == [EntryStored("pool", A, 0, None)]


def test_pools_share_one_queue_passed_in():
    queue = ManagerEventQueue()
    pools = [KVCachePool(2, name, "fifo", CacheStats(), events=queue) for name in ("p", "q")]
    pools[1].put(A, make_kv(1.0, num_layers=1))
    pools[0].put(B, make_kv(1.0, num_layers=1))
    assert queue.take_events() == [EntryStored("q", A, 0, None), EntryStored("p", B, 0, None)]


def test_stats_summary_totals_are_sums_over_pools():
    manager = make_manager()
    manager.set_init_cache(0, A, make_kv(1.0))
    manager.hierarchical_get(0, A)                # init[0] hit
    manager.hierarchical_get(1, A)                # init[1] miss, recur miss
    summary = manager.get_stats_summary()
    assert set(summary) == {"init[0]", "init[1]", "init", "recur", "total"}
    assert summary["init"] == {"hits": 1, "misses": 1, "evictions": 0, "queries": 2, "hit_rate": 0.5}
    assert summary["total"]["queries"] == 3 and summary["total"]["hits"] == 1
    for record in summary.values():
        assert record["hits"] + record["misses"] == record["queries"]


def test_hit_rate_is_zero_before_any_query():
    assert CacheStats().hit_rate == 0.0
    assert make_manager().get_stats_summary()["total"]["hit_rate"] == 0.0


def test_reset_stats_zeroes_every_counter():
    manager = make_manager()
    manager.set_recur_cache(A, make_kv(1.0))
    manager.hierarchical_get(0, A)
    manager.reset_stats()
    assert all(record["queries"] == 0 and record["evictions"] == 0
               for record in manager.get_stats_summary().values())


def test_stats_off_uses_null_stats_and_summary_is_all_zero():
    manager = make_manager(enable_stats=False)
    assert all(isinstance(pool.stats, NullStats) for pool in (*manager.init_pools, manager.recur_pool))
    manager.set_recur_cache(A, make_kv(1.0))
    manager.hierarchical_get(0, A)
    summary = manager.get_stats_summary()
    assert isinstance(summary, dict) and summary["total"] == {
        "hits": 0, "misses": 0, "evictions": 0, "queries": 0, "hit_rate": 0.0}


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("env_id", [-1, 2, True, "0", 1.0])
def test_env_id_out_of_range_or_not_int_is_rejected(env_id):
    manager = make_manager()
    with pytest.raises(ValueError, match=r"env_id: expected an int in \[0, 2\), got"):
        manager.set_init_cache(env_id, A, make_kv(1.0))
    with pytest.raises(ValueError, match="env_id"):
        manager.hierarchical_get(env_id, A)


def test_kv_cache_that_is_not_keys_values_is_a_type_error():
    with pytest.raises(TypeError, match="kv_cache: expected a KeysValues, got Tensor"):
        make_manager().set_recur_cache(A, torch.zeros(1))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_layers": 3}, r"expected 2 layers \(config.num_layers\), got 3"),
    ({"heads": 4, "head_dim": 2}, r"layer 0 K: expected shape \[B, 2, T, 4\] .* got \[1, 4, 8, 2\]"),
    ({"head_dim": 8}, r"layer 0 K: expected shape \[B, 2, T, 4\] .* got \[1, 2, 8, 8\]"),
])
def test_kv_cache_of_wrong_geometry_is_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_manager().set_init_cache(0, A, make_kv(1.0, **kwargs))


def test_kv_cache_with_layers_of_different_shapes_is_rejected():
    kv = make_kv(1.0)
    kv[1].v.tensor = torch.zeros(1, HEADS, 5, HEAD_DIM)
    with pytest.raises(ValueError, match=r"layer 1 V: expected the shape of layer 0 K"):
        make_manager().set_wm_cache(kv)


@pytest.mark.parametrize("key", ["abc", 1.5, None, True])
def test_cache_key_that_is_not_int_is_a_type_error(key):
    manager = make_manager()
    with pytest.raises(TypeError, match=r"cache_key: expected an int .* got"):
        manager.set_recur_cache(key, make_kv(1.0))
    with pytest.raises(TypeError, match="cache_key"):
        manager.get_init_cache(0, key)


def test_numpy_integer_key_is_accepted_as_int():
    manager = make_manager()
    manager.set_recur_cache(np.uint64(2**63 + 5), make_kv(1.0))
    assert manager.recur_pool.keys() == [2**63 + 5]
    assert type(manager.recur_pool.keys()[0]) is int


@pytest.mark.parametrize(("call", "message"), [
    (lambda: KVCacheManager({"env_num": 2}, 2), "config: expected a WorldModelConfig, got dict"),
    (lambda: KVCacheManager(make_config(), 0), "env_num: expected a positive int, got 0"),
    (lambda: KVCacheManager(make_config(), 3), r"env_num: expected config.env_num=2 .* got 3"),
    (lambda: KVCacheManager(make_config(), 2, eviction="priority"),
     r"eviction: expected one of \['fifo', 'lru'\], got 'priority'"),
    (lambda: KVCachePool(0, "p", "fifo", CacheStats()), "num_slots: expected a positive int, got 0"),
    (lambda: LruEviction(-1), "num_slots: expected a positive int, got -1"),
])
def test_invalid_construction_is_rejected_with_a_message(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


# ---------------------------------------------------------------------------------- threads
def test_thread_safe_manager_loses_no_entries_under_concurrent_writers_and_readers():
    num_writers, keys_per_writer, num_readers, gets_per_reader = 4, 50, 4, 200
    manager = make_manager(thread_safe=True, recur_pool_size_override=num_writers * keys_per_writer)
    errors: list[str] = []

    def write(writer: int) -> None:
        for offset in range(keys_per_writer):
            key = writer * keys_per_writer + offset
            manager.set_recur_cache(key, make_kv(float(key), num_layers=2))

    def read(reader: int) -> None:
        rng = np.random.default_rng(reader)
        for _ in range(gets_per_reader):
            key = int(rng.integers(0, num_writers * keys_per_writer))
            entry, _ = manager.hierarchical_get(reader % 2, key)
            if entry is not None and value_of(entry) != float(key):
                errors.append(f"key {key} returned {value_of(entry)}")

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=write, args=(i,)) for i in range(num_writers)]
        threads += [threading.Thread(target=read, args=(i,)) for i in range(num_readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert errors == []
    summary = manager.get_stats_summary()
    assert summary["init"]["queries"] == num_readers * gets_per_reader
    assert summary["recur"]["queries"] == summary["init"]["misses"]
    assert summary["recur"]["evictions"] == 0
    manager.recur_pool.check_consistency()
    assert sorted(manager.recur_pool.keys()) == list(range(num_writers * keys_per_writer))
    events = manager.take_events()  # one per store, each writer's in its own order
    for writer in range(num_writers):
        mine = [e.key for e in events if e.key // keys_per_writer == writer]
        assert mine == [writer * keys_per_writer + offset for offset in range(keys_per_writer)]
    assert sorted(e.slot for e in events) == list(range(num_writers * keys_per_writer))


# ---------------------------------------------------------------------------------- logging
def test_maybe_log_stats_logs_every_interval_when_enabled(caplog):
    manager = make_manager(enable_cache_logging=True, cache_log_interval=10)
    with caplog.at_level(logging.INFO, logger="refactored.kv_cache_manager"):
        logged = [step for step in range(25) if manager.maybe_log_stats(step)]
    assert logged == [0, 10, 20]
    assert [record.getMessage().startswith("KV cache stats: {'init[0]'") for record in caplog.records] \
        == [True] * 3


def test_maybe_log_stats_is_silent_when_cache_logging_is_off(caplog):
    manager = make_manager()
    with caplog.at_level(logging.DEBUG, logger="refactored"):
        assert manager.maybe_log_stats(0) is False and manager._log_cache_stats() is False
    assert caplog.records == []


def test_set_and_get_do_not_log(caplog):
    manager = make_manager(num_simulations=1)
    with caplog.at_level(logging.DEBUG, logger="refactored"):
        for key in range(5):
            manager.set_recur_cache(key, make_kv(1.0))
            manager.hierarchical_get(0, key + 1)
    assert caplog.records == []


# ---------------------------------------------------------------------------------- keys
def test_cache_key_is_xxh64_of_the_raw_bytes_like_hash_state():
    latent = np.arange(8, dtype=np.float32)
    assert cache_key(latent) == hash_state(latent) == xxhash.xxh64(latent.tobytes()).intdigest()
    assert cache_key(torch.from_numpy(latent).view(1, 8)) == cache_key(latent)
    assert cache_key(np.zeros(8, np.float32)) != cache_key(-np.zeros(8, np.float32))


# ---------------------------------------------------------------------------------- properties
class FifoReference:
    """Legacy FIFO slot order with consistent maps: a dict, a reverse list and a pointer."""

    def __init__(self, num_slots: int) -> None:
        self.num_slots, self.pointer = num_slots, 0
        self.slot_of: dict[int, int] = {}
        self.key_at: list[int | None] = [None] * num_slots
        self.value_at: list[float | None] = [None] * num_slots

    def put(self, key: int, value: float) -> tuple[int, int | None]:
        slot, evicted = self.pointer, None
        victim = self.key_at[slot]
        if victim is not None and victim != key:
            del self.slot_of[victim]
            evicted = victim
        if key in self.slot_of:
            self.key_at[self.slot_of[key]] = None
        self.slot_of[key], self.key_at[slot], self.value_at[slot] = slot, key, value
        self.pointer = (slot + 1) % self.num_slots
        return slot, evicted

    def get(self, key: int) -> float | None:
        slot = self.slot_of.get(key)
        return None if slot is None else self.value_at[slot]

    def clear(self) -> None:
        self.slot_of.clear()
        self.key_at = [None] * self.num_slots


class LruReference(FifoReference):
    """LRU with free slots first: an ordered dict of occupied slots, stalest first."""

    def __init__(self, num_slots: int) -> None:
        super().__init__(num_slots)
        self.recency: OrderedDict[int, None] = OrderedDict()

    def put(self, key: int, value: float) -> tuple[int, int | None]:
        evicted = None
        if key in self.slot_of:
            slot = self.slot_of[key]
        elif None in self.key_at:
            slot = self.key_at.index(None)
        else:
            slot = next(iter(self.recency))
            evicted = self.key_at[slot]
            del self.slot_of[evicted]
        self.slot_of[key], self.key_at[slot], self.value_at[slot] = slot, key, value
        self.recency[slot] = None
        self.recency.move_to_end(slot)
        return slot, evicted

    def get(self, key: int) -> float | None:
        if key in self.slot_of:
            self.recency.move_to_end(self.slot_of[key])
        return super().get(key)

    def clear(self) -> None:
        super().clear()
        self.recency.clear()


OPERATIONS = st.lists(st.one_of(st.tuples(st.just("put"), st.integers(0, 5)),
                                st.tuples(st.just("get"), st.integers(0, 5)),
                                st.just(("clear", None))), max_size=40)


@pytest.mark.parametrize(("strategy", "reference_cls"), [("fifo", FifoReference),
                                                          ("lru", LruReference)])
@settings(max_examples=150, deadline=None)
@given(num_slots=st.integers(1, 4), operations=OPERATIONS)
def test_pool_matches_reference_model_on_random_operations(strategy, reference_cls, num_slots,
                                                           operations):
    pool, reference = make_pool(num_slots, strategy), reference_cls(num_slots)
    expected_hits = expected_misses = expected_evictions = 0
    for step, (operation, key) in enumerate(operations):
        if operation == "put":
            slot, evicted = reference.put(key, float(step))
            assert pool.put(key, make_kv(float(step), num_layers=1)) == slot
            assert pool.take_events() == [EntryStored("pool", key, slot, evicted)]
            expected_evictions += evicted is not None
        elif operation == "get":
            expected = reference.get(key)
            entry = pool.get(key)
            assert (None if entry is None else value_of(entry)) == expected
            expected_hits += expected is not None
            expected_misses += expected is None
        else:
            num_live = len(reference.slot_of)
            reference.clear()
            pool.clear()
            assert pool.take_events() == [PoolCleared("pool", num_live)]
        pool.check_consistency()
        assert {key: pool.slot_of(key) for key in pool.keys()} == reference.slot_of
    assert (pool.stats.hits, pool.stats.misses, pool.stats.evictions) == (
        expected_hits, expected_misses, expected_evictions)
