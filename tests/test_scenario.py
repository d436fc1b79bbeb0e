"""Scenario files (harness/scenario/) and the runner's collector lifecycle."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from harness.scenario import (KNOWN_ENVS, ScenarioError, build_world_model_config,
                              bundled_scenario_paths, load_scenario, parse_scenario, run_scenario)
from legacy.world_model import LegacyWorldModel


class ApiSpy:
    """The world-model API and nothing else; logs each call as a short tuple, then forwards."""

    def __init__(self, model: LegacyWorldModel) -> None:
        self._model = model
        self.net = model.net
        self.log: list[tuple] = []

    def initial_inference(self, last_obs, last_actions, current_obs, start_pos=None):
        first = int(np.max(last_actions)) == -1
        self.log.append(("root", "first" if first else "continuing", np.asarray(current_obs).shape[0]))
        return self._model.initial_inference(last_obs, last_actions, current_obs, start_pos)

    def recurrent_inference(self, latent_state, actions, simulation_index=0, search_depth=None,
                            start_pos=None):
        self.log.append(("recurrent", simulation_index, latent_state.shape[0]))
        return self._model.recurrent_inference(latent_state, actions, simulation_index,
                                               search_depth, start_pos)

    def clear_caches(self, reason="clear_caches"):
        self.log.append(("clear_caches", reason))
        self._model.clear_caches(reason)

    def clear_root_cache(self, env_id, reason="episode_end"):
        self.log.append(("clear_root_cache", env_id, reason))
        self._model.clear_root_cache(env_id, reason)

    def recompute_pos_emb_diff_and_clear_cache(self):
        self.log.append(("recompute",))
        self._model.recompute_pos_emb_diff_and_clear_cache()

    def load_weights(self, state_dict):
        self.log.append(("load_weights",))
        self._model.load_weights(state_dict)

    def set_reanalyze_phase(self, on):
        self.log.append(("reanalyze", on))
        self._model.set_reanalyze_phase(on)


TINY_MODEL = {"embed_dim": 16, "num_layers": 2, "num_heads": 4, "context_length": 8,
              "max_tokens": 20, "num_simulations": 2, "encoder_hidden": 16, "support_size": 4}


def scenario_data(**sections: dict[str, Any]) -> dict[str, Any]:
    """A small valid scenario as parsed TOML; keyword arguments replace or extend sections."""
    data = {"name": "tiny",
            "env": {"id": "Acrobot-v1", "env_num": 2, "seeds": [1, 2]},
            "model": dict(TINY_MODEL),
            "search": {"num_simulations": 3, "seed": 0},
            "run": {"steps": 4, "steps_per_round": 100}}
    for name, fields in sections.items():
        data[name] = {**data.get(name, {}), **fields}
    return data


def run_spy(data: dict[str, Any]) -> tuple[ApiSpy, Any]:
    scenario = parse_scenario(data, "tiny.toml")
    spy = ApiSpy(LegacyWorldModel(build_world_model_config(scenario)))
    return spy, run_scenario(scenario, spy)


def lifecycle(log: list[tuple]) -> list[tuple]:
    """The log without recurrent calls, root calls reduced to their path."""
    return [entry[:2] if entry[0] == "root" else entry for entry in log if entry[0] != "recurrent"]


# ------------------------------------------------------------------ loading
def test_bundled_scenarios_are_the_documented_set():
    assert [path.stem for path in bundled_scenario_paths()] == [
        "acrobot_multi", "atari_like", "cartpole_env_restart", "cartpole_midpool_updates",
        "cartpole_partial_ready", "cartpole_pool_pressure", "cartpole_small",
        "cartpole_target_reanalyze", "cartpole_tiny_pools", "cartpole_twin_envs",
        "cartpole_zero_init", "context_len11", "context_len2", "context_len20", "context_len3",
        "context_len3_twins", "context_len5", "context_len6", "context_len7", "mutation_pressure"]


@pytest.mark.parametrize("path", bundled_scenario_paths(), ids=lambda p: p.stem)
def test_every_bundled_scenario_loads_with_env_sizes_filled_in(path):
    scenario = load_scenario(path)
    config = build_world_model_config(scenario)
    assert scenario.name == path.stem
    assert config.obs_dim == KNOWN_ENVS[scenario.env.id].obs_dim
    assert config.action_space_size == KNOWN_ENVS[scenario.env.id].num_actions
    assert config.env_num == scenario.env.env_num == len(scenario.env.seeds)


@pytest.mark.parametrize("env_id", sorted(KNOWN_ENVS))
def test_known_envs_match_their_gymnasium_spaces(env_id):
    env = gym.make(env_id)
    assert env.observation_space.shape == (KNOWN_ENVS[env_id].obs_dim,)
    assert env.action_space.n == KNOWN_ENVS[env_id].num_actions


def test_base_seed_gives_env_k_seed_plus_k():
    data = scenario_data()
    data["env"] = {"id": "CartPole-v1", "env_num": 3, "seed": 10}
    assert parse_scenario(data).env.seeds == (10, 11, 12)


def test_defaults_come_from_the_model_config():
    data = scenario_data(model={"game_segment_length": 7, "num_simulations": 5})
    del data["search"]
    scenario = parse_scenario(data)
    assert (scenario.run.clear_interval, scenario.search.num_simulations) == (7, 5)


BAD_FIELDS = [
    ({"search": {"num_simulations": -3}},
     "x.toml: [search].num_simulations: expected a positive integer, got -3"),
    ({"env": {"id": "Pong-v5"}},
     "x.toml: [env].id: expected one of CartPole-v1, Acrobot-v1, got 'Pong-v5'"),
    ({"env": {"seeds": [1, 2, 3]}},
     "x.toml: [env].seeds: expected an integer or a list of 2 integers (one per env), got [1, 2, 3]"),
    ({"model": {"obs_dim": 4}},
     "x.toml: [model].obs_dim: expected no value (filled in from [env]), got 4"),
    ({"model": {"embed_dim": 30}},
     "x.toml: [model].embed_dim: expected a multiple of num_heads=4, got 30"),
    ({"run": {"episodes": 3}},
     "x.toml: [run]: expected exactly one of steps or episodes, got both"),
    ({"run": {"max_episode_steps": [5, 0]}},
     "x.toml: [run].max_episode_steps: expected an integer or a list of 2 positive integers "
     "(one per env), got [5, 0]"),
    ({"run": {"clear_intervall": 3}},
     "x.toml: [run]: unknown field(s) clear_intervall; expected only active_steps, "
     "clear_interval, episodes, max_episode_steps, restart_all_on_episode_end, steps, "
     "steps_per_round, wait_probability, "
     "wait_seed, warmup_rounds"),
    ({"env": {"env_num": 10**6, "seed": 0}},
     "x.toml: [env].env_num: expected an integer <= 256 (the scenario size limit), got 1000000"),
    ({"run": {"steps": 10**9}},
     "x.toml: [run].steps: expected an integer <= 1000000 (the scenario size limit), "
     "got 1000000000"),
    ({"model": {"embed_dim": 2**20}},
     "x.toml: [model].embed_dim: expected an integer <= 8192 (the scenario size limit), "
     "got 1048576"),
    ({"model": {"embed_dim": 8192, "num_heads": 4, "num_simulations": 10_000, "context_length": 20}},
     "x.toml: [model].num_simulations: expected a recurrent pool of at most 8 GiB (num_simulations "
     "x env_num slots of num_layers x 2 x context_length x embed_dim float32), got 48.8 GiB"),
    ({"run": {"active_steps": [5, 0]}},
     "x.toml: [run].active_steps: expected an integer or a list of 2 positive integers "
     "(one per env), got [5, 0]"),
    ({"run": {"wait_probability": 1.0}},
     "x.toml: [run].wait_probability: expected a number in [0.0, 0.9], got 1.0"),
    ({"reanalyze": {"model": "shadow"}},
     "x.toml: [reanalyze].model: expected one of collect, target, got 'shadow'"),
    ({"search": {"temperature": "hot"}},
     "x.toml: [search].temperature: expected a number >= 0.0, got 'hot'"),
    ({"search": {"root_noise": 1}}, "x.toml: [search].root_noise: expected true or false, got 1"),
    ({"weights": {"kind": "adam"}}, "x.toml: [weights].kind: expected one of perturb, sgd, got 'adam'"),
    ({"weights": {"kind": "sgd", "scale": 0.1}},
     "x.toml: [weights].scale: expected no value for kind 'sgd' (it applies to 'perturb'), got 0.1"),
]


@pytest.mark.parametrize("sections, message", BAD_FIELDS, ids=[m.split(": ")[1] for _, m in BAD_FIELDS])
def test_a_bad_field_is_named_with_its_expected_form_in_one_line(sections, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario_data(**sections), "x.toml")
    assert str(info.value) == message


def test_missing_required_table_and_unknown_top_level_key_are_named():
    data = scenario_data()
    del data["run"]
    with pytest.raises(ScenarioError, match=r"^x.toml: run: expected the table \[run\], got nothing"):
        parse_scenario(data, "x.toml")
    with pytest.raises(ScenarioError, match=r"^x.toml: top level: unknown field\(s\) extra; "):
        parse_scenario({**scenario_data(), "extra": 1}, "x.toml")


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"broken.toml: not valid TOML \("):
        load_scenario(broken)
    with pytest.raises(ScenarioError, match=r"missing.toml: cannot read the scenario file"):
        load_scenario(tmp_path / "missing.toml")


# ------------------------------------------------------------------ lifecycle
def test_each_step_is_one_root_call_then_one_recurrent_call_per_simulation_over_all_envs():
    spy, summary = run_spy(scenario_data())
    expected_step = [("recurrent", sim, 2) for sim in range(3)]
    assert spy.log == ([("root", "first", 2)] + expected_step
                       + ([("root", "continuing", 2)] + expected_step) * 3)
    assert (summary.num_steps, summary.num_root_calls, summary.num_recurrent_calls) == (4, 4, 12)


def test_periodic_wipes_and_episode_ends_follow_the_collector():
    # Acrobot never terminates in a few random steps: episodes end only by truncation, at
    # steps 4 and 8 for env 0 and at step 6 for env 1. A wipe fires for every env whose steps
    # since its episode start reach a multiple of 3.
    spy, summary = run_spy(scenario_data(run={"steps": 10, "max_episode_steps": [4, 6],
                                              "clear_interval": 3}))
    first, cont = ("root", "first"), ("root", "continuing")
    periodic = ("clear_caches", "periodic")
    assert lifecycle(spy.log) == [
        first, cont, cont, periodic, periodic,               # steps 1-3
        cont, ("clear_root_cache", 0, "episode_end"),        # step 4
        first,                                               # step 5: everyone restarts
        cont, periodic, ("clear_root_cache", 1, "episode_end"),  # step 6
        first, periodic,                                     # step 7 (env 0 at 3)
        cont, ("clear_root_cache", 0, "episode_end"),        # step 8
        first, periodic,                                     # step 9 (env 1 at 3)
        cont]                                                # step 10
    assert (summary.num_periodic_clears, summary.num_episode_end_clears) == (5, 3)
    assert summary.episode_returns == (-4.0, -6.0, -4.0)


def test_a_new_round_restarts_the_periodic_counters():
    spy, summary = run_spy(scenario_data(run={"steps": 5, "steps_per_round": 2, "warmup_rounds": 9,
                                              "clear_interval": 3}))
    assert ("clear_caches", "periodic") not in spy.log
    assert summary.num_rounds == 2 and summary.num_training_rounds == 0


def test_training_rounds_reanalyze_then_update_weights_then_recompute():
    spy, summary = run_spy(scenario_data(
        run={"steps": 4, "steps_per_round": 2, "warmup_rounds": 1},
        weights={"kind": "perturb", "scale": 0.05}, reanalyze={"num_simulations": 2}))
    tail = spy.log[-7:]
    assert tail == [("reanalyze", True), ("root", "first", 2), ("recurrent", 0, 2),
                    ("recurrent", 1, 2), ("reanalyze", False), ("load_weights",), ("recompute",)]
    assert [entry for entry in spy.log[:-7] if entry[0] in ("reanalyze", "load_weights", "recompute")] == []
    assert (summary.num_weight_updates, summary.num_reanalyze_searches) == (1, 1)


def test_weight_updates_and_reanalysis_run_every_nth_training_round():
    spy, summary = run_spy(scenario_data(
        run={"steps": 6, "steps_per_round": 1}, weights={"kind": "perturb", "every": 2},
        reanalyze={"every": 3, "num_simulations": 1}))
    ends = [entry[0] for entry in spy.log if entry[0] in ("load_weights", "recompute")
            or entry == ("reanalyze", True)]
    assert ends == ["reanalyze", "load_weights", "recompute", "recompute", "load_weights",
                    "recompute", "reanalyze", "recompute", "load_weights", "recompute", "recompute"]
    assert (summary.num_training_rounds, summary.num_weight_updates) == (6, 3)


@pytest.mark.parametrize("kind, extra", [("perturb", {"scale": 0.05}), ("sgd", {"learning_rate": 0.5})])
def test_weight_update_changes_parameters_and_keeps_the_stale_correction(kind, extra):
    scenario = parse_scenario(scenario_data(run={"steps": 2, "steps_per_round": 2},
                                            weights={"kind": kind, **extra}))
    model = LegacyWorldModel(build_world_model_config(scenario))
    before = copy.deepcopy(model.net.state_dict())
    loaded = []
    original = model.load_weights
    model.load_weights = lambda state: (loaded.append(copy.deepcopy(state)), original(state))
    run_scenario(scenario, model)
    assert len(loaded) == 1
    assert not torch.equal(loaded[0]["head_value.2.weight"], before["head_value.2.weight"])
    assert torch.equal(loaded[0]["pos_emb_diff_k"], before["pos_emb_diff_k"])


def test_runs_are_deterministic_given_the_scenario_seeds():
    data = scenario_data(run={"steps": 6, "steps_per_round": 3, "max_episode_steps": 4},
                         search={"root_noise": True, "root_noise_seed": 3},
                         weights={"kind": "perturb"})
    (_, first), (_, second) = run_spy(data), run_spy(data)
    assert first == second


def test_an_episode_count_run_stops_once_enough_episodes_have_ended():
    progress = []
    data = scenario_data(run={"episodes": 3, "max_episode_steps": [2, 3]})
    del data["run"]["steps"]
    scenario = parse_scenario(data)
    summary = run_scenario(scenario, ApiSpy(LegacyWorldModel(build_world_model_config(scenario))),
                           progress=lambda done, total: progress.append((done, total)))
    assert summary.num_episodes == 3 and summary.num_steps == 4
    assert progress == [(0, 3), (0, 3), (1, 3), (2, 3), (3, 3)]


def test_progress_reports_every_step_out_of_the_total():
    progress = []
    scenario = parse_scenario(scenario_data())
    run_scenario(scenario, ApiSpy(LegacyWorldModel(build_world_model_config(scenario))),
                 progress=lambda done, total: progress.append((done, total)))
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


@pytest.mark.parametrize("path", bundled_scenario_paths(), ids=lambda p: p.stem)
def test_every_bundled_scenario_runs_briefly_with_the_legacy_model(path):
    scenario = load_scenario(path).with_run(num_steps=3, num_episodes=None, steps_per_round=2,
                                            warmup_rounds=0)
    scenario = dataclasses.replace(scenario, search=dataclasses.replace(
        scenario.search, num_simulations=min(scenario.search.num_simulations, 10)))
    spy = ApiSpy(LegacyWorldModel(build_world_model_config(scenario)))
    summary = run_scenario(scenario, spy)
    assert summary.num_steps == 3 and summary.num_rounds == 1
    kind, path, batch = spy.log[0]
    assert (kind, path) == ("root", "first")
    assert batch == scenario.env.env_num or (scenario.run.partial_batches and batch >= 1)
    assert ("recompute",) in spy.log
