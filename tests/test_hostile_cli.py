"""Hostile inputs through the command line, end to end: one line on stderr, exit 2, nothing run,
nothing overwritten. The data-layer cases (trace frames, sizes, TOML/JSON text, schemas) are in
test_hostile_trace.py, test_hostile_inputs.py and test_hostile_files.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.trace import TraceWriter, open_trace
from test_cli import assert_bad_input, run_cli

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "scenarios" / "traces" / "cartpole_twin_envs.kvtrace"


def rewrite(path: Path, *, header_changes: dict | None = None, record: int | None = None,
            meta_changes: dict | None = None, num_records: int = 6) -> Path:
    """A copy of the first records of a bundled trace, with valid checksums, edited as asked."""
    with open_trace(SOURCE) as reader:
        header = {**reader.header, **(header_changes or {})}
        records = [(r.kind, dict(r.meta), r.arrays) for _, r in zip(range(num_records), reader)]
    with TraceWriter(path, header) as writer:
        for index, (kind, meta, arrays) in enumerate(records):
            if index == record:
                meta = {**meta, **(meta_changes or {})}
            writer.append(kind, meta, arrays)
    return path


def test_a_manager_class_named_in_a_trace_header_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_plugin.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nclass Manager: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with open_trace(SOURCE) as reader:
        config = {**reader.header["config"], "cache_manager_class": "evil_plugin:Manager"}
    trace = rewrite(tmp_path / "t.kvtrace", header_changes={"config": config})
    result = run_cli("compare", trace, "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    assert not marker.exists() and "evil_plugin" not in sys.modules


@pytest.mark.parametrize("meta, fragment", [
    ({"events": [{"type": "lookup"}, 5]}, "malformed record"),
    ({"inputs": {"simulation_index": float("inf")}}, "simulation_index"),
    ({"inputs": {"simulation_index": "7"}}, "simulation_index"),
    ({"inputs": {"simulation_index": 0, "latent_source": [[99, 0], [0, 0]]}}, "latent_source"),
])
@pytest.mark.parametrize("command", ["inspect", "compare"])
def test_a_malformed_recurrent_record_is_one_line(tmp_path, meta, fragment, command):
    trace = rewrite(tmp_path / "t.kvtrace", record=2, meta_changes=meta)
    argv = [command, trace] + (["--json", tmp_path / "r.json"] if command == "compare" else [])
    assert_bad_input(run_cli(*argv), "record 2", fragment)


@pytest.mark.parametrize("header_changes", [{"scenario": 5}, {"scenario": {"env": [1]}},
                                            {"engine": {"x": 1}}])
def test_inspect_shows_odd_header_fields_without_failing(tmp_path, header_changes):
    trace = rewrite(tmp_path / "t.kvtrace", header_changes=header_changes)
    result = run_cli("inspect", trace)
    assert result.code == 0, result.err


@pytest.mark.parametrize("source, fragment", [
    ("raise RuntimeError('boom at import')\n", "could not load plugin"),
    ("def broken(:\n", "could not load plugin"),
])
def test_a_plugin_that_fails_to_import_is_one_line(tmp_path, monkeypatch, source, fragment):
    (tmp_path / "bad_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    for option in ("--candidate", "--manager"):
        assert_bad_input(run_cli("compare", SOURCE, option, "bad_plugin:Thing", "--json",
                                 tmp_path / "r.json"), "bad_plugin", fragment)
    sys.modules.pop("bad_plugin", None)


def test_a_manager_that_is_not_a_class_is_one_line(tmp_path):
    assert_bad_input(run_cli("compare", SOURCE, "--manager", "harness.paths:ROOT", "--json",
                             tmp_path / "r.json"), "is not a class")


@pytest.mark.parametrize("argv, fragment", [
    (["live", "scenarios/cartpole_small.toml", "--overhead-budget", "nan"], "--overhead-budget"),
    (["compare", str(SOURCE), "--device", "bogus"], "--device"),
    (["compare", str(SOURCE), "--shard", "1/0"], "--shard"),
    (["compare", str(SOURCE), "--limit", "max_embed_dim=lots"], "--limit"),
])
def test_bad_option_values_are_one_line(argv, fragment):
    assert_bad_input(run_cli(*argv), fragment)


def test_merge_refuses_one_shard_of_two(tmp_path):
    traces = [SOURCE, REPO / "scenarios" / "traces" / "context_len3.kvtrace"]
    report = tmp_path / "shard1.json"
    assert run_cli("compare", *traces, "--shard", "1/2", "--json", report).code == 0
    assert json.loads(report.read_text())["shard"]["count"] == 2
    assert_bad_input(run_cli("merge", report, "-o", tmp_path / "merged.json"),
                     "incomplete shard set", "missing 2/2")


def test_compare_never_overwrites_its_trace_with_the_report(tmp_path):
    trace = tmp_path / "t.kvtrace"
    trace.write_bytes(SOURCE.read_bytes())
    assert_bad_input(run_cli("compare", trace, "--json", trace), "would overwrite the input")
    assert trace.read_bytes() == SOURCE.read_bytes()


def test_capture_never_overwrites_its_scenario(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text((REPO / "scenarios" / "cartpole_small.toml").read_text())
    before = scenario.read_bytes()
    assert_bad_input(run_cli("capture", scenario, "-o", scenario), "would overwrite the input")
    assert scenario.read_bytes() == before


def test_a_root_record_with_empty_last_actions_is_one_line(tmp_path):
    with open_trace(SOURCE) as reader:
        header = reader.header
        records = [(r.kind, r.meta, dict(r.arrays)) for _, r in zip(range(3), reader)]
    kind, meta, arrays = records[1]
    assert kind == "root"
    arrays["in/last_actions"] = arrays["in/last_actions"][:0]
    trace = tmp_path / "t.kvtrace"
    with TraceWriter(trace, header) as writer:
        for index, (k, m, a) in enumerate(records):
            writer.append(k, m, arrays if index == 1 else a)
    assert_bad_input(run_cli("compare", trace, "--json", tmp_path / "r.json"),
                     "record 1", "last_actions")


def test_merging_20k_traces_is_linear():
    """v0.1 counted duplicates with list.count per trace: minutes for 20k traces."""
    import time
    from datetime import datetime, timezone

    from harness.results import RunResult, ShardInfo, TraceResult
    from harness.run import merge_runs

    def shard(index: int) -> RunResult:
        traces = tuple(TraceResult(trace_path=f"t{index}-{i:05d}.kvtrace",
                                   trace_digest="sha256:0", num_calls=1,
                                   num_tensors_compared=4) for i in range(10_000))
        return RunResult(created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                         control_engine="legacy", candidate_engine="refactored",
                         manager_spec=None, tolerances={}, traces=traces,
                         shard=ShardInfo(index, 2, "sha256:set"))
    runs = [shard(0), shard(1)]
    start = time.perf_counter()
    merged = merge_runs(runs, ["a.json", "b.json"])
    assert len(merged.traces) == 20_000
    assert time.perf_counter() - start < 10.0  # about 0.1 s; quadratic took minutes
