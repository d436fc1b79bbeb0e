"""Live phases: ShadowWorldModel in shadow and validate mode, driven by a real scenario."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.report.console import RunReport
from harness.report.text import render_text
from harness.scenario import build_world_model_config, load_scenario, run_scenario
from harness.shadow import DivergenceError, ShadowWorldModel
from harness.waivers import Waiver, WaiverSet
from legacy.world_model import LegacyWorldModel
from refactored.kv_cache_manager import KVCacheManager
from refactored.world_model import RefactoredWorldModel
from unizero.world_model import InputError

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "cartpole_pool_pressure.toml"


class NoRecurrentFallback(KVCacheManager):
    """A faulty manager: recurrent lookups never fall back to the recurrent pool."""

    def hierarchical_get(self, env_id, cache_key):
        entry = self.get_init_cache(env_id, cache_key)
        return (entry, "root") if entry is not None else (None, None)


class SlowRefactored(RefactoredWorldModel):
    """An honest candidate that takes 200 ms longer per recurrent call: far past any budget
    whatever the machine's load (the control's calls take a few ms)."""

    def recurrent_inference(self, *args, **kwargs):
        time.sleep(0.2)
        return super().recurrent_inference(*args, **kwargs)


@pytest.fixture(scope="module")
def scenario():
    """Four steps in rounds of two: searches, a periodic clear, reanalysis, SGD, epoch clears."""
    return load_scenario(SCENARIO).with_run(num_steps=4, steps_per_round=2, clear_interval=2)


@pytest.fixture(scope="module")
def config(scenario):
    return build_world_model_config(scenario)


@pytest.fixture(scope="module")
def legacy_alone(scenario, config):
    """The run the shadow must not change: legacy on its own."""
    return run_scenario(scenario, LegacyWorldModel(config))


def shadow(config, candidate=None, **kwargs) -> ShadowWorldModel:
    return ShadowWorldModel(LegacyWorldModel(config),
                            candidate if candidate is not None else RefactoredWorldModel(config),
                            **kwargs)


def faulty(config) -> RefactoredWorldModel:
    return RefactoredWorldModel(config, manager_cls=NoRecurrentFallback)


@pytest.mark.parametrize("mode", ["shadow", "validate"])
def test_live_scenario_runs_through_the_wrapper_unchanged_and_equivalent(scenario, config,
                                                                         legacy_alone, mode):
    model = shadow(config, mode=mode)
    summary = run_scenario(scenario, model)
    assert summary == legacy_alone  # the control's results drove the run
    stats = model.stats()
    # 4 collect searches (root + 10 simulations), 2 rounds of reanalysis (on, root + 6
    # simulations, off), SGD weights and epoch clear, and one periodic clear per env per round.
    assert stats.num_calls == stats.num_compared == 4 * 11 + 2 * (1 + 7 + 1 + 2) + 2 * 2
    assert (stats.num_unwaived_calls, stats.num_waived_calls, stats.disabled_reason) == (0, 0, None)
    assert stats.overhead is not None and stats.overhead > 0
    coverage = model.trace_result().coverage
    assert {path for path, count in coverage.items() if count} >= {
        "root_first_step", "root_continuing", "hit_root_pool", "hit_recurrent_pool", "miss",
        "forced_miss", "eviction", "trim", "clear_after_root", "clear_periodic", "clear_epoch",
        "weights_update", "reanalyze"}


def test_shadow_records_a_faulty_candidate_and_still_returns_the_controls_results(
        scenario, config, legacy_alone):
    model = shadow(config, faulty(config), mode="shadow")
    assert run_scenario(scenario, model) == legacy_alone
    stats = model.stats()
    assert stats.num_unwaived_calls > 0
    first = model.divergences[0]
    assert (first.trace, first.call_kind, first.classification) == ("live", "recurrent", "both")
    assert "control hit (recurrent pool), candidate miss" in first.event_divergence.summary


def test_validate_raises_the_rendered_diff_on_the_first_divergence(scenario, config):
    model = shadow(config, faulty(config), mode="validate")
    with pytest.raises(DivergenceError) as caught:
        run_scenario(scenario, model)
    comparison = caught.value.comparison
    assert comparison.call_index == model.divergences[0].call_index
    message = str(caught.value)
    assert f"FIRST both divergence, call {comparison.call_index} (recurrent)" in message
    assert "cache decisions: env" in message and "live, envs [0, 1], unwaived" in message
    assert "\x1b[" not in message
    assert isinstance(caught.value, AssertionError)  # the guide's assert, made readable


def test_validate_lets_a_waived_divergence_pass(scenario, config, legacy_alone):
    waivers = WaiverSet([Waiver(id="known", reason="test", expires=dt.date(2099, 1, 1),
                                trace="live", call_kind="recurrent")])
    model = shadow(config, faulty(config), mode="validate", judge=waivers.judge)
    assert run_scenario(scenario, model) == legacy_alone
    assert model.stats().num_waived_calls > 0 and model.stats().num_unwaived_calls == 0


def test_overhead_past_the_budget_switches_the_candidate_off_and_says_so(scenario, config,
                                                                          legacy_alone, caplog):
    model = shadow(config, SlowRefactored(config), mode="shadow", overhead_budget=1.5,
                   min_calls_before_budget=5)
    with caplog.at_level(logging.WARNING, logger="harness.shadow"):
        assert run_scenario(scenario, model) == legacy_alone
    stats = model.stats()
    assert model.disabled and stats.num_compared < stats.num_calls
    assert "exceeds the budget of 1.5x" in stats.disabled_reason
    assert [r.getMessage() for r in caplog.records] == [f"ShadowWorldModel live: {stats.disabled_reason}"]
    assert model.trace_result().notes == (stats.disabled_reason,)


def test_validate_mode_takes_no_overhead_budget(config):
    with pytest.raises(ValueError, match="validate mode checks every call"):
        shadow(config, mode="validate", overhead_budget=2.0)


def test_the_candidate_starts_from_a_copy_of_the_controls_weights(config):
    other = RefactoredWorldModel(dataclasses.replace(config, weight_seed=config.weight_seed + 1))
    model = shadow(config, other)
    control, candidate = model.control.net.state_dict(), other.net.state_dict()
    assert all(torch.equal(control[name], candidate[name]) for name in control)
    assert all(control[name].data_ptr() != candidate[name].data_ptr() for name in control)
    obs = np.zeros((2, config.obs_dim), dtype=np.float32)
    model.initial_inference(obs, np.array([-1, -1]), obs + 0.5)
    assert model.stats().num_unwaived_calls == 0


def test_a_control_error_propagates_after_the_candidate_agreed(config):
    model = shadow(config, mode="validate")
    with pytest.raises(InputError, match="current_obs"):
        model.initial_inference(np.zeros((2, 4), np.float32), [-1, -1], np.zeros((2, 99), np.float32))
    assert model.stats().num_compared == 1 and model.divergences == ()


def test_a_candidate_error_is_a_divergence_in_shadow_mode(config):
    class Crashing(RefactoredWorldModel):
        def clear_caches(self, reason="clear_caches"):
            raise RuntimeError("boom")

    model = shadow(config, Crashing(config))
    model.clear_caches(reason="periodic")
    (found,) = model.divergences
    assert found.classification == "error"
    assert found.engine_error == "control returned; candidate raised RuntimeError: boom"


def test_the_shadow_run_renders_as_a_comparison_report(scenario, config):
    model = shadow(config)
    run_scenario(scenario, model)
    text = render_text(RunReport(model.run_result()))
    assert "control control vs candidate candidate" in text
    assert f"EQUIVALENT: 1 trace(s), {model.stats().num_calls} calls, 0 waived divergence(s)" in text


def test_take_events_hands_out_the_controls_events(config):
    model = shadow(config)
    obs = np.zeros((2, config.obs_dim), dtype=np.float32)
    model.initial_inference(obs, np.array([-1, -1]), obs)
    events = model.take_events()
    assert events and model.take_events() == []
