"""The report model (harness.report.model): one set of facts, the same in every form.

Each run here is rendered as console text, Markdown and HTML; the verdict sentence, the counts
line and each trace's numbers are parsed back out of all three and must agree with each other
and with the model.
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from rich.console import Console

from harness.report.console import RunReport
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.model import Caps, build_report
from harness.results import (CallComparison, EngineTiming, PoolStats, ReferenceDistance,
                             RunResult, ShardInfo, TensorDivergence, TraceResult)

CREATED = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def tensor(max_abs: float = 0.5) -> TensorDivergence:
    return TensorDivergence(path="latent", kind="value", actual_dtype="float32",
                            expected_dtype="float32", actual_shape=(4,), expected_shape=(4,),
                            rtol=1e-6, atol=1e-5, num_mismatched=1, num_elements=4,
                            max_abs_err=max_abs, mean_abs_err=max_abs, max_rel_err=1.0,
                            mean_rel_err=1.0, worst_flat_index=2, worst_index=(2,),
                            actual_value=1.0 + max_abs, expected_value=1.0)


def call(path: str, index: int, **changes) -> CallComparison:
    base = CallComparison(trace=path, call_index=index, call_kind="recurrent", env_ids=(0,),
                          tensor_divergences=(tensor(),))
    return replace(base, **changes)


def trace(path: str, num_calls: int, *calls: CallComparison, **changes) -> TraceResult:
    timings = (EngineTiming("legacy", "recurrent", num_calls, 0.001, 0.002, 0.001 * num_calls),
               EngineTiming("refactored", "recurrent", num_calls, 0.0005, 0.001,
                            0.0005 * num_calls))
    pools = (PoolStats("legacy", "recurrent", 2, 1, 3, 0),
             PoolStats("refactored", "recurrent", 1, 2, 3, 0))
    base = TraceResult(trace_path=path, trace_digest="sha256:0", num_calls=num_calls,
                       num_tensors_compared=4 * num_calls, divergences=calls, timings=timings,
                       pool_stats=pools, num_unwaived_calls=sum(not c.waived for c in calls),
                       max_errors=(0.0,) * num_calls)
    return replace(base, **changes)


def make_run(*traces: TraceResult, **changes) -> RunResult:
    base = RunResult(created_at=CREATED, control_engine="legacy", candidate_engine="refactored",
                     manager_spec=None, tolerances={"nan": "equal", "paths": {}}, traces=traces)
    return replace(base, **changes)


def mixed_run() -> RunResult:
    """Two diverging traces (one with calls dropped past the kept cap), one clean, a waiver."""
    first = trace("a.kvtrace", 12, call("a.kvtrace", 2, waiver_id="W-1"), call("a.kvtrace", 5),
                  call("a.kvtrace", 9, engine_error="candidate raised KeyError('k')"),
                  num_unwaived_calls=6)
    second = trace("b.kvtrace", 7, call("b.kvtrace", 0))
    return make_run(first, second, trace("c.kvtrace", 30))


RUNS = {"mixed": mixed_run, "equivalent": lambda: make_run(trace("c.kvtrace", 30)),
        "waived only": lambda: make_run(trace("a.kvtrace", 4, call("a.kvtrace", 1,
                                                                    waiver_id="W-1"))),
        "no traces": make_run,
        "an empty trace": lambda: make_run(trace("c.kvtrace", 30), trace("e.kvtrace", 0))}


# --- the three forms, parsed back --------------------------------------------------------------

def console_text(run: RunResult) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None, force_terminal=False).print(RunReport(run))
    return buffer.getvalue()


def from_console(run: RunResult) -> tuple[str, str, dict[str, tuple[str, ...]]]:
    lines = [line.strip() for line in console_text(run).splitlines()]
    rows = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if len(cells) == 8 and cells[0].endswith(("a", "b", "c", "e")) and cells[1].isdigit():
            rows[cells[0] + ".kvtrace"] = (cells[1], cells[3], cells[4], cells[5])
    return lines[-1], lines[-2], rows


def from_markdown(run: RunResult) -> tuple[str, str, dict[str, tuple[str, ...]]]:
    lines = render_markdown(run).splitlines()
    rows = {}
    for line in lines[lines.index("## Traces"):]:
        match = re.match(r"\| `([^`]+)` \| (\d+) \| \d+ \| (\d+) \| (\d+) \| ([-\d]+) \|", line)
        if match:
            rows[match.group(1)] = match.groups()[1:]
    return lines[0].strip("*"), lines[2], rows


def from_html(run: RunResult) -> tuple[str, str, dict[str, tuple[str, ...]]]:
    page = render_html(run)
    verdict = re.search(r'<p class="verdict \w+" role="status">([^<]*)</p>', page).group(1)
    counts = re.search(r'<p class="counts">([^<]*)</p>', page).group(1)
    rows = {}
    for match in re.finditer(r'<tr><td><a href="#t\d+">([^<]+)</a></td><td>[^<]*</td>'
                             r'<td class="num">(\d+)</td><td class="num">\d+</td>'
                             r'<td class="num">(\d+)</td><td class="num">(\d+)</td>'
                             r'<td>(?:<a [^>]*>call )?([-\d]+)', page):
        rows[html.unescape(match.group(1))] = match.groups()[1:]
    return html.unescape(verdict), html.unescape(counts), rows


@pytest.mark.parametrize("name", sorted(RUNS))
def test_console_markdown_and_html_state_the_same_verdict_counts_and_trace_numbers(name):
    run = RUNS[name]()
    model = build_report(run)
    expected_rows = {row.trace.trace_path: (
        str(row.trace.num_calls), str(row.num_unwaived), str(row.num_waived),
        "-" if row.focus is None else str(row.focus.call.call_index)) for row in model.traces}
    forms = {"console": from_console(run), "markdown": from_markdown(run),
             "html": from_html(run)}
    for form, (verdict, counts, rows) in forms.items():
        assert verdict == model.verdict.sentence, form
        assert counts == model.verdict.counts, form
        assert rows == expected_rows, form


def test_the_verdict_counts_every_unwaived_call_including_those_not_kept():
    verdict = build_report(mixed_run()).verdict
    assert verdict.sentence == "DIVERGED: 7 unwaived diverging call(s) in 2 trace(s)"
    assert verdict.counts == ("3 trace(s), 49 calls, 7 unwaived and 1 waived diverging call(s); "
                              "exit code 1 (divergence)")


@pytest.mark.parametrize("run, sentence", [
    (make_run(), "INSUFFICIENT EVIDENCE: no trace was compared"),
    (make_run(trace("c.kvtrace", 30), trace("e.kvtrace", 0)),
     "INSUFFICIENT EVIDENCE: 1 of 2 trace(s) replayed no call"),
    (make_run(trace("c.kvtrace", 30)), "EQUIVALENT: 1 trace(s), 30 calls, 0 waived divergence(s)"),
])
def test_the_verdict_sentence_says_why_the_exit_code_is_what_it_is(run, sentence):
    verdict = build_report(run).verdict
    assert verdict.sentence == sentence
    meaning = {0: "equivalent", 1: "divergence", 3: "insufficient evidence"}[run.exit_code]
    assert verdict.counts.endswith(f"exit code {run.exit_code} ({meaning})")


def test_caps_decide_which_calls_every_form_shows_in_full():
    report = build_report(mixed_run(), caps=Caps(max_detailed_calls=2, max_listed_calls=2))
    detailed = [(view.call.trace, view.call.call_index) for _, views in report.detail_groups
                for view in views]
    # Only listed calls are shown in full: call 9 is past the listing cap.
    assert detailed == [("a.kvtrace", 5), ("b.kvtrace", 0)]
    first, second, _ = report.traces
    assert [view.call.call_index for view in first.calls] == [2, 5]
    # Not listed: call 9, and the 4 unwaived calls the replay counted but did not keep.
    assert (first.num_unlisted, first.num_unwaived_not_detailed) == (5, 5)
    assert (second.num_unlisted, second.num_unwaived_not_detailed) == (0, 0)


def attributed_run() -> RunResult:
    calls = (call("a.kvtrace", 1, cause="quirk-1", reference=ReferenceDistance(0.0, 0.25)),
             call("a.kvtrace", 3, cause="unexplained"), call("a.kvtrace", 4, cause="quirk-1"),
             call("a.kvtrace", 6, engine_error="control raised RuntimeError('boom')"))
    return make_run(trace("a.kvtrace", 8, *calls), loop="closed", shard=ShardInfo(2, 3, "nightly"),
                    reference_engine="uncached")


def test_details_are_grouped_by_cause_when_causes_are_present():
    report = build_report(attributed_run())
    groups = [(cause, [view.call.call_index for view in views])
              for cause, views in report.detail_groups]
    assert groups == [("quirk-1", [1, 4]), ("unexplained", [3]), (None, [6])]
    assert [(c.cause, c.num_unwaived, c.first_call) for c in report.causes] == [
        ("quirk-1", 2, 1), ("unexplained", 1, 3), (None, 1, 6)]


@pytest.mark.parametrize("render", [lambda run: " ".join(console_text(run).split()),
                                    render_markdown, lambda run: html.unescape(render_html(run))])
def test_every_form_states_loop_shard_reference_causes_and_engine_errors(render):
    text = render(attributed_run())
    for fact in ("closed loop", "3 of 3 (set nightly)", "uncached", "quirk-1", "unexplained",
                 "control raised RuntimeError('boom')",
                 "distance to the reference engine: control 0, candidate 0.25"):
        assert fact.lower() in text.lower(), fact


def test_listings_carry_a_reference_column_only_when_a_call_was_measured_against_it():
    caps = Caps(max_detailed_calls=0)
    markdown = render_markdown(attributed_run(), caps=caps).splitlines()
    header = next(line for line in markdown if line.startswith("| call | kind |"))
    assert "| max abs to reference: control \\| candidate | decision or error |" in header
    assert any(line.startswith("| 1 | recurrent |") and "| 0 \\| 0.25 |" in line
               for line in markdown)
    page = render_html(attributed_run(), caps=caps)
    assert "<th>max abs to reference: control | candidate</th>" in page
    assert '<td class="nowrap">0 | 0.25</td>' in page
    plain = make_run(trace("a.kvtrace", 4, call("a.kvtrace", 1)))
    assert "to reference" not in render_markdown(plain, caps=caps)
    assert "to reference" not in render_html(plain, caps=caps)
