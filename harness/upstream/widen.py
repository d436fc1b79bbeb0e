"""Fit a recorded state dict onto an upstream model whose head layers are wider.

From upstream commit 81db0b2c on, every head's hidden layer is ``4 x embed_dim`` wide instead of
``embed_dim`` (``LayerNorm(E) -> Linear(E, rE) -> LayerNorm(rE) -> GELU -> Linear(rE, out)``).
Weights recorded from an older tree load there through a function-preserving widening: every
hidden unit is repeated ``r`` times (the rows of the first Linear and its bias, and the affine
parameters of the LayerNorm over the hidden layer, which sees the same mean and variance over
``r`` copies), and the last Linear reads the ``r`` copies with its columns divided by ``r``.
The function is the same up to float rounding (sums run in another order), not bit for bit.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["WidenError", "fit_state_dict"]


class WidenError(ValueError):
    """A recorded state dict that does not fit the model; the message names the parameter."""


def _widen(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if value.ndim != len(shape):
        raise WidenError(f"weights: {name}: recorded shape {list(value.shape)}, model expects {list(shape)}")
    ratios = [t // s if s and t % s == 0 else 0 for s, t in zip(value.shape, shape)]
    if value.ndim == 1 and ratios[0] > 1:
        return np.tile(value, ratios[0])
    if value.ndim == 2 and ratios[0] > 1 and ratios[1] == 1:
        return np.tile(value, (ratios[0], 1))
    if value.ndim == 2 and ratios[0] == 1 and ratios[1] > 1:
        return np.tile(value, (1, ratios[1])) / np.asarray(ratios[1], dtype=value.dtype)
    raise WidenError(f"weights: {name}: recorded shape {list(value.shape)} cannot be widened to "
                     f"{list(shape)} (only a head's hidden width may grow, by a whole factor)")


def fit_state_dict(target: Mapping[str, Any], recorded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``recorded`` with every parameter shaped like ``target``'s (tensors or arrays).

    Raises:
        WidenError: a missing or unexpected parameter, or a shape no widening explains.
    """
    missing = sorted(set(target) - set(recorded))
    unexpected = sorted(set(recorded) - set(target))
    if missing or unexpected:
        raise WidenError(f"weights: the recorded state dict does not match the model (missing "
                         f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                         f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    fitted = {}
    for name, value in recorded.items():
        shape = tuple(target[name].shape)
        fitted[name] = value if tuple(value.shape) == shape else _widen(name, value, shape)
    return fitted
