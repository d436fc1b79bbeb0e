"""``python -m harness capture | inspect | compare`` end to end (harness/cli.py, commands.py).

One short trace is captured per test session (8 CartPole steps, searches wider than the
recurrent pool, a weight update, reanalysis, periodic and episode-end clears) and reused;
under pytest-xdist the workers share it, and the other replays made once for several tests,
through a file lock in the session's tmp root. Most cases call ``harness.cli.main``
in-process; two run ``python -m harness`` as a real subprocess. Every compare writes its JSON
report under a tmp folder, never to ``reports/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import pytest
from filelock import FileLock  # a dependency of torch

from harness.cli import main
from harness.mutants import AliasingManager
from harness.fileio import file_digest
from harness.results import SCHEMA_VERSION
from harness.scenario import KNOWN_ENVS
from harness.trace import open_trace

REPO = Path(__file__).resolve().parents[1]
ALIASING = f"{AliasingManager.__module__}:{AliasingManager.__name__}"

# `steps = 60` is cut to 8 by `--steps 8`, which pins that the override is applied.
SCENARIO = """\
name = "cli_short"
description = "cartpole_small's model on a short, busy run"

[env]
id = "CartPole-v1"
env_num = 2
seeds = [11, 23]

[model]
embed_dim = 32
num_layers = 2
num_heads = 4
context_length = 8
max_tokens = 20
num_simulations = 8
game_segment_length = 20
support_size = 10
weight_seed = 1

[search]
num_simulations = 10
temperature = 1.0
seed = 3

[run]
steps = 60
steps_per_round = 4
clear_interval = 3
max_episode_steps = [5, 7]

[weights]
kind = "perturb"
every = 2
scale = 0.01
seed = 0

[reanalyze]
every = 2
num_simulations = 2
seed = 0
"""

WAIVER_COVERING_EVERYTHING = """\
[[waiver]]
id = "cover-all"
reason = "test: scoped to match every divergence of every trace"
expires = {expires}
trace = "*"
class = "any"
cap = "decision"
"""


@dataclass(frozen=True, slots=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: Any) -> CliResult:
    """``main(argv)`` in-process with stdout/stderr captured and a wide console."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": "200"}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


def run_subprocess(*argv: Any) -> CliResult:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "harness", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return CliResult(done.returncode, done.stdout, done.stderr)


def assert_bad_input(result: CliResult, *fragments: str) -> None:
    """Exit 2, exactly one stderr line starting with ``error:`` that names each fragment."""
    assert result.code == 2, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def trace_numbers(trace: dict[str, Any]) -> dict[str, Any]:
    """Everything a replay computes about a trace except wall times."""
    return {key: value for key, value in trace.items() if key not in ("timings", "trace_path")}


# --- the module's trace ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Captured:
    folder: Path
    scenario: Path
    trace: Path
    result: CliResult


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session sees (a private one without xdist)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return tmp_path_factory.mktemp("cli")
    folder = tmp_path_factory.getbasetemp().parent / "test_cli-shared"
    folder.mkdir(exist_ok=True)
    return folder


def once(folder: Path, name: str, produce: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``produce()``'s JSON-able result, computed by the first worker to ask, read by the rest."""
    with FileLock(str(folder / f"{name}.lock")):
        done = folder / f"{name}.json"
        if not done.exists():
            done.write_text(json.dumps(produce()), encoding="utf-8")
        return json.loads(done.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def captured(shared) -> Captured:
    scenario = shared / "cli_short.toml"
    trace = shared / "traces" / "short.kvtrace"

    def capture() -> dict[str, Any]:
        scenario.write_text(SCENARIO, encoding="utf-8")
        result = run_cli("capture", scenario, "-o", trace, "--steps", "8")
        assert result.code == 0, result.err
        return {"code": result.code, "out": result.out, "err": result.err}

    return Captured(shared, scenario, trace, CliResult(**once(shared, "capture", capture)))


@pytest.fixture(scope="module")
def trace_counts(captured) -> dict[str, Any]:
    """Call kinds, envs and cache event counts, counted here from the raw records."""
    calls, lookups, evictions, envs = Counter(), Counter(), Counter(), set()
    with open_trace(captured.trace, strict=True) as reader:
        for record in reader:
            calls[record.kind] += 1
            for event in record.meta["events"]:
                if event["type"] == "lookup":
                    envs.add(event["env"])
                    lookups[(event["path"], event["pool"] if event["hit"] else
                             "forced-miss" if event["forced"] else "miss")] += 1
                elif event["type"] == "store" and event["evicted"] is not None:
                    evictions[event["pool"]] += 1
        num_records = reader.num_records
    return {"calls": calls, "lookups": lookups, "evictions": evictions, "envs": envs,
            "num_records": num_records}


def compare(captured: Captured, tmp_path: Path, *argv: Any, traces: Any = None,
            report_name: str = "compare.json") -> tuple[CliResult, dict]:
    report = tmp_path / report_name
    targets = traces if traces is not None else [captured.trace]
    result = run_cli("compare", *targets, "--json", report, *argv)
    return result, (json.loads(report.read_text()) if report.exists() else {})


def compare_once(captured: Captured, name: str, *argv: Any, traces: Any = None
                 ) -> tuple[CliResult, dict]:
    """:func:`compare` run once per session for the tests that share its result."""
    def run() -> dict[str, Any]:
        result, report = compare(captured, captured.folder, *argv, traces=traces,
                                 report_name=f"{name}-report.json")
        return {"code": result.code, "out": result.out, "err": result.err, "report": report}

    done = once(captured.folder, name, run)
    return CliResult(done["code"], done["out"], done["err"]), done["report"]


# --- capture -----------------------------------------------------------------------------------

def test_capture_in_a_real_process_writes_the_trace_and_prints_its_summary(captured, tmp_path):
    trace = tmp_path / "new" / "two.kvtrace"
    result = run_subprocess("capture", captured.scenario, "-o", trace, "--steps", "2")
    assert result.code == 0 and result.err == "", result.err
    with open_trace(trace, strict=True) as reader:
        num_records = reader.num_records
    assert (f"wrote {trace}: {num_records} records, {trace.stat().st_size} bytes (2 steps, "
            f"0 episodes, 2 root + 20 recurrent calls)") == " ".join(result.out.split())


def test_capture_writes_a_trace_and_prints_its_summary(captured, trace_counts):
    out = captured.result.out
    match = re.search(r"wrote (\S+): (\d+) records, (\d+) bytes \((\d+) steps, (\d+) episodes, "
                      r"(\d+) root \+ (\d+) recurrent calls\)", " ".join(out.split()))
    assert match, out
    path, records, size, steps = match.group(1), *map(int, match.groups()[1:4])
    assert Path(path) == captured.trace
    assert records == trace_counts["num_records"]
    assert size == captured.trace.stat().st_size
    assert steps == 8
    assert int(match.group(6)) == trace_counts["calls"]["root"]
    assert int(match.group(7)) == trace_counts["calls"]["recurrent"]
    assert not Path(f"{captured.trace}.partial").exists()
    assert captured.result.err == ""


def test_capture_records_the_step_override_and_the_scenario_path_in_the_header(captured):
    with open_trace(captured.trace) as reader:
        scenario = reader.header["scenario"]
    assert scenario["run"]["num_steps"] == 8 and scenario["run"]["num_episodes"] is None
    assert scenario["path"] == str(captured.scenario)
    assert scenario["name"] == "cli_short"


@pytest.mark.parametrize("edit, fragments", [
    (("embed_dim = 32", 'embed_dim = "big"'), ("embed_dim",)),
    (("steps_per_round = 4", "steps_per_round = 0"), ("[run].steps_per_round", "positive integer")),
    (("clear_interval = 3", "clear_intervall = 3"), ("[run]", "clear_intervall")),
])
def test_capture_rejects_a_bad_scenario_field_naming_it(tmp_path, edit, fragments):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(SCENARIO.replace(*edit), encoding="utf-8")
    output = tmp_path / "bad.kvtrace"
    assert_bad_input(run_cli("capture", scenario, "-o", output), str(scenario), *fragments)
    assert not output.exists() and not Path(f"{output}.partial").exists()


def test_capture_rejects_an_unknown_gym_env_listing_the_known_ones(tmp_path):
    scenario = tmp_path / "pong.toml"
    scenario.write_text(SCENARIO.replace("CartPole-v1", "Pong-v5"), encoding="utf-8")
    assert_bad_input(run_cli("capture", scenario, "-o", tmp_path / "x.kvtrace"),
                     "[env].id", "Pong-v5", *KNOWN_ENVS)


def test_capture_rejects_an_unknown_engine_naming_the_known_ones(captured, tmp_path):
    result = run_cli("capture", captured.scenario, "-o", tmp_path / "x.kvtrace", "--engine", "nope")
    assert_bad_input(result, "'nope'", "legacy", "refactored")


def test_capture_rejects_a_missing_scenario_file_and_a_non_positive_step_count(captured, tmp_path):
    assert_bad_input(run_cli("capture", tmp_path / "none.toml", "-o", tmp_path / "x.kvtrace"),
                     "none.toml")
    assert_bad_input(run_cli("capture", captured.scenario, "-o", tmp_path / "x.kvtrace",
                             "--steps", "0"), "--steps")


# --- inspect -----------------------------------------------------------------------------------

def _row(out: str, label: str) -> int:
    match = re.search(rf"│ {re.escape(label)}\s*│\s*(\d+) │", out)
    assert match, f"no row {label!r} in\n{out}"
    return int(match.group(1))


def test_inspect_prints_calls_by_kind_envs_cache_counts_and_size_on_disk(captured, trace_counts):
    result = run_cli("inspect", captured.trace)
    assert result.code == 0 and result.err == ""
    assert f"{captured.trace.stat().st_size} bytes on disk" in result.out
    assert f"{trace_counts['num_records']} records" in result.out
    assert "envs seen: [0, 1]" in result.out and trace_counts["envs"] == {0, 1}
    assert "scenario cli_short (CartPole-v1, seeds [11, 23])" in result.out
    for kind in ("weights", "root", "recurrent", "clear", "reanalyze"):
        assert _row(result.out, f"call {kind}") == trace_counts["calls"][kind] > 0
    lookups = trace_counts["lookups"]
    assert _row(result.out, "root lookup: hit root") == lookups[("root", "root")] > 0
    assert _row(result.out, "root lookup: miss") == lookups[("root", "miss")] > 0
    assert _row(result.out, "recurrent lookup: hit recurrent") == \
        lookups[("recurrent", "recurrent")] > 0
    assert _row(result.out, "recurrent lookup: forced-miss") == \
        lookups[("recurrent", "forced-miss")] > 0
    assert _row(result.out, "eviction recurrent") == trace_counts["evictions"]["recurrent"] > 0
    assert "note:" not in result.out


def test_inspect_of_a_truncated_trace_counts_the_prefix_and_notes_the_cut(captured, tmp_path):
    cut = tmp_path / "cut.kvtrace"
    data = captured.trace.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    result = run_cli("inspect", cut)
    assert result.code == 0
    assert re.search(r"note: .*cut after record \d+", " ".join(result.out.split()))


# --- compare: verdicts and the JSON report -----------------------------------------------------

def test_compare_of_the_captured_trace_is_equivalent_and_writes_the_json_report(captured, tmp_path,
                                                                               trace_counts):
    result, report = compare(captured, tmp_path)
    assert result.code == 0, result.out + result.err
    assert "EQUIVALENT: 1 trace(s)" in result.out
    assert report["schema_version"] == SCHEMA_VERSION == "kvmigrate.compare/1"
    assert (report["control_engine"], report["candidate_engine"]) == ("legacy", "refactored")
    assert report["ok"] is True and report["exit_code"] == 0 and report["manager_spec"] is None
    (trace,) = report["traces"]
    calls = trace_counts["calls"]
    assert trace["trace_path"] == str(captured.trace)
    assert trace["trace_digest"] == file_digest(str(captured.trace))
    assert trace["num_calls"] == trace_counts["num_records"] == len(trace["max_errors"])
    assert trace["num_tensors_compared"] == 4 * (calls["root"] + calls["recurrent"])
    assert trace["divergences"] == [] and trace["first_divergence_call"] is None
    assert trace["num_unwaived_calls"] == 0 and trace["notes"] == []
    assert trace["coverage"]["weights_update"] == calls["weights"] - 1
    assert trace["coverage"]["eviction"] == trace_counts["evictions"]["recurrent"]
    assert {(p["engine"], p["pool"]) for p in trace["pool_stats"]} == {
        (engine, pool) for engine in ("legacy", "refactored") for pool in ("root", "recurrent")}
    assert {(t["engine"], t["call_kind"]) for t in trace["timings"]} == {
        (engine, kind) for engine in ("legacy", "refactored") for kind in calls}


def test_self_check_replays_the_control_twice_with_a_noise_floor_of_zero(captured, tmp_path):
    result, report = compare(captured, tmp_path, "--self-check")
    assert result.code == 0, result.out + result.err
    (trace,) = report["traces"]
    assert trace["self_check"] is True and trace["noise_floor"] == 0.0
    assert trace["divergences"] == []
    assert report["control_engine"] == "legacy"
    assert {t["engine"] for t in trace["timings"]} == {"legacy", "legacy#2"}
    assert "noise floor (max |a-e| on equal tensors) = 0.0" in result.out


def test_refactored_matches_the_outputs_recorded_in_the_trace(captured, tmp_path):
    result, report = compare(captured, tmp_path, "--control", "golden")
    assert result.code == 0, result.out + result.err
    assert report["control_engine"] == "golden" and report["traces"][0]["divergences"] == []


@pytest.fixture(scope="module")
def aliasing_run(captured, tmp_path_factory) -> tuple[CliResult, dict]:
    """The aliasing mutant as candidate, under a waiver that would cover it but has expired."""
    waivers = tmp_path_factory.mktemp("aliasing") / "expired.toml"
    waivers.write_text(WAIVER_COVERING_EVERYTHING.format(expires="2020-01-31"), encoding="utf-8")
    return compare_once(captured, "aliasing", "--candidate", "refactored", "--manager", ALIASING,
                        "--waivers", waivers)


def test_an_aliasing_manager_diverges_and_the_report_names_the_first_divergence(aliasing_run):
    result, report = aliasing_run
    assert result.code == 1, result.out + result.err
    assert report["ok"] is False and report["exit_code"] == 1
    assert report["manager_spec"] == ALIASING
    (trace,) = report["traces"]
    first = trace["divergences"][0]
    assert trace["first_divergence_call"] == first["call_index"]
    # Records: 0 initial weights, 1 root, 2 simulation 0 (reads the root entry, stores its
    # result), 3 simulation 1: the first read of an entry stored through the shared scratch.
    assert (first["call_index"], first["call_kind"], first["classification"]) == (3, "recurrent",
                                                                                   "both")
    assert first["env_ids"] == [0, 1]
    assert [d["path"] for d in first["tensor_divergences"]] == [
        "latent", "policy_logits", "reward_logits", "value_logits"]
    assert all(d["kind"] == "value" and d["num_mismatched"] == d["num_elements"] > 0
               for d in first["tensor_divergences"])
    assert first["event_divergence"]["summary"].startswith("env 0 lookup key 0x")
    assert trace["num_unwaived_calls"] == len(trace["divergences"]) > 1
    flat = " ".join(result.out.split())
    assert "FIRST both divergence, call 3 (recurrent)" in flat
    assert "DIVERGED:" in flat


def test_an_expired_waiver_that_would_match_waives_nothing(aliasing_run):
    _, report = aliasing_run
    divergences = report["traces"][0]["divergences"]
    assert divergences and all(not d["waived"] and d["waiver_id"] is None for d in divergences)


def test_a_live_waiver_that_matches_waives_every_divergence(captured, tmp_path, aliasing_run):
    waivers = tmp_path / "live.toml"
    waivers.write_text(WAIVER_COVERING_EVERYTHING.format(expires="2999-12-31"), encoding="utf-8")
    result, report = compare(captured, tmp_path, "--manager", ALIASING, "--waivers", waivers)
    assert result.code == 0, result.out + result.err
    trace = report["traces"][0]
    expired_trace = aliasing_run[1]["traces"][0]
    assert [d["call_index"] for d in trace["divergences"]] == [
        d["call_index"] for d in expired_trace["divergences"]]
    assert all(d["waiver_id"] == "cover-all" for d in trace["divergences"])
    assert trace["num_unwaived_calls"] == 0


def test_a_waiver_file_with_an_unknown_field_is_bad_input(captured, tmp_path):
    waivers = tmp_path / "typo.toml"
    waivers.write_text(WAIVER_COVERING_EVERYTHING.format(expires="2999-12-31") + 'scope = "all"\n',
                       encoding="utf-8")
    assert_bad_input(compare(captured, tmp_path, "--waivers", waivers)[0], "typo.toml", "scope")


# --- compare: tolerances -----------------------------------------------------------------------

def test_tol_and_nan_options_reach_the_policy_the_report_records(captured, tmp_path):
    result, report = compare(captured, tmp_path, "--control", "golden", "--tol", "latent=0,0",
                             "--tol", "kv.*=1e-4,1e-5", "--nan", "fail")
    assert result.code == 0, result.out + result.err
    assert report["tolerances"] == {"nan": "fail", "paths": {
        "latent": {"rtol": 0.0, "atol": 0.0}, "kv.*": {"rtol": 1e-4, "atol": 1e-5}}}


def test_a_tolerances_file_is_read_and_tol_options_override_it(captured, tmp_path):
    tolerances = tmp_path / "tolerances.toml"
    tolerances.write_text('nan = "fail"\n[paths]\nlatent = "1e-3,1e-4"\n'
                          'policy_logits = { rtol = 1e-5, atol = 1e-6 }\n', encoding="utf-8")
    result, report = compare(captured, tmp_path, "--control", "golden", "--tolerances", tolerances,
                             "--tol", "latent=0,0")
    assert result.code == 0, result.out + result.err
    assert report["tolerances"] == {"nan": "fail", "paths": {
        "policy_logits": {"rtol": 1e-5, "atol": 1e-6}, "latent": {"rtol": 0.0, "atol": 0.0}}}


@pytest.mark.parametrize("value", ["latent=abc", "latent", "latent=1e-5", "latent=1,2,3",
                                   "latent=-1,0", "=1e-5,1e-6", "latent=nan,0"])
def test_a_bad_tol_value_is_bad_input(captured, tmp_path, value):
    assert_bad_input(compare(captured, tmp_path, "--tol", value)[0], "--tol")


@pytest.mark.parametrize("text, fragments", [
    ("nan = \n", ("not valid TOML",)),
    ("nan = \"sometimes\"\n", ("nan: ", "sometimes")),
    ("[pathz]\nlatent = \"1,1\"\n", ("pathz",)),
    ("[paths]\nlatent = \"1;1\"\n", ("latent",)),
])
def test_a_malformed_tolerances_file_is_bad_input_naming_the_file(captured, tmp_path, text,
                                                                  fragments):
    tolerances = tmp_path / "tolerances.toml"
    tolerances.write_text(text, encoding="utf-8")
    result = compare(captured, tmp_path, "--tolerances", tolerances)[0]
    assert_bad_input(result, str(tolerances), *fragments)


def test_a_missing_tolerances_file_is_bad_input(captured, tmp_path):
    assert_bad_input(compare(captured, tmp_path, "--tolerances", tmp_path / "none.toml")[0],
                     "none.toml")


# --- compare: several traces, shards and processes ---------------------------------------------

@pytest.fixture(scope="module")
def two_traces(captured) -> tuple[Path, dict]:
    """A folder with two copies of the trace, and the serial compare of both."""
    folder = captured.folder / "two"
    with FileLock(str(captured.folder / "two.lock")):
        if not folder.exists():
            folder.mkdir()
            for name in ("a.kvtrace", "b.kvtrace"):
                shutil.copyfile(captured.trace, folder / name)
    result, report = compare_once(captured, "serial", traces=[folder])
    assert result.code == 0, result.out + result.err
    return folder, report


def test_a_folder_expands_to_its_traces_in_name_order(two_traces):
    folder, report = two_traces
    assert [t["trace_path"] for t in report["traces"]] == [str(folder / "a.kvtrace"),
                                                           str(folder / "b.kvtrace")]
    first, second = (trace_numbers(t) for t in report["traces"])
    assert first == second


def test_two_jobs_give_the_same_per_trace_numbers_as_a_serial_run(captured, two_traces, tmp_path):
    folder, serial = two_traces
    result, parallel = compare(captured, tmp_path, "-j", "2", traces=[folder])
    assert result.code == 0, result.out + result.err
    assert [t["trace_path"] for t in parallel["traces"]] == \
        [t["trace_path"] for t in serial["traces"]]
    assert [trace_numbers(t) for t in parallel["traces"]] == \
        [trace_numbers(t) for t in serial["traces"]]


@pytest.mark.parametrize("shard, index", [("1/2", 0), ("2/2", 1)])
def test_a_shard_replays_its_deterministic_subset(captured, two_traces, tmp_path, shard, index):
    folder, serial = two_traces
    # Given in reverse order: the split is over the sorted list, whatever the argument order.
    # The recorded outputs on both sides keep this a test of selection, not of replay.
    result, report = compare(captured, tmp_path, "--shard", shard, "--control", "golden",
                             "--candidate", "golden",
                             traces=[folder / "b.kvtrace", folder / "a.kvtrace"])
    assert result.code == 0, result.out + result.err
    (trace,) = report["traces"]
    assert trace["trace_path"] == serial["traces"][index]["trace_path"]
    assert trace["trace_digest"] == serial["traces"][index]["trace_digest"]
    assert trace["num_calls"] == serial["traces"][index]["num_calls"]


@pytest.mark.parametrize("shard", ["0/2", "3/2", "1/0", "x", "1/2/3", "-1/2", "a/b"])
def test_a_bad_shard_is_bad_input(captured, tmp_path, shard):
    assert_bad_input(compare(captured, tmp_path, f"--shard={shard}")[0], "--shard")


# --- compare: bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["--control", "--candidate"])
def test_an_unknown_engine_is_bad_input_naming_the_known_ones(captured, tmp_path, role):
    result, report = compare(captured, tmp_path, role, "nope")
    assert_bad_input(result, "'nope'", "legacy", "refactored", "golden")
    assert report == {}


def test_an_unimportable_manager_is_bad_input(captured, tmp_path):
    assert_bad_input(compare(captured, tmp_path, "--manager", "no_such_module:Manager")[0],
                     "no_such_module")


def _flip_middle_byte(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _pickle(target: Path) -> None:
    import pickle
    target.write_bytes(pickle.dumps({"records": [1, 2, 3]}))


@pytest.mark.parametrize("make, fragments", [
    (lambda src, dst: None, ("no such trace file",)),
    (lambda src, dst: dst.write_bytes(b""), ("empty file",)),
    (_flip_middle_byte, ("record", "corrupt")),
    (lambda src, dst: _pickle(dst), ("pickle", "never unpickled")),
    (lambda src, dst: dst.write_bytes(src.read_bytes()[:20]), ("header",)),
], ids=["missing", "empty", "corrupt", "pickle", "cut-in-header"])
def test_an_unreadable_trace_is_bad_input_on_one_line(captured, tmp_path, make, fragments):
    bad = tmp_path / "bad.kvtrace"
    make(captured.trace, bad)
    result, report = compare(captured, tmp_path, traces=[bad])
    assert_bad_input(result, str(bad), *fragments)
    assert report == {}


def test_a_folder_without_traces_is_bad_input(captured, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert_bad_input(compare(captured, tmp_path, traces=[empty])[0], "no traces found", str(empty))


def test_a_corrupt_trace_exits_2_with_one_line_and_no_traceback_from_a_real_process(captured,
                                                                                    tmp_path):
    bad = tmp_path / "corrupt.kvtrace"
    _flip_middle_byte(captured.trace, bad)
    report = tmp_path / "compare.json"
    result = run_subprocess("compare", bad, "--json", report)
    assert_bad_input(result, str(bad), "corrupt")
    assert not report.exists()


def test_a_truncated_trace_is_compared_on_its_prefix_and_the_cut_is_noted(captured, tmp_path):
    cut = tmp_path / "cut.kvtrace"
    data = captured.trace.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with open_trace(cut) as reader:
        complete = reader.num_records
    result, report = compare(captured, tmp_path, traces=[cut])
    # Current behaviour: the complete records are replayed, the verdict is on them alone (exit 0)
    # and the cut is reported as a note, on the console and in the JSON.
    assert result.code == 0, result.out + result.err
    (trace,) = report["traces"]
    assert 0 < trace["num_calls"] == complete
    (note,) = trace["notes"]
    assert f"({complete} complete records" in note and "the capture did not finish" in note
    assert "note: " + note in " ".join(result.out.split())


# --- usage -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["compare", "--nan", "sometimes"], ["frobnicate"],
                                  ["compare", "-j", "many"]])
def test_usage_errors_exit_2_without_a_traceback(argv):
    result = run_cli(*argv)
    assert result.code == 2
    assert "Traceback" not in result.err and "error:" in result.err


def test_usage_errors_are_one_error_line():
    assert_bad_input(run_cli("compare", "--nan", "sometimes"), "--nan")


def test_a_non_positive_job_count_is_bad_input(captured, tmp_path):
    assert_bad_input(compare(captured, tmp_path, "-j", "0")[0], "--jobs")
