"""Legacy recurrent path (legacy-spec §7, §8 recurrent, §9, §11; quirks 3, 6, 7, 14)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import first_actions, make_legacy, make_obs
from unizero.events import Lookup, Store, Trim
from unizero.hashing import hash_state
from unizero.world_model import InputError


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


def roots_after(model, steps: int, rows: int = 2) -> np.ndarray:
    """Play ``steps`` root calls (first + continuing); return the last root latents (numpy)."""
    obs = [make_obs(t, rows) for t in range(steps)]
    out = model.initial_inference(obs[0], first_actions(rows), obs[0])
    for t in range(1, steps):
        out = model.initial_inference(obs[t - 1], [t % 3] * rows, obs[t])
    model.take_events()
    return out.latent.numpy()


def random_latents(seed: int, rows: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


# ---------------------------------------------------------------------------- lookups and stores
def test_lookup_tries_the_env_root_dict_then_the_recurrent_dict() -> None:
    model = make_legacy()
    roots = roots_after(model, 1)
    first = model.recurrent_inference(roots, [0, 1])
    events = model.take_events()
    assert [(e.env, e.key, e.path, e.hit, e.pool, e.size) for e in of_type(events, Lookup)] == [
        (j, hash_state(roots[j]), "recurrent", True, "root", 1) for j in range(2)]
    next_keys = [hash_state(row) for row in first.latent]
    assert of_type(events, Store) == [
        Store(env=j, key=next_keys[j], pool="recurrent", slot=j, evicted=None, size=3) for j in range(2)]
    assert model.past_kv_cache_recurrent_infer == {next_keys[0]: 0, next_keys[1]: 1}
    model.recurrent_inference(first.latent.numpy(), [2, 0])
    events = model.take_events()
    assert [(e.hit, e.pool, e.size) for e in of_type(events, Lookup)] == [(True, "recurrent", 3)] * 2
    assert [(e.slot, e.size) for e in of_type(events, Store)] == [(2, 5), (3, 5)]
    assert (model.hit_count, model.total_query_count) == (4, 4)


def test_a_miss_builds_a_one_token_context_and_positions_are_per_env() -> None:
    # Quirk 6: the miss latent sits at position 0; action/obs tokens use each env's own length.
    model = make_legacy()
    roots = roots_after(model, 2)  # root contexts of size 3
    calls: list = []
    model.net.pos_emb.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].tolist()))
    latents = np.stack([roots[0], random_latents(9, 1)[0]])
    model.recurrent_inference(latents, [1, 2])
    assert calls == [[[0]], [[3], [1]], [[4], [2]]]
    events = model.take_events()
    assert [(e.hit, e.pool, e.size) for e in of_type(events, Lookup)] == [(True, "root", 3),
                                                                          (False, None, 1)]
    assert [e.size for e in of_type(events, Store)] == [5, 3]
    assert (model.hit_count, model.total_query_count) == (1, 2)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw float32 bit patterns (NaN-safe exact comparison)."""
    return tensor.contiguous().view(torch.int32)


def test_the_store_undoes_each_envs_left_padding_and_keeps_its_own_size() -> None:
    model = make_legacy()
    roots = roots_after(model, 2)
    latents = np.stack([roots[0], random_latents(9, 1)[0]])
    model.recurrent_inference(latents, [1, 2])
    assert model.keys_values_wm_size_list_current == [5, 3]
    for layer in range(2):
        for name in ("k", "v"):
            batch = getattr(model.keys_values_wm[layer], name)
            assert batch.size == 5
            long_slot, short_slot = (getattr(model.shared_pool_recur_infer[s][layer], name) for s in (0, 1))
            assert (long_slot.size, short_slot.size) == (5, 3)
            # Full tensors, garbage tail included (legacy copies it): compare bit patterns, since
            # uninitialised memory may hold NaNs, which torch.equal never calls equal.
            assert torch.equal(bits(long_slot.tensor[0]), bits(batch.tensor[0]))
            assert torch.equal(bits(short_slot.tensor[0, :, :6]), bits(batch.tensor[1, :, 2:]))
            assert torch.equal(short_slot.tensor[0, :, 6:], torch.zeros(4, 2, 4))


def full_forward(net, embeddings: list[torch.Tensor]) -> torch.Tensor:
    """No-cache oracle: all tokens at positions 0..n-1 in one causal forward; → [1, n, D]."""
    x = torch.stack(embeddings, 1) + net.pos_emb.weight[: len(embeddings)]
    return net.transformer(x, net.empty_keys_values(1))


@torch.no_grad()
def test_a_hit_continues_the_root_context_like_a_full_forward() -> None:
    model = make_legacy(env_num=1)
    obs = [make_obs(t, 1) for t in range(3)]
    model.initial_inference(obs[0], [-1], obs[0])
    model.initial_inference(obs[0], [2], obs[1])
    root = model.initial_inference(obs[1], [0], obs[2]).latent.numpy()
    out = model.recurrent_inference(root, [1])
    net = model.net
    tokens = [net.encode(torch.as_tensor(obs[0])), net.act_embedding(torch.tensor([2])),
              net.encode(torch.as_tensor(obs[1])), net.act_embedding(torch.tensor([0])),
              net.encode(torch.as_tensor(obs[2])), net.act_embedding(torch.tensor([1]))]
    reward, latent = net.action_heads(full_forward(net, tokens)[:, 5])
    policy, value = net.observation_heads(full_forward(net, tokens + [latent])[:, 6])
    for got, want in ((out.latent, latent), (out.reward_logits, reward),
                      (out.policy_logits, policy), (out.value_logits, value)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_miss_answers_like_a_full_forward_from_position_zero() -> None:
    model = make_legacy(env_num=1)
    z = random_latents(4, 1)
    out = model.recurrent_inference(z, [2])
    net = model.net
    tokens = [torch.from_numpy(z), net.act_embedding(torch.tensor([2]))]
    reward, latent = net.action_heads(full_forward(net, tokens)[:, 1])
    policy, value = net.observation_heads(full_forward(net, tokens + [latent])[:, 2])
    for got, want in ((out.latent, latent), (out.reward_logits, reward),
                      (out.policy_logits, policy), (out.value_logits, value)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_a_recurrent_context_reaching_c_minus_one_is_trimmed_with_the_correction_in_place() -> None:
    # Own size 5 + 2 = 7 = C-1: keep [2, 7) + diff on the batch row itself (quirk 7), pad 3.
    model = make_legacy(env_num=1)
    roots = roots_after(model, 3, rows=1)
    before = {}
    store = model.update_cache_context

    def spy(latent_state, is_init_infer=True):
        for layer in range(2):
            for name in ("k", "v"):
                before[layer, name] = getattr(model.keys_values_wm[layer], name).tensor.clone()
        return store(latent_state, is_init_infer)

    model.update_cache_context = spy
    model.recurrent_inference(roots, [1])
    events = model.take_events()
    assert of_type(events, Trim) == [Trim(env=0, pool="recurrent", size_before=7, size_after=5)]
    assert [(e.slot, e.size) for e in of_type(events, Store)] == [(0, 5)]
    for layer in range(2):
        for name, diff in (("k", model.net.pos_emb_diff_k[layer]), ("v", model.net.pos_emb_diff_v[layer])):
            batch_row = getattr(model.keys_values_wm[layer], name).tensor[0]
            assert torch.equal(batch_row[:, 2:7], before[layer, name][0, :, 2:7] + diff)
            stored = getattr(model.shared_pool_recur_infer[0][layer], name)
            assert stored.size == 5
            assert torch.equal(stored.tensor[0, :, :5], batch_row[:, 2:7])
            assert torch.equal(stored.tensor[0, :, 5:], torch.zeros(4, 3, 4))


def test_recurrent_sizes_follow_retrieved_plus_two_trimmed_at_seven() -> None:
    model = make_legacy(env_num=1, num_simulations=6)
    latent = roots_after(model, 1, rows=1)
    sizes = []
    for _ in range(4):
        latent = model.recurrent_inference(latent, [0]).latent.numpy()
        sizes.append([(e.size_before, e.size_after) if isinstance(e, Trim) else e.size
                      for e in model.take_events() if isinstance(e, (Trim, Store))])
    assert sizes == [[3], [5], [(7, 5), 5], [(7, 5), 5]]


# ---------------------------------------------------------------------------- quirk 3
def test_zero_init_heads_make_every_recurrent_store_use_the_all_zero_key() -> None:
    model = make_legacy(zero_init_heads=True)
    roots = roots_after(model, 2)
    out = model.recurrent_inference(roots, [0, 2])
    zero_key = hash_state(np.zeros(16, dtype=np.float32))
    assert torch.equal(out.latent, torch.zeros(2, 16)) and not torch.signbit(out.latent).any()
    for logits in (out.reward_logits, out.policy_logits, out.value_logits):
        assert torch.equal(logits, torch.zeros_like(logits))
    assert of_type(model.take_events(), Store) == [
        Store(env=0, key=zero_key, pool="recurrent", slot=0, evicted=None, size=5),
        Store(env=1, key=zero_key, pool="recurrent", slot=1, evicted=None, size=5)]
    assert model.past_kv_cache_recurrent_infer == {zero_key: 1}  # newest store wins
    assert model.pool_idx_to_key_map_recur_infer[:2] == [zero_key, zero_key]


def test_identical_latents_of_two_envs_share_the_newest_recurrent_entry() -> None:
    model = make_legacy(zero_init_heads=True)
    roots = roots_after(model, 2)
    zeros = model.recurrent_inference(roots, [0, 2]).latent.numpy()
    env0_context, env1_context = model.shared_pool_recur_infer[0], model.shared_pool_recur_infer[1]
    assert not torch.equal(bits(env0_context[0].k.tensor), bits(env1_context[0].k.tensor))
    model.take_events()
    model.recurrent_inference(zeros, [1, 1])
    lookups = of_type(model.take_events(), Lookup)
    assert [(e.env, e.hit, e.pool, e.size) for e in lookups] == [(0, True, "recurrent", 5),
                                                                 (1, True, "recurrent", 5)]
    served_to_env0 = model.keys_values_wm_list[0]
    assert served_to_env0 is model.shared_pool_wm[0]
    assert torch.equal(bits(served_to_env0[1].v.tensor), bits(env1_context[1].v.tensor))


def test_the_all_zero_key_is_deleted_and_reinserted_when_the_pool_wraps() -> None:
    # Spec §14.9: at initialization no miss results from quirk 1. A key deleted and stored
    # again at once is a replacement, so the event reports no eviction.
    model = make_legacy(zero_init_heads=True, env_num=1, num_simulations=2)
    latent = roots_after(model, 1, rows=1)
    zero_key = hash_state(np.zeros(16, dtype=np.float32))
    evicted = []
    for _ in range(4):
        latent = model.recurrent_inference(latent, [1]).latent.numpy()
        evicted += [e.evicted for e in model.take_events() if isinstance(e, Store)]
    assert evicted == [None, None, None, None]
    assert model.past_kv_cache_recurrent_infer == {zero_key: 1}
    assert model.pool_idx_to_key_map_recur_infer == [zero_key, zero_key]
    assert (model.hit_count, model.total_query_count) == (4, 4)


# ---------------------------------------------------------------------------- reanalysis (quirk 14)
def test_reanalysis_forces_every_lookup_to_miss_but_stores_and_counts() -> None:
    model = make_legacy()
    roots = roots_after(model, 1)
    stored = model.recurrent_inference(roots, [0, 1]).latent.numpy()
    model.take_events()
    model.set_reanalyze_phase(True)
    for latents in (roots, stored):  # keys live in the root dicts / the recurrent dict
        model.recurrent_inference(latents, [2, 2])
        events = model.take_events()
        assert [(e.hit, e.pool, e.size, e.forced) for e in of_type(events, Lookup)] == [
            (False, None, 1, True)] * 2
        assert [e.size for e in of_type(events, Store)] == [3, 3]
    assert (model.hit_count, model.total_query_count) == (2, 6)
    assert model.shared_pool_index == 0  # 6 stores into the 6-slot pool
    model.set_reanalyze_phase(False)
    model.recurrent_inference(stored, [2, 2])
    assert [e.forced for e in of_type(model.take_events(), Lookup)] == [False, False]


def test_reanalysis_accepts_more_roots_than_envs_and_wraps_the_pool() -> None:
    model = make_legacy()
    model.set_reanalyze_phase(True)
    out = model.recurrent_inference(random_latents(1, 5), [0, 1, 2, 0, 1],
                                    start_pos=np.zeros((1, 4), dtype=np.int64))
    assert out.latent.shape == (5, 16)
    model.recurrent_inference(out.latent.numpy(), [0] * 5)
    assert [e.slot for e in model.take_events() if isinstance(e, Store)] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert model.shared_pool_index == 4
    assert model.total_query_count == 10 and model.hit_count == 0
    model.set_reanalyze_phase(False)
    with pytest.raises(InputError, match=r"latent_state: .*1 <= B <= 2, got \[5, 16\]"):
        model.recurrent_inference(out.latent.numpy(), [0] * 5)


def test_recurrent_accepts_a_scalar_start_pos() -> None:
    model = make_legacy()
    assert model.recurrent_inference(random_latents(2, 2), [0, 1], start_pos=0).latent.shape == (2, 16)
