"""The rollout gate: criteria config, each criterion, the exit codes and the sign-off."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from harness import exit_codes
from harness.cli import main
from harness.gate import (GateConfigError, GateResult, PhaseCriteria, evaluate, load_gate_config,
                          measured_speedup)
from harness.results import (CallComparison, EngineTiming, EventDivergence, RunResult,
                             TensorDivergence, TraceResult)
from harness.waivers import Waiver, WaiverSet

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "cartpole_pool_pressure.toml"
TODAY = dt.date(2026, 6, 1)
CRITERIA = PhaseCriteria(phase=2, name="validate", description="", control="legacy",
                         candidate="refactored", min_traces=1, min_calls=10,
                         required_paths=("miss", "trim"), max_unwaived_divergences=0,
                         max_engine_errors=0, min_speedup=0.5)

FAULTY_MODULE = '''
from refactored.kv_cache_manager import KVCacheManager
from refactored.world_model import RefactoredWorldModel


class NoRecurrentFallback(KVCacheManager):
    def hierarchical_get(self, env_id, cache_key):
        entry = self.get_init_cache(env_id, cache_key)
        return (entry, "root") if entry is not None else (None, None)


def faulty(config, device="cpu"):
    return RefactoredWorldModel(config, device, manager_cls=NoRecurrentFallback)
'''


# ---------------------------------------------------------------- factories
def timings(control_s: float = 1.0, candidate_s: float = 1.0) -> tuple[EngineTiming, ...]:
    return (EngineTiming("legacy", "recurrent", 10, control_s / 10, control_s / 10, control_s),
            EngineTiming("refactored", "recurrent", 10, candidate_s / 10, candidate_s / 10,
                         candidate_s))


def decision(call_index: int, trace: str = "a.kvtrace") -> CallComparison:
    event = EventDivergence(summary="env 0 lookup: control hit, candidate miss", first_index=0,
                            num_control_events=1, num_candidate_events=1, deepdiff={})
    return CallComparison(trace=trace, call_index=call_index, call_kind="recurrent",
                          env_ids=(0,), event_divergence=event)


def tensor(call_index: int, max_abs_err: float, trace: str = "a.kvtrace") -> CallComparison:
    div = TensorDivergence(path="latent", kind="value", actual_dtype="float32",
                           expected_dtype="float32", actual_shape=(2, 4), expected_shape=(2, 4),
                           rtol=1e-5, atol=1e-6, num_mismatched=1, num_elements=8,
                           max_abs_err=max_abs_err)
    return CallComparison(trace=trace, call_index=call_index, call_kind="recurrent",
                          env_ids=(0, 1), tensor_divergences=(div,))


def trace(num_calls: int = 50, coverage: dict | None = None, divergences: tuple = (),
          path: str = "a.kvtrace", control_s: float = 1.0, candidate_s: float = 1.0) -> TraceResult:
    return TraceResult(trace_path=path, trace_digest="sha256:00", num_calls=num_calls,
                       num_tensors_compared=4 * num_calls, divergences=divergences,
                       timings=timings(control_s, candidate_s),
                       coverage={"miss": 3, "trim": 5} if coverage is None else coverage,
                       num_unwaived_calls=sum(not c.waived for c in divergences))


def run(*traces: TraceResult, control: str = "legacy") -> RunResult:
    return RunResult(created_at=dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc),
                     control_engine=control, candidate_engine="refactored", manager_spec=None,
                     tolerances={}, traces=traces)


def waiver(id: str = "w1", expires: dt.date = dt.date(2027, 1, 1), **scope) -> Waiver:
    return Waiver(id=id, reason="test", expires=expires, **scope)


def judged(criteria: PhaseCriteria, result: RunResult, waivers: tuple = (),
           producers: dict | None = None) -> GateResult:
    waiver_set = WaiverSet(waivers, today=TODAY)
    judged_run = dataclasses.replace(result, traces=tuple(
        dataclasses.replace(t, divergences=tuple(waiver_set.judge(c) for c in t.divergences),
                            num_unwaived_calls=sum(not waiver_set.judge(c).waived
                                                   for c in t.divergences))
        for t in result.traces))
    return GateResult(criteria=criteria, results=evaluate(criteria, judged_run, waiver_set, producers),
                      run=judged_run, inputs={}, waivers={}, versions={})


def status(result: GateResult, name: str) -> str:
    return next(r.status for r in result.results if r.name == name)


def observed(result: GateResult, name: str) -> str:
    return next(r.observed for r in result.results if r.name == name)


# ---------------------------------------------------------------- config
def test_bundled_config_defines_three_phases_with_their_controls():
    phases = load_gate_config()
    assert sorted(phases) == [1, 2, 3]
    assert (phases[1].control, phases[1].max_unwaived_divergences) == ("legacy", None)
    assert (phases[2].max_unwaived_divergences, phases[2].min_speedup) == (0, 0.5)
    assert (phases[3].control, phases[3].trace_producer, phases[3].max_active_waivers) == \
        ("golden", "legacy", 0)
    assert "eviction" in phases[2].required_paths and "weights_update" in phases[3].required_paths


@pytest.mark.parametrize("body, message", [
    ("min_traces = 0", "[phase.2]: min_traces: expected `int` >= 1"),
    ("min_calls = 0", "[phase.2]: min_calls: expected `int` >= 1"),
    ("min_speedup = -1", "[phase.2]: min_speedup: expected `float` > 0.0"),
    ("max_unwaived = 0", "[phase.2]: object contains unknown field `max_unwaived`"),
    ("required_paths = ['tlb_miss']", "required_paths: expected names from"),
])
def test_config_rejects_a_bad_value_naming_the_key(tmp_path, body, message):
    base = {"name": '"x"', "control": '"legacy"', "candidate": '"refactored"', "min_traces": "1",
            "min_calls": "1", "required_paths": "[]"}
    key = body.split(" =")[0]
    lines = [f"{k} = {v}" for k, v in base.items() if k != key] + [body]
    path = tmp_path / "gate.toml"
    path.write_text("[phase.2]\n" + "\n".join(lines) + "\n")
    with pytest.raises(GateConfigError) as excinfo:
        load_gate_config(path)
    assert message in str(excinfo.value)


def test_config_rejects_a_speedup_floor_against_the_golden_control(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text('[phase.3]\nname = "switch"\ncontrol = "golden"\ncandidate = "refactored"\n'
                    'min_traces = 1\nmin_calls = 1\nrequired_paths = []\nmin_speedup = 0.5\n')
    with pytest.raises(GateConfigError, match="golden"):
        load_gate_config(path)


def test_config_rejects_an_unknown_phase(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text('[phase.4]\nname = "x"\n')
    with pytest.raises(GateConfigError, match=r"\[phase.4\]: expected a phase in \[1, 2, 3\]"):
        load_gate_config(path)


# ---------------------------------------------------------------- criteria
def test_gate_passes_when_every_criterion_holds():
    result = judged(CRITERIA, run(trace()))
    assert result.exit_code == exit_codes.OK and result.verdict == "PASS"
    assert {r.status for r in result.results} <= {"pass", "info"}


def test_gate_never_passes_on_nothing():
    result = judged(CRITERIA, run())
    assert result.exit_code == exit_codes.INSUFFICIENT_EVIDENCE
    assert (status(result, "traces"), status(result, "calls")) == ("insufficient", "insufficient")


def test_too_few_calls_is_insufficient_evidence():
    result = judged(CRITERIA, run(trace(num_calls=9)))
    assert status(result, "calls") == "insufficient"
    assert result.exit_code == exit_codes.INSUFFICIENT_EVIDENCE


def test_a_path_never_exercised_is_insufficient_evidence_and_named():
    result = judged(CRITERIA, run(trace(coverage={"trim": 5, "miss": 0})))
    assert status(result, "path coverage") == "insufficient"
    assert observed(result, "path coverage") == "never exercised: miss"
    assert result.exit_code == exit_codes.INSUFFICIENT_EVIDENCE


def test_coverage_is_summed_over_traces():
    result = judged(CRITERIA, run(trace(coverage={"miss": 1}, path="a"),
                                  trace(coverage={"trim": 2}, path="b")))
    assert status(result, "path coverage") == "pass"


def test_unwaived_divergence_fails_and_outranks_missing_evidence():
    result = judged(CRITERIA, run(trace(num_calls=5, divergences=(decision(3),))))
    assert status(result, "unwaived divergences") == "fail"
    assert observed(result, "unwaived divergences") == "1 (first: a.kvtrace call 3)"
    assert result.exit_code == exit_codes.DIVERGENCE


def test_waived_divergence_passes():
    result = judged(CRITERIA, run(trace(divergences=(decision(3),))),
                    waivers=(waiver(call_kind="recurrent"),))
    assert status(result, "unwaived divergences") == "pass"
    assert result.exit_code == exit_codes.OK


def test_divergences_are_reported_not_gated_when_the_phase_does_not_limit_them():
    shadow = dataclasses.replace(CRITERIA, phase=1, max_unwaived_divergences=None)
    result = judged(shadow, run(trace(divergences=(decision(3),))))
    assert status(result, "unwaived divergences") == "info"
    assert result.exit_code == exit_codes.OK


def test_engine_error_fails():
    crash = CallComparison(trace="a.kvtrace", call_index=4, call_kind="root", env_ids=(0,),
                           engine_error="control: ok; candidate: RuntimeError: boom")
    shadow = dataclasses.replace(CRITERIA, phase=1, max_unwaived_divergences=None)
    result = judged(shadow, run(trace(divergences=(crash,))))
    assert status(result, "engine errors (unwaived)") == "fail"
    assert result.exit_code == exit_codes.DIVERGENCE


def test_an_expired_waiver_fails_even_when_nothing_needs_it():
    result = judged(CRITERIA, run(trace()), waivers=(waiver("old", expires=dt.date(2026, 1, 1)),))
    assert status(result, "expired waivers") == "fail"
    assert observed(result, "expired waivers") == "old"
    assert result.exit_code == exit_codes.DIVERGENCE


def test_an_expired_waiver_names_the_divergence_it_would_have_covered():
    result = judged(CRITERIA, run(trace(divergences=(decision(7),))),
                    waivers=(waiver("old", expires=dt.date(2026, 1, 1)),))
    assert observed(result, "expired waivers") == "old; would have covered old (a.kvtrace call 7)"
    assert status(result, "unwaived divergences") == "fail"


def test_expired_waivers_may_be_allowed_by_the_phase():
    lenient = dataclasses.replace(CRITERIA, allow_expired_waivers=True)
    result = judged(lenient, run(trace()), waivers=(waiver("old", expires=dt.date(2026, 1, 1)),))
    assert status(result, "expired waivers") == "pass"


def test_a_stale_waiver_is_reported_and_does_not_fail():
    result = judged(CRITERIA, run(trace()), waivers=(waiver("unused", call_kind="root"),))
    assert status(result, "stale waivers") == "info"
    assert observed(result, "stale waivers") == "unused"
    assert result.exit_code == exit_codes.OK


def test_an_exceeded_waiver_cap_fails_and_names_the_waiver():
    result = judged(CRITERIA, run(trace(divergences=(tensor(2, max_abs_err=0.5),))),
                    waivers=(waiver("small", cap=1e-3),))
    assert status(result, "waiver caps hold") == "fail"
    assert observed(result, "waiver caps hold") == "small (a.kvtrace call 2)"
    assert status(result, "unwaived divergences") == "fail"


def test_a_divergence_within_the_waiver_cap_is_waived():
    result = judged(CRITERIA, run(trace(divergences=(tensor(2, max_abs_err=1e-4),))),
                    waivers=(waiver("small", cap=1e-3),))
    assert result.exit_code == exit_codes.OK


def test_any_active_waiver_blocks_a_phase_that_allows_none():
    switch = dataclasses.replace(CRITERIA, phase=3, max_active_waivers=0, min_speedup=None)
    result = judged(switch, run(trace(divergences=(decision(3),)), control="golden"),
                    waivers=(waiver("quirk", call_kind="recurrent"),))
    assert status(result, "active waivers") == "fail"
    assert observed(result, "active waivers") == "1 (quirk)"
    assert result.exit_code == exit_codes.DIVERGENCE


def test_speedup_is_control_time_over_candidate_time_from_medians():
    ratio, control_s, candidate_s = measured_speedup(run(trace(control_s=1.0, candidate_s=4.0)))
    assert (ratio, control_s, candidate_s) == pytest.approx((0.25, 1.0, 4.0))


def test_a_candidate_slower_than_the_floor_fails():
    result = judged(CRITERIA, run(trace(control_s=1.0, candidate_s=2.5)))
    assert status(result, "speedup") == "fail"
    assert result.exit_code == exit_codes.DIVERGENCE


def test_no_timed_calls_is_insufficient_evidence_for_a_speedup_floor():
    untimed = dataclasses.replace(trace(), timings=())
    result = judged(CRITERIA, run(untimed))
    assert status(result, "speedup") == "insufficient"


def test_a_trace_not_recorded_by_legacy_is_no_golden_evidence():
    switch = dataclasses.replace(CRITERIA, phase=3, min_speedup=None, trace_producer="legacy")
    result = judged(switch, run(trace(), control="golden"), producers={"a.kvtrace": "refactored"})
    assert status(result, "trace producer") == "insufficient"
    assert observed(result, "trace producer") == "other producer: a.kvtrace (refactored)"


# ---------------------------------------------------------------- the command, end to end
@pytest.fixture(scope="session")
def short_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gate-traces") / "pool_pressure.kvtrace"
    assert main(["capture", str(SCENARIO), "-o", str(path), "--steps", "3"]) == 0
    return path


def write_config(path: Path, **overrides) -> Path:
    table = {"name": '"validate"', "control": '"legacy"', "candidate": '"refactored"',
             "min_traces": "1", "min_calls": "20",
             "required_paths": '["hit_root_pool", "hit_recurrent_pool", "miss", "eviction"]',
             "max_unwaived_divergences": "0", "max_engine_errors": "0"}
    table.update({k: v for k, v in overrides.items() if k != "phase"})
    body = "\n".join(f"{k} = {v}" for k, v in table.items() if v is not None)
    path.write_text(f"[phase.{overrides.get('phase', 2)}]\n{body}\n")
    return path


@pytest.fixture
def no_waivers(tmp_path) -> Path:
    path = tmp_path / "waivers.toml"
    path.write_text("")
    return path


def gate(tmp_path, *argv: str) -> int:
    return main(["gate", "--signoff", str(tmp_path / "signoff.json"), *argv])


def test_gate_passes_on_a_trace_and_writes_a_signoff(tmp_path, short_trace, no_waivers, capsys):
    config = write_config(tmp_path / "gate.toml")
    code = gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace))
    assert code == exit_codes.OK
    assert "GATE PASS: phase 2 (validate), 1 trace(s), exit 0" in capsys.readouterr().out
    signoff = json.loads((tmp_path / "signoff.json").read_text())
    assert (signoff["schema"], signoff["verdict"], signoff["exit_code"]) == \
        ("kvmigrate.signoff/1", "PASS", 0)
    assert signoff["inputs"]["traces"][0]["digest"].startswith("sha256:")
    assert signoff["inputs"]["traces"][0]["producer"] == "legacy"
    assert signoff["inputs"]["gate_config"]["digest"].startswith("sha256:")
    assert signoff["criteria"]["min_calls"] == 20
    assert {r["name"] for r in signoff["results"]} >= {"traces", "calls", "path coverage"}
    assert signoff["versions"]["torch"] and signoff["versions"]["python"]
    assert signoff["run"]["traces"][0]["num_calls"] == 34
    assert (tmp_path / "signoff.md").read_text().startswith("# Gate phase 2 (validate): PASS")


def test_gate_on_an_empty_folder_exits_3(tmp_path, no_waivers):
    empty = tmp_path / "no-traces"
    empty.mkdir()
    assert gate(tmp_path, "--phase", "2", "--waivers", str(no_waivers), str(empty)) == \
        exit_codes.INSUFFICIENT_EVIDENCE
    assert json.loads((tmp_path / "signoff.json").read_text())["verdict"] == "INSUFFICIENT EVIDENCE"


def test_gate_with_a_path_never_exercised_exits_3(tmp_path, short_trace, no_waivers):
    config = write_config(tmp_path / "gate.toml", required_paths='["miss", "clear_epoch"]')
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace)) == exit_codes.INSUFFICIENT_EVIDENCE


def test_gate_with_too_few_calls_exits_3(tmp_path, short_trace, no_waivers):
    config = write_config(tmp_path / "gate.toml", min_calls="1000")
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace)) == exit_codes.INSUFFICIENT_EVIDENCE


def test_gate_on_a_diverging_candidate_exits_1(tmp_path, short_trace, no_waivers, monkeypatch):
    (tmp_path / "faulty_wm.py").write_text(FAULTY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path / "gate.toml", candidate='"faulty_wm:faulty"')
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace)) == exit_codes.DIVERGENCE
    signoff = json.loads((tmp_path / "signoff.json").read_text())
    assert next(r for r in signoff["results"] if r["name"] == "unwaived divergences")["status"] \
        == "fail"


def test_gate_with_an_expired_waiver_exits_1(tmp_path, short_trace):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\nid = "old"\nreason = "r"\nexpires = 2020-01-01\n')
    config = write_config(tmp_path / "gate.toml")
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(waivers),
                str(short_trace)) == exit_codes.DIVERGENCE


def test_phase_3_replays_against_the_golden_record(tmp_path, short_trace, no_waivers):
    config = write_config(tmp_path / "gate.toml", phase=3, name='"switch"', control='"golden"',
                          trace_producer='"legacy"', max_active_waivers="0")
    assert gate(tmp_path, "--phase", "3", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace)) == exit_codes.OK
    assert json.loads((tmp_path / "signoff.json").read_text())["run"]["control_engine"] == "golden"


def test_phase_3_is_blocked_by_any_active_waiver(tmp_path, short_trace, no_waivers):
    config = write_config(tmp_path / "gate.toml", phase=3, name='"switch"', control='"golden"',
                          max_active_waivers="0")
    assert gate(tmp_path, "--phase", "3", "--config", str(config), "--waivers", str(no_waivers),
                str(short_trace)) == exit_codes.OK
    waivers = tmp_path / "one_waiver.toml"
    waivers.write_text('[[waiver]]\nid = "still-needed"\nreason = "r"\nexpires = 2999-01-01\n')
    assert gate(tmp_path, "--phase", "3", "--config", str(config), "--waivers", str(waivers),
                str(short_trace)) == exit_codes.DIVERGENCE
    results = json.loads((tmp_path / "signoff.json").read_text())["results"]
    active = next(r for r in results if r["name"] == "active waivers")
    assert active["status"] == "fail" and "still-needed" in active["observed"]


@pytest.mark.parametrize("argv, message", [
    (["--phase", "2", "/no/such/trace.kvtrace"], "no such trace file or folder"),
    (["--phase", "7"], "defines phases [1, 2, 3]"),
    (["--phase", "2", "--config", "/no/such/gate.toml"], "no such gate config"),
])
def test_gate_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert gate(tmp_path, *argv) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_gate_on_a_file_that_is_not_a_trace_exits_2(tmp_path, capsys):
    bogus = tmp_path / "bogus.kvtrace"
    bogus.write_text("not a trace")
    assert gate(tmp_path, "--phase", "2", str(bogus)) == exit_codes.BAD_INPUT
    assert "bogus.kvtrace" in capsys.readouterr().err


def test_a_truncated_trace_is_insufficient_evidence(tmp_path, short_trace, no_waivers):
    """A killed capture replays as a prefix, but the gate does not accept it as evidence."""
    data = short_trace.read_bytes()
    cut = tmp_path / "cut.kvtrace"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    config = write_config(tmp_path / "gate.toml", min_calls="1",
                          required_paths='["root_first_step"]')
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
                str(cut)) == exit_codes.INSUFFICIENT_EVIDENCE
    results = json.loads((tmp_path / "signoff.json").read_text())["results"]
    complete = next(r for r in results if r["name"] == "complete traces")
    assert complete["status"] == "insufficient" and "cut.kvtrace" in complete["observed"]


def test_the_gate_judges_merged_shard_reports_without_replaying(tmp_path, short_trace, no_waivers):
    """A CI matrix runs `compare --shard K/N`; one gate decision judges the merged reports."""
    second = tmp_path / "copy.kvtrace"
    second.write_bytes(short_trace.read_bytes())
    shards = []
    for k in (1, 2):
        report = tmp_path / f"shard{k}.json"
        assert main(["compare", str(short_trace), str(second), "--shard", f"{k}/2",
                     "--waivers", str(no_waivers), "--json", str(report)]) == 0
        shards.append(report)
    config = write_config(tmp_path / "gate.toml", min_traces="2")
    argv = ["--phase", "2", "--config", str(config), "--waivers", str(no_waivers)]
    assert gate(tmp_path, *argv, "--from-report", str(shards[0]),
                "--from-report", str(shards[1])) == exit_codes.OK
    signoff = json.loads((tmp_path / "signoff.json").read_text())
    assert [r["path"] for r in signoff["inputs"]["reports"]] == [str(p) for p in shards]
    assert len(signoff["inputs"]["traces"]) == 2
    # One shard alone is an incomplete set: refused, whatever the floor.
    assert gate(tmp_path, *argv, "--from-report", str(shards[0])) == exit_codes.BAD_INPUT
    first = json.loads(shards[0].read_text())
    assert (first["shard"]["index"], first["shard"]["count"]) == (0, 2)
    assert first["shard"]["set_id"] == json.loads(shards[1].read_text())["shard"]["set_id"]


def test_a_report_whose_digests_do_not_match_its_traces_is_refused(tmp_path, short_trace,
                                                                    no_waivers, capsys):
    report = tmp_path / "r.json"
    assert main(["compare", str(short_trace), "--waivers", str(no_waivers), "--json",
                 str(report)]) == 0
    data = json.loads(report.read_text())
    data["traces"][0]["trace_digest"] = "sha256:" + "0" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    config = write_config(tmp_path / "gate.toml")
    argv = ["--phase", "2", "--config", str(config), "--waivers", str(no_waivers)]
    assert gate(tmp_path, *argv, "--from-report", str(forged)) == exit_codes.BAD_INPUT
    assert "the report records digest" in capsys.readouterr().err


def test_a_report_whose_traces_are_absent_is_insufficient_unless_allowed(tmp_path, short_trace,
                                                                         no_waivers):
    moved = tmp_path / "elsewhere.kvtrace"
    moved.write_bytes(short_trace.read_bytes())
    report = tmp_path / "r.json"
    assert main(["compare", str(moved), "--waivers", str(no_waivers), "--json",
                 str(report)]) == 0
    moved.unlink()
    config = write_config(tmp_path / "gate.toml")
    argv = ["--phase", "2", "--config", str(config), "--waivers", str(no_waivers),
            "--from-report", str(report)]
    assert gate(tmp_path, *argv) == exit_codes.INSUFFICIENT_EVIDENCE
    assert gate(tmp_path, *argv, "--allow-absent-traces") == exit_codes.OK


def test_the_gate_refuses_a_report_of_other_engines(tmp_path, short_trace, no_waivers, capsys):
    report = tmp_path / "self.json"
    assert main(["compare", str(short_trace), "--self-check", "--json", str(report)]) == 0
    config = write_config(tmp_path / "gate.toml")
    assert gate(tmp_path, "--phase", "2", "--config", str(config), "--from-report",
                str(report)) == exit_codes.BAD_INPUT
    assert "the report compares legacy vs legacy#2" in capsys.readouterr().err
