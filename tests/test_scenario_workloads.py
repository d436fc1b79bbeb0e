"""Scenario workloads beyond the lock-step envelope: ready-env batches, finishing envs, weight
updates between searches, reanalysis on a target model, per-env context restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.replay import ReplayOptions, replay_trace
from harness.scenario import build_world_model_config, parse_scenario, run_scenario
from legacy.world_model import LegacyWorldModel
from test_scenario import ApiSpy, run_spy, scenario_data

THREE_ENVS = {"id": "CartPole-v1", "env_num": 3, "seeds": [1, 2, 3]}


def _roots(log: list[tuple]) -> list[tuple]:
    return [entry for entry in log if entry[0] == "root"]


def test_waiting_envs_give_smaller_batches_and_every_context_restarts_after_one():
    data = scenario_data(env=THREE_ENVS, run={"steps": 16, "wait_probability": 0.5, "wait_seed": 4})
    spy, summary = run_spy(data)
    roots = _roots(spy.log)
    batches = [batch for _, _, batch in roots]
    assert summary.num_steps == 16 and len(roots) == 16
    assert min(batches) >= 1 and any(batch < 3 for batch in batches)
    for previous, current in zip(roots, roots[1:]):
        if previous[2] < 3:  # upstream resets every env when fewer were ready
            assert current[1] == "first", f"after a batch of {previous[2]}: {current}"
    recurrent_batches = {entry[2] for entry in spy.log if entry[0] == "recurrent"}
    assert recurrent_batches <= set(batches)


def test_waiting_is_deterministic_given_the_wait_seed():
    data = scenario_data(env=THREE_ENVS, run={"steps": 10, "wait_probability": 0.4, "wait_seed": 9})
    first, second = run_spy(data), run_spy(data)
    assert first[0].log == second[0].log and first[1] == second[1]
    other = scenario_data(env=THREE_ENVS, run={"steps": 10, "wait_probability": 0.4, "wait_seed": 10})
    assert [e[2] for e in _roots(run_spy(other)[0].log)] != [e[2] for e in _roots(first[0].log)]


def test_finished_envs_leave_the_batch_and_the_run_ends_when_all_have_finished():
    spy, summary = run_spy(scenario_data(run={"steps": 50, "active_steps": [3, 6]}))
    assert summary.num_steps == 6
    assert [batch for _, _, batch in _roots(spy.log)] == [2, 2, 2, 1, 1, 1]
    # After the first batch of one env every context restarts, then stays first-step.
    assert [path for _, path, _ in _roots(spy.log)] == ["first", "continuing", "continuing",
                                                       "continuing", "first", "first"]


def test_weight_updates_between_searches_come_without_a_clear():
    data = scenario_data(run={"steps": 6}, weights={"kind": "perturb", "every_steps": 2})
    spy, summary = run_spy(data)
    assert summary.num_weight_updates == 3
    positions = [i for i, entry in enumerate(spy.log) if entry == ("load_weights",)]
    assert len(positions) == 3
    for index in positions[:-1]:
        assert spy.log[index + 1][0] == "root", spy.log[index: index + 2]
    assert not [entry for entry in spy.log if entry[0] in ("clear_caches", "recompute")]


def test_reanalysis_on_a_target_model_leaves_the_collecting_model_alone():
    data = scenario_data(run={"steps": 4, "steps_per_round": 2},
                         weights={"kind": "sgd", "learning_rate": 0.1},
                         reanalyze={"model": "target", "num_simulations": 2})
    scenario = parse_scenario(data, "tiny.toml")
    collect = ApiSpy(LegacyWorldModel(build_world_model_config(scenario)))
    target = ApiSpy(LegacyWorldModel(build_world_model_config(scenario)))
    summary = run_scenario(scenario, collect, target=target)
    assert summary.num_reanalyze_searches == 2
    assert not [entry for entry in collect.log if entry[0] == "reanalyze"]
    assert [entry for entry in target.log if entry[0] == "reanalyze"] == [
        ("reanalyze", True), ("reanalyze", False)] * 2
    # One weight sync at the start, then one after each training round, with its recompute.
    assert target.log[0] == ("load_weights",)
    assert target.log.count(("recompute",)) == 2 and target.log.count(("load_weights",)) == 3
    # The target ends with the collecting model's weights.
    for name, value in collect.net.state_dict().items():
        assert np.array_equal(value.numpy(), target.net.state_dict()[name].numpy()), name


def test_a_target_model_is_built_when_none_is_given():
    data = scenario_data(run={"steps": 2, "steps_per_round": 2},
                         reanalyze={"model": "target", "num_simulations": 2})
    spy, summary = run_spy(data)
    assert summary.num_reanalyze_searches == 1
    assert not [entry for entry in spy.log if entry[0] == "reanalyze"]


def test_an_episode_end_without_a_global_restart_continues_the_other_envs():
    data = scenario_data(run={"steps": 5, "max_episode_steps": [2, 9],
                              "restart_all_on_episode_end": False})
    spy, _ = run_spy(data)
    assert ("clear_root_cache", 0, "episode_end") in spy.log
    assert [path for _, path, _ in _roots(spy.log)] == ["first"] + ["continuing"] * 4


def test_a_context_length_3_trace_replays_clean():
    # Its trim correction buffers are empty tensors, which once tripped the engines' isolation
    # check (empty tensors all report data_ptr 0) before the first call.
    path = Path(__file__).resolve().parents[1] / "scenarios" / "traces" / "context_len3.kvtrace"
    result = replay_trace(str(path), ReplayOptions())
    assert result.num_calls == 84 and result.num_unwaived_calls == 0
    assert result.coverage["trim"] > 0
