"""The cache key: XXH64 (seed 0) over the raw bytes of a float32 latent (legacy-spec §3)."""

from __future__ import annotations

import numpy as np
import torch
import xxhash

__all__ = ["hash_state"]


def hash_state(state: np.ndarray | torch.Tensor) -> int:
    """Return the legacy cache key of ``state`` as a Python int in ``[0, 2**64)``.

    Only the bytes matter: dtype and exact bit patterns change the key (+0.0 and -0.0 differ),
    the shape does not. Tensors are moved to the CPU and viewed as C-order bytes.
    """
    if isinstance(state, torch.Tensor):
        state = state.detach().reshape(-1).cpu().numpy()
    return xxhash.xxh64(np.ascontiguousarray(state).tobytes()).intdigest()
