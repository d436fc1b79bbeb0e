"""How far one engine's outputs are from the uncached reference's, for a report's third column."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["distance_from_reference", "max_distance", "closer_side"]


def distance_from_reference(outputs: Mapping[str, np.ndarray],
                            reference: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max ``|x - uncached|`` per output both sides have, in float64.

    An output whose shapes differ, or whose error is not finite (a NaN or inf on either side),
    is ``inf``; outputs only one side has are left out.
    """
    out = {}
    for name in sorted(set(outputs) & set(reference)):
        actual = np.asarray(outputs[name], dtype=np.float64)
        expected = np.asarray(reference[name], dtype=np.float64)
        if actual.shape != expected.shape:
            out[name] = math.inf
            continue
        if actual.size == 0:
            out[name] = 0.0
            continue
        error = np.abs(actual - expected)
        out[name] = float(error.max()) if np.isfinite(error).all() else math.inf
    return out


def max_distance(outputs: Mapping[str, np.ndarray],
                 reference: Mapping[str, np.ndarray]) -> float | None:
    """The largest :func:`distance_from_reference` over the call's outputs; None when there is
    no shared output or a distance is not finite (a report then shows the side unmeasured)."""
    distances = distance_from_reference(outputs, reference)
    if not distances or not all(math.isfinite(value) for value in distances.values()):
        return None
    return max(distances.values())


def closer_side(control: Mapping[str, float], candidate: Mapping[str, float],
                *, atol: float = 1e-6) -> str:
    """``control``, ``candidate`` or ``tie``: whose largest distance from the reference is
    smaller, over the outputs both were measured on (within ``atol`` is a tie)."""
    names = set(control) & set(candidate)
    worst_control = max((control[name] for name in names), default=0.0)
    worst_candidate = max((candidate[name] for name in names), default=0.0)
    if abs(worst_control - worst_candidate) <= atol or worst_control == worst_candidate:
        return "tie"
    return "control" if worst_control < worst_candidate else "candidate"
