"""Legacy and refactored world models on the same calls: identical outputs and decisions.

The guide's integration test (`pytest tests/test_world_model_integration.py -v`). Where the clean
manager cannot reproduce a legacy quirk (legacy-spec §12 quirk 1), the exact difference is pinned
here and declared in waivers.toml.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.calls import invoke
from harness.engines import clone_call
from harness.proxy import WorldModelProxy
from harness.scenario import build_world_model_config, load_scenario, run_scenario
from legacy.world_model import LegacyWorldModel
from refactored.kv_cache_manager import KVCacheManager
from refactored.world_model import RefactoredWorldModel
from unizero.backends import build_world_model
from refactored.cache_events import EntryStored
from unizero.events import Store

from conftest import make_config, make_obs


class Lockstep(WorldModelProxy):
    """Drives two world models with the same calls and asserts identical results per call."""

    def __init__(self, legacy: LegacyWorldModel, refactored: RefactoredWorldModel) -> None:
        super().__init__(self._both, legacy)
        self.legacy, self.refactored = legacy, refactored
        self.num_calls = 0
        for model in (legacy, refactored):
            model.record_events(True)

    def _both(self, call):
        outs = [invoke(model, clone_call(call)) for model in (self.legacy, self.refactored)]
        events = [model.take_events() for model in (self.legacy, self.refactored)]
        assert outs[0].keys() == outs[1].keys()
        for name in outs[0]:
            assert torch.equal(outs[0][name], outs[1][name]), f"call {self.num_calls}: {name} differs"
        assert events[0] == events[1], f"call {self.num_calls} ({call.kind}): events differ"
        self.num_calls += 1
        return outs[0]


@pytest.mark.parametrize("name", ["cartpole_small", "acrobot_multi", "cartpole_pool_pressure",
                                  "cartpole_zero_init"])
def test_legacy_and_refactored_agree_call_by_call_on_real_searches(name):
    scenario = load_scenario(f"scenarios/{name}.toml")
    scenario = scenario.with_run(num_steps=24, num_episodes=None, steps_per_round=12, warmup_rounds=0)
    config = build_world_model_config(scenario)
    lockstep = Lockstep(LegacyWorldModel(config), RefactoredWorldModel(config))
    summary = run_scenario(scenario, lockstep)
    assert lockstep.num_calls > summary.num_root_calls + summary.num_recurrent_calls - 1
    assert lockstep.legacy.stats()["total_query_count"] > 0


def test_use_new_cache_manager_flag_selects_the_backend_through_the_registry():
    config = make_config()
    assert isinstance(build_world_model(config), LegacyWorldModel)
    assert isinstance(build_world_model(config.replace(use_new_cache_manager=True)), RefactoredWorldModel)


def test_refactored_world_model_accepts_any_manager_class_by_name():
    config = make_config(cache_manager_class="refactored.kv_cache_manager:KVCacheManager")
    assert type(RefactoredWorldModel(config).kv_cache_manager) is KVCacheManager


def _twin_env_stores(model) -> list[Store]:
    """Two envs with identical observations and actions, recurrent pool of 2 slots."""
    model.record_events(True)
    obs = np.repeat(make_obs(3, 1), 2, axis=0)
    root = model.initial_inference(obs, [-1, -1], obs)
    latent = root.latent.numpy()
    first = model.recurrent_inference(latent, [1, 1], 0)
    model.recurrent_inference(first.latent.numpy(), [0, 0], 1)
    return [e for e in model.take_events() if isinstance(e, Store) and e.pool == "recurrent"]


def test_quirk_1_legacy_evicts_a_duplicate_key_through_the_stale_reverse_map():
    config = make_config(num_simulations=1)  # P_rec = num_simulations * env_num = 2
    legacy = _twin_env_stores(LegacyWorldModel(config))
    refactored = _twin_env_stores(RefactoredWorldModel(config))
    k1, k2 = legacy[0].key, legacy[2].key
    # Both envs store the same key K1 (slots 0 and 1), then the same key K2 into the same slots.
    assert [(e.env, e.key, e.slot) for e in legacy] == [(0, k1, 0), (1, k1, 1), (0, k2, 0), (1, k2, 1)]
    assert [(e.env, e.key, e.slot) for e in refactored] == [(0, k1, 0), (1, k1, 1), (0, k2, 0), (1, k2, 1)]
    # Legacy: env 0's store into slot 0 deletes K1 (live at slot 1) because reverse[0] still names it.
    assert [e.evicted for e in legacy] == [None, None, k1, None]
    # Refactored: K1 moved to slot 1, so it is evicted only when slot 1 is overwritten.
    assert [e.evicted for e in refactored] == [None, None, None, k1]


def test_quirk_1_after_a_clear_legacy_loses_a_live_key_the_manager_keeps():
    """The spec's 3-simulation example (E=1, P_rec=3) on the bookkeeping of both sides."""
    config = make_config(env_num=1, num_simulations=3)
    legacy = LegacyWorldModel(config)
    manager = KVCacheManager(config, env_num=1)
    single = legacy.keys_values_wm_single_env
    for layer in single.layers:
        layer.k.size = layer.v.size = 1
    a, b, c, d = 0xA, 0xB, 0xC, 0xD
    for key in (a, b, c):                       # search 1: A@0, B@1, C@2, pointer wraps to 0
        legacy._store_recurrent(key)
        manager.set_recur_cache(key, single)
    legacy.past_kv_cache_recurrent_infer.clear()  # the root call clears the recurrent dict
    manager.clear_recur_cache()
    for key in (b, d):                          # search 2: B@0, then D@1 (reverse[1] == B)
        legacy._store_recurrent(key)
        manager.set_recur_cache(key, single)
    assert b not in legacy.past_kv_cache_recurrent_infer      # legacy: a later lookup of B misses
    assert manager.get_recur_cache(b) is not None              # manager: B is still live at slot 0
    assert legacy.past_kv_cache_recurrent_infer == {d: 1}


class DrainRecordingManager(KVCacheManager):
    """The honest manager, keeping a copy of every event its owner drains."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drained: list = []

    def take_events(self) -> list:
        events = super().take_events()
        self.drained.extend(events)
        return events


def test_refactored_store_events_are_built_from_the_managers_drained_events():
    model = RefactoredWorldModel(make_config(num_simulations=1), manager_cls=DrainRecordingManager)
    stores = _twin_env_stores(model)
    manager = model.kv_cache_manager
    assert len(manager.events) == 0  # the world model drains after every call
    drained = [e for e in manager.drained if isinstance(e, EntryStored)]
    assert [(e.slot, e.evicted) for e in drained if e.pool == "recur"] == [
        (s.slot, s.evicted) for s in stores]
    assert [e.pool for e in drained] == ["init[0]", "init[1]", "recur", "recur", "recur", "recur"]


class SilentManager(KVCacheManager):
    """Stores without reporting them: breaks the manager's event contract."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, enable_events=False, **kwargs)


def test_a_manager_that_reports_no_stores_is_an_invariant_breach():
    model = RefactoredWorldModel(make_config(), manager_cls=SilentManager)
    obs = make_obs(0, 2)
    with pytest.raises(AssertionError, match="0 store outcomes reported for 2 stores"):
        model.initial_inference(obs, [-1, -1], obs)
