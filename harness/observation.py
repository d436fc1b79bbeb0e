"""What one engine produced for one call: outputs and cache events, or the exception it raised.

GitHub Scientist's observation: immutable, a value or an exception, plus timing. An engine that
raises is observed, never crashes a replay; the comparison turns the error into a divergence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from unizero.events import CacheEvent

__all__ = ["Observation", "describe_exception"]


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, as every report form shows an engine error."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True, slots=True)
class Observation:
    """One engine's result for one call.

    Attributes:
        outputs: named output arrays (``latent``, ``reward_logits``, ...); empty on an error.
        events: the cache events the call emitted, in order.
        elapsed_s: wall time of the call.
        error: ``Type: message`` of the exception the call raised, None when it returned.
        findings: what a probe of the engine's own state found wrong at this call, one line
            each (e.g. the storage-aliasing probe: a live cache entry sharing tensor storage
            with another entry or a scratch buffer). Hit and miss counts cannot show such a
            defect; a finding makes the call diverge with its explanation.
    """

    outputs: Mapping[str, np.ndarray]
    events: tuple[CacheEvent, ...]
    elapsed_s: float
    error: str | None = None
    findings: tuple[str, ...] = ()
