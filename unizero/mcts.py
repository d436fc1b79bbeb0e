"""Batched MuZero-style MCTS in numpy, driving a world model the way LightZero's ctree loop does.

One search runs ``num_simulations`` simulations over B roots at once (legacy-spec §7, §10.1). Each
simulation selects one leaf per root by PUCT, then makes **one**
``recurrent_inference(latent_state=[B, D] float32 parent latents, actions=[B], simulation_index,
search_depth=[B], start_pos=[B])`` call for all roots, expands the B new nodes and backs their
values up. Node latents are kept as float32 arrays taken from ``latent.detach().cpu().numpy()``
and passed back byte for byte, because the world model's cache key is XXH64 over those bytes.

Faithful to LightZero's ctree (single player, ``to_play = -1``): the root is expanded with a visit
count of 1 and reward 0; PUCT with ``pb_c_base`` / ``pb_c_init``; unvisited children are valued at
the parent's mean Q; Q values are normalised by per-root min-max statistics (``value_delta_max``
floor) and clipped to [0, 1]; scores within 1e-6 of the best are ties broken at random (seeded
here); values and rewards are decoded from categorical logits with :class:`DiscreteSupport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from unizero.support import DiscreteSupport

__all__ = ["MCTSConfig", "MCTS", "SearchResult", "RecurrentModel", "select_actions"]

_TIE_EPSILON = 1e-6


class RecurrentModel(Protocol):
    """What a search needs from a world model."""

    def recurrent_inference(self, latent_state: np.ndarray, actions: Any, simulation_index: int = 0,
                            search_depth: Sequence[int] | None = None, start_pos: Any = None) -> Any:
        ...


@dataclass(frozen=True, slots=True)
class MCTSConfig:
    """Search hyper-parameters (LightZero defaults).

    Attributes:
        num_simulations: simulations per search; each is one batched recurrent call.
        discount: reward discount used in backup and Q values.
        pb_c_base, pb_c_init: PUCT exploration constants.
        root_dirichlet_alpha, root_noise_fraction: Dirichlet root noise, applied only when the
            search is given a ``root_noise_rng``.
        value_delta_max: floor of the min-max normalisation range.
    """

    num_simulations: int
    discount: float = 0.997
    pb_c_base: float = 19652.0
    pb_c_init: float = 1.25
    root_dirichlet_alpha: float = 0.3
    root_noise_fraction: float = 0.25
    value_delta_max: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.num_simulations, int) or self.num_simulations < 1:
            raise ValueError(f"num_simulations: expected a positive integer, got {self.num_simulations!r}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount: expected a float in (0, 1], got {self.discount!r}")
        if not self.root_dirichlet_alpha > 0:
            raise ValueError(f"root_dirichlet_alpha: expected a positive float, got {self.root_dirichlet_alpha!r}")
        if not 0.0 <= self.root_noise_fraction <= 1.0:
            raise ValueError(f"root_noise_fraction: expected a float in [0, 1], got {self.root_noise_fraction!r}")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Outcome of one batched search.

    Attributes:
        visit_counts: ``[B, A]`` int64 child visit counts; each row sums to ``num_simulations``.
        root_values: ``[B]`` float64 searched root values (ctree's ``value_sum / visit_count``,
            the root's initial visit included).
        predicted_values: ``[B]`` float64 value head at the root, decoded.
        max_depths: ``[B]`` int64 depth of the deepest leaf expanded under each root.
    """

    visit_counts: np.ndarray
    root_values: np.ndarray
    predicted_values: np.ndarray
    max_depths: np.ndarray

    @property
    def visit_distributions(self) -> np.ndarray:
        """``[B, A]`` float64 visit counts normalised per root (the policy target)."""
        counts = self.visit_counts.astype(np.float64)
        return counts / counts.sum(axis=1, keepdims=True)


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def select_actions(visit_counts: np.ndarray, temperature: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Pick one action per root from ``visit_counts: [B, A]``.

    ``temperature > 0`` samples from ``counts ** (1 / temperature)`` normalised (LightZero's
    collect rule); ``temperature == 0`` takes the most visited action, ties broken by ``rng``.
    """
    if temperature < 0:
        raise ValueError(f"temperature: expected a float >= 0, got {temperature!r}")
    actions = np.empty(visit_counts.shape[0], dtype=np.int64)
    for b, counts in enumerate(np.asarray(visit_counts, dtype=np.float64)):
        if temperature == 0:
            best = np.flatnonzero(counts == counts.max())
            actions[b] = best[rng.integers(best.size)] if best.size > 1 else best[0]
        else:
            weights = counts ** (1.0 / temperature)
            actions[b] = rng.choice(counts.size, p=weights / weights.sum())
    return actions


class _Forest:
    """B search trees as arrays. Node 0 is each root; node ``s + 1`` is expanded at simulation s."""

    def __init__(self, num_roots: int, num_actions: int, num_nodes: int, latent_dim: int,
                 config: MCTSConfig) -> None:
        self.config = config
        self.children = np.full((num_roots, num_nodes, num_actions), -1, dtype=np.int64)
        self.prior = np.zeros((num_roots, num_nodes, num_actions))
        self.visit_count = np.zeros((num_roots, num_nodes), dtype=np.int64)
        self.value_sum = np.zeros((num_roots, num_nodes))
        self.reward = np.zeros((num_roots, num_nodes))
        # latents[n, b]: the latent of node n of root b (LightZero's latent_state_batch_in_search_path).
        self.latents = np.empty((num_nodes, num_roots, latent_dim), dtype=np.float32)
        self.min_q = np.full(num_roots, np.inf)
        self.max_q = np.full(num_roots, -np.inf)

    def value(self, b: int, nodes: np.ndarray) -> np.ndarray:
        visits = self.visit_count[b, nodes]
        return np.where(visits > 0, self.value_sum[b, nodes] / np.maximum(visits, 1), 0.0)

    def normalize(self, b: int, q: np.ndarray) -> np.ndarray:
        delta = self.max_q[b] - self.min_q[b]
        if delta > 0:
            q = (q - self.min_q[b]) / max(delta, self.config.value_delta_max)
        return np.clip(q, 0.0, 1.0)

    def mean_q(self, b: int, node: int, is_root: bool, parent_q: float) -> float:
        kids = self.children[b, node]
        kids = kids[kids >= 0]
        q = self.reward[b, kids] + self.config.discount * self.value(b, kids)
        if is_root and kids.size:
            return float(q.sum() / kids.size)
        return float((parent_q + q.sum()) / (kids.size + 1))

    def select_child(self, b: int, node: int, mean_q: float, rng: np.random.Generator) -> int:
        cfg = self.config
        kids = self.children[b, node]
        visited = kids >= 0
        safe = np.where(visited, kids, 0)
        child_visits = np.where(visited, self.visit_count[b, safe], 0)
        parent_visits = self.visit_count[b, node]
        pb_c = np.log((parent_visits + cfg.pb_c_base + 1) / cfg.pb_c_base) + cfg.pb_c_init
        prior_score = pb_c * np.sqrt(parent_visits) / (child_visits + 1) * self.prior[b, node]
        q = np.where(visited, self.reward[b, safe] + cfg.discount * self.value(b, safe), mean_q)
        score = prior_score + self.normalize(b, q)
        ties = np.flatnonzero(score >= score.max() - _TIE_EPSILON)
        return int(ties[rng.integers(ties.size)]) if ties.size > 1 else int(ties[0])

    def select_leaf(self, b: int, rng: np.random.Generator) -> tuple[list[int], int]:
        """Descend from the root; returns the expanded nodes on the path and the leaf action."""
        node, path, parent_q, is_root = 0, [0], 0.0, True
        while True:
            parent_q = self.mean_q(b, node, is_root, parent_q)
            is_root = False
            action = self.select_child(b, node, parent_q, rng)
            child = int(self.children[b, node, action])
            if child < 0:
                return path, action
            node = child
            path.append(node)

    def backpropagate(self, b: int, path: list[int], value: float) -> None:
        discount = self.config.discount
        bootstrap = value
        for node in reversed(path):
            self.value_sum[b, node] += bootstrap
            self.visit_count[b, node] += 1
            reward = self.reward[b, node]
            q = reward + discount * self.value_sum[b, node] / self.visit_count[b, node]
            self.min_q[b] = min(self.min_q[b], q)
            self.max_q[b] = max(self.max_q[b], q)
            bootstrap = reward + discount * bootstrap


class MCTS:
    """Batched PUCT search over a world model's ``recurrent_inference``.

    Args:
        config: search hyper-parameters.
        support: decodes value and reward logits to scalars.
    """

    def __init__(self, config: MCTSConfig, support: DiscreteSupport) -> None:
        self.config = config
        self.support = support

    def search(self, model: RecurrentModel, root: Any, *, rng: np.random.Generator,
               start_pos: Any = None, root_noise_rng: np.random.Generator | None = None) -> SearchResult:
        """Search from the roots of one ``initial_inference`` output.

        Args:
            model: makes one ``recurrent_inference`` call per simulation for all B roots.
            root: the root call's output (``latent [B, D]``, ``policy_logits [B, A]``,
                ``value_logits [B, bins]``).
            rng: breaks PUCT ties.
            start_pos: ``[B]`` positions passed through to every recurrent call (zeros if None).
            root_noise_rng: when given, Dirichlet noise is mixed into the root priors.
        """
        root_latent = root.latent.detach().cpu().numpy()  # [B, D]; its bytes key the root cache
        assert root_latent.dtype == np.float32 and root_latent.ndim == 2, (
            f"root latent must be float32 [B, D], got {root_latent.dtype} {list(root_latent.shape)}")
        num_roots, latent_dim = root_latent.shape
        priors = _softmax(_numpy(root.policy_logits))  # [B, A]
        num_actions = priors.shape[1]
        if root_noise_rng is not None:
            noise = root_noise_rng.dirichlet([self.config.root_dirichlet_alpha] * num_actions,
                                             size=num_roots)
            fraction = self.config.root_noise_fraction
            priors = (1.0 - fraction) * priors + fraction * noise
        start = (np.zeros(num_roots, dtype=np.int64) if start_pos is None
                 else np.asarray(start_pos, dtype=np.int64))
        forest = _Forest(num_roots, num_actions, self.config.num_simulations + 1, latent_dim, self.config)
        forest.latents[0] = root_latent
        forest.prior[:, 0] = priors
        forest.visit_count[:, 0] = 1
        max_depths = np.zeros(num_roots, dtype=np.int64)
        for simulation_index in range(self.config.num_simulations):
            self._simulate(model, forest, simulation_index, start, rng, max_depths)
        root_children = forest.children[:, 0]  # [B, A]
        visits = np.take_along_axis(forest.visit_count, np.maximum(root_children, 0), axis=1)
        return SearchResult(
            visit_counts=np.where(root_children >= 0, visits, 0),
            root_values=forest.value_sum[:, 0] / forest.visit_count[:, 0],
            predicted_values=self.support.logits_to_scalar(root.value_logits),
            max_depths=max_depths)

    def _simulate(self, model: RecurrentModel, forest: _Forest, simulation_index: int,
                  start_pos: np.ndarray, rng: np.random.Generator, max_depths: np.ndarray) -> None:
        num_roots = forest.children.shape[0]
        paths, actions = [], np.empty(num_roots, dtype=np.int64)
        for b in range(num_roots):
            path, actions[b] = forest.select_leaf(b, rng)
            paths.append(path)
        parents = np.array([path[-1] for path in paths], dtype=np.int64)
        search_depth = [len(path) for path in paths]  # edges from the root to the new leaf
        latent_state = forest.latents[parents, np.arange(num_roots)]  # [B, D] float32, a copy
        output = model.recurrent_inference(latent_state=latent_state, actions=actions,
                                           simulation_index=simulation_index,
                                           search_depth=search_depth, start_pos=start_pos)
        new_latent = output.latent.detach().cpu().numpy()
        assert new_latent.shape == latent_state.shape and new_latent.dtype == np.float32, (
            f"recurrent latent must be float32 {list(latent_state.shape)}, "
            f"got {new_latent.dtype} {list(new_latent.shape)}")
        rewards = self.support.logits_to_scalar(output.reward_logits)
        values = self.support.logits_to_scalar(output.value_logits)
        priors = _softmax(_numpy(output.policy_logits))
        node = simulation_index + 1
        forest.latents[node] = new_latent
        for b in range(num_roots):
            forest.children[b, parents[b], actions[b]] = node
            forest.reward[b, node] = rewards[b]
            forest.prior[b, node] = priors[b]
            forest.backpropagate(b, paths[b] + [node], float(values[b]))
            max_depths[b] = max(max_depths[b], search_depth[b])
