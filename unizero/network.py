"""The world-model network: encoder, embeddings, transformer and output heads.

Both world models own one ``WorldModelNetwork`` and differ only in how they keep KV caches.

Initialisation order follows legacy (spec §9, quirk 8): modules are built with PyTorch's default
init, the position-difference correction is computed from those *pre-init* weights, and only
then the custom init runs. ``recompute_pos_emb_diff()`` refreshes the correction from the
current weights (called at the end of each training epoch upstream).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unizero.config import WorldModelConfig
from unizero.kv_cache import KeysValues
from unizero.transformer import Transformer

__all__ = ["WorldModelNetwork"]


def _mlp_head(d: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, out))


class WorldModelNetwork(nn.Module):
    """Encoder → (obs / action tokens + absolute positions) → transformer → heads.

    Buffers ``pos_emb_diff_k`` / ``pos_emb_diff_v`` (``[L, H, C-3, hd]``) hold the trim
    correction ``P[0:C-3] - P[2:C-1]`` of each layer's key / value projection of the position
    table (no LayerNorm; the bias cancels).
    """

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.weight_seed)
            self.encoder = nn.Sequential(nn.Linear(config.obs_dim, config.encoder_hidden),
                                         nn.GELU(), nn.Linear(config.encoder_hidden, d),
                                         nn.LayerNorm(d))
            self.act_embedding = nn.Embedding(config.action_space_size, d)
            self.pos_emb = nn.Embedding(config.max_tokens, d)
            self.transformer = Transformer(config)
            self.head_observations = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d),
                                                   nn.LayerNorm(d))
            self.head_rewards = _mlp_head(d, config.num_support_bins)
            self.head_policy = _mlp_head(d, config.action_space_size)
            self.head_value = _mlp_head(d, config.num_support_bins)
            trimmed = max(config.context_length - 3, 0)
            shape = (config.num_layers, config.num_heads, trimmed, config.head_dim)
            self.register_buffer("pos_emb_diff_k", torch.zeros(shape))
            self.register_buffer("pos_emb_diff_v", torch.zeros(shape))
            self.recompute_pos_emb_diff()
            self._custom_init(config)

    def _custom_init(self, config: WorldModelConfig) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=config.init_std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if config.zero_init_heads:
            # Upstream starts training from zero output layers: every predicted latent is then
            # LayerNorm(0) = +0.0 exactly (spec quirk 3) and reward/policy/value logits are 0.
            for head in (self.head_rewards, self.head_policy, self.head_value):
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)
            nn.init.zeros_(self.head_observations[2].weight)
            nn.init.zeros_(self.head_observations[2].bias)

    @torch.no_grad()
    def recompute_pos_emb_diff(self) -> None:
        """Recompute the trim correction from the current weights (legacy: skipped if C <= 2)."""
        c = self.config.context_length
        if c <= 2:
            return
        h, hd = self.config.num_heads, self.config.head_dim
        table = self.pos_emb.weight  # [max_tokens, D]
        for layer, block in enumerate(self.transformer.blocks):
            for proj, target in ((block.attn.key, self.pos_emb_diff_k),
                                 (block.attn.value, self.pos_emb_diff_v)):
                p = proj(table).view(-1, h, hd).transpose(0, 1)  # [H, max_tokens, hd]
                target[layer] = p[:, 0: c - 3] - p[:, 2: c - 1]

    def empty_keys_values(self, num_samples: int) -> KeysValues:
        return self.transformer.generate_empty_keys_values(num_samples, self.config.context_length)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs: [B, obs_dim]`` → latent ``[B, D]``."""
        return self.encoder(obs)

    def embed_actions(self, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``actions: [B]`` int64 → action token embeddings ``[B, 1, D]``."""
        index = torch.as_tensor(actions, device=self.pos_emb.weight.device)
        return self.act_embedding(index).unsqueeze(1)

    def forward_last(self, embeddings: torch.Tensor, keys_values: KeysValues,
                     positions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``forward_tokens`` returning only the last token's hidden state ``[B, D]``;
        ``positions`` may be a numpy array (moved to the device here)."""
        positions = torch.as_tensor(positions, device=embeddings.device)
        return self.forward_tokens(embeddings, keys_values, positions)[:, -1]

    def forward_tokens(self, embeddings: torch.Tensor, keys_values: KeysValues,
                       positions: torch.Tensor) -> torch.Tensor:
        """Run ``embeddings: [B, T, D]`` at ``positions: [B, T]`` through the cache; → ``[B, T, D]``."""
        return self.transformer(embeddings + self.pos_emb(positions), keys_values)

    def action_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads read at an action token: reward logits and the predicted next latent."""
        return self.head_rewards(hidden), self.head_observations(hidden)

    def observation_heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads read at an observation token: policy and value logits."""
        return self.head_policy(hidden), self.head_value(hidden)
