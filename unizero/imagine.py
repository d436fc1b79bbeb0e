"""The token forwards of one imagine call, shared by both world models.

These are the algorithm, not the cache handling: given an assembled batch cache, run the action
token and the observation token and read the heads. Positions follow legacy exactly (spec §9,
quirk 6): root tokens sit at the batch size for every env, recurrent tokens at each env's own
unpadded size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unizero.kv_cache import KeysValues
from unizero.network import WorldModelNetwork

__all__ = ["InferenceOutput", "forward_root_first_step", "forward_action_then_obs",
           "forward_fresh_context"]


@dataclass(frozen=True, slots=True)
class InferenceOutput:
    """Outputs of one imagine call, all on the model's device.

    Attributes:
        latent: ``[B, D]`` float32 — the root embedding or the predicted next latent.
        reward_logits: ``[B, bins]`` — zero on a first root step (no action token).
        policy_logits: ``[B, A]``.
        value_logits: ``[B, bins]``.
    """

    latent: torch.Tensor
    reward_logits: torch.Tensor
    policy_logits: torch.Tensor
    value_logits: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"latent": self.latent, "reward_logits": self.reward_logits,
                "policy_logits": self.policy_logits, "value_logits": self.value_logits}

_ORIGIN = np.zeros((1, 1), dtype=np.int64)  # the miss-path latent always sits at position 0


def forward_root_first_step(net: WorldModelNetwork, batch_cache: KeysValues,
                            current: torch.Tensor) -> InferenceOutput:
    """First root step: the current observation alone, at position 0, into an empty cache."""
    batch = current.shape[0]
    hidden = net.forward_last(current.unsqueeze(1), batch_cache, np.zeros((batch, 1), dtype=np.int64))
    policy, value = net.observation_heads(hidden)
    reward = torch.zeros(batch, net.config.num_support_bins, device=current.device)
    return InferenceOutput(current, reward, policy, value)


def forward_action_then_obs(net: WorldModelNetwork, batch_cache: KeysValues,
                            actions: np.ndarray, positions: np.ndarray,
                            obs: torch.Tensor | None) -> InferenceOutput:
    """Action token at ``positions: [B, 1]`` (int64), then an observation token one later.

    ``obs`` is the current observation embedding at the root; ``None`` at a recurrent step, where
    the predicted next latent is fed back as the observation token.
    """
    hidden = net.forward_last(net.embed_actions(actions), batch_cache, positions)
    reward, next_latent = net.action_heads(hidden)
    latent = next_latent if obs is None else obs
    hidden = net.forward_last(latent.unsqueeze(1), batch_cache, positions + 1)
    policy, value = net.observation_heads(hidden)
    return InferenceOutput(latent, reward, policy, value)


def forward_fresh_context(net: WorldModelNetwork, single_cache: KeysValues,
                          latent: torch.Tensor) -> None:
    """Miss path: encode one latent at position 0 into an empty single-env cache."""
    net.forward_last(latent.view(1, 1, -1), single_cache, _ORIGIN)
