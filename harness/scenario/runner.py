"""Run a scenario: real MCTS over real gymnasium envs, driving a world model like the collector.

The call sequence (legacy-spec §10, §10.1, §14.6-8), with E = ``env_num``:

* start: every env resets with its seed; ``last_obs`` = zeros, ``last_actions`` = -1 for all.
* each step:
  0. the ready envs are drawn (all E unless ``[run]`` makes envs wait or finish); the batch
     holds them in env order, B of them;
  1. ``initial_inference(last_obs, last_actions, current_obs, start_pos)`` with the B ready
     envs' observations and the E-row ``last_obs`` / ``last_actions`` (the model takes the
     first B rows by position, legacy quirk 9; first-step path when every last action is -1);
  2. one search: ``recurrent_inference(...)`` once per simulation over the B roots;
  3. ``last_obs, last_actions`` = this step's obs and chosen actions when B = E; when B < E
     every env's context restarts (zeros / -1), as upstream's ``_forward_collect`` resets all
     envs when fewer are ready than ``collector_env_num`` (legacy-spec §10, §14.7); the ready
     envs step; with ``[weights].every_steps`` a weight update may follow (between searches);
  4. per env k in order: its counter of steps since the later of (round start, its episode
     start) goes up; if it is a multiple of ``clear_interval`` → ``clear_caches("periodic")``
     (one call per env that hits, as upstream's per-env reset does); if env k's episode ended →
     ``clear_root_cache(k, "episode_end")``, env k resets, and ``last_obs`` / ``last_actions``
     become zeros / -1 for **all** envs (upstream's ``reset_init_data=True``).
* after every ``steps_per_round`` steps, a round ends; if it trains (index >= ``warmup_rounds``):
  reanalysis (``set_reanalyze_phase(True)``, a first-step root call over E sampled observations
  of the round, one search, ``set_reanalyze_phase(False)``) when due, then ``load_weights`` when
  due, then ``recompute_pos_emb_diff_and_clear_cache()``. With ``[reanalyze].model = "target"``
  reanalysis runs on a separate target model (its calls are not the collecting model's), which
  then takes the collecting model's weights and is recomputed and cleared too (POL0:1712-1722).

Only these world-model methods (and ``net`` for weight updates) are used, so a recording proxy
with the same API can stand in for the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
from torch import nn

from harness.scenario.envs import EnvBatch
from harness.scenario.spec import Scenario
from harness.scenario.updates import TrainingBatch, WeightUpdater
from unizero.backends import build_world_model
from unizero.hashing import hash_state
from unizero.mcts import MCTS, select_actions
from unizero.support import DiscreteSupport

__all__ = ["ScenarioWorldModel", "RunSummary", "ProgressCallback", "run_scenario"]

ProgressCallback = Callable[[int, int], None]


class ScenarioWorldModel(Protocol):
    """The world-model API a scenario run drives."""

    net: nn.Module

    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> Any: ...
    def recurrent_inference(self, latent_state: np.ndarray, actions: Any, simulation_index: int = 0,
                            search_depth: Any = None, start_pos: Any = None) -> Any: ...
    def clear_caches(self, reason: str = "clear_caches") -> None: ...
    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None: ...
    def recompute_pos_emb_diff_and_clear_cache(self) -> None: ...
    def load_weights(self, state_dict: dict[str, Any]) -> None: ...
    def set_reanalyze_phase(self, on: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did, counted by the runner (not by the model).

    Attributes:
        num_rounds: completed rounds; ``num_training_rounds`` of them ended with a recompute.
        episode_returns: returns of completed episodes, in completion order.
        num_periodic_clears, num_episode_end_clears: ``clear_caches`` / ``clear_root_cache`` calls.
        max_search_depth: deepest leaf any collect search expanded.
        actions_digest: XXH64 over every chosen action (int64, step-major) — equal digests mean
            the runs took the same actions.
    """

    scenario: str
    num_steps: int
    num_rounds: int
    num_training_rounds: int
    num_episodes: int
    episode_returns: tuple[float, ...]
    num_root_calls: int
    num_recurrent_calls: int
    num_periodic_clears: int
    num_episode_end_clears: int
    num_weight_updates: int
    num_reanalyze_searches: int
    max_search_depth: int
    actions_digest: int


class _Collector:
    """The collector and policy state of one run: env batch, previous obs/actions, counters."""

    def __init__(self, scenario: Scenario, world_model: ScenarioWorldModel,
                 target: ScenarioWorldModel | None = None) -> None:
        self.scenario = scenario
        self.model = world_model
        env_num = scenario.env.env_num
        run = scenario.run
        self.wait_rng = np.random.default_rng(run.wait_seed) if run.wait_probability > 0 else None
        self.active_steps = (np.asarray(run.active_steps, dtype=np.int64)
                             if run.active_steps is not None else None)
        self.env_steps = np.zeros(env_num, dtype=np.int64)  # collect steps each env took
        self.target = self._target_model(target)
        self.envs = EnvBatch(scenario.env.id, scenario.env.seeds, scenario.run.max_episode_steps)
        self.support = DiscreteSupport(scenario.model.support_size)
        self.mcts = MCTS(scenario.search.mcts_config(), self.support)
        self.search_rng = np.random.default_rng(scenario.search.seed)
        self.noise_rng = (np.random.default_rng(scenario.search.root_noise_seed)
                          if scenario.search.root_noise else None)
        self.reanalyze_rng = (np.random.default_rng(scenario.reanalyze.seed)
                              if scenario.reanalyze is not None else None)
        self.updater = (WeightUpdater(scenario.weights, self.support)
                        if scenario.weights is not None else None)
        self.obs = self.envs.reset_all()  # [E, obs_dim]
        self.last_obs = np.zeros_like(self.obs)
        self.last_actions = np.full(env_num, -1, dtype=np.int64)
        self.episode_steps = np.zeros(env_num, dtype=np.int64)  # start positions
        self.round_steps = np.zeros(env_num, dtype=np.int64)  # upstream eps_steps_lst
        self.running_returns = np.zeros(env_num)
        self.episode_returns: list[float] = []
        self.round_targets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.actions_taken: list[np.ndarray] = []
        self.counts: Counter[str] = Counter()
        self.max_search_depth = 0

    def _target_model(self, target: ScenarioWorldModel | None) -> ScenarioWorldModel | None:
        """The separate reanalysis model, holding the collecting model's weights; None unless
        ``[reanalyze].model = "target"``."""
        spec = self.scenario.reanalyze
        if spec is None or spec.model != "target":
            return None
        if target is None:
            device = next(self.model.net.parameters()).device
            target = build_world_model(self.scenario.model, device)
        target.load_weights(self.model.net.state_dict())
        return target

    def _ready_envs(self) -> np.ndarray:
        """Env ids of this step's batch, in env order: active envs that do not wait."""
        env_num = self.envs.num_envs
        active = (self.env_steps < self.active_steps if self.active_steps is not None
                  else np.ones(env_num, dtype=bool))
        ready = active.copy()
        if self.wait_rng is not None:
            ready &= self.wait_rng.random(env_num) >= self.scenario.run.wait_probability
            if not ready.any() and active.any():
                ready[np.flatnonzero(active)[0]] = True  # somebody is always ready
        return np.flatnonzero(ready)

    # ---------------------------------------------------------------- one collect step
    def step(self) -> None:
        ready = self._ready_envs()
        full = len(ready) == self.envs.num_envs
        current_obs = self.obs if full else self.obs[ready]
        start_pos = self.episode_steps[ready]
        root = self.model.initial_inference(last_obs=self.last_obs, last_actions=self.last_actions,
                                            current_obs=current_obs, start_pos=start_pos)
        result = self.mcts.search(self.model, root, rng=self.search_rng, start_pos=start_pos,
                                  root_noise_rng=self.noise_rng)
        actions = select_actions(result.visit_counts, self.scenario.search.temperature,
                                 self.search_rng)
        self.counts["root_calls"] += 1
        self.counts["recurrent_calls"] += self.mcts.config.num_simulations
        self.max_search_depth = max(self.max_search_depth, int(result.max_depths.max()))
        self.round_targets.append((current_obs, result.visit_distributions, result.root_values))
        self.actions_taken.append(actions)
        if full:
            self.last_obs, self.last_actions = self.obs, actions
        else:  # fewer ready envs than env_num: upstream restarts every env's context
            self.last_obs = np.zeros_like(self.obs)
            self.last_actions = np.full(self.envs.num_envs, -1, dtype=np.int64)
        transition = self.envs.step(actions, ready)
        next_obs = self.obs.copy()
        for row, env_id in enumerate(ready):
            next_obs[env_id] = transition.obs[row]
            self.env_steps[env_id] += 1
            self._after_env_step(int(env_id), float(transition.rewards[row]),
                                 bool(transition.dones[row]), next_obs)
        self.obs = next_obs
        self.counts["steps"] += 1
        self._update_between_searches()

    def _update_between_searches(self) -> None:
        """``[weights].every_steps``: a weight update between two searches, no clear."""
        every = self.updater.spec.every_steps if self.updater is not None else None
        steps = self.counts["steps"]
        if every is None or steps % every or steps % self.scenario.run.steps_per_round == 0:
            return
        assert self.updater is not None, "every_steps comes from the updater's spec"
        self.model.load_weights(self.updater.new_state(self.model.net, self._batch()))
        self.counts["weight_updates"] += 1

    def _after_env_step(self, env_id: int, reward: float, done: bool, next_obs: np.ndarray) -> None:
        self.episode_steps[env_id] += 1
        self.round_steps[env_id] += 1
        self.running_returns[env_id] += reward
        if self.round_steps[env_id] % self.scenario.run.clear_interval == 0:
            self.model.clear_caches(reason="periodic")
            self.counts["periodic_clears"] += 1
        if done:
            self.model.clear_root_cache(env_id, reason="episode_end")
            self.counts["episode_end_clears"] += 1
            if self.scenario.run.restart_all_on_episode_end:
                # Upstream _reset_collect(reset_init_data=True): every env restarts its context.
                self.last_obs = np.zeros_like(self.obs)
                self.last_actions = np.full(self.envs.num_envs, -1, dtype=np.int64)
            next_obs[env_id] = self.envs.reset(env_id)
            self.episode_returns.append(float(self.running_returns[env_id]))
            self.running_returns[env_id] = 0.0
            self.episode_steps[env_id] = 0
            self.round_steps[env_id] = 0

    # ---------------------------------------------------------------- round end
    def end_round(self) -> None:
        round_index = self.counts["rounds"]
        self.counts["rounds"] += 1
        self.round_steps[:] = 0
        training_index = round_index - self.scenario.run.warmup_rounds
        if training_index >= 0:
            reanalyze = self.scenario.reanalyze
            if reanalyze is not None and training_index % reanalyze.every == 0:
                self._reanalyze()
            if self.updater is not None and training_index % self.updater.spec.every == 0:
                self.model.load_weights(self.updater.new_state(self.model.net, self._batch()))
                self.counts["weight_updates"] += 1
            self.model.recompute_pos_emb_diff_and_clear_cache()
            if self.target is not None:  # the target follows one round behind
                self.target.load_weights(self.model.net.state_dict())
                self.target.recompute_pos_emb_diff_and_clear_cache()
            self.counts["training_rounds"] += 1
        self.round_targets.clear()

    def _batch(self) -> TrainingBatch:
        obs, policy, value = zip(*self.round_targets)
        return TrainingBatch(np.concatenate(obs), np.concatenate(policy), np.concatenate(value))

    def _reanalyze(self) -> None:
        """Re-search E observations sampled from this round with forced recurrent misses."""
        spec = self.scenario.reanalyze
        assert spec is not None and self.reanalyze_rng is not None, "reanalysis is not configured"
        observations = self._batch().obs
        env_num = self.envs.num_envs
        rows = self.reanalyze_rng.choice(len(observations), size=env_num,
                                         replace=len(observations) < env_num)
        mcts = MCTS(self.scenario.search.mcts_config(spec.num_simulations), self.support)
        start_pos = np.zeros(env_num, dtype=np.int64)
        model = self.target if self.target is not None else self.model
        model.set_reanalyze_phase(True)
        try:
            root = model.initial_inference(
                last_obs=np.zeros_like(self.obs), last_actions=np.full(env_num, -1, dtype=np.int64),
                current_obs=observations[rows], start_pos=start_pos)
            mcts.search(model, root, rng=self.reanalyze_rng, start_pos=start_pos)
        finally:
            model.set_reanalyze_phase(False)
        self.counts["reanalyze_searches"] += 1
        self.counts["root_calls"] += 1
        self.counts["recurrent_calls"] += spec.num_simulations

    # ---------------------------------------------------------------- bookkeeping
    def progress(self) -> int:
        run = self.scenario.run
        if run.num_steps is not None:
            return self.counts["steps"]
        return min(len(self.episode_returns), run.total)

    def finished(self) -> bool:
        if self.active_steps is not None and bool((self.env_steps >= self.active_steps).all()):
            return True  # every env finished its share
        return self.progress() >= self.scenario.run.total

    def summary(self) -> RunSummary:
        actions = (np.concatenate(self.actions_taken) if self.actions_taken
                   else np.zeros(0, dtype=np.int64))
        counts = self.counts
        return RunSummary(
            scenario=self.scenario.name, num_steps=counts["steps"], num_rounds=counts["rounds"],
            num_training_rounds=counts["training_rounds"], num_episodes=len(self.episode_returns),
            episode_returns=tuple(self.episode_returns), num_root_calls=counts["root_calls"],
            num_recurrent_calls=counts["recurrent_calls"],
            num_periodic_clears=counts["periodic_clears"],
            num_episode_end_clears=counts["episode_end_clears"],
            num_weight_updates=counts["weight_updates"],
            num_reanalyze_searches=counts["reanalyze_searches"],
            max_search_depth=self.max_search_depth,
            actions_digest=hash_state(actions.astype(np.int64)))


def run_scenario(scenario: Scenario, world_model: ScenarioWorldModel, *,
                 progress: ProgressCallback | None = None,
                 target: ScenarioWorldModel | None = None) -> RunSummary:
    """Collect with real MCTS over the scenario's envs, driving ``world_model`` like upstream.

    Args:
        scenario: a loaded scenario; ``world_model`` should be built from
            ``build_world_model_config(scenario)``.
        world_model: any object with the :class:`ScenarioWorldModel` API (a recording proxy too).
        progress: called as ``progress(done, total)`` at the start and after every step, in
            steps (or completed episodes for an episode-count run).
        target: the separate reanalysis model of ``[reanalyze].model = "target"`` (e.g. a
            recorder writing a second trace); when None one is built from the scenario's model
            config (``use_new_cache_manager`` picks its backend). It is handed the collecting
            model's weights at the start.

    Returns:
        The run's counts; deterministic given the scenario's seeds.
    """
    collector = _Collector(scenario, world_model, target)
    total = scenario.run.total
    try:
        if progress is not None:
            progress(0, total)
        while not collector.finished():
            collector.step()
            if collector.counts["steps"] % scenario.run.steps_per_round == 0:
                collector.end_round()
            if progress is not None:
                progress(collector.progress(), total)
    finally:
        collector.envs.close()
    return collector.summary()
