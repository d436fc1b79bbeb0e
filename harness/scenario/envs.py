"""The gymnasium envs a scenario may name, and a lock-step batch of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import gymnasium as gym
import numpy as np

__all__ = ["EnvInfo", "KNOWN_ENVS", "EnvBatch", "StepBatch"]


@dataclass(frozen=True, slots=True)
class EnvInfo:
    """Geometry of a vector-observation, discrete-action env."""

    obs_dim: int
    num_actions: int


# Checked against the gymnasium spaces by tests/test_scenario.py.
KNOWN_ENVS: dict[str, EnvInfo] = {
    "CartPole-v1": EnvInfo(obs_dim=4, num_actions=2),
    "Acrobot-v1": EnvInfo(obs_dim=6, num_actions=3),
}


@dataclass(frozen=True, slots=True)
class StepBatch:
    """One lock-step transition: ``obs [E, obs_dim]`` float32 (before any reset), ``rewards [E]``
    and ``dones [E]`` (terminated or truncated)."""

    obs: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray


class EnvBatch:
    """``len(seeds)`` copies of one env, stepped together; env k is first reset with ``seeds[k]``.

    Later resets pass no seed, so they continue env k's own generator: deterministic, and free of
    the seed collisions that ``seed + episode`` schemes give neighbouring envs.
    """

    def __init__(self, env_id: str, seeds: Sequence[int],
                 max_episode_steps: Sequence[int] | None = None) -> None:
        if env_id not in KNOWN_ENVS:
            raise ValueError(f"env id: expected one of {', '.join(KNOWN_ENVS)}, got {env_id!r}")
        limits = list(max_episode_steps) if max_episode_steps is not None else [None] * len(seeds)
        assert len(limits) == len(seeds), f"{len(limits)} episode limits for {len(seeds)} envs"
        self.info = KNOWN_ENVS[env_id]
        self._seeds = [int(seed) for seed in seeds]
        self._envs = [gym.make(env_id, max_episode_steps=limit) for limit in limits]
        self._started = [False] * len(self._envs)

    @property
    def num_envs(self) -> int:
        return len(self._envs)

    def reset(self, env_id: int) -> np.ndarray:
        """Start a new episode of env ``env_id``; returns its observation ``[obs_dim]`` float32."""
        seed = None if self._started[env_id] else self._seeds[env_id]
        self._started[env_id] = True
        obs, _ = self._envs[env_id].reset(seed=seed)
        return np.asarray(obs, dtype=np.float32)

    def reset_all(self) -> np.ndarray:
        """``[E, obs_dim]`` first observations of a new episode of every env."""
        return np.stack([self.reset(k) for k in range(self.num_envs)])

    def step(self, actions: np.ndarray, env_ids: Sequence[int] | None = None) -> StepBatch:
        """Step the envs ``env_ids`` (default: all, in order) with one action each; the batch's
        rows follow ``env_ids``."""
        ids = range(self.num_envs) if env_ids is None else env_ids
        assert len(ids) == len(actions), f"{len(actions)} actions for {len(ids)} envs"
        obs, rewards, dones = [], [], []
        for env_id, action in zip(ids, actions):
            ob, reward, terminated, truncated, _ = self._envs[env_id].step(int(action))
            obs.append(np.asarray(ob, dtype=np.float32))
            rewards.append(float(reward))
            dones.append(bool(terminated or truncated))
        return StepBatch(np.stack(obs), np.asarray(rewards), np.asarray(dones))

    def close(self) -> None:
        for env in self._envs:
            env.close()
