"""Categorical support ↔ scalar transform for value and reward heads (MuZero appendix F).

A head predicts logits over ``2 * size + 1`` bins at the integers ``[-size, size]``. Decoding takes
the softmax expectation over the bins and, when ``scaled``, inverts MuZero's invertible scaling
``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``; encoding applies ``h``, clips to the support and
splits the result between its two neighbouring bins ("two-hot"). This matches LightZero's
``inverse_scalar_transform`` / ``phi_transform`` with ``delta = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["DiscreteSupport", "h_transform", "h_inverse"]

_EPSILON = 0.001


def h_transform(x: np.ndarray, epsilon: float = _EPSILON) -> np.ndarray:
    """MuZero's value scaling ``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0) + epsilon * x


def h_inverse(y: np.ndarray, epsilon: float = _EPSILON) -> np.ndarray:
    """Closed-form inverse of :func:`h_transform`."""
    y = np.asarray(y, dtype=np.float64)
    root = (np.sqrt(1.0 + 4.0 * epsilon * (np.abs(y) + 1.0 + epsilon)) - 1.0) / (2.0 * epsilon)
    return np.sign(y) * (root ** 2 - 1.0)


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DiscreteSupport:
    """Bins at the integers ``[-size, size]``; ``scaled`` applies ``h`` before projecting.

    Attributes:
        size: half-width of the support; ``num_bins = 2 * size + 1``.
        scaled: whether scalars pass through ``h`` (encode) / ``h^-1`` (decode).
        epsilon: the ``eps`` of ``h``.
    """

    size: int
    scaled: bool = True
    epsilon: float = _EPSILON

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"size: expected a non-negative integer, got {self.size!r}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon: expected a positive float, got {self.epsilon!r}")

    @property
    def num_bins(self) -> int:
        return 2 * self.size + 1

    @property
    def bin_values(self) -> np.ndarray:
        """``[num_bins]`` float64: the scalar each bin stands for (before ``h^-1``)."""
        return np.arange(-self.size, self.size + 1, dtype=np.float64)

    def logits_to_scalar(self, logits: Any) -> np.ndarray:
        """``logits: [N, num_bins]`` (numpy or torch) → ``[N]`` float64 scalars."""
        logits = _to_numpy(logits)
        if logits.ndim != 2 or logits.shape[1] != self.num_bins:
            raise ValueError(f"logits: expected shape [N, {self.num_bins}], got {list(logits.shape)}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        # Sum the +k and -k bins pairwise so that symmetric logits (all zero, as at a
        # zero-initialised head) decode to exactly 0.0.
        magnitudes = np.arange(1, self.size + 1, dtype=np.float64)
        expected = (probs[:, self.size + 1:] - probs[:, :self.size][:, ::-1]) @ magnitudes
        return h_inverse(expected, self.epsilon) if self.scaled else expected

    def scalar_to_probs(self, values: Any) -> np.ndarray:
        """``values: [N]`` → ``[N, num_bins]`` two-hot probabilities (clipped to the support)."""
        values = _to_numpy(values).reshape(-1)
        scaled = h_transform(values, self.epsilon) if self.scaled else values
        clipped = np.clip(scaled, -self.size, self.size)
        low = np.floor(clipped)
        upper_weight = clipped - low
        low_index = (low + self.size).astype(np.int64)
        high_index = np.minimum(low_index + 1, self.num_bins - 1)
        probs = np.zeros((values.shape[0], self.num_bins), dtype=np.float64)
        rows = np.arange(values.shape[0])
        np.add.at(probs, (rows, low_index), 1.0 - upper_weight)
        np.add.at(probs, (rows, high_index), upper_weight)
        return probs

    def scalar_to_logits(self, values: Any) -> np.ndarray:
        """Logits whose softmax is the two-hot encoding (``log`` with empty bins at -1e9)."""
        probs = self.scalar_to_probs(values)
        return np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), -1e9)
