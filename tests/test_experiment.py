"""The accumulator's own judgements: error divergences, probe findings, and latent-drift only
when the keys alone differ and the latents they hash differ in their last bits."""

from __future__ import annotations

import numpy as np
import pytest

from harness.calls import RecordedCall, RecurrentCall
from harness.compare import TolerancePolicy
from harness.experiment import TraceAccumulator
from harness.observation import Observation
from unizero.events import Lookup, Store

LATENT = np.array([[0.5, -1.25, 3.0]], np.float32)
DRIFTED = np.nextafter(LATENT, np.float32(9))  # one ULP up in every element


def call() -> RecordedCall:
    recurrent = RecurrentCall(LATENT.copy(), np.zeros(1, np.int64), np.ones(1, np.int64),
                              np.zeros(1, np.int64), 0)
    return RecordedCall(5, recurrent, {}, ())


def observation(latent: np.ndarray, *, key: int, hit: bool = True,
                findings: tuple[str, ...] = ()) -> Observation:
    events = (Lookup(env=0, key=key, path="recurrent", hit=hit, pool="recurrent" if hit else None,
                     size=3),
              Store(env=0, key=key + 1, pool="recurrent", slot=2, evicted=None, size=4))
    return Observation({"latent": latent}, events, 0.001, findings=findings)


def judge(control: Observation, candidate: Observation, *, drifted: bool = False):
    accumulator = TraceAccumulator("t", "legacy", "refactored", TolerancePolicy())
    return accumulator.observe(call(), control, candidate, drifted=drifted)


def test_keys_that_differ_only_because_latents_drifted_are_latent_drift():
    found = judge(observation(LATENT, key=10), observation(DRIFTED, key=20))
    assert (found.classification, found.cause) == ("decision", "latent-drift")


def test_keys_fed_from_drifted_latents_are_latent_drift_in_closed_loop():
    found = judge(observation(LATENT, key=10), observation(LATENT, key=20), drifted=True)
    assert found.cause == "latent-drift"


def test_a_different_decision_is_never_latent_drift_even_with_drifted_latents():
    found = judge(observation(LATENT, key=10), observation(DRIFTED, key=20, hit=False),
                  drifted=True)
    assert found.classification == "decision" and found.cause is None


def test_different_keys_from_identical_latents_are_a_bug_not_drift():
    found = judge(observation(LATENT, key=10), observation(LATENT, key=20))
    assert found.classification == "decision" and found.cause is None


def test_a_probe_finding_alone_makes_the_call_diverge_with_its_cause():
    found = judge(observation(LATENT, key=10),
                  observation(LATENT, key=10, findings=("entry shares tensor storage",)))
    assert (found.classification, found.cause, found.findings) == (
        "probe", "storage-aliasing", ("entry shares tensor storage",))


@pytest.mark.parametrize("control_error, candidate_error, expected", [
    (None, "RuntimeError: x", "control returned; candidate raised RuntimeError: x"),
    ("ValueError: y", "ValueError: y", "control raised ValueError: y; candidate raised ValueError: y"),
])
def test_an_error_on_either_side_of_a_recorded_call_diverges(control_error, candidate_error,
                                                            expected):
    def side(error):
        return Observation({} if error else {"latent": LATENT}, (), 0.0, error=error)
    found = judge(side(control_error), side(candidate_error))
    assert (found.classification, found.engine_error) == ("error", expected)
