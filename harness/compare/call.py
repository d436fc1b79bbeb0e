"""The one per-call comparison: two observations of the same call, judged in one order.

Errors first (an engine that raised diverges, whichever side raised and also when both did:
a recorded call succeeded when it was captured; live, the same refusal of the caller's own bad
input on both sides agrees), then the named outputs (keys, dtype, shape,
values: :func:`compare_tensor_maps`), then the cache decisions (:func:`compare_events`).
Replays and the live shadow/validate wrapper both judge calls here, through
:class:`harness.experiment.TraceAccumulator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.compare.events import compare_events
from harness.compare.tensors import NoiseFloor, TolerancePolicy, compare_tensor_maps
from harness.observation import Observation
from harness.results import EventDivergence, TensorDivergence

__all__ = ["CallVerdict", "compare_observations", "engine_error_text"]


@dataclass(frozen=True, slots=True)
class CallVerdict:
    """How two observations of one call compare.

    Attributes:
        engine_error: which side raised what (``control raised X: ...; candidate returned``),
            None when both returned.
        tensor_divergences: output tensors that differ, in comparison order.
        event_divergence: the decision diff, None when the decisions agree.
        num_tensors: output tensors compared.
        max_abs_err: the largest finite ``|a - e|`` over the compared outputs (for plots).
    """

    engine_error: str | None
    tensor_divergences: tuple[TensorDivergence, ...]
    event_divergence: EventDivergence | None
    num_tensors: int
    max_abs_err: float

    @property
    def diverged(self) -> bool:
        return (self.engine_error is not None or bool(self.tensor_divergences)
                or self.event_divergence is not None)


def engine_error_text(control: str | None, candidate: str | None) -> str | None:
    """One line naming the side(s) that raised; None when neither did."""
    if control is None and candidate is None:
        return None
    def side(role: str, error: str | None) -> str:
        return f"{role} returned" if error is None else f"{role} raised {error}"
    return f"{side('control', control)}; {side('candidate', candidate)}"


def _bit_identical(actual: object, expected: object) -> bool:
    return (isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)
            and actual.dtype == expected.dtype and actual.shape == expected.shape
            and actual.tobytes() == expected.tobytes())


def _max_abs_err(control: Observation, candidate: Observation) -> float:
    worst = 0.0
    for name, expected in control.outputs.items():
        actual = candidate.outputs.get(name)
        if (not isinstance(actual, np.ndarray) or actual.shape != expected.shape
                or actual.dtype.kind not in "biuf" or expected.dtype.kind not in "biuf"
                or not expected.size or _bit_identical(actual, expected)):
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        finite = diff[np.isfinite(diff)]
        if finite.size:
            worst = max(worst, float(finite.max()))
    return worst


def compare_observations(control: Observation, candidate: Observation, policy: TolerancePolicy,
                         noise: NoiseFloor | None = None, *,
                         same_error_agrees: bool = False) -> CallVerdict:
    """Compare the candidate's observation of a call with the control's.

    Args:
        same_error_agrees: count the same exception on both sides as agreement. False for
            recorded calls (the call succeeded when it was captured, so raising now is wrong on
            either side); True live, where both sides refusing the caller's bad input agree.
    """
    if same_error_agrees and control.error is not None and control.error == candidate.error:
        return CallVerdict(None, (), None, 0, 0.0)
    error = engine_error_text(control.error, candidate.error)
    if error is not None:
        return CallVerdict(error, (), None, 0, 0.0)
    identical = {name for name, value in control.outputs.items()
                 if _bit_identical(candidate.outputs.get(name), value)}
    if noise is not None and identical:
        noise.observe(0.0)
    divergences = compare_tensor_maps(  # in name order, whatever order the engines returned
        {k: candidate.outputs[k] for k in sorted(candidate.outputs) if k not in identical},
        {k: control.outputs[k] for k in sorted(control.outputs) if k not in identical},
        policy, noise_floor=noise)
    num_tensors = len(set(control.outputs) | set(candidate.outputs))
    return CallVerdict(None, tuple(divergences), compare_events(candidate.events, control.events),
                       num_tensors, _max_abs_err(control, candidate))
