"""``rejudge``: a saved report re-decided under new waivers or tolerances, without replaying."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import pytest

from harness.compare import TolerancePolicy, parse_tol_option
from harness.rejudge import rejudge_run
from harness.results import CallComparison, EventDivergence, RunResult, TensorDivergence, TraceResult
from test_cli import run_cli

WAIVE_ALL = """\
[[waiver]]
id = "cover-all"
reason = "test: every divergence of every trace"
expires = 2099-01-01
trace = "*"
class = "any"
cap = "decision"
"""


def value_divergence(max_abs: float, actual: float, expected: float, *, nonfinite: int = 0,
                     path: str = "latent") -> TensorDivergence:
    return TensorDivergence(path, "value", "float32", "float32", (2, 4), (2, 4), 1.3e-6, 1e-5,
                            num_mismatched=1, num_elements=8, num_nonfinite=nonfinite,
                            max_abs_err=max_abs, mean_abs_err=max_abs, max_rel_err=max_abs,
                            mean_rel_err=max_abs, worst_flat_index=0, worst_index=(0, 0),
                            actual_value=actual, expected_value=expected)


def run_of(*calls: CallComparison, num_unwaived: int | None = None) -> RunResult:
    trace = TraceResult(trace_path="t.kvtrace", trace_digest="sha256:0", num_calls=10,
                        num_tensors_compared=40, divergences=calls,
                        num_unwaived_calls=len(calls) if num_unwaived is None else num_unwaived)
    return RunResult(created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), control_engine="legacy",
                     candidate_engine="refactored", manager_spec=None,
                     tolerances=TolerancePolicy().to_dict(), traces=(trace,))


def call(index: int, *tensors: TensorDivergence, event: EventDivergence | None = None,
         error: str | None = None) -> CallComparison:
    return CallComparison("t.kvtrace", index, "recurrent", (0, 1), tensor_divergences=tensors,
                          event_divergence=event, engine_error=error)


def loose(text: str) -> TolerancePolicy:
    return TolerancePolicy().with_overrides([parse_tol_option(text)])


def test_a_looser_tolerance_that_covers_the_largest_error_clears_the_divergence():
    rejudged = rejudge_run(run_of(call(3, value_divergence(1e-3, 1.001, 1.0))),
                           policy=loose("latent=1e-5,2e-3"))
    assert rejudged.run.ok and rejudged.undecided == () and rejudged.exit_code == 0


def test_a_tolerance_the_worst_element_still_fails_keeps_the_divergence():
    rejudged = rejudge_run(run_of(call(3, value_divergence(1e-3, 1.001, 1.0))),
                           policy=loose("latent=1e-5,5e-4"))
    (trace,) = rejudged.run.traces
    assert [d.atol for d in trace.divergences[0].tensor_divergences] == [5e-4]
    assert rejudged.exit_code == 1 and rejudged.undecided == ()


def test_what_the_saved_statistics_cannot_decide_is_named_and_exits_3():
    # Worst element passes a 1e-3 relative tolerance, but others (unsaved) might not.
    rejudged = rejudge_run(run_of(call(3, value_divergence(1e-3, 1.001, 1.0))),
                           policy=loose("latent=1e-2,1e-5"))
    assert [(u.call_index, u.why.split(":")[0]) for u in rejudged.undecided] == [(3, "latent")]
    assert rejudged.exit_code == 1  # still counted: undecided divergences stay unwaived


def test_a_tighter_tolerance_needs_a_replay():
    rejudged = rejudge_run(run_of(), policy=loose("policy_logits=0,0"))
    assert rejudged.run.ok and rejudged.exit_code == 3
    assert "policy_logits" in rejudged.undecided[0].why


def test_decisions_and_errors_ignore_tolerances_but_take_waivers(tmp_path):
    event = EventDivergence("env 0 lookup: control hit, candidate miss", 0, 3, 3, {})
    run = run_of(call(1, event=event), call(2, error="control returned; candidate raised X: y"))
    assert rejudge_run(run, policy=loose("*=1,1")).exit_code == 1
    waived = rejudge_run(run, judge=lambda c: dataclasses.replace(c, waiver_id="w"))
    assert waived.exit_code == 0


def test_divergences_past_the_kept_detail_need_a_replay():
    rejudged = rejudge_run(run_of(call(3, value_divergence(1e-3, 1.001, 1.0)), num_unwaived=5),
                           policy=loose("latent=0,1"))
    assert rejudged.exit_code == 1 and "past the report's kept detail" in rejudged.undecided[0].why


@pytest.fixture(scope="module")
def diverging_report(tmp_path_factory) -> Path:
    from test_errors_as_results import capture
    folder = tmp_path_factory.mktemp("rejudge")
    trace = capture(folder, "rejudge_short")
    report = folder / "report.json"
    result = run_cli("compare", trace, "--manager", "harness.mutants:AliasingManager",
                     "--json", report)
    assert result.code == 1, result.out
    return report


def test_rejudge_with_a_covering_waiver_exits_0_without_replaying(diverging_report, tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text(WAIVE_ALL)
    out = tmp_path / "rejudged.json"
    with mock.patch("harness.replay.replay_trace", side_effect=AssertionError("replayed")):
        result = run_cli("rejudge", diverging_report, "--waivers", waivers, "-o", out)
    assert result.code == 0, result.out + result.err
    saved = json.loads(out.read_text())
    assert saved["ok"] is True
    assert all(d["waiver_id"] == "cover-all" for d in saved["traces"][0]["divergences"])


def test_rejudge_without_waivers_keeps_the_divergences(diverging_report):
    assert run_cli("rejudge", diverging_report).code == 1
