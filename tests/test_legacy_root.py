"""Legacy root path (legacy-spec §5, §6, §8 root, §9, §11; quirks 4, 6, 7, 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import first_actions, make_legacy, make_obs
from unizero.events import Clear, Lookup, Store, Trim
from unizero.hashing import hash_state
from unizero.kv_cache import KeysValues
from unizero.world_model import InputError


def encode(model, obs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.net.encode(torch.as_tensor(obs))


def play(model, steps: int, rows: int = 2, seed: int = 0, actions=None):
    """A first step then ``steps - 1`` continuing steps; returns (observations, outputs)."""
    observations = [make_obs(seed + t, rows) for t in range(steps)]
    outputs = [model.initial_inference(observations[0], first_actions(rows), observations[0])]
    for t in range(1, steps):
        acts = actions[t - 1] if actions is not None else [t % 3] * rows
        outputs.append(model.initial_inference(observations[t - 1], acts, observations[t]))
    return observations, outputs


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


def record_positions(model) -> list[list[list[int]]]:
    calls: list[list[list[int]]] = []
    model.net.pos_emb.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].tolist()))
    return calls


# ---------------------------------------------------------------------------- first step
def test_first_step_stores_every_env_at_slot_zero_with_size_one_and_looks_nothing_up() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    out = model.initial_inference(obs, first_actions(2), obs)
    keys = [hash_state(row) for row in encode(model, obs)]
    assert model.take_events() == [
        Store(env=0, key=keys[0], pool="root", slot=0, evicted=None, size=1),
        Store(env=1, key=keys[1], pool="root", slot=0, evicted=None, size=1),
        Clear(scope="recurrent", reason="after_root")]
    assert model.past_kv_cache_init_infer_envs == [{keys[0]: 0}, {keys[1]: 0}]
    assert model.pool_idx_to_key_map_init_envs == [[keys[0]] + [None] * 5, [keys[1]] + [None] * 5]
    assert model.shared_pool_index_init_envs == [1, 1]
    assert [pool[0].size for pool in model.shared_pool_init_infer] == [1, 1]
    assert model.keys_values_wm.size == 1
    assert model.keys_values_wm.geometry == (2, 2, 4, 8, 4)
    assert model.stats() == {"hit_count": 0, "total_query_count": 0,
                             "root_hit_cnt": 0, "root_total_query_cnt": 0}
    assert torch.equal(out.latent, encode(model, obs))
    assert torch.equal(out.reward_logits, torch.zeros(2, 5))


def test_first_step_outputs_equal_a_fresh_forward_at_position_zero() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    out = model.initial_inference(obs, first_actions(2), obs)
    net = model.net
    with torch.no_grad():
        x = encode(model, obs).unsqueeze(1) + net.pos_emb.weight[0]
        hidden = net.transformer(x, net.empty_keys_values(2))[:, -1]
        policy, value = net.observation_heads(hidden)
    torch.testing.assert_close(out.policy_logits, policy, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.value_logits, value, atol=1e-6, rtol=0)


def test_all_minus_one_actions_take_the_first_step_path_even_with_cached_roots() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    model.initial_inference(obs, first_actions(2), obs)
    model.take_events()
    model.initial_inference(obs, first_actions(2), obs)
    events = model.take_events()
    assert of_type(events, Lookup) == []
    assert [e.slot for e in of_type(events, Store)] == [1, 1]
    key0 = hash_state(encode(model, obs)[0])
    assert model.past_kv_cache_init_infer_envs[0] == {key0: 1}  # duplicate key, newest slot
    assert model.pool_idx_to_key_map_init_envs[0][:2] == [key0, key0]
    assert model.root_total_query_cnt == 0


def test_a_real_action_among_the_first_b_entries_takes_the_continuing_path() -> None:
    # max(previous actions) != -1 -> continuing; only batch_action[:B] is used (quirk 9).
    model = make_legacy()
    obs = make_obs(0, 1)
    model.initial_inference(obs, first_actions(2), obs)
    model.take_events()
    model.initial_inference(obs, [2, -1], make_obs(1, 1))
    lookups = of_type(model.take_events(), Lookup)
    assert [(e.env, e.hit, e.size) for e in lookups] == [(0, True, 1)]


def test_the_first_step_test_reads_every_previous_action_not_only_the_first_b() -> None:
    # max([-1, 1]) != -1 -> continuing path, whose first action (-1) cannot be embedded.
    model = make_legacy()
    obs = make_obs(0, 1)
    with pytest.raises(InputError, match=r"last_actions: .*mixing.*\[-1, 1\]"):
        model.initial_inference(obs, [-1, 1], obs)


def test_a_duplicate_root_key_is_deleted_while_live_when_the_pointer_returns() -> None:
    # Quirk 1(a) in a root pool: the same first step twice stores K at slots 0 and 1 (P_init=3);
    # the store that lands on slot 0 again deletes K although the dict points it at slot 1.
    model = make_legacy(env_num=1, game_segment_length=3)
    obs = make_obs(0, 1)
    model.initial_inference(obs, [-1], obs)
    model.initial_inference(obs, [-1], obs)
    key = hash_state(encode(model, obs)[0])
    assert model.past_kv_cache_init_infer_envs[0] == {key: 1}
    model.initial_inference(obs, [1], make_obs(1, 1))
    model.take_events()
    model.initial_inference(make_obs(1, 1), [1], make_obs(2, 1))
    [store] = of_type(model.take_events(), Store)
    assert (store.slot, store.evicted) == (0, key)
    assert key not in model.past_kv_cache_init_infer_envs[0]
    assert model.pool_idx_to_key_map_init_envs[0][1] == key
    model.initial_inference(obs, [1], make_obs(3, 1))
    assert [e.hit for e in of_type(model.take_events(), Lookup)] == [False]


def test_a_batch_mixing_first_steps_and_real_actions_is_rejected() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    with pytest.raises(InputError, match=r"last_actions: .*mixing.*\[-1, 0\]"):
        model.initial_inference(obs, [-1, 0], obs)


# ---------------------------------------------------------------------------- continuing steps
def test_context_sizes_grow_1_3_5_then_7_is_trimmed_to_5() -> None:
    model = make_legacy()
    sizes, trims, lookups = [], [], []
    obs = [make_obs(t, 2) for t in range(6)]
    model.initial_inference(obs[0], first_actions(2), obs[0])
    sizes.append([e.size for e in of_type(model.take_events(), Store)])
    for t in range(1, 6):
        model.initial_inference(obs[t - 1], [1, 2], obs[t])
        events = model.take_events()
        sizes.append([e.size for e in of_type(events, Store)])
        lookups.append([(e.hit, e.size) for e in of_type(events, Lookup)])
        trims.append([(e.env, e.size_before, e.size_after) for e in of_type(events, Trim)])
    assert sizes == [[1, 1], [3, 3], [5, 5], [5, 5], [5, 5], [5, 5]]
    assert lookups == [[(True, 1)] * 2, [(True, 3)] * 2, [(True, 5)] * 2, [(True, 5)] * 2,
                       [(True, 5)] * 2]
    assert trims == [[], [], [(0, 7, 5), (1, 7, 5)], [(0, 7, 5), (1, 7, 5)], [(0, 7, 5), (1, 7, 5)]]
    assert [[slot.size for slot in pool] for pool in model.shared_pool_init_infer] == [[1, 3, 5, 5, 5, 5]] * 2
    assert model.shared_pool_index_init_envs == [0, 0]


def test_continuing_steps_equal_the_no_cache_full_forward_until_the_first_trim() -> None:
    model = make_legacy(env_num=1)
    acts = [[2], [0], [1]]
    obs, outputs = play(model, 4, rows=1, actions=acts)
    net = model.net
    with torch.no_grad():
        tokens = []
        for t in range(4):
            tokens.append(encode(model, obs[t]))
            if t < 3:
                tokens.append(net.act_embedding(torch.tensor(acts[t])))
        x = torch.stack(tokens, 1) + net.pos_emb.weight[:7]
        hidden = net.transformer(x, net.empty_keys_values(1))  # [1, 7, D], one shot, causal
        for t in range(1, 4):
            reward, _ = net.action_heads(hidden[:, 2 * t - 1])
            policy, value = net.observation_heads(hidden[:, 2 * t])
            torch.testing.assert_close(outputs[t].reward_logits, reward, atol=1e-5, rtol=0)
            torch.testing.assert_close(outputs[t].policy_logits, policy, atol=1e-5, rtol=0)
            torch.testing.assert_close(outputs[t].value_logits, value, atol=1e-5, rtol=0)


def section9_example(model):
    """Env A (0) hits a size-5 root, env B (1) misses: the spec §9 example. Returns call inputs."""
    obs, _ = play(model, 3)
    model.clear_root_cache(1)
    model.take_events()
    last, current = obs[-1], make_obs(50, 2)
    return last, [1, 0], current


def test_a_short_env_is_stored_with_the_batch_size_and_its_padding_becomes_the_correction() -> None:
    # Quirk 4 / spec §9: B is padded with 4 zeros, the batch grows to 7, both rows are trimmed;
    # B is stored with size 5 whose first two positions are diff[:, :, 0:2].
    model = make_legacy()
    last, acts, current = section9_example(model)
    model.initial_inference(last, acts, current)
    events = model.take_events()
    assert [(e.env, e.hit, e.size) for e in of_type(events, Lookup)] == [(0, True, 5), (1, False, 1)]
    assert [(e.env, e.size_before, e.size_after) for e in of_type(events, Trim)] == [(0, 7, 5), (1, 7, 5)]
    store_b = of_type(events, Store)[1]
    assert (store_b.env, store_b.slot, store_b.size) == (1, 3, 5)
    stored = model.shared_pool_init_infer[1][3]
    net = model.net
    miss_context = net.empty_keys_values(1)
    with torch.no_grad():
        net.forward_tokens(encode(model, last)[1].view(1, 1, -1), miss_context,
                           torch.zeros(1, 1, dtype=torch.long))
    for layer in range(2):
        for name, diff in (("k", net.pos_emb_diff_k[layer]), ("v", net.pos_emb_diff_v[layer])):
            data = getattr(stored[layer], name).tensor[0]  # [H, C, hd]
            assert getattr(stored[layer], name).size == 5
            assert torch.equal(data[:, 0:2], diff[:, 0:2])
            assert diff[:, 0:2].abs().min().item() > 0
            obs_prev = getattr(miss_context[layer], name).tensor[0, :, 0]
            torch.testing.assert_close(data[:, 2], obs_prev + diff[:, 2], atol=1e-6, rtol=0)
            assert torch.equal(data[:, 5:], torch.zeros(4, 3, 4))


def test_trim_and_pad_left_pads_with_zeros_and_keeps_the_total_length() -> None:
    model = make_legacy()
    long_kv, short_kv = (KeysValues(1, 4, 8, 16, 2, "cpu") for _ in range(2))
    marks = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1).expand(1, 4, 8, 4)
    for layer in range(2):
        for name in ("k", "v"):
            getattr(long_kv[layer], name).tensor = 10 + marks.clone()
            getattr(short_kv[layer], name).tensor = 20 + marks.clone()
    model.keys_values_wm_list = [long_kv, short_kv]
    model.keys_values_wm_size_list = sizes = [5, 2]
    assert model.trim_and_pad_kv_cache(is_init_infer=False) is sizes
    assert sizes == [5, 2]
    for layer in range(2):
        for name in ("k", "v"):
            batch = getattr(model.keys_values_wm[layer], name)
            assert batch.size == 5
            assert batch.tensor.shape == (2, 4, 8, 4)
            assert batch.tensor[0, 0, :, 0].tolist() == [10, 11, 12, 13, 14, 15, 16, 17]
            assert batch.tensor[1, 0, :, 0].tolist() == [0, 0, 0, 20, 21, 22, 23, 24]
            assert torch.equal(batch.tensor[1, :, :3], torch.zeros(4, 3, 4))


def test_root_positions_are_m_and_m_plus_one_for_every_env_and_zero_on_a_miss() -> None:
    # Quirk 6. M = 5 here (env A's size); env B's own length is 1.
    model = make_legacy()
    calls = record_positions(model)
    obs = make_obs(0, 2)
    model.initial_inference(obs, first_actions(2), obs)
    assert calls == [[[0], [0]]]
    last, acts, current = section9_example(model)
    calls.clear()
    model.initial_inference(last, acts, current)
    assert calls == [[[0]], [[5], [5]], [[6], [6]]]


def manual_root_step(model, contexts: list[tuple[KeysValues, int]], acts, current_emb, pos: list[int]):
    """Left-pad each (context, size) with zeros to the longest, then forward act and obs."""
    net, longest = model.net, max(size for _, size in contexts)
    batch = net.empty_keys_values(len(contexts))
    for layer in range(2):
        for name in ("k", "v"):
            rows = torch.zeros(len(contexts), 4, 8, 4)
            for j, (kv, size) in enumerate(contexts):
                rows[j, :, longest - size: longest] = getattr(kv[layer], name).tensor[0, :, :size]
            getattr(batch[layer], name).tensor = rows
            getattr(batch[layer], name).size = longest
    positions = torch.tensor(pos).view(-1, 1)
    with torch.no_grad():
        hidden = net.forward_tokens(net.act_embedding(torch.tensor(acts)).unsqueeze(1), batch, positions)
        reward, _ = net.action_heads(hidden[:, -1])
        hidden = net.forward_tokens(current_emb.unsqueeze(1), batch, positions + 1)
        policy, value = net.observation_heads(hidden[:, -1])
    return reward, policy, value


def test_root_outputs_match_a_manual_forward_over_the_zero_padded_batch() -> None:
    model = make_legacy()
    last, acts, current = section9_example(model)
    key_a = hash_state(encode(model, last)[0])
    hit_context = model.shared_pool_init_infer[0][model.past_kv_cache_init_infer_envs[0][key_a]].clone()
    miss_context = model.net.empty_keys_values(1)
    with torch.no_grad():
        model.net.forward_tokens(encode(model, last)[1].view(1, 1, -1), miss_context,
                                 torch.zeros(1, 1, dtype=torch.long))
    out = model.initial_inference(last, acts, current)
    contexts = [(hit_context, 5), (miss_context, 1)]
    reward, policy, value = manual_root_step(model, contexts, acts, encode(model, current), [5, 5])
    torch.testing.assert_close(out.reward_logits, reward, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.policy_logits, policy, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.value_logits, value, atol=1e-5, rtol=0)
    # Per-env positions (5, 1) would have given env B a different answer.
    _, per_env_policy, _ = manual_root_step(model, contexts, acts, encode(model, current), [5, 1])
    assert (per_env_policy[1] - out.policy_logits[1]).abs().max().item() > 1e-4


def test_unmasked_padding_changes_a_short_envs_root_output() -> None:
    # Quirk 5: env B alone (no padding) answers differently from env B padded next to env A.
    padded_model, alone_model = make_legacy(), make_legacy()
    last, acts, current = section9_example(padded_model)
    padded = padded_model.initial_inference(last, acts, current)
    alone = alone_model.initial_inference(last[1:], [acts[1]], current[1:])  # env 0's dict is empty
    assert of_type(alone_model.take_events(), Lookup)[0].hit is False
    assert (padded.policy_logits[1] - alone.policy_logits[0]).abs().max().item() > 1e-4


def test_root_trim_adds_the_correction_in_place_on_the_batch_tensor() -> None:
    # Quirk 7: the slice [2, C-1) of the batch row itself is corrected, then copied.
    model = make_legacy(env_num=1)
    play(model, 3, rows=1)
    before: dict[tuple[int, str], torch.Tensor] = {}
    store = model.update_cache_context

    def spy(latent_state, is_init_infer=True):
        for layer in range(2):
            for name in ("k", "v"):
                before[layer, name] = getattr(model.keys_values_wm[layer], name).tensor.clone()
        return store(latent_state, is_init_infer)

    model.update_cache_context = spy
    model.initial_inference(make_obs(2, 1), [1], make_obs(3, 1))
    slot = model.shared_pool_init_infer[0][3]
    for layer in range(2):
        for name, diff in (("k", model.net.pos_emb_diff_k[layer]), ("v", model.net.pos_emb_diff_v[layer])):
            after = getattr(model.keys_values_wm[layer], name).tensor[0]
            old = before[layer, name][0]
            assert torch.equal(after[:, 2:7], old[:, 2:7] + diff)
            # Position 7 lies past the batch size: uninitialised memory, compared bit for bit
            # (it may hold NaNs, which torch.equal never calls equal).
            assert torch.equal(after[:, :2], old[:, :2])
            assert torch.equal(after[:, 7:].contiguous().view(torch.int32),
                               old[:, 7:].contiguous().view(torch.int32))
            stored = getattr(slot[layer], name)
            assert stored.size == 5
            assert torch.equal(stored.tensor[0, :, :5], after[:, 2:7])
            assert torch.equal(stored.tensor[0, :, 5:], torch.zeros(4, 3, 4))


def test_the_root_store_key_is_the_current_embedding_and_the_lookup_key_the_last() -> None:
    model = make_legacy()
    obs, _ = play(model, 2)
    events = model.take_events()
    last_emb, current_emb = encode(model, obs[0]), encode(model, obs[1])
    assert [e.key for e in of_type(events, Lookup)] == [hash_state(r) for r in last_emb]
    assert [e.key for e in of_type(events, Store)][-2:] == [hash_state(r) for r in current_emb]


# ---------------------------------------------------------------------------- counters, clears
def test_root_counters_count_continuing_lookups_only() -> None:
    model = make_legacy()
    obs, _ = play(model, 3)
    assert (model.root_total_query_cnt, model.root_hit_cnt) == (4, 4)
    model.clear_root_cache(1)
    model.initial_inference(obs[2], [0, 0], make_obs(9, 2))
    assert model.stats() == {"hit_count": 0, "total_query_count": 0,
                             "root_hit_cnt": 5, "root_total_query_cnt": 6}
    model.initial_inference(obs[2], first_actions(2), obs[2])
    assert model.stats()["root_total_query_cnt"] == 6


def test_the_recurrent_dict_is_cleared_after_every_root_call_and_nothing_else() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    root = model.initial_inference(obs, first_actions(2), obs).latent.numpy()
    for first_step in (True, False):
        model.recurrent_inference(root, [0, 1])
        assert len(model.past_kv_cache_recurrent_infer) == 2
        reverse = list(model.pool_idx_to_key_map_recur_infer)
        pool = list(model.shared_pool_recur_infer)
        pointer = model.shared_pool_index
        model.take_events()
        acts = first_actions(2) if first_step else [1, 1]
        root = model.initial_inference(obs, acts, obs).latent.numpy()
        assert model.take_events()[-1] == Clear(scope="recurrent", reason="after_root")
        assert model.past_kv_cache_recurrent_infer == {}
        assert model.pool_idx_to_key_map_recur_infer == reverse
        assert all(a is b for a, b in zip(model.shared_pool_recur_infer, pool))
        assert model.shared_pool_index == pointer


# ---------------------------------------------------------------------------- env ownership
def test_env_root_dicts_are_private_even_for_identical_observations() -> None:
    model = make_legacy()
    same = [np.repeat(make_obs(t, 1), 2, axis=0) for t in range(4)]
    model.initial_inference(same[0], first_actions(2), same[0])
    model.initial_inference(same[0], [1, 1], same[1])
    old, key = (hash_state(encode(model, same[t])[0]) for t in (0, 1))
    assert model.past_kv_cache_init_infer_envs == [{old: 0, key: 1}, {old: 0, key: 1}]
    model.clear_root_cache(1)
    model.take_events()
    model.initial_inference(same[1], [1, 1], same[2])
    lookups = of_type(model.take_events(), Lookup)
    assert [(e.env, e.key, e.hit, e.pool) for e in lookups] == [(0, key, True, "root"),
                                                                (1, key, False, None)]
    model.initial_inference(same[2], [0, 0], same[3])
    assert [e.hit for e in of_type(model.take_events(), Lookup)] == [True, True]
    assert model.shared_pool_index_init_envs == [4, 4]


def test_batch_position_is_the_env_id_for_a_short_batch() -> None:
    # Quirk 9: a one-row call is env 0's, whatever env the observation came from. (The key is
    # that of the one-row encoding: encoder bits may depend on the batch size, spec §3.)
    model = make_legacy()
    obs = make_obs(0, 2)
    model.initial_inference(obs, first_actions(2), obs)
    model.take_events()
    model.initial_inference(obs[1:], [1, 1], make_obs(1, 1))
    events = model.take_events()
    assert [(e.env, e.key, e.hit) for e in of_type(events, Lookup)] == [
        (0, hash_state(encode(model, obs[1:])[0]), False)]
    assert [(e.env, e.slot) for e in of_type(events, Store)] == [(0, 1)]
    assert model.shared_pool_index_init_envs == [2, 1]
