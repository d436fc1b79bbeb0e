"""Errors are results: an engine that raises is a divergence of class ``error``, never a crash
and never agreement; a replay of nothing is insufficient evidence; options that do not apply are
usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.recorder import TRACE_SCHEMA
from harness.trace import TraceWriter, open_trace
from test_cli import assert_bad_input, run_cli

SCENARIO = """\
name = "{name}"
description = "a short CartPole run for the errors-as-results tests"

[env]
id = "CartPole-v1"
env_num = 2
seeds = [11, 23]

[model]
embed_dim = 16
num_layers = 1
num_heads = 2
context_length = {context_length}
max_tokens = 20
num_simulations = 4
game_segment_length = 20
support_size = 5
weight_seed = 1

[search]
num_simulations = 4
temperature = 1.0
seed = 3

[run]
steps = 4
steps_per_round = 4
"""


def capture(folder: Path, name: str, context_length: int = 8) -> Path:
    scenario = folder / f"{name}.toml"
    scenario.write_text(SCENARIO.format(name=name, context_length=context_length))
    trace = folder / f"{name}.kvtrace"
    result = run_cli("capture", scenario, "-o", trace)
    assert result.code == 0, result.err
    return trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    return capture(tmp_path_factory.mktemp("errors"), "errors_short")


def compare_json(tmp_path: Path, *argv) -> tuple[int, str, dict]:
    report = tmp_path / "report.json"
    result = run_cli("compare", *argv, "--json", report)
    assert "Traceback" not in result.out + result.err
    return result.code, result.out, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.parametrize("control, candidate, kind, sides", [
    ("legacy", "faulty_models:RaiseOnRoot", "root",
     "control returned; candidate raised RuntimeError: root call refused on purpose"),
    ("legacy", "faulty_models:RaiseOnRecurrent", "recurrent",
     "control returned; candidate raised RuntimeError: recurrent call refused on purpose"),
    ("faulty_models:RaiseOnRecurrent", "legacy", "recurrent",
     "control raised RuntimeError: recurrent call refused on purpose; candidate returned"),
    ("faulty_models:RaiseOnRoot", "faulty_models:RaiseOnRoot", "root",
     "control raised RuntimeError: root call refused on purpose; "
     "candidate raised RuntimeError: root call refused on purpose"),
])
def test_an_engine_that_raises_is_an_error_divergence_and_exit_1(trace, tmp_path, control,
                                                                 candidate, kind, sides):
    code, out, report = compare_json(tmp_path, trace, "--control", control, "--candidate", candidate)
    assert code == 1, out
    first = report["traces"][0]["divergences"][0]
    assert (first["call_kind"], first["classification"]) == (kind, "error")
    assert first["engine_error"] == sides
    assert "RuntimeError" in out


def test_a_trace_of_zero_calls_is_insufficient_evidence(trace, tmp_path):
    with open_trace(trace) as reader:
        header = reader.header
    assert header["schema"] == TRACE_SCHEMA
    empty = tmp_path / "empty.kvtrace"
    with TraceWriter(empty, header):
        pass
    code, out, report = compare_json(tmp_path, empty)
    assert code == 3, out
    assert report["traces"][0]["num_calls"] == 0
    assert "EQUIVALENT" not in out


def test_manager_without_a_refactored_candidate_is_a_usage_error(trace):
    result = run_cli("compare", trace, "--candidate", "legacy",
                     "--manager", "refactored.kv_cache_manager:KVCacheManager")
    assert_bad_input(result, "--manager", "legacy")


def test_a_context_of_three_tokens_captures_and_compares(tmp_path):
    """The trim tables are empty at this length (zero-element tensors): no crash. The verdict
    itself is legacy's (quirk 1 evictions may diverge here: that is #13's cause attribution)."""
    short = capture(tmp_path, "context_3", context_length=3)
    code, out, report = compare_json(tmp_path, short)
    assert code in (0, 1), out
    assert report["traces"][0]["num_calls"] > 0


@pytest.mark.parametrize("spec, fragment", [
    ("faulty_models:NoSuchThing", "has no attribute"),
    ("no_such_module_xyz:Thing", "cannot import module"),
])
def test_a_candidate_that_cannot_be_loaded_is_one_line(trace, spec, fragment):
    assert_bad_input(run_cli("compare", trace, "--candidate", spec), spec, fragment)


def test_a_device_that_does_not_exist_is_one_line(trace):
    assert_bad_input(run_cli("compare", trace, "--device", "bogus"), "--device")
