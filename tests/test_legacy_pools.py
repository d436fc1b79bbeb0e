"""Legacy pools and bookkeeping (legacy-spec §4, §4.1, §8 step 3; quirks 1, 2, 11, 12, 17)."""

from __future__ import annotations

import numpy as np
import torch

from conftest import first_actions, make_legacy, make_obs
from unizero.events import Lookup, Store
from unizero.hashing import hash_state
from unizero.kv_cache import KeysValues


def source_kv(value: float, size: int = 3, tokens: int = 8, layers: int = 2) -> KeysValues:
    """A single-env cache filled with ``value`` everywhere (the tail beyond ``size`` too)."""
    kv = KeysValues(1, 4, tokens, 16, layers, "cpu")
    for layer in kv.layers:
        layer.k.tensor.fill_(value)
        layer.v.tensor.fill_(-value)
        layer.k.size, layer.v.size = size, size
    return kv


def latent_rows(seed: int, rows: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


# ---------------------------------------------------------------------------- initial state
def test_pools_are_sized_as_legacy_and_ignore_the_refactor_overrides() -> None:
    model = make_legacy(game_segment_length=5, num_simulations=3, env_num=2,
                        init_pool_size_override=2, recur_pool_size_override=2,
                        wm_pool_size_override=1)
    assert [len(pool) for pool in model.shared_pool_init_infer] == [5, 5]
    assert len(model.shared_pool_recur_infer) == 6
    assert len(model.shared_pool_wm) == 2
    assert model.pool_idx_to_key_map_init_envs == [[None] * 5, [None] * 5]
    assert model.pool_idx_to_key_map_recur_infer == [None] * 6


def test_initial_state_is_empty_with_pointers_at_zero() -> None:
    model = make_legacy()
    assert model.shared_pool_init_infer == [[None] * 6, [None] * 6]
    assert model.shared_pool_recur_infer == [None] * 6
    assert model.shared_pool_wm == [None, None]
    assert model.shared_pool_index_init_envs == [0, 0]
    assert (model.shared_pool_index, model.shared_pool_index_wm) == (0, 0)
    assert model.past_kv_cache_init_infer_envs == [{}, {}]
    assert model.past_kv_cache_recurrent_infer == {}
    assert model.keys_values_wm.geometry == (2, 2, 4, 8, 4)
    assert model.keys_values_wm_single_env.geometry == (2, 1, 4, 8, 4)
    assert model.stats() == {"hit_count": 0, "total_query_count": 0,
                             "root_hit_cnt": 0, "root_total_query_cnt": 0}
    assert model.reanalyze_phase is False


# ---------------------------------------------------------------------------- copy helpers
def test_slots_are_allocated_lazily_with_the_source_geometry() -> None:
    model = make_legacy()
    src = source_kv(2.0, size=3, tokens=5)
    slot = model.custom_copy_kv_cache_to_shared_init_envs(src, 1)
    assert slot == 0
    assert model.shared_pool_init_infer[0] == [None] * 6
    assert model.shared_pool_init_infer[1][1:] == [None] * 5
    stored = model.shared_pool_init_infer[1][0]
    assert stored is not src
    assert stored.geometry == (2, 1, 4, 5, 4)  # T_src = 5, not the context length
    assert model.shared_pool_index_init_envs == [0, 1]


def test_copies_take_the_full_tensor_including_the_tail_beyond_size() -> None:
    # Quirk 12: whatever lies beyond size travels with the copy.
    model = make_legacy()
    src = source_kv(0.0, size=2)
    for layer in src.layers:
        layer.k.tensor[:, :, 2:] = 77.0
        layer.v.size = 1
    slot = model.custom_copy_kv_cache_to_shared_recur(src)
    stored = model.shared_pool_recur_infer[slot]
    assert torch.equal(stored[1].k.tensor[0, :, 2:], torch.full((4, 6, 4), 77.0))
    assert (stored[1].k.size, stored[1].v.size) == (2, 1)
    src[1].k.tensor.zero_()
    assert stored[1].k.tensor[0, 0, 7, 0].item() == 77.0


def test_allocated_slots_are_reused_in_place_after_the_pointer_wraps() -> None:
    model = make_legacy()
    slots = [model.custom_copy_kv_cache_to_shared_recur(source_kv(float(i))) for i in range(7)]
    assert slots == [0, 1, 2, 3, 4, 5, 0]
    assert model.shared_pool_index == 1
    first = model.shared_pool_recur_infer[0]
    model.custom_copy_kv_cache_to_shared_recur(source_kv(9.0))
    model.custom_copy_kv_cache_to_shared_recur(source_kv(9.0))
    model.custom_copy_kv_cache_to_shared_recur(source_kv(9.0))
    model.custom_copy_kv_cache_to_shared_recur(source_kv(9.0))
    model.custom_copy_kv_cache_to_shared_recur(source_kv(9.0))
    assert model.custom_copy_kv_cache_to_shared_recur(source_kv(11.0)) == 0
    assert model.shared_pool_recur_infer[0] is first
    assert first[0].k.tensor[0, 0, 0, 0].item() == 11.0


def test_wm_pool_returns_slot_objects_and_rotates_over_env_num_slots() -> None:
    # Quirk 11: a third copy with P_wm = 2 overwrites the object handed out first.
    model = make_legacy()
    a = model.custom_copy_kv_cache_to_shared_wm(source_kv(1.0))
    b = model.custom_copy_kv_cache_to_shared_wm(source_kv(2.0))
    assert a is model.shared_pool_wm[0] and b is model.shared_pool_wm[1]
    assert model.shared_pool_index_wm == 0
    c = model.custom_copy_kv_cache_to_shared_wm(source_kv(3.0))
    assert c is a
    assert a[0].k.tensor[0, 0, 0, 0].item() == 3.0
    assert b[0].k.tensor[0, 0, 0, 0].item() == 2.0
    assert model.shared_pool_index_wm == 1


# ---------------------------------------------------------------------------- store bookkeeping
def store_recurrent(model, key: int, value: float = 0.0, size: int = 3):
    model.keys_values_wm_single_env = source_kv(value, size=size)
    return model._store_recurrent(key)


def test_recurrent_store_writes_at_the_pointer_and_evicts_the_key_it_overwrites() -> None:
    model = make_legacy(env_num=1, num_simulations=3)
    results = [store_recurrent(model, key) for key in (10, 11, 12, 13, 14)]
    assert results == [(None, 0), (None, 1), (None, 2), (10, 0), (11, 1)]
    assert model.past_kv_cache_recurrent_infer == {12: 2, 13: 0, 14: 1}
    assert model.pool_idx_to_key_map_recur_infer == [13, 14, 12]
    assert model.shared_pool_index == 2


def test_duplicate_key_takes_a_new_slot_and_is_later_deleted_while_live() -> None:
    # Quirk 1(a): K stored at slots 0 and 1; when the pointer returns to 0, K (live at 1) goes.
    model = make_legacy(env_num=1, num_simulations=3)
    assert store_recurrent(model, 7, value=1.0) == (None, 0)
    assert store_recurrent(model, 7, value=2.0) == (None, 1)
    assert model.past_kv_cache_recurrent_infer == {7: 1}
    assert model.pool_idx_to_key_map_recur_infer == [7, 7, None]
    assert store_recurrent(model, 8) == (None, 2)
    assert store_recurrent(model, 9) == (7, 0)
    assert model.past_kv_cache_recurrent_infer == {8: 2, 9: 0}
    assert model.pool_idx_to_key_map_recur_infer == [9, 7, 8]
    assert model.shared_pool_recur_infer[1][0].k.tensor[0, 0, 0, 0].item() == 2.0  # data still there


def test_root_store_uses_the_env_pool_pointer_and_reverse_map() -> None:
    model = make_legacy(game_segment_length=2)
    model.keys_values_wm_single_env = source_kv(1.0)
    assert model._store_root(1, 100) == (None, 0)
    assert model._store_root(1, 101) == (None, 1)
    assert model._store_root(0, 100) == (None, 0)
    assert model._store_root(1, 102) == (100, 0)
    assert model.past_kv_cache_init_infer_envs == [{100: 0}, {101: 1, 102: 0}]
    assert model.pool_idx_to_key_map_init_envs == [[100, None], [102, 101]]
    assert model.shared_pool_index_init_envs == [1, 1]


def test_root_store_deletes_a_duplicate_key_live_at_another_slot() -> None:
    model = make_legacy(game_segment_length=2)
    model.keys_values_wm_single_env = source_kv(1.0)
    assert [model._store_root(0, 5), model._store_root(0, 5)] == [(None, 0), (None, 1)]
    assert model._store_root(0, 7) == (5, 0)
    assert model.past_kv_cache_init_infer_envs[0] == {7: 0}
    assert model.pool_idx_to_key_map_init_envs[0] == [7, 5]


def test_eviction_skips_a_reverse_key_that_is_no_longer_live() -> None:
    model = make_legacy(env_num=1, num_simulations=2)
    store_recurrent(model, 1)
    store_recurrent(model, 2)
    model.past_kv_cache_recurrent_infer.clear()
    assert store_recurrent(model, 3) == (None, 0)
    assert model.pool_idx_to_key_map_recur_infer == [3, 2]


def lookup(model, latents: np.ndarray) -> list[Lookup]:
    model.take_events()
    model._begin_batch(latents.shape[0])
    for env, latent in enumerate(latents):
        model._add_context(env, *model._lookup_recurrent(env, latent), latent, "recurrent")
    return [e for e in model.take_events() if isinstance(e, Lookup)]


def test_a_key_in_both_dicts_is_served_by_the_env_root_pool() -> None:
    model = make_legacy(env_num=1)
    obs = make_obs(0, 1)
    root = model.initial_inference(obs, first_actions(1), obs).latent.numpy()
    store_recurrent(model, hash_state(root[0]), value=5.0, size=3)
    [found] = lookup(model, root)
    assert (found.hit, found.pool, found.size) == (True, "root", 1)
    assert model.keys_values_wm_list[0][0].k.size == 1


def test_stale_reverse_map_deletes_a_live_key_driven_through_the_store_helpers() -> None:
    # Quirk 1(b), the concrete 3-simulation example: E=1, S=3, P_rec=3.
    model = make_legacy(env_num=1, num_simulations=3)
    a, b, c, d = (latent_rows(seed) for seed in range(4))
    key_a, key_b, key_c, key_d = (hash_state(x[0]) for x in (a, b, c, d))
    for key in (key_a, key_b, key_c):  # search 1
        store_recurrent(model, key)
    assert model.shared_pool_index == 0
    model.past_kv_cache_recurrent_infer.clear()  # the root call of search 2
    assert store_recurrent(model, key_b) == (None, 0)  # sim 0: reverse[0] == A is not live
    [hit] = lookup(model, b)  # sim 1 expands B...
    assert (hit.hit, hit.pool) == (True, "recurrent")
    assert store_recurrent(model, key_d) == (key_b, 1)  # ...and storing D at 1 deletes B
    assert model.past_kv_cache_recurrent_infer == {key_d: 1}
    [miss] = lookup(model, b)  # sim 2 expands another child of B
    assert (miss.hit, miss.pool, miss.size) == (False, None, 1)


def test_stale_reverse_map_deletes_a_live_key_in_real_searches() -> None:
    # The same example end to end: two searches of 3 simulations from an identical first step.
    model = make_legacy(env_num=1, num_simulations=3)
    obs = make_obs(0, 1)
    root = model.initial_inference(obs, first_actions(1), obs).latent.numpy()
    lat_a = model.recurrent_inference(root, [0]).latent.numpy()
    lat_b = model.recurrent_inference(root, [1]).latent.numpy()
    lat_c = model.recurrent_inference(lat_a, [0]).latent.numpy()
    keys = [hash_state(x[0]) for x in (lat_a, lat_b, lat_c)]
    assert len(set(keys)) == 3
    assert model.pool_idx_to_key_map_recur_infer == keys and model.shared_pool_index == 0

    root2 = model.initial_inference(obs, first_actions(1), obs).latent.numpy()
    assert np.array_equal(root2, root)
    model.take_events()
    lat_b2 = model.recurrent_inference(root2, [1]).latent.numpy()
    assert np.array_equal(lat_b2, lat_b)  # bit-identical B, stored at slot 0
    assert model.past_kv_cache_recurrent_infer == {keys[1]: 0}
    model.take_events()
    lat_d = model.recurrent_inference(lat_b2, [0]).latent.numpy()
    events = model.take_events()
    assert [e.hit for e in events if isinstance(e, Lookup)] == [True]
    [store] = [e for e in events if isinstance(e, Store)]
    assert (store.key, store.slot, store.evicted) == (hash_state(lat_d[0]), 1, keys[1])
    assert model.past_kv_cache_recurrent_infer == {store.key: 1}
    model.recurrent_inference(lat_b2, [1])
    [late] = [e for e in model.take_events() if isinstance(e, Lookup)]
    assert (late.key, late.hit, late.size) == (keys[1], False, 1)


def test_pointers_run_on_across_searches_and_clears() -> None:
    # Quirk 2: nothing resets a pointer; the slot reused depends on the whole history.
    model = make_legacy(num_simulations=2, game_segment_length=3)
    obs = make_obs(1, 2)
    root = model.initial_inference(obs, first_actions(2), obs).latent.numpy()
    model.recurrent_inference(root, [0, 1])
    model.clear_caches()
    model.clear_root_cache(0)
    root = model.initial_inference(obs, first_actions(2), obs).latent.numpy()
    model.recurrent_inference(root, [0, 1])
    model.recurrent_inference(root, [1, 2])
    assert model.shared_pool_index_init_envs == [2, 2]
    assert model.shared_pool_index == (2 + 2 + 2) % 4
    model.initial_inference(obs, [0, 0], obs)
    assert model.shared_pool_index_init_envs == [0, 0]
    assert model.shared_pool_index == 2
