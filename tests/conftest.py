"""Small shared factories for the test suite: configs, legacy models, seeded inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from legacy.world_model import LegacyWorldModel
from unizero.config import WorldModelConfig

# The suite runs as `pytest -n 2` on two cores with tensors of a few hundred elements: intra-op
# threads only spin against each other there (about 100x slower per call under load).
torch.set_num_threads(1)

# Small geometry used throughout: D=16, H=4 (head_dim 4), L=2, C=8, max_tokens 20, E=2.
SMALL = dict(obs_dim=4, action_space_size=3, embed_dim=16, num_layers=2, num_heads=4,
             context_length=8, max_tokens=20, env_num=2, num_simulations=3,
             game_segment_length=6, support_size=2, encoder_hidden=16)


def make_config(**overrides: Any) -> WorldModelConfig:
    """A small valid config; keyword arguments override any field."""
    return WorldModelConfig(**{**SMALL, **overrides})


def make_legacy(record: bool = True, **overrides: Any) -> LegacyWorldModel:
    """A legacy world model on CPU built from ``make_config(**overrides)``, recording events."""
    model = LegacyWorldModel(make_config(**overrides))
    model.record_events(record)
    return model


def make_obs(seed: int, rows: int, obs_dim: int = SMALL["obs_dim"]) -> np.ndarray:
    """Seeded float32 observations ``[rows, obs_dim]``."""
    return np.random.default_rng(seed).standard_normal((rows, obs_dim)).astype(np.float32)


def first_actions(rows: int) -> list[int]:
    """The previous actions of a first step: every entry -1."""
    return [-1] * rows
