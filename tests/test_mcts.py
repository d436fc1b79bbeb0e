"""Batched MCTS (unizero/mcts.py) and the categorical support transform (unizero/support.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import first_actions, make_legacy, make_obs
from unizero.hashing import hash_state
from unizero.mcts import MCTS, MCTSConfig, select_actions
from unizero.support import DiscreteSupport, h_inverse, h_transform
from unizero.world_model import InferenceOutput


@dataclass
class RecurrentSpy:
    """Wraps a world model and records every recurrent call's inputs and output latent."""

    model: Any
    calls: list[dict[str, Any]] = field(default_factory=list)

    def recurrent_inference(self, latent_state, actions, simulation_index=0, search_depth=None,
                            start_pos=None):
        out = self.model.recurrent_inference(latent_state=latent_state, actions=actions,
                                             simulation_index=simulation_index,
                                             search_depth=search_depth, start_pos=start_pos)
        self.calls.append({"latent_state": latent_state.copy(), "actions": np.array(actions),
                           "simulation_index": simulation_index,
                           "search_depth": list(search_depth), "start_pos": np.array(start_pos),
                           "latent": out.latent.detach().cpu().numpy().copy()})
        return out


class RewardForActionModel:
    """Fake world model: reward ``rewards[a]`` for action a, zero value, uniform policy.

    Every child gets a distinct latent so nodes never share a cache identity.
    """

    def __init__(self, rewards: list[float], support: DiscreteSupport, root_policy: Any = None):
        self.rewards = rewards
        self.support = support
        self.root_policy = root_policy
        self.num_calls = 0

    def root(self, num_roots: int) -> InferenceOutput:
        num_actions = len(self.rewards)
        policy = (torch.zeros(num_roots, num_actions) if self.root_policy is None
                  else torch.as_tensor(self.root_policy, dtype=torch.float32).repeat(num_roots, 1))
        return InferenceOutput(latent=torch.zeros(num_roots, 4), reward_logits=self._logits([0.0] * num_roots),
                               policy_logits=policy, value_logits=self._logits([0.0] * num_roots))

    def _logits(self, values: list[float]) -> torch.Tensor:
        return torch.as_tensor(self.support.scalar_to_logits(np.asarray(values)), dtype=torch.float32)

    def recurrent_inference(self, latent_state, actions, simulation_index=0, search_depth=None,
                            start_pos=None):
        self.num_calls += 1
        num_roots = latent_state.shape[0]
        latent = torch.full((num_roots, 4), float(self.num_calls))
        return InferenceOutput(latent=latent,
                               reward_logits=self._logits([self.rewards[a] for a in actions]),
                               policy_logits=torch.zeros(num_roots, len(self.rewards)),
                               value_logits=self._logits([0.0] * num_roots))


def legacy_roots(env_num: int = 3, num_simulations: int = 2):
    model = make_legacy(record=False, env_num=env_num, num_simulations=num_simulations)
    root = model.initial_inference(make_obs(0, env_num), first_actions(env_num), make_obs(1, env_num))
    return model, root


def search(model, root, num_simulations: int, seed: int = 0, noise_seed: int | None = None):
    mcts = MCTS(MCTSConfig(num_simulations=num_simulations), DiscreteSupport(2))  # conftest SMALL
    noise = None if noise_seed is None else np.random.default_rng(noise_seed)
    return mcts.search(model, root, rng=np.random.default_rng(seed), root_noise_rng=noise,
                       start_pos=np.zeros(root.latent.shape[0], dtype=np.int64))


# ------------------------------------------------------------------ search against a real model
def test_visit_counts_sum_to_num_simulations_for_every_root():
    model, root = legacy_roots(env_num=3)
    result = search(RecurrentSpy(model), root, num_simulations=7)
    assert result.visit_counts.shape == (3, 3)
    assert result.visit_counts.sum(axis=1).tolist() == [7, 7, 7]
    np.testing.assert_allclose(result.visit_distributions.sum(axis=1), 1.0)


def test_search_makes_one_recurrent_call_per_simulation_over_all_roots():
    model, root = legacy_roots(env_num=3)
    spy = RecurrentSpy(model)
    search(spy, root, num_simulations=5)
    assert [call["simulation_index"] for call in spy.calls] == [0, 1, 2, 3, 4]
    for call in spy.calls:
        assert call["latent_state"].shape == (3, 16) and call["latent_state"].dtype == np.float32
        assert call["actions"].shape == (3,)
        assert len(call["search_depth"]) == 3
    assert spy.calls[0]["search_depth"] == [1, 1, 1]
    assert all(1 <= depth <= i + 1 for i, call in enumerate(spy.calls) for depth in call["search_depth"])


def test_first_simulation_passes_the_root_latents_byte_for_byte():
    model, root = legacy_roots(env_num=2)
    spy = RecurrentSpy(model)
    search(spy, root, num_simulations=3)
    assert spy.calls[0]["latent_state"].tobytes() == root.latent.detach().cpu().numpy().tobytes()


def test_every_parent_latent_is_a_root_or_an_earlier_output_bit_for_bit():
    model, root = legacy_roots(env_num=2)
    spy = RecurrentSpy(model)
    search(spy, root, num_simulations=8)
    known = {hash_state(row) for row in root.latent.detach().cpu().numpy()}
    for call in spy.calls:
        assert {hash_state(row) for row in call["latent_state"]} <= known
        known |= {hash_state(row) for row in call["latent"]}


def test_search_is_deterministic_given_the_seeds():
    results = []
    for _ in range(2):
        model, root = legacy_roots(env_num=2)
        result = search(model, root, num_simulations=6, seed=3, noise_seed=4)
        actions = select_actions(result.visit_counts, 1.0, np.random.default_rng(5))
        results.append((result.visit_counts.tolist(), result.root_values.tolist(), actions.tolist()))
    assert results[0] == results[1]


# ------------------------------------------------------------------ PUCT on a handcrafted model
def test_puct_prefers_the_action_that_earns_reward():
    support = DiscreteSupport(10)
    fake = RewardForActionModel([0.0, 1.0], support)
    mcts = MCTS(MCTSConfig(num_simulations=30), support)
    result = mcts.search(fake, fake.root(2), rng=np.random.default_rng(0))
    assert fake.num_calls == 30
    assert (result.visit_counts[:, 1] >= 25).all(), result.visit_counts
    assert select_actions(result.visit_counts, 0.0, np.random.default_rng(0)).tolist() == [1, 1]


def test_the_prior_decides_when_all_actions_are_worth_the_same():
    support = DiscreteSupport(10)
    fake = RewardForActionModel([0.0, 0.0, 0.0], support, root_policy=[0.0, 3.0, 0.0])
    result = MCTS(MCTSConfig(num_simulations=12), support).search(
        fake, fake.root(1), rng=np.random.default_rng(0))
    assert result.visit_counts[0].argmax() == 1
    assert result.visit_counts[0, 1] > result.visit_counts[0, 0] + result.visit_counts[0, 2]


def test_one_simulation_backs_up_the_discounted_reward_and_value():
    support = DiscreteSupport(10)
    fake = RewardForActionModel([2.0, 2.0], support)
    result = MCTS(MCTSConfig(num_simulations=1, discount=0.5), support).search(
        fake, fake.root(1), rng=np.random.default_rng(0))
    # The root starts with one visit (ctree's prepare); the leaf's value is 0.
    np.testing.assert_allclose(result.root_values, [(2.0 + 0.5 * 0.0) / 2], rtol=1e-6)
    assert result.visit_counts.sum() == 1


def test_root_noise_is_seeded():
    support = DiscreteSupport(10)
    counts = []
    for noise_seed in (1, 1):
        fake = RewardForActionModel([0.0, 0.0, 0.0], support)
        mcts = MCTS(MCTSConfig(num_simulations=9, root_noise_fraction=0.9), support)
        result = mcts.search(fake, fake.root(2), rng=np.random.default_rng(0),
                             root_noise_rng=np.random.default_rng(noise_seed))
        counts.append(result.visit_counts.tolist())
    assert counts[0] == counts[1]


# ------------------------------------------------------------------ action selection
def test_temperature_zero_takes_the_most_visited_action():
    counts = np.array([[1, 7, 2], [5, 0, 0]])
    assert select_actions(counts, 0.0, np.random.default_rng(0)).tolist() == [1, 0]


def test_sampling_never_picks_an_unvisited_action():
    counts = np.array([[0, 4, 0]] * 50)
    assert set(select_actions(counts, 1.0, np.random.default_rng(0)).tolist()) == {1}


def test_negative_temperature_is_rejected_with_its_value():
    with pytest.raises(ValueError, match="temperature: expected a float >= 0, got -1"):
        select_actions(np.array([[1, 1]]), -1, np.random.default_rng(0))


# ------------------------------------------------------------------ support transform
def test_h_inverse_undoes_h():
    x = np.array([-300.0, -5.5, -1.0, 0.0, 0.25, 3.0, 1234.0])
    np.testing.assert_allclose(h_inverse(h_transform(x)), x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scaled, values", [
    (True, [-100.0, -7.3, -0.5, 0.0, 0.4, 1.0, 12.5, 110.0]),
    (False, [-10.0, -3.25, 0.0, 0.75, 9.5, 10.0]),
])
def test_support_round_trip_recovers_scalars_inside_the_support(scaled, values):
    support = DiscreteSupport(10, scaled=scaled)
    probs = support.scalar_to_probs(values)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert ((probs > 0).sum(axis=1) <= 2).all()
    np.testing.assert_allclose(support.logits_to_scalar(support.scalar_to_logits(values)), values,
                               rtol=1e-6, atol=1e-6)


def test_uniform_logits_decode_to_zero():
    support = DiscreteSupport(10)
    np.testing.assert_array_equal(support.logits_to_scalar(torch.zeros(3, 21)), np.zeros(3))


def test_scalars_beyond_the_support_are_clipped_to_its_edge():
    support = DiscreteSupport(2, scaled=False)
    np.testing.assert_array_equal(support.scalar_to_probs([7.0, -7.0]),
                                  [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])


def test_logits_of_the_wrong_width_are_rejected():
    with pytest.raises(ValueError, match=r"logits: expected shape \[N, 21\], got \[2, 5\]"):
        DiscreteSupport(10).logits_to_scalar(np.zeros((2, 5)))
