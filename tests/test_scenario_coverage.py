"""The coverage vocabulary (harness/coverage.py) on the bundled traces, and the gate's use of it."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from harness.calls import RecordedCall, RecurrentCall, RootCall
from harness.coverage import (COVERAGE_NAMES, COVERAGE_TABLE, FIXED, REQUIRED, CoverageCounter,
                              coverage_of, coverage_rows, missing_required, recorded_coverage)
from harness.gate import PhaseCriteria, evaluate
from harness.results import RunResult, TraceResult
from harness.waivers import WaiverSet
from unizero.events import Clear, Lookup, Store, Trim

ROOT = Path(__file__).resolve().parents[1]
TRACES = sorted((ROOT / "scenarios" / "traces").glob("*.kvtrace"))
QUIRK_TRACES = sorted((ROOT / "scenarios" / "traces-quirks").glob("*.kvtrace"))


@pytest.fixture(scope="module")
def bundled() -> dict[str, Counter]:
    return {path.stem: recorded_coverage(str(path)) for path in TRACES}


def _run(coverages: dict[str, Counter]) -> RunResult:
    traces = tuple(TraceResult(trace_path=f"{name}.kvtrace", trace_digest="sha256:0", num_calls=500,
                               num_tensors_compared=0, coverage=dict(counts))
                   for name, counts in coverages.items())
    return RunResult(created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), control_engine="legacy",
                     candidate_engine="refactored", manager_spec=None, tolerances={}, traces=traces)


def _criteria() -> PhaseCriteria:
    return PhaseCriteria(phase=2, name="validate", description="", control="legacy",
                         candidate="refactored", min_traces=1, min_calls=1,
                         required_paths=REQUIRED)


def _coverage_criterion(coverages: dict[str, Counter]):
    results = evaluate(_criteria(), _run(coverages), WaiverSet(()))
    return next(result for result in results if result.name == "path coverage")


def test_the_table_names_every_quirk_of_the_spec_once():
    quirks = [item.name for item in COVERAGE_TABLE if item.kind == "quirk"]
    assert quirks == [f"quirk-{n}" for n in range(1, 18)]
    assert len(set(COVERAGE_NAMES)) == len(COVERAGE_NAMES)
    assert FIXED == ("quirk-1",) and "quirk-1" not in REQUIRED
    assert {"quirk-2", "quirk-9", "quirk-14", "quirk-17", "trim_to_empty"} <= set(REQUIRED)


def test_the_bundled_clean_traces_exercise_every_required_path_and_quirk(bundled):
    total = Counter()
    for counts in bundled.values():
        total.update(counts)
    assert missing_required(total) == []
    assert _coverage_criterion(bundled).status == "pass"


@pytest.mark.parametrize("name", ["cartpole_partial_ready", "context_len3", "context_len2",
                                  "cartpole_env_restart", "cartpole_midpool_updates"])
def test_the_gate_fails_without_the_trace_that_alone_exercises_a_path_and_names_it(bundled, name):
    others = {other: counts for other, counts in bundled.items() if other != name}
    total = Counter()
    for counts in others.values():
        total.update(counts)
    missing = missing_required(total)
    assert missing, f"{name} should be the only trace exercising something"
    criterion = _coverage_criterion(others)
    assert criterion.status == "insufficient"
    assert criterion.observed == f"never exercised: {', '.join(missing)}"


def test_each_new_scenario_exercises_what_its_description_says(bundled):
    expect = {"cartpole_partial_ready": "quirk-9", "context_len3": "trim_to_empty",
              "context_len2": "store_skipped", "context_len7": "trim_context_odd",
              "context_len6": "trim_context_even", "cartpole_env_restart": "quirk-4",
              "cartpole_midpool_updates": "weights_between_searches",
              "cartpole_tiny_pools": "quirk-17"}
    for name, item in expect.items():
        assert bundled[name][item] > 0, (name, item)
    target = bundled["cartpole_target_reanalyze"]
    assert target["forced_miss"] == target["reanalyze"] == target["quirk-14"] == 0


def test_the_quirk_traces_show_quirk_1_where_the_clean_set_cannot_lose_a_lookup():
    for path in QUIRK_TRACES:
        assert recorded_coverage(str(path))["quirk-1"] > 0, path.name


def _recorded(call, events) -> RecordedCall:
    return RecordedCall(index=0, call=call, outputs={}, events=tuple(events))


def _recurrent(rows: int = 2) -> RecurrentCall:
    zeros = np.zeros(rows, dtype=np.int64)
    return RecurrentCall(np.zeros((rows, 4), dtype=np.float32), zeros, zeros, zeros, 0)


def test_a_stale_delete_counts_quirk_1_and_a_same_search_eviction_quirk_17():
    counter = CoverageCounter()
    store = lambda key, slot, evicted=None: Store(env=0, key=key, pool="recurrent", slot=slot,  # noqa: E731
                                                  evicted=evicted, size=3)
    counter.observe(_recorded(_recurrent(), []), [store(1, 0), store(1, 1)])
    counter.observe(_recorded(_recurrent(), []), [store(2, 0, evicted=1)])  # 1 lived at slot 1
    assert counter.counts["quirk-1"] == 1 and counter.counts["quirk-17"] == 1
    assert counter.counts["eviction"] == 1


def test_a_root_batch_of_unequal_sizes_and_fewer_rows_counts_quirks_4_5_6_9():
    root = RootCall(last_obs=np.zeros((3, 4), np.float32), last_actions=np.zeros(3, np.int64),
                    current_obs=np.zeros((2, 4), np.float32), start_pos=np.zeros(2, np.int64))
    events = [Lookup(env=0, key=1, path="root", hit=True, pool="root", size=5),
              Lookup(env=1, key=2, path="root", hit=False, pool=None, size=1),
              Trim(env=0, pool="root", size_before=7, size_after=0), Clear("recurrent", "after_root")]
    counts = Counter()
    coverage_of(_recorded(root, []), events, counts)
    assert {name: counts[name] for name in ("root_continuing", "quirk-4", "quirk-5", "quirk-6",
                                            "quirk-9", "quirk-7", "quirk-8", "trim_to_empty",
                                            "store_skipped", "clear_after_root")} == {
        "root_continuing": 1, "quirk-4": 1, "quirk-5": 1, "quirk-6": 1, "quirk-9": 1,
        "quirk-7": 1, "quirk-8": 1, "trim_to_empty": 1, "store_skipped": 1, "clear_after_root": 1}


def test_coverage_rows_list_the_whole_table_with_counts():
    rows = coverage_rows({"quirk-1": 4, "miss": 2})
    assert [row[0] for row in rows] == list(COVERAGE_NAMES)
    assert ("quirk-1", "quirk", "fixed", 4) in rows and ("miss", "path", "match", 2) in rows
