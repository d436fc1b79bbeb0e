"""Counterfactual legacy controls: legacy with exactly one quirk corrected (legacy/counterfactual.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.engines import ENGINE_NAMES, WorldModelEngine, build_engine
from harness.replay import ReplayOptions, replay_trace
from legacy.counterfactual import COUNTERFACTUALS, LegacyFixQuirk1, counterfactual_for
from legacy.world_model import LegacyWorldModel
from unizero.backends import WORLD_MODEL_BACKENDS, load_object
from unizero.config import WorldModelConfig

QUIRK_TRACES = Path(__file__).resolve().parents[1] / "scenarios" / "traces-quirks"
QUIRK1_TRACE = QUIRK_TRACES / "context_len3_twins.kvtrace"

# One env, a recurrent pool of 3 slots (legacy-spec §12 quirk 1's concrete example).
TINY = WorldModelConfig(embed_dim=8, num_layers=1, num_heads=2, context_length=8, env_num=1,
                        num_simulations=3)
A, B, C, D = 101, 202, 303, 404


def _search(model: LegacyWorldModel, keys: list[int]) -> list[int | None]:
    """Store ``keys`` into the recurrent pool after the root call's dict clear; the evictions."""
    model.past_kv_cache_recurrent_infer.clear()
    return [model._store_recurrent(key)[0] for key in keys]


@pytest.mark.parametrize("cls", [LegacyWorldModel, LegacyFixQuirk1], ids=["legacy", "fixed"])
def test_a_key_restored_after_a_clear_survives_only_in_the_counterfactual(cls):
    model = cls(TINY)
    assert _search(model, [A, B, C]) == [None, None, None]
    # Search 2: B lands in slot 0, then D in slot 1 whose stale reverse entry names B.
    evicted = _search(model, [B, D])
    if cls is LegacyWorldModel:
        assert evicted == [None, B] and B not in model.past_kv_cache_recurrent_infer
    else:
        assert evicted == [None, None] and model.past_kv_cache_recurrent_infer[B] == 0
    assert model.past_kv_cache_recurrent_infer[D] == 1


@pytest.mark.parametrize("cls", [LegacyWorldModel, LegacyFixQuirk1], ids=["legacy", "fixed"])
def test_a_duplicate_key_outlives_its_older_slot_only_in_the_counterfactual(cls):
    model = cls(TINY)
    # A at 0, A again at 1 (the dict now points at 1), C at 2, then D wraps to slot 0.
    evicted = _search(model, [A, A, C])
    evicted += [model._store_recurrent(D)[0]]
    if cls is LegacyWorldModel:
        assert evicted == [None, None, None, A]
        assert A not in model.past_kv_cache_recurrent_infer
    else:
        assert evicted == [None, None, None, None]
        assert model.past_kv_cache_recurrent_infer[A] == 1
    # Writing slot 1 (where A lives) evicts it in both.
    assert model._store_recurrent(B)[0] == (A if cls is LegacyFixQuirk1 else None)


def test_root_pool_stores_follow_the_same_correction():
    config = TINY.replace(game_segment_length=2)
    legacy, fixed = LegacyWorldModel(config), LegacyFixQuirk1(config)
    for model in (legacy, fixed):
        model._store_root(0, A)
        model._store_root(0, A)  # duplicate: the dict points at slot 1
    assert legacy._store_root(0, B)[0] == A  # slot 0's stale entry deletes the live A
    assert fixed._store_root(0, B)[0] is None
    assert A not in legacy.past_kv_cache_init_infer_envs[0]
    assert fixed.past_kv_cache_init_infer_envs[0] == {A: 1, B: 0}


def test_every_counterfactual_is_registered_as_an_engine_and_a_backend():
    for counterfactual in COUNTERFACTUALS:
        assert counterfactual.engine in ENGINE_NAMES
        assert WORLD_MODEL_BACKENDS[counterfactual.engine] == counterfactual.spec
        cls = load_object(counterfactual.spec)
        assert issubclass(cls, LegacyWorldModel) and cls is not LegacyWorldModel
        engine = build_engine(counterfactual.engine, TINY)
        assert isinstance(engine, WorldModelEngine) and isinstance(engine.model, cls)
        assert counterfactual.cause.startswith("quirk-")


def test_counterfactual_for_names_the_known_causes():
    assert counterfactual_for("quirk-1").engine == "legacy-fix-quirk1"
    with pytest.raises(KeyError, match="expected one of quirk-1"):
        counterfactual_for("quirk-99")


def test_the_quirk_1_counterfactual_agrees_with_refactored_where_legacy_does_not():
    legacy = replay_trace(str(QUIRK1_TRACE), ReplayOptions())
    counterfactual = replay_trace(str(QUIRK1_TRACE), ReplayOptions(control="legacy-fix-quirk1"))
    assert legacy.num_unwaived_calls > 0
    assert counterfactual.num_unwaived_calls == 0 and counterfactual.num_calls == legacy.num_calls
