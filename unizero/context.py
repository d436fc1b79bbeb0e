"""Context rules both world models share: batch positions, left padding, what a store keeps.

These are the algorithm (legacy-spec §5, §8, §9), not the cache keeping, so they exist once:

* a batch cache left-pads every env's context with zeros to the longest one (unmasked, quirk 5);
* root tokens sit at the padded batch size for every env, recurrent tokens at each env's own
  unpadded size (quirk 6); a recurrent call adds two tokens (action, observation) per env;
* a store keeps, per env, the root batch size for every env (quirk 4) or, after a recurrent
  call, the env's own size with its left padding shifted out;
* a context that reached ``C - 1`` tokens is trimmed: positions ``[2, C-1)`` (the oldest
  obs/action pair dropped) plus the position-embedding correction, ``C - 3`` tokens kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["TRIM_DROP", "StorePlan", "stores_contexts", "needs_trim", "trimmed_size",
           "trim_window", "trim_with_correction", "left_pads", "root_positions", "recurrent_positions",
           "sizes_after_recurrent", "store_plan", "store_plans", "evicted_key"]

TRIM_DROP = 2  # a trim drops the oldest obs/action token pair


def stores_contexts(context_length: int) -> bool:
    """Whether stores happen at all: a context of two tokens or fewer is never kept."""
    return context_length > 2


def needs_trim(size: int, context_length: int) -> bool:
    """A stored context of ``size`` tokens is trimmed once it reaches ``C - 1``."""
    return size >= context_length - 1


def trimmed_size(context_length: int) -> int:
    """Valid tokens left after a trim: ``[2, C-1)`` of the context, ``C - 3`` of them."""
    return context_length - 1 - TRIM_DROP


def trim_window(context_length: int) -> tuple[int, int]:
    """The token positions ``[start, stop)`` a trim keeps: ``[2, C-1)``."""
    return TRIM_DROP, context_length - 1


def trim_with_correction(kept: torch.Tensor, correction: torch.Tensor, *,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """The trimmed context: ``kept: [..., C-3, hd]`` (a context's ``trim_window`` positions)
    plus the position-embedding ``correction: [..., C-3, hd]``.

    With ``out`` the sum is written there and ``kept`` is untouched; without it the sum is added
    in place into ``kept`` and returned (legacy corrects the batch tensor itself, quirk 7).
    """
    if out is not None:
        return torch.add(kept, correction, out=out)
    kept += correction
    return kept


def left_pads(sizes: Sequence[int]) -> tuple[int, list[int]]:
    """``(max_size, pads)``: the padded batch size and each env's count of leading zeros."""
    max_size = max(sizes, default=0)
    return max_size, [max_size - size for size in sizes]


def root_positions(batch: int, batch_size: int) -> np.ndarray:
    """Root action-token positions ``[B, 1]``: the padded batch size for every env (quirk 6)."""
    return np.full((batch, 1), batch_size, dtype=np.int64)


def recurrent_positions(sizes: Sequence[int]) -> np.ndarray:
    """Recurrent action-token positions ``[B, 1]``: each env's own unpadded size (quirk 6)."""
    return np.asarray(sizes, dtype=np.int64)[:, None]


def sizes_after_recurrent(sizes: Sequence[int]) -> list[int]:
    """Each env's own size after a recurrent call wrote its action and observation tokens."""
    return [size + 2 for size in sizes]


@dataclass(frozen=True, slots=True)
class StorePlan:
    """What one env's store keeps from the batch cache (build with :func:`store_plan`).

    Attributes:
        own_size: the env's valid tokens in the batch (before any trim).
        shift: leading padding to shift out of the env's batch row first (recurrent only).
        trimmed: whether the context is trimmed (``needs_trim(own_size, C)``).
        stored_size: valid tokens of the stored entry.
    """

    own_size: int
    shift: int
    trimmed: bool
    stored_size: int


@functools.lru_cache(maxsize=4096)
def store_plan(own_size: int, shift: int, context_length: int) -> StorePlan:
    """The plan for a context of ``own_size`` tokens behind ``shift`` tokens of padding.

    Plans are immutable and there are few distinct ones (sizes stay below ``C``), so they are
    built once and shared: a store reads them on every call.
    """
    if needs_trim(own_size, context_length):
        return StorePlan(own_size, shift, True, trimmed_size(context_length))
    return StorePlan(own_size, shift, False, own_size)


def store_plans(batch: int, batch_size: int, sizes_current: Sequence[int] | None,
                context_length: int) -> list[StorePlan]:
    """One plan per env: root stores (``sizes_current`` None) keep the padded batch size for
    every env, unshifted (quirk 4); recurrent stores keep each env's own size, its left padding
    ``max(sizes_current) - own`` shifted out."""
    if sizes_current is None:
        return [store_plan(batch_size, 0, context_length)] * batch
    longest = max(sizes_current)
    return [store_plan(size, longest - size, context_length) for size in sizes_current[:batch]]


def evicted_key(deleted: int | None, stored: int) -> int | None:
    """The key a store evicted: a key live before the store and not after it. Deleting the key
    that is stored again at once is a replacement, not an eviction."""
    return None if deleted == stored else deleted
