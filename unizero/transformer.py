"""Causal transformer that reads and writes ``KeysValues`` caches (legacy-spec §2.4).

No rotary embedding and no padding mask: the legacy inference path attends to left-padding
zeros (quirk 5, 16). ``valid_context_lengths`` is supported as upstream's transformer does, but
the legacy world model never passes it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from unizero.config import WorldModelConfig
from unizero.kv_cache import KeysValues, KVCache

__all__ = ["Transformer", "SelfAttention"]


class SelfAttention(nn.Module):
    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.key = nn.Linear(d, d)
        self.query = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        mask = torch.tril(torch.ones(config.max_tokens, config.max_tokens))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor, kv_cache: KVCache,
                valid_context_lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, T, D]
        b, t, d = x.shape
        past_len = kv_cache.size
        q = self.query(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        kv_cache.update(k, v)
        k_all, v_all = kv_cache.get()  # [B, H, L, hd]
        current_len = k_all.size(2)
        att = (q @ k_all.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        mask = self.mask[past_len: past_len + t, :current_len]
        if valid_context_lengths is not None:
            mask = mask.expand(b, t, current_len).clone()
            for i in range(b):
                mask[i, :, : past_len - int(valid_context_lengths[i])] = 0
            mask = mask.unsqueeze(1)
        att = att.masked_fill(mask == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v_all).transpose(1, 2).contiguous().view(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.attn = SelfAttention(config)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, kv_cache: KVCache,
                valid_context_lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv_cache, valid_context_lengths)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """``num_layers`` pre-LN blocks and a final LayerNorm; layer ``i`` uses cache layer ``i``."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.embed_dim)

    def generate_empty_keys_values(self, num_samples: int, max_tokens: int) -> KeysValues:
        device = self.ln_f.weight.device
        return KeysValues(num_samples, self.config.num_heads, max_tokens, self.config.embed_dim,
                          self.config.num_layers, device, self.ln_f.weight.dtype)

    def forward(self, x: torch.Tensor, keys_values: KeysValues,
                valid_context_lengths: torch.Tensor | None = None) -> torch.Tensor:
        assert len(keys_values) == len(self.blocks), (
            f"cache has {len(keys_values)} layers, transformer has {len(self.blocks)}")
        for block, kv_cache in zip(self.blocks, keys_values.layers):
            x = block(x, kv_cache, valid_context_lengths)
        return self.ln_f(x)
