"""The rich console report (harness/report/console.py) against golden text.

Each case renders ``RunReport(run)`` for a hand-built run (fixed numbers, fixed ``created_at``)
into a 100-column, colourless, non-terminal console and compares the text with
``tests/golden/console_<case>.txt``. On a mismatch the rendered text is left next to the test's
tmp folder as ``console_<case>.actual.txt`` for diffing.

To regenerate the golden files after an intended change, run::

    KVMIGRATE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_report_console.py

(the regenerating tests report as skipped), then review the diff of ``tests/golden/``.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from rich.console import Console

from harness.compare import compare_events
from harness.report.console import RunReport
from harness.report.model import Caps
from harness.results import (CallComparison, EngineTiming, EventDivergence, PoolStats, RunResult,
                             TensorDivergence, TraceResult)
from unizero.events import Lookup, Store

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = os.environ.get("KVMIGRATE_REGEN_GOLDEN") == "1"
CREATED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
TRACE = "traces/cartpole_small.kvtrace"
KEY = 0x07369C0E5A5A1234
CUT_NOTE = (f"{TRACE}: trace is cut after record 43 at byte offset 159806 (44 complete records; "
            f"1142 bytes of an unfinished frame follow): the capture did not finish")


# --- factories ---------------------------------------------------------------------------------

def timings(candidate: str = "refactored") -> tuple[EngineTiming, ...]:
    return (EngineTiming("legacy", "recurrent", 80, 0.0021, 0.0052, 0.1800),
            EngineTiming("legacy", "root", 10, 0.0040, 0.0061, 0.0420),
            EngineTiming("legacy", "clear", 4, 0.00001, 0.00002, 0.00004),
            EngineTiming(candidate, "recurrent", 80, 0.0030, 0.0075, 0.2500),
            EngineTiming(candidate, "root", 10, 0.0025, 0.0044, 0.0260),
            EngineTiming(candidate, "clear", 4, 0.00001, 0.00003, 0.00005))


def pool_stats(candidate: str = "refactored",
               candidate_recurrent_hits: int = 60) -> tuple[PoolStats, ...]:
    return (PoolStats("legacy", "recurrent", 60, 20, 80, 4),
            PoolStats("legacy", "root", 18, 72, 90, 0),
            PoolStats(candidate, "recurrent", candidate_recurrent_hits,
                      80 - candidate_recurrent_hits, 80, 4),
            PoolStats(candidate, "root", 18, 72, 90, 0))


def value_divergence(path: str, max_abs: float, mismatched: int) -> TensorDivergence:
    return TensorDivergence(path=path, kind="value", actual_dtype="float32",
                            expected_dtype="float32", actual_shape=(2, 4), expected_shape=(2, 4),
                            rtol=1.3e-6, atol=1e-5, num_mismatched=mismatched, num_elements=8,
                            max_abs_err=max_abs, mean_abs_err=max_abs / 2, max_rel_err=4.0,
                            mean_rel_err=1.5, worst_flat_index=3, worst_index=(0, 3),
                            actual_value=1.25, expected_value=0.75)


def hit_against_miss() -> EventDivergence:
    lookup = Lookup(env=1, key=KEY, path="recurrent", hit=True, pool="recurrent", size=5)
    store = Store(env=1, key=KEY + 1, pool="recurrent", slot=4, evicted=None, size=6)
    divergence = compare_events([replace(lookup, hit=False, pool=None, size=1), store],
                                [lookup, store])
    assert divergence is not None
    return divergence


def waived_tensor_call(index: int = 5) -> CallComparison:
    return CallComparison(trace=TRACE, call_index=index, call_kind="recurrent", env_ids=(0, 1),
                          tensor_divergences=(value_divergence("policy_logits", 2e-5, 1),),
                          waiver_id="W-rounding")


def unwaived_both_call(index: int = 7) -> CallComparison:
    return CallComparison(trace=TRACE, call_index=index, call_kind="recurrent", env_ids=(0, 1),
                          tensor_divergences=(value_divergence("latent", 0.5, 3),
                                              value_divergence("policy_logits", 0.125, 8)),
                          event_divergence=hit_against_miss())


def trace_result(path: str = TRACE, **changes) -> TraceResult:
    base = TraceResult(trace_path=path, trace_digest="sha256:0123", num_calls=95,
                       num_tensors_compared=360, timings=timings(), pool_stats=pool_stats(),
                       coverage={"hit_recurrent_pool": 60, "miss": 2}, max_errors=(0.0,) * 95)
    return replace(base, **changes)


def make_run(*traces: TraceResult, candidate: str = "refactored",
             manager: str | None = None) -> RunResult:
    return RunResult(created_at=CREATED, control_engine="legacy", candidate_engine=candidate,
                     manager_spec=manager, tolerances={"nan": "equal", "paths": {}}, traces=traces)


def equivalent_run() -> RunResult:
    return make_run(trace_result())


def diverged_run() -> RunResult:
    manager = "harness.mutants:AliasingManager"
    candidate = f"refactored[{manager}]"
    trace = trace_result(divergences=(waived_tensor_call(5), unwaived_both_call(7)),
                         num_unwaived_calls=1, timings=timings(candidate),
                         pool_stats=pool_stats(candidate, candidate_recurrent_hits=20))
    return make_run(trace, candidate=candidate, manager=manager)


def waived_run() -> RunResult:
    return make_run(trace_result(divergences=(waived_tensor_call(5),)))


def self_check_run() -> RunResult:
    trace = trace_result(self_check=True, noise_floor=0.0, timings=timings("legacy#2"),
                         pool_stats=pool_stats("legacy#2"))
    return make_run(trace, candidate="legacy#2")


def truncated_run() -> RunResult:
    return make_run(trace_result(num_calls=44, notes=(CUT_NOTE,), max_errors=(0.0,) * 44))


CASES: dict[str, Callable[[], RunResult]] = {
    "equivalent": equivalent_run, "diverged": diverged_run, "waived": waived_run,
    "self_check": self_check_run, "truncated": truncated_run}


# --- rendering ---------------------------------------------------------------------------------

def render(run: RunResult, caps: Caps = Caps()) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None, force_terminal=False)
    console.print(RunReport(run, caps=caps))
    return buffer.getvalue()


def flat(text: str) -> str:
    """The rendered text with runs of whitespace and box characters collapsed to one space."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


@pytest.mark.parametrize("case", sorted(CASES))
def test_console_report_matches_its_golden_text(case, tmp_path):
    text = render(CASES[case]())
    golden = GOLDEN / f"console_{case}.txt"
    if REGENERATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
        pytest.skip(f"regenerated {golden}")
    assert golden.exists(), f"{golden} is missing; create it with KVMIGRATE_REGEN_GOLDEN=1"
    expected = golden.read_text(encoding="utf-8")
    if text != expected:
        actual = tmp_path / f"console_{case}.actual.txt"
        actual.write_text(text, encoding="utf-8")
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            str(golden), str(actual)))
        pytest.fail(f"console report differs from {golden} (rendered text in {actual}):\n{diff}")


def test_every_line_fits_the_console_width():
    for case, factory in CASES.items():
        widths = [len(line) for line in render(factory()).splitlines()]
        assert max(widths) <= 100, case


def test_divergence_tables_fold_long_cells_instead_of_cutting_them():
    lines = render(diverged_run()).splitlines()
    # Only the decision summary abbreviates, on purpose: the 64-bit cache key.
    assert [line for line in lines if "…" in line and "lookup key 0x" not in line] == []
    assert any("policy_log" in line for line in lines)


def test_an_equivalent_run_ends_with_the_verdict_and_shows_no_panel():
    text = render(equivalent_run())
    counts, verdict = text.rstrip().splitlines()[-2:]
    assert verdict == "EQUIVALENT: 1 trace(s), 95 calls, 0 waived divergence(s)"
    assert counts == ("1 trace(s), 95 calls, 0 unwaived and 0 waived diverging call(s); "
                      "exit code 0 (equivalent)")
    assert "divergence, call" not in text
    # Summary: 222 ms legacy vs 276 ms refactored in all; median ratios per call kind.
    rows = flat(text)
    assert "cartpole_small 95 360 0 0 - 222.0|276.1 0.80x" in rows
    assert "root 10 4.000 / 6.100 2.500 / 4.400 1.60x" in rows
    assert "recurrent 80 2.100 / 5.200 3.000 / 7.500 0.70x" in rows
    assert "clear 4 0.010 / 0.020 0.010 / 0.030 1.00x" in rows
    assert "cartpole_small recurrent 75.0% 75.0%" in rows


def test_the_first_unwaived_divergence_panel_comes_first_with_its_numbers():
    text = flat(render(diverged_run()))
    first = text.index("FIRST both divergence, call 7 (recurrent)")
    waived = text.index("waived divergences (1 call; expected, see waivers.toml)")
    assert first < waived
    assert "divergence, call 5" not in text
    panel = text[first:waived]
    for number in ("latent value 3/8 0.5 0.25 4 [0, 3] 1.25 0.75", "8/8 0.125 0.0625",
                   "cache decisions: env 1 lookup key 0x07369c0e"):
        assert number in panel, number
    assert "cartpole_small.kvtrace, envs [0, 1], unwaived" in panel
    assert "W-rounding 1 5..5 recurrent tensor" in text[waived:]
    assert "(manager harness.mutants:AliasingManager)" in text
    assert text.endswith("1 trace(s), 95 calls, 1 unwaived and 1 waived diverging call(s); exit "
                         "code 1 (divergence) DIVERGED: 1 unwaived diverging call(s) in 1 trace(s)")


def test_a_waived_divergence_is_listed_by_waiver_without_a_panel_and_the_run_is_equivalent():
    text = flat(render(waived_run()))
    assert "FIRST" not in text and "divergence, call" not in text
    assert ("waived divergences (1 call; expected, see waivers.toml) trace waiver calls "
            "first..last kinds / classes cartpole_small.kvtrace W-rounding 1 5..5 "
            "recurrent tensor") in text
    assert text.endswith("EQUIVALENT: 1 trace(s), 95 calls, 1 waived divergence(s)")


def test_a_self_check_reports_its_noise_floor():
    text = flat(render(self_check_run()))
    assert f"note: {TRACE}: self-check: noise floor (max |a-e| on equal tensors) = 0.0" in text


def test_a_truncated_trace_is_noted_before_the_verdict():
    text = flat(render(truncated_run()))
    note = text.index("note: " + CUT_NOTE)
    assert note < text.index("EQUIVALENT: 1 trace(s), 44 calls")


def test_panels_are_capped_across_traces_and_each_trace_counts_what_it_hid():
    calls = tuple(unwaived_both_call(index) for index in (2, 4, 6, 8))
    first = trace_result("a.kvtrace", divergences=calls, num_unwaived_calls=4)
    second = trace_result("b.kvtrace", divergences=calls[:2], num_unwaived_calls=2)
    text = flat(render(make_run(first, second), Caps(max_detailed_calls=3)))
    assert text.count("divergence, call") == 3
    assert "... 1 more unwaived diverging calls in a.kvtrace (see the JSON report)" in text
    assert "... 2 more unwaived diverging calls in b.kvtrace (see the JSON report)" in text


_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _colour_codes(text: str) -> list[str]:
    """SGR parameters that set a foreground or background colour."""
    found = []
    for params in _SGR.findall(text):
        codes = [int(code) for code in params.split(";") if code]
        found += [str(code) for code in codes
                  if 30 <= code <= 49 or 90 <= code <= 97 or 100 <= code <= 107]
    return found


def _terminal_render(run: RunResult) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=100, force_terminal=True).print(RunReport(run))
    return buffer.getvalue()


def test_no_color_leaves_no_colour_escapes_on_a_forced_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _colour_codes(_terminal_render(diverged_run())), "the colour control case drew no colour"
    monkeypatch.setenv("NO_COLOR", "1")
    text = _terminal_render(diverged_run())
    # NO_COLOR (no-color.org) removes colour only: rich still writes bold and italic codes.
    assert _colour_codes(text) == []
