"""Legacy clears, epoch recompute, events vs bookkeeping and input errors (spec §9-§11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import first_actions, make_legacy, make_obs
from unizero.events import Clear, Lookup, Store, Trim
from unizero.world_model import InputError


def busy_model():
    """Two envs after three root steps and two simulations: every structure is populated."""
    model = make_legacy()
    obs = [make_obs(t, 2) for t in range(3)]
    model.initial_inference(obs[0], first_actions(2), obs[0])
    model.initial_inference(obs[0], [1, 2], obs[1])
    roots = model.initial_inference(obs[1], [0, 1], obs[2]).latent.numpy()
    latents = model.recurrent_inference(roots, [0, 1]).latent.numpy()
    model.recurrent_inference(latents, [2, 2])
    model.take_events()
    return model, obs


def lookups(events) -> list[Lookup]:
    return [e for e in events if isinstance(e, Lookup)]


def snapshot(model) -> dict:
    return {
        "init_pointers": list(model.shared_pool_index_init_envs),
        "recur_pointer": model.shared_pool_index,
        "wm_pointer": model.shared_pool_index_wm,
        "init_reverse": [list(r) for r in model.pool_idx_to_key_map_init_envs],
        "recur_reverse": list(model.pool_idx_to_key_map_recur_infer),
        "init_pools": [list(map(id, p)) for p in model.shared_pool_init_infer],
        "recur_pool": list(map(id, model.shared_pool_recur_infer)),
        "wm_pool": list(map(id, model.shared_pool_wm)),
        "sizes": list(model.keys_values_wm_size_list),
        "stats": model.stats(),
    }


# ---------------------------------------------------------------------------- clears (§10)
def test_clear_caches_empties_the_lookup_dicts_and_the_assembly_list_only() -> None:
    model, _ = busy_model()
    before = snapshot(model)
    assembly = model.keys_values_wm_list
    assert all(model.past_kv_cache_init_infer_envs) and model.past_kv_cache_recurrent_infer
    model.clear_caches(reason="periodic")
    assert model.past_kv_cache_init_infer_envs == [{}, {}]
    assert model.past_kv_cache_recurrent_infer == {}
    assert model.keys_values_wm_list is assembly and assembly == []
    assert snapshot(model) == before
    assert model.take_events() == [Clear(scope="all", reason="periodic")]


def test_after_clear_caches_every_lookup_misses_and_pointers_continue() -> None:
    model, obs = busy_model()
    pointers = list(model.shared_pool_index_init_envs)
    model.clear_caches()
    model.take_events()
    model.initial_inference(obs[1], [0, 1], obs[2])
    events = model.take_events()
    assert [e.hit for e in events if isinstance(e, Lookup)] == [False, False]
    assert [e.slot for e in events if isinstance(e, Store)] == pointers


def test_clear_root_cache_clears_one_env_dict() -> None:
    model, _ = busy_model()
    env0 = dict(model.past_kv_cache_init_infer_envs[0])
    recurrent = dict(model.past_kv_cache_recurrent_infer)
    before = snapshot(model)
    model.clear_root_cache(1)
    assert model.past_kv_cache_init_infer_envs == [env0, {}]
    assert model.past_kv_cache_recurrent_infer == recurrent
    assert snapshot(model) == before
    assert model.take_events() == [Clear(scope="root_env", reason="episode_end", env=1)]


@pytest.mark.parametrize("env_id", [2, -1, 1.0, True, "0"])
def test_clear_root_cache_rejects_a_bad_env_id(env_id) -> None:
    model = make_legacy()
    with pytest.raises(InputError, match=rf"^env_id: expected an integer in \[0, 2\), got {env_id!r}$"):
        model.clear_root_cache(env_id)


def test_epoch_recompute_refreshes_the_correction_and_clears() -> None:
    model, obs = busy_model()
    stale = model.net.pos_emb_diff_k.clone()
    before = snapshot(model)
    model.recompute_pos_emb_diff_and_clear_cache()
    assert not torch.equal(model.net.pos_emb_diff_k, stale)
    fresh = model.net.pos_emb_diff_k.clone()
    model.net.recompute_pos_emb_diff()
    assert torch.equal(model.net.pos_emb_diff_k, fresh)
    assert model.past_kv_cache_init_infer_envs == [{}, {}]
    assert model.past_kv_cache_recurrent_infer == {}
    assert snapshot(model) == before
    assert model.take_events() == [Clear(scope="all", reason="epoch")]


def test_a_trim_after_the_epoch_recompute_uses_the_new_correction() -> None:
    model = make_legacy(env_num=1)
    stale = model.net.pos_emb_diff_v.clone()
    model.recompute_pos_emb_diff_and_clear_cache()
    fresh = model.net.pos_emb_diff_v.clone()
    obs = [make_obs(t, 1) for t in range(4)]
    model.initial_inference(obs[0], [-1], obs[0])
    model.initial_inference(obs[0], [1], obs[1])
    model.initial_inference(obs[1], [1], obs[2])
    before = {}
    store = model.update_cache_context

    def spy(latent_state, is_init_infer=True):
        before["v"] = model.keys_values_wm[1].v.tensor.clone()
        return store(latent_state, is_init_infer)

    model.update_cache_context = spy
    model.initial_inference(obs[2], [1], obs[3])
    stored = model.shared_pool_init_infer[0][3][1].v.tensor[0, :, :5]
    assert torch.equal(stored, before["v"][0, :, 2:7] + fresh[1])
    assert not torch.allclose(stored, before["v"][0, :, 2:7] + stale[1], atol=1e-4)


# ---------------------------------------------------------------------------- weight updates
def perturbed(state: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    return {name: (value + 1e-4 if name in names else value.clone()) for name, value in state.items()}


def test_perturbing_every_parameter_makes_every_old_root_key_miss() -> None:
    model, obs = busy_model()
    params = {name for name, _ in model.net.named_parameters()}
    model.load_weights(perturbed(model.net.state_dict(), params))
    model.take_events()
    model.initial_inference(obs[2], [1, 1], make_obs(7, 2))
    assert [e.hit for e in lookups(model.take_events())] == [False, False]


def test_perturbing_one_encoder_parameter_makes_every_old_root_key_miss() -> None:
    model, obs = busy_model()
    model.load_weights(perturbed(model.net.state_dict(), {"encoder.3.bias"}))
    model.take_events()
    model.initial_inference(obs[2], [1, 1], make_obs(7, 2))
    assert [e.hit for e in lookups(model.take_events())] == [False, False]


def test_a_weight_update_that_leaves_the_encoder_unchanged_reuses_stale_contexts() -> None:
    # Keys hash encoder outputs only: contexts computed with the old transformer still hit.
    model, obs = busy_model()
    transformer = {name for name, _ in model.net.named_parameters() if name.startswith("transformer.")}
    model.load_weights(perturbed(model.net.state_dict(), transformer))
    model.take_events()
    model.initial_inference(obs[2], [1, 1], make_obs(7, 2))
    assert [(e.hit, e.size) for e in lookups(model.take_events())] == [(True, 5), (True, 5)]


# ---------------------------------------------------------------------------- events vs bookkeeping
class Shadow:
    """The spec §8.3 bookkeeping rebuilt from events alone."""

    def __init__(self, env_num: int, init_size: int, recur_size: int) -> None:
        self.init = [{} for _ in range(env_num)]
        self.init_reverse = [[None] * init_size for _ in range(env_num)]
        self.init_ptr = [0] * env_num
        self.recur: dict = {}
        self.recur_reverse = [None] * recur_size
        self.recur_ptr = 0
        self.replacements = 0

    def apply(self, event) -> None:
        handler = {Lookup: self._lookup, Store: self._store, Clear: self._clear}.get(type(event))
        if handler is not None:
            handler(event)

    def _lookup(self, event: Lookup) -> None:
        expected_pool = None
        if not event.forced and event.key in self.init[event.env]:
            expected_pool = "root"
        elif not event.forced and event.path == "recurrent" and event.key in self.recur:
            expected_pool = "recurrent"
        assert (event.hit, event.pool) == (expected_pool is not None, expected_pool), event

    def _store(self, event: Store) -> None:
        root = event.pool == "root"
        table = self.init[event.env] if root else self.recur
        reverse = self.init_reverse[event.env] if root else self.recur_reverse
        pointer = self.init_ptr[event.env] if root else self.recur_ptr
        assert event.slot == pointer, (event, pointer)
        old = reverse[pointer]
        deleted = old if old is not None and old in table else None
        # A key deleted and stored again at once is reported as a replacement, not evicted.
        assert event.evicted == (deleted if deleted != event.key else None), (event, old)
        if deleted is not None:
            del table[deleted]
            self.replacements += deleted == event.key
        table[event.key] = pointer
        reverse[pointer] = event.key
        if root:
            self.init_ptr[event.env] = (pointer + 1) % len(reverse)
        else:
            self.recur_ptr = (pointer + 1) % len(reverse)

    def _clear(self, event: Clear) -> None:
        if event.scope in ("all", "recurrent"):
            self.recur.clear()
        if event.scope == "all":
            for table in self.init:
                table.clear()
        if event.scope == "root_env":
            self.init[event.env].clear()

    def matches(self, model) -> None:
        assert model.past_kv_cache_init_infer_envs == self.init
        assert model.pool_idx_to_key_map_init_envs == self.init_reverse
        assert model.shared_pool_index_init_envs == self.init_ptr
        assert model.past_kv_cache_recurrent_infer == self.recur
        assert model.pool_idx_to_key_map_recur_infer == self.recur_reverse
        assert model.shared_pool_index == self.recur_ptr


@pytest.mark.parametrize("zero_init_heads", [False, True])
def test_events_replay_to_exactly_the_models_bookkeeping_over_an_episode(zero_init_heads) -> None:
    model = make_legacy(num_simulations=2, game_segment_length=4, zero_init_heads=zero_init_heads)
    shadow = Shadow(2, 4, 4)
    rng = np.random.default_rng(0)
    obs = make_obs(0, 2)
    roots = model.initial_inference(obs, first_actions(2), obs).latent.numpy()
    counts = {"evicted": 0, "hits": 0, "trims": 0}
    for step in range(1, 9):
        latents = roots
        for sim in range(3):
            out = model.recurrent_inference(latents, rng.integers(0, 3, 2))
            latents = out.latent.numpy() if sim != 1 else latents
        if step == 4:
            model.clear_root_cache(0)
        if step == 6:
            model.clear_caches(reason="periodic")
        if step == 7:
            model.set_reanalyze_phase(True)
            model.recurrent_inference(latents, [0, 0])
            model.set_reanalyze_phase(False)
        new_obs = make_obs(step, 2)
        roots = model.initial_inference(obs, rng.integers(0, 3, 2), new_obs).latent.numpy()
        obs = new_obs
        for event in model.take_events():
            shadow.apply(event)
            counts["evicted"] += isinstance(event, Store) and event.evicted is not None
            counts["hits"] += isinstance(event, Lookup) and event.hit
            counts["trims"] += isinstance(event, Trim)
        shadow.matches(model)
    assert counts["hits"] > 0 and counts["trims"] > 0
    if zero_init_heads:  # one recurrent key for everything: deletions are replacements
        assert shadow.replacements > 0
    else:
        assert counts["evicted"] > 0


def test_recording_off_drains_and_stops_events() -> None:
    model = make_legacy()
    obs = make_obs(0, 2)
    model.initial_inference(obs, first_actions(2), obs)
    model.record_events(False)
    assert model.take_events() == []
    model.initial_inference(obs, first_actions(2), obs)
    assert model.take_events() == []


# ---------------------------------------------------------------------------- input errors
@pytest.fixture
def model():
    model = make_legacy()
    obs = make_obs(0, 2)
    model.initial_inference(obs, first_actions(2), obs)
    return model


def test_a_float64_latent_is_rejected(model) -> None:
    with pytest.raises(InputError, match=r"^latent_state: expected dtype float32 .*got float64$"):
        model.recurrent_inference(np.zeros((2, 16)), [0, 1])


def test_a_torch_latent_is_rejected(model) -> None:
    with pytest.raises(InputError, match=r"^latent_state: expected a float32 numpy array .*got Tensor$"):
        model.recurrent_inference(torch.zeros(2, 16), [0, 1])


@pytest.mark.parametrize("shape", [(2, 15), (0, 16), (3, 16), (16,)])
def test_a_latent_of_the_wrong_shape_is_rejected(model, shape) -> None:
    with pytest.raises(InputError, match=rf"^latent_state: .*got {list(shape)}$".replace("[", r"\[")):
        model.recurrent_inference(np.zeros(shape, dtype=np.float32), [0, 1])


def test_a_three_dim_latent_of_single_tokens_is_accepted(model) -> None:
    out = model.recurrent_inference(np.zeros((2, 1, 16), dtype=np.float32), [0, 1])
    assert out.latent.shape == (2, 16)


@pytest.mark.parametrize("actions", [[0, 3], [-1, 0], [0]])
def test_recurrent_actions_out_of_range_or_short_are_rejected(model, actions) -> None:
    with pytest.raises(InputError, match=r"^actions: expected"):
        model.recurrent_inference(np.zeros((2, 16), dtype=np.float32), actions)


def test_the_rejected_action_values_are_named(model) -> None:
    with pytest.raises(InputError, match=r"expected actions in \[0, 3\), got \[0, 3\]$"):
        model.recurrent_inference(np.zeros((2, 16), dtype=np.float32), [0, 3])


def test_float_actions_are_rejected(model) -> None:
    with pytest.raises(InputError, match=r"^actions: expected integer actions, got dtype float64$"):
        model.recurrent_inference(np.zeros((2, 16), dtype=np.float32), [0.0, 1.0])


@pytest.mark.parametrize("obs, message", [
    (np.zeros((2, 5), dtype=np.float32), r"^current_obs: expected shape \[B, 4\] .*got \[2, 5\]$"),
    (np.zeros((3, 4), dtype=np.float32), r"^current_obs: .*1 <= B <= 2, got \[3, 4\]$"),
    (np.zeros((2, 4), dtype=np.int64), r"^current_obs: expected a float array, got dtype int64$"),
])
def test_bad_current_observations_are_rejected(model, obs, message) -> None:
    with pytest.raises(InputError, match=message):
        model.initial_inference(obs, [0, 1], obs)


def test_a_root_action_out_of_range_is_rejected(model) -> None:
    obs = make_obs(1, 2)
    with pytest.raises(InputError, match=r"^last_actions: expected actions in \[-1, 3\), got \[0, 5\]$"):
        model.initial_inference(obs, [0, 5], obs)


def test_fewer_last_observations_than_current_ones_are_rejected(model) -> None:
    with pytest.raises(InputError, match=r"^last_obs: expected at least 2 rows .*got 1$"):
        model.initial_inference(make_obs(1, 1), [0, 1], make_obs(2, 2))


def test_a_rejected_call_changes_no_bookkeeping(model) -> None:
    before = snapshot(model), [dict(d) for d in model.past_kv_cache_init_infer_envs]
    model.take_events()
    with pytest.raises(InputError):
        model.recurrent_inference(np.zeros((2, 16)), [0, 1])
    with pytest.raises(InputError):
        model.initial_inference(make_obs(1, 2), [0, 7], make_obs(1, 2))
    assert (snapshot(model), [dict(d) for d in model.past_kv_cache_init_infer_envs]) == before
    assert model.take_events() == []


def test_load_weights_keeps_the_stale_correction_until_the_epoch_recompute() -> None:
    # The harness hands over state dicts whose buffers are the model's own (spec §9, quirk 8).
    model = make_legacy()
    stale = model.net.pos_emb_diff_k.clone()
    state = {name: value + 1e-3 if name.endswith("weight") else value.clone()
             for name, value in model.net.state_dict().items()}
    model.load_weights(state)
    assert torch.equal(model.net.pos_emb_diff_k, stale)
    model.recompute_pos_emb_diff_and_clear_cache()
    assert not torch.equal(model.net.pos_emb_diff_k, stale)


def test_load_weights_rejects_a_state_dict_with_missing_entries() -> None:
    model = make_legacy()
    state = model.net.state_dict()
    del state["pos_emb.weight"]
    with pytest.raises(RuntimeError, match="pos_emb.weight"):
        model.load_weights(state)
