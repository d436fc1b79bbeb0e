"""Causes by counterfactual (harness/causes.py) on the bundled quirk-1 capture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from harness.causenames import UNEXPLAINED, cause_covers
from harness.causes import (CAUSES, CauseLabeller, label_divergences,
                            observations_agree, trace_config)
from harness.compare import TolerancePolicy
from harness.engines import Observation
from harness.replay import ReplayOptions, replay_trace
from unizero.events import Lookup

QUIRK1_TRACE = str(Path(__file__).resolve().parents[1] / "scenarios" / "traces-quirks"
                   / "context_len3_twins.kvtrace")
FAULTY = "harness.mutants:LruManager"


def _divergences(manager: str | None = None) -> tuple:
    result = replay_trace(QUIRK1_TRACE, ReplayOptions(manager=manager, max_kept=10_000))
    assert result.num_unwaived_calls == len(result.divergences), "every divergence kept"
    return result.divergences


def _diverging_calls(manager: str | None = None) -> list[int]:
    return [call.call_index for call in _divergences(manager)]


def test_every_refactored_divergence_on_the_quirk_1_capture_is_labelled_quirk_1():
    divergences = _divergences()
    calls = [call.call_index for call in divergences]
    summaries = [call.event_divergence.summary for call in divergences if call.event_divergence]
    # The capture is one where quirk 1 makes legacy miss and refactored hit.
    assert any("control miss, candidate hit (recurrent pool)" in s for s in summaries), summaries
    labels = label_divergences(QUIRK1_TRACE, calls)
    assert len(calls) >= 10
    assert labels == {index: "quirk-1" for index in calls}


def test_a_faulty_manager_s_own_divergences_are_unexplained():
    calls = _diverging_calls(FAULTY)
    labels = label_divergences(QUIRK1_TRACE, calls, manager=FAULTY)
    assert set(labels) == set(calls)
    # Before its fault first shows, the faulty manager's state is the honest one's: its first
    # divergence is its own fault, which no counterfactual explains.
    assert labels[calls[0]] == UNEXPLAINED
    assert Counter(labels.values())[UNEXPLAINED] >= 3
    assert set(labels.values()) <= {UNEXPLAINED, *CAUSES}


def test_a_cause_waiver_covers_only_its_cause_and_never_unexplained():
    assert cause_covers("quirk-1", "quirk-1")
    assert not cause_covers("quirk-1", UNEXPLAINED)
    assert not cause_covers("quirk-1", "quirk-2")
    assert not cause_covers(UNEXPLAINED, UNEXPLAINED)


def _observation(latent: float, hit: bool) -> Observation:
    event = Lookup(env=0, key=7, path="recurrent", hit=hit, pool="recurrent" if hit else None,
                   size=3 if hit else 1)
    return Observation({"latent": np.full((1, 4), latent, dtype=np.float32)}, (event,), 0.0)


def test_observations_agree_needs_equal_outputs_and_equal_decisions():
    policy = TolerancePolicy()
    assert observations_agree(_observation(1.0, True), _observation(1.0, True), policy)
    assert not observations_agree(_observation(1.0, True), _observation(1.5, True), policy)
    assert not observations_agree(_observation(1.0, True), _observation(1.0, False), policy)
    failed = Observation({}, (), 0.0, error="RuntimeError: boom")
    assert not observations_agree(failed, _observation(1.0, True), policy)


def test_the_labeller_reads_forward_only_and_names_the_end_of_the_trace():
    labeller = CauseLabeller(QUIRK1_TRACE, trace_config(QUIRK1_TRACE))
    try:
        assert labeller.label(3, _observation(0.0, True)) == UNEXPLAINED
        with pytest.raises(ValueError, match="increasing call order"):
            labeller.label(2, _observation(0.0, True))
        with pytest.raises(ValueError, match="the trace ends at call"):
            labeller.label(10**6, _observation(0.0, True))
    finally:
        labeller.close()


def test_no_divergence_costs_no_replay():
    assert label_divergences(QUIRK1_TRACE, []) == {}
