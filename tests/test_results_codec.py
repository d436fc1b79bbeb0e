"""The result records' JSON form (harness.results): round trip, layout and validation."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from harness import exit_codes
from harness.results import (CallComparison, EngineTiming, EventDivergence, PoolStats,
                             ReferenceDistance, ReportError, RunResult, ShardInfo, SlotDifference,
                             TensorDivergence, TraceResult, dump_run, load_run)

CREATED = datetime(2026, 2, 3, 4, 5, 6, tzinfo=timezone.utc)


def tensor(**changes) -> TensorDivergence:
    base = TensorDivergence(path="latent", kind="value", actual_dtype="float32",
                            expected_dtype="float32", actual_shape=(2, 4), expected_shape=(2, 4),
                            rtol=1.3e-6, atol=1e-5, num_mismatched=2, num_elements=8,
                            num_nonfinite=1, max_abs_err=0.5, mean_abs_err=0.25,
                            max_rel_err=2.0, mean_rel_err=1.0, worst_flat_index=3,
                            worst_index=(0, 3), actual_value=math.inf, expected_value=1.0)
    return replace(base, **changes)


def call(index: int, **changes) -> CallComparison:
    event = EventDivergence("env 1 lookup key 0xfedcba98…: control hit, candidate miss", 0, 3, 4,
                            {"values_changed": {"root[0]['hit']": {"old_value": True,
                                                                   "new_value": False}}},
                            (SlotDifference(1, "recurrent", 2 ** 64 - 1, 4, 9),))
    base = CallComparison(trace="t.kvtrace", call_index=index, call_kind="recurrent",
                          env_ids=(0, 1), tensor_divergences=(tensor(),), event_divergence=event,
                          cause="quirk-1", reference=ReferenceDistance(0.0, 0.5))
    return replace(base, **changes)


def trace(path: str = "t.kvtrace", num_calls: int = 4, **changes) -> TraceResult:
    base = TraceResult(trace_path=path, trace_digest="sha256:ab", num_calls=num_calls,
                       num_tensors_compared=16,
                       timings=(EngineTiming("legacy", "root", 4, 0.001, 0.002, 0.004),),
                       pool_stats=(PoolStats("legacy", "root", 3, 1, 4, 0),),
                       coverage={"miss": 1}, notes=("a note",),
                       max_errors=(0.0,) * num_calls, decisions=((1, 1, 1, 1),) * num_calls)
    return replace(base, **changes)


def run(*traces: TraceResult, **changes) -> RunResult:
    base = RunResult(created_at=CREATED, control_engine="legacy", candidate_engine="refactored",
                     manager_spec=None, tolerances={"nan": "equal", "paths": {}}, traces=traces,
                     loop="closed", shard=ShardInfo(1, 4, "set-a"), reference_engine="uncached")
    return replace(base, **changes)


def diverged() -> RunResult:
    return run(trace(divergences=(call(1, waiver_id="W-1"), call(2, reference=None)),
                     num_unwaived_calls=1))


# --- round trip and layout --------------------------------------------------------------------

def test_a_run_round_trips_through_the_report_bytes_with_every_new_field():
    original = replace(diverged(), traces=(replace(diverged().traces[0], divergences=(
        call(1, waiver_id="W-1", tensor_divergences=(tensor(actual_value=2.0),)),)),))
    restored = load_run(dump_run(original))
    assert restored == original
    first = restored.traces[0].divergences[0]
    assert (first.cause, first.reference, restored.loop, restored.shard,
            restored.reference_engine) == ("quirk-1", ReferenceDistance(0.0, 0.5), "closed",
                                           ShardInfo(1, 4, "set-a"), "uncached")


def test_non_finite_worst_values_are_written_as_text_and_read_back_as_floats():
    text = dump_run(run(trace(divergences=(call(0, tensor_divergences=(
        tensor(actual_value=math.nan, expected_value=-math.inf),)),)))).decode()
    assert '"actual_value": "NaN"' in text and '"expected_value": "-Infinity"' in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in the report"))
    value = load_run(text.encode()).traces[0].divergences[0].tensor_divergences[0]
    assert math.isnan(value.actual_value) and value.expected_value == -math.inf


def test_derived_fields_are_written_for_readers_and_recomputed_on_reading():
    data = json.loads(dump_run(diverged()))
    first = data["traces"][0]["divergences"][0]
    assert (data["ok"], data["exit_code"], data["traces"][0]["ok"]) == (False, 1, False)
    assert data["traces"][0]["first_divergence_call"] == 1
    assert (first["classification"], first["waived"]) == ("both", True)
    assert data["traces"][0]["pool_stats"][0]["hit_rate"] == 0.75
    data["ok"], data["exit_code"], first["waived"] = True, 0, False
    restored = load_run(json.dumps(data).encode())
    assert (restored.ok, restored.exit_code, restored.traces[0].divergences[0].waived) == (
        False, 1, True)


def test_per_call_series_are_each_written_on_one_line():
    lines = dump_run(run(trace(num_calls=3))).decode().splitlines()
    assert '      "max_errors": [0.0,0.0,0.0],' in lines
    assert '      "decisions": [[1,1,1,1],[1,1,1,1],[1,1,1,1]],' in lines


def test_load_run_reads_a_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(dump_run(diverged()))
    assert load_run(path) == diverged()
    with pytest.raises(ReportError, match=r"^.*missing\.json: no such compare report"):
        load_run(tmp_path / "missing.json")
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ReportError, match=r"x\.json: not JSON"):
        load_run(path)


def test_records_keep_their_to_dict_and_from_dict():
    record = call(3)
    assert CallComparison.from_dict(json.loads(json.dumps(record.to_dict()))) == replace(
        record, tensor_divergences=(tensor(actual_value=math.inf),))
    assert TraceResult.from_dict(trace().to_dict()) == trace()


# --- validation: one line naming the file and the field ---------------------------------------

def _broken(edit) -> bytes:
    data = json.loads(dump_run(diverged()))
    edit(data)
    return json.dumps(data).encode()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["traces"][0].update(num_calls="5"),
     r'^<bytes>: \$\.traces\[0\]\.num_calls: expected int, got "5"$'),
    (lambda d: d["traces"][0].update(num_calls=-1),
     r"^<bytes>: \$\.traces\[0\]\.num_calls: expected int >= 0, got -1$"),
    (lambda d: d["traces"][0].pop("trace_digest"),
     r"^<bytes>: \$\.traces\[0\]\.trace_digest: missing required field$"),
    (lambda d: d["traces"][0]["divergences"][1].update(colour="red"),
     r"^<bytes>: \$\.traces\[0\]\.divergences\[1\]\.colour: unknown field$"),
    (lambda d: d["traces"][0].update(max_errors=[0.0, "NaN", 0.0, 0.0]),
     r'^<bytes>: \$\.traces\[0\]\.max_errors\[1\]: expected float, got "NaN"$'),
    (lambda d: d["traces"][0]["divergences"][0]["tensor_divergences"][0].update(rtol="NaN"),
     r'tensor_divergences\[0\]\.rtol: expected float, got "NaN"$'),
    (lambda d: d["traces"][0]["divergences"][0]["tensor_divergences"][0].update(
        actual_value="nan"), r'actual_value: invalid enum value \'nan\'$'),
    (lambda d: d["traces"][0].update(num_calls=10 ** 15),
     r"num_calls: expected int <= 281474976710656, got 1000000000000000$"),
    (lambda d: d["traces"][0].update(decisions=[[1, 1, 1]] * 4),
     r"decisions\[0\]: expected array of length 4, got \[1, 1, 1\]$"),
    (lambda d: d["traces"][0]["divergences"][0].update(env_ids=list(range(70000))),
     r"env_ids: expected array of length <= 65536, got \[0, 1, 2"),
    (lambda d: d.update(loop="sideways"), r"^<bytes>: \$\.loop: invalid enum value 'sideways'$"),
    (lambda d: d["shard"].update(index=4), r"\$\.shard: ShardInfo\.index: expected 0 <= index"),
    (lambda d: d.update(schema_version="kvmigrate.compare/2"),
     r"^<bytes>: \$: unsupported result schema 'kvmigrate\.compare/2'"),
])
def test_a_broken_report_is_refused_in_one_line_naming_the_field(edit, message):
    with pytest.raises(ReportError, match=message) as caught:
        load_run(_broken(edit))
    assert "\n" not in str(caught.value) and isinstance(caught.value, ValueError)


def test_a_report_that_is_not_an_object_is_refused():
    with pytest.raises(ReportError, match=r"^<bytes>: \$: expected object, got \[1\]$"):
        load_run(b"[1]")


def test_records_refuse_floats_json_cannot_hold():
    with pytest.raises(ValueError, match=r"TraceResult\.max_errors\[2\]: expected a finite"):
        trace(max_errors=(0.0, 0.0, math.nan, 0.0))
    with pytest.raises(ValueError, match="EngineTiming.total_s: expected a finite number"):
        EngineTiming("legacy", "root", 1, 0.1, 0.1, math.inf)


# --- the exit code, decided once ---------------------------------------------------------------

def test_exit_code_is_divergence_then_insufficient_evidence_then_ok():
    assert run(trace()).exit_code == exit_codes.OK
    assert diverged().exit_code == exit_codes.DIVERGENCE
    assert run().exit_code == exit_codes.INSUFFICIENT_EVIDENCE
    empty = trace("empty.kvtrace", num_calls=0)
    assert run(trace(), empty).exit_code == exit_codes.INSUFFICIENT_EVIDENCE
    assert run(trace(), empty).empty_traces == (empty,)
    assert run(*diverged().traces, empty).exit_code == exit_codes.DIVERGENCE


def test_unwaived_count_takes_the_kept_calls_when_the_counter_is_behind():
    kept_only = trace(divergences=(call(1), call(2)), num_unwaived_calls=0)
    assert (kept_only.num_unwaived, kept_only.num_waived, kept_only.ok) == (2, 0, False)
    counted = trace(divergences=(call(1, waiver_id="W"),), num_unwaived_calls=7)
    assert (counted.num_unwaived, counted.num_waived, counted.ok) == (7, 1, False)


def test_text_in_a_report_cannot_forge_the_series_placeholder():
    forged = tuple(f"@@kvmigrate-series-0-{name}@@" for name in ("max_errors", "decisions"))
    original = run(trace(notes=forged))
    assert load_run(dump_run(original)) == original


def test_an_error_stays_on_one_line_when_the_report_text_has_line_breaks():
    data = json.loads(dump_run(diverged()))
    data["traces"][0]["trace_path"] = "a\nb"
    data["traces"][0]["divergences"].reverse()
    with pytest.raises(ReportError, match=r"divergences must be one per call") as caught:
        load_run(json.dumps(data).encode())
    assert "\n" not in str(caught.value)
