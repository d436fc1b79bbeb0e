"""Per-call cache-decision counts (TraceResult.decisions): filled by the replay, kept in JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.calls import RootCall, call_from_record
from harness.recorder import TraceRecorder, make_header
from harness.replay import ReplayOptions, replay_trace
from harness.results import TraceResult
from harness.scenario import build_world_model_config, load_scenario, run_scenario
from harness.trace import TraceWriter, open_trace
from unizero.backends import build_world_model

SCENARIO = "scenarios/cartpole_small.toml"


@pytest.fixture(scope="module")
def short_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps of cartpole_small captured from the legacy world model."""
    scenario = load_scenario(SCENARIO).with_run(num_steps=4, num_episodes=None)
    model = build_world_model(build_world_model_config(scenario), "cpu", backend="legacy")
    path = tmp_path_factory.mktemp("decisions") / "short.kvtrace"
    header = make_header(model, engine="legacy", scenario={**scenario.to_dict(), "path": SCENARIO})
    with TraceWriter(path, header) as writer:
        run_scenario(scenario, TraceRecorder(model, writer))
    return path


def recorded_lookups(path: Path) -> tuple[list[tuple[int, int]], list[int]]:
    """Per call ``(hits, lookups)`` from the recorded events, and the first-step root calls."""
    counts, first_steps = [], []
    with open_trace(str(path)) as reader:
        for record in reader:
            lookups = [e for e in record.meta.get("events", []) if e["type"] == "lookup"]
            counts.append((sum(e["hit"] for e in lookups), len(lookups)))
            call = call_from_record(record.index, record.kind, record.meta, record.arrays,
                                    where=str(path))
            if isinstance(call.call, RootCall) and int(np.max(call.call.last_actions)) == -1:
                first_steps.append(record.index)
    return counts, first_steps


def test_replay_records_one_decision_count_per_call_equal_for_the_honest_candidate(short_trace):
    result = replay_trace(str(short_trace), ReplayOptions())
    recorded, first_steps = recorded_lookups(short_trace)
    assert len(result.decisions) == result.num_calls == len(recorded)
    assert [d[:2] for d in result.decisions] == recorded  # the legacy control replays its trace
    assert [d[2:] for d in result.decisions] == recorded
    assert first_steps and all(result.decisions[i] == (0, 0, 0, 0) for i in first_steps)
    assert sum(d[1] for d in result.decisions) > 0
    pool_hits = sum(s.num_hits for s in result.pool_stats if s.engine == "legacy")
    assert sum(d[0] for d in result.decisions) == pool_hits


def _trace(**fields) -> TraceResult:
    return TraceResult(trace_path="t.kvtrace", trace_digest="sha256:00", num_calls=3,
                       num_tensors_compared=0, **fields)


def test_decisions_round_trip_through_json_as_lists_of_four_ints():
    trace = _trace(decisions=((0, 0, 0, 0), (2, 2, 1, 2), (0, 3, 0, 3)))
    data = json.loads(json.dumps(trace.to_dict(), allow_nan=False))
    assert data["decisions"] == [[0, 0, 0, 0], [2, 2, 1, 2], [0, 3, 0, 3]]
    assert TraceResult.from_dict(data) == trace


def test_a_result_written_before_decisions_loads_with_none():
    data = _trace().to_dict()
    del data["decisions"]
    assert TraceResult.from_dict(data).decisions == ()


def test_a_decision_entry_of_the_wrong_length_is_refused_with_its_index():
    data = {**_trace().to_dict(), "decisions": [[0, 0, 0, 0], [1, 2, 1]]}
    with pytest.raises(ValueError, match=r"decisions\[1\].*got \[1, 2, 1\]"):
        TraceResult.from_dict(data)
