"""The Markdown and HTML report forms (harness.report.markdown, .html, .svg)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timezone
from html.parser import HTMLParser

from harness.compare import compare_events
from harness.report import svg
from harness.report.facts import decision_diff_lines
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.model import Caps, engine_roles
from harness.results import (CallComparison, EngineTiming, PoolStats, RunResult,
                             TensorDivergence, TraceResult)
from unizero.events import Lookup, Store

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
KEY_A = 0x1A2B3C4D5E6F7788
KEY_B = 0xFEDCBA9876543210
PLOT_TITLES = {"Per-call max error", "Cache decisions per call per engine",
               "Latency per call kind per engine", "Hit rate per pool per engine"}
EVIL = "<script>alert(1)</script>"


# --- factories ---------------------------------------------------------------------------------

def value_divergence(path: str = "latent") -> TensorDivergence:
    return TensorDivergence(path=path, kind="value", actual_dtype="float32",
                            expected_dtype="float32", actual_shape=(2, 4), expected_shape=(2, 4),
                            rtol=1.3e-6, atol=1e-5, num_mismatched=3, num_elements=8,
                            max_abs_err=0.5, mean_abs_err=0.25, max_rel_err=2.0,
                            mean_rel_err=0.75, worst_flat_index=3, worst_index=(0, 3),
                            actual_value=1.5, expected_value=1.0)


def hit_against_miss():
    lookup = Lookup(env=1, key=KEY_A, path="recurrent", hit=True, pool="recurrent", size=5)
    store = Store(env=1, key=KEY_B, pool="recurrent", slot=4, evicted=None, size=6)
    control = [lookup, store]
    candidate = [replace(lookup, hit=False, pool=None, size=1), store]
    return compare_events(candidate, control)


def diverging_trace(path: str = "runs/a|b.kvtrace", num_calls: int = 10) -> TraceResult:
    calls = (
        CallComparison(trace=path, call_index=1, call_kind="recurrent", env_ids=(0,),
                       tensor_divergences=(value_divergence("policy_logits"),),
                       waiver_id="W-1"),
        CallComparison(trace=path, call_index=3, call_kind="recurrent", env_ids=(0, 1),
                       tensor_divergences=(value_divergence(),),
                       event_divergence=hit_against_miss()),
        CallComparison(trace=path, call_index=7, call_kind="root", env_ids=(1,),
                       engine_error="control: ok; candidate: ValueError('x|y')"),
    )
    max_errors = [0.0] * num_calls
    max_errors[1], max_errors[3], max_errors[5] = 0.5, 0.5, 1e-7
    # Call 0 a first root step; call 3 hit in the control, missed one of two in the candidate.
    decisions = [(0, 0, 0, 0)] + [(2, 2, 2, 2)] * (num_calls - 1)
    decisions[3], decisions[4] = (2, 2, 1, 2), (0, 1, 0, 1)
    return TraceResult(
        trace_path=path, trace_digest="sha256:00", num_calls=num_calls,
        num_tensors_compared=4 * num_calls, divergences=calls, timings=timings(),
        pool_stats=pool_stats(), num_unwaived_calls=2,
        coverage={"hit_recurrent_pool": 6, "miss": 2, "trim": 4}, notes=("tail truncated",),
        max_errors=tuple(max_errors), decisions=tuple(decisions))


def timings(candidate: str = "refactored") -> tuple[EngineTiming, ...]:
    return (EngineTiming("legacy", "root", 2, 0.002, 0.004, 0.004),
            EngineTiming("legacy", "recurrent", 8, 0.001, 0.003, 0.010),
            EngineTiming(candidate, "root", 2, 0.001, 0.002, 0.002),
            EngineTiming(candidate, "recurrent", 8, 0.002, 0.004, 0.020))


def pool_stats(candidate: str = "refactored") -> tuple[PoolStats, ...]:
    return (PoolStats("legacy", "root", 3, 1, 4, 0), PoolStats("legacy", "recurrent", 6, 0, 6, 1),
            PoolStats(candidate, "root", 3, 1, 4, 0),
            PoolStats(candidate, "recurrent", 5, 1, 6, 1))


def clean_trace(path: str = "clean.kvtrace", num_calls: int = 20) -> TraceResult:
    return TraceResult(trace_path=path, trace_digest="sha256:11", num_calls=num_calls,
                       num_tensors_compared=80, timings=timings(), pool_stats=pool_stats(),
                       max_errors=(0.0,) * num_calls)


def make_run(*traces: TraceResult) -> RunResult:
    return RunResult(created_at=CREATED, control_engine="legacy", candidate_engine="refactored",
                     manager_spec=None, tolerances={"nan": "equal", "paths": {}}, traces=traces)


WAIVER_REPORT = {"source": "waivers.toml", "used": {"W-1": 1}, "expired": ["W-old"],
                 "stale": ["W-unused"]}


# --- Markdown ----------------------------------------------------------------------------------

def test_markdown_starts_with_the_diverged_verdict_and_its_counts():
    lines = render_markdown(make_run(diverging_trace(), clean_trace())).splitlines()
    assert lines[0] == "**DIVERGED: 2 unwaived diverging call(s) in 1 trace(s)**"
    assert lines[2] == ("2 trace(s), 30 calls, 2 unwaived and 1 waived diverging call(s); "
                        "exit code 1 (divergence)")


def test_markdown_starts_with_the_equivalent_verdict_when_every_trace_passes():
    text = render_markdown(make_run(clean_trace()))
    assert text.splitlines()[0] == "**EQUIVALENT: 1 trace(s), 20 calls, 0 waived divergence(s)**"


def test_markdown_summary_table_has_its_header_and_escaped_rows():
    lines = render_markdown(make_run(diverging_trace(), clean_trace())).splitlines()
    header = lines.index("## Traces") + 2
    assert lines[header] == ("| trace | calls | tensors compared | unwaived | waived | "
                             "first divergence | control hit rate | candidate hit rate | "
                             "control total ms | candidate total ms | ratio control/candidate |")
    assert lines[header + 1] == "|" + "|".join(["---"] * 11) + "|"
    assert lines[header + 2] == ("| `runs/a\\|b.kvtrace` | 10 | 40 | 2 | 1 | 3 | "
                                 "root 75.0%, recurrent 100.0% | root 75.0%, recurrent 83.3% | "
                                 "14.0 | 22.0 | 0.64x |")


def test_markdown_timings_table_gives_median_p95_and_ratio_per_call_kind():
    lines = render_markdown(make_run(clean_trace())).splitlines()
    assert "| `clean.kvtrace` | root | 2 | 2.000 | 4.000 | 1.000 | 2.000 | 2.00x |" in lines
    assert "| `clean.kvtrace` | recurrent | 8 | 1.000 | 3.000 | 2.000 | 4.000 | 0.50x |" in lines


def test_markdown_details_show_tensor_numbers_decision_diff_and_engine_error():
    text = render_markdown(make_run(diverging_trace()))
    lines = text.splitlines()
    heading = lines.index("### `runs/a|b.kvtrace`: call 3 (recurrent, envs [0, 1]): both, unwaived")
    assert lines[heading + 2].startswith("| tensor | class | mismatched/total | max abs |")
    assert lines[heading + 4] == ("| `latent` | value | 3/8 | 0.5 | 0.25 | 2 | 0.75 | [0, 3] | "
                                  "1.5 | 1 |")
    assert ("Cache decisions: env 1 lookup key 0x1a2b3c4d…: control hit (recurrent pool), "
            "candidate miss (first differing event 0; 2 control / 2 candidate events)") in lines
    assert "values_changed root[0]['hit']: true -> false" in lines
    error = lines.index("### `runs/a|b.kvtrace`: call 7 (root, envs [1]): error, unwaived")
    assert lines[error + 2] == "Engine error: control: ok; candidate: ValueError('x\\|y')"
    others = lines.index("### `runs/a|b.kvtrace`: other diverging calls (1 listed)")
    assert lines[others + 4] == ("| 1 | recurrent | [0] | tensor | waived by W-1 | - | "
                                 "`policy_logits` | 0.5 | - |")


def test_markdown_escapes_pipes_inside_cells():
    text = render_markdown(make_run(diverging_trace()))
    tables = re.findall(r"(?:^\|.*\n)+", text, flags=re.MULTILINE)
    assert len(tables) == 6  # traces, timings, call 3's tensors, other calls, coverage, waivers
    for table in tables:
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in table.splitlines()}
        assert len(widths) == 1, table  # no pipe in a cell splits it
    assert "a|b" not in "".join(tables) and "x|y" not in "".join(tables)
    assert "`runs/a\\|b.kvtrace`" in tables[0]
    assert "ValueError('x\\|y')" in text


def test_markdown_lists_waivers_used_expired_and_stale_from_the_report():
    text = render_markdown(make_run(diverging_trace()), waiver_report=WAIVER_REPORT)
    assert "| `W-1` | 1 |" in text
    assert "- Expired: `W-old`" in text and "- Stale: `W-unused`" in text
    plain = render_markdown(make_run(diverging_trace()))
    assert "| `W-1` | 1 |" in plain
    assert "Expired and stale waivers: not known (no waiver report given)." in plain


def test_markdown_is_deterministic_and_dated_by_the_run_only():
    run = make_run(diverging_trace(), clean_trace())
    assert render_markdown(run) == render_markdown(run)
    assert "2026-01-02T03:04:05+00:00" in render_markdown(run)
    assert "- `runs/a|b.kvtrace`: tail truncated" in render_markdown(run)


def test_decision_diff_lines_are_capped_with_a_count_of_the_rest():
    event = replace(hit_against_miss(),
                    deepdiff={"values_changed": {f"root[{i}]['size']": {"old_value": i,
                                                                         "new_value": i + 1}
                                                 for i in range(15)}})
    lines = decision_diff_lines(event, limit=12)
    assert lines[0] == "values_changed root[0]['size']: 0 -> 1"
    assert lines[-1] == "... 3 more change(s) in the JSON report"
    assert len(lines) == 13


def test_engine_roles_find_a_manager_suffixed_or_self_check_candidate():
    manager = replace(clean_trace(), timings=timings("refactored[pkg.mod:Cls]"),
                      pool_stats=pool_stats("refactored[pkg.mod:Cls]"))
    assert engine_roles(make_run(manager), manager) == ("legacy", "refactored[pkg.mod:Cls]")
    self_check = replace(make_run(), candidate_engine="legacy")
    doubled = replace(clean_trace(), timings=timings("legacy#2"), pool_stats=pool_stats("legacy#2"))
    assert engine_roles(self_check, doubled) == ("legacy", "legacy#2")


# --- HTML --------------------------------------------------------------------------------------

_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "area", "base", "source"}
_SVG_EMPTY = {"line", "polyline", "path"}


class _StrictParser(HTMLParser):
    """Collects tags and fails on mis-nested or unclosed elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.svg_titles: list[str] = []
        self._in_svg_title = False

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag == "title" and self.stack and self.stack[-1] == "svg":
            self._in_svg_title = True
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.attrs += [(tag, name, value) for name, value in attrs]
        if tag not in _VOID | _SVG_EMPTY | {"rect", "circle", "polygon"}:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        self._in_svg_title = False

    def handle_data(self, data):
        if self._in_svg_title:
            self.svg_titles.append(data)


def parse(page: str) -> _StrictParser:
    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def test_html_is_well_formed_and_holds_the_four_titled_plots_per_trace():
    page = render_html(make_run(diverging_trace(), clean_trace()), waiver_report=WAIVER_REPORT)
    assert page.startswith("<!DOCTYPE html>")
    parser = parse(page)
    assert page.count("<svg") == len(parser.svg_titles) == 10  # 5 per trace
    assert PLOT_TITLES <= set(parser.svg_titles)
    labelled = [value for tag, name, value in parser.attrs
                if tag == "svg" and name == "aria-labelledby"]
    assert len(labelled) == 10


def test_html_is_self_contained():
    page = render_html(make_run(diverging_trace(), clean_trace()))
    parser = parse(page)
    for tag, name, value in parser.attrs:
        if name in ("src", "href", "xlink:href", "action"):
            assert value is not None and value.startswith("#"), (tag, name, value)
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert "url(" not in page and "@import" not in page


def test_html_escapes_text_from_the_run():
    trace = replace(diverging_trace(path=EVIL), notes=(EVIL,))
    run = replace(make_run(trace), candidate_engine=EVIL)
    page = render_html(run, waiver_report={**WAIVER_REPORT, "stale": [EVIL]})
    parse(page)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_marks_diverging_calls_by_waiver_status_and_opens_the_first_unwaived():
    page = render_html(make_run(diverging_trace()))
    start = page.index('id="t1-errors"')
    errors_plot = page[start:page.index("</svg>", start)]
    assert errors_plot.count('class="c-unwaived"') == 2
    assert errors_plot.count('class="c-waived"') == 1
    # The unwaived calls are shown in full, as in the console and Markdown forms.
    assert re.findall(r"<details( open)?>", page) == ["", " open", " open"]
    assert "Log scale; calls whose error is exactly 0" in page


def test_html_lists_at_most_max_listed_calls_divergences():
    calls = tuple(CallComparison(trace="many", call_index=i, call_kind="recurrent", env_ids=(0,),
                                 tensor_divergences=(value_divergence(),))
                  for i in range(Caps().max_listed_calls + 5))
    trace = replace(clean_trace("many", num_calls=300), divergences=calls,
                    num_unwaived_calls=len(calls))
    page = render_html(make_run(trace))
    assert page.count("<details") == Caps().max_listed_calls
    assert "5 more diverging call(s) are not listed here" in page


def timeline_of(page: str, dom_id: str = "t1") -> str:
    start = page.index(f'id="{dom_id}-timeline"')
    return page[start:page.index("</svg>", start)]


def test_html_draws_one_decision_bar_per_call_and_engine_with_its_outcome():
    timeline = timeline_of(render_html(make_run(diverging_trace())))
    bars = re.findall(r'class="(d-\w+)"><title>call (\d+), (\w+) \((\w+)\): ([^<]*)</title>',
                      timeline)
    assert len(bars) == 2 * 10
    control = {int(call): (css, text) for css, call, role, _, text in bars if role == "control"}
    candidate = {int(call): (css, text) for css, call, role, engine, text in bars
                 if role == "candidate" and engine == "refactored"}
    assert control[0] == candidate[0] == ("d-none", "no lookup")
    assert control[3] == ("d-hit", "2 of 2 lookups hit")
    assert candidate[3] == ("d-some", "1 of 2 lookups hit")
    assert control[4] == candidate[4] == ("d-miss", "0 of 1 lookups hit")
    assert "94.1% of 17 lookups hit" in timeline and "88.2% of 17 lookups hit" in timeline
    assert timeline.count('class="c-unwaived"') == 2 and timeline.count('class="c-waived"') == 1
    assert "some lookups missed" in timeline  # the legend
    page = render_html(make_run(diverging_trace()))
    assert "The engines&#x27; hit/lookup counts differ on 1 of 10 calls" in page
    assert "Diverging calls by class (each mark&#x27;s tooltip names its class): tensor 1, " \
        "both 1, error 1." in page


def test_html_timeline_without_decisions_draws_the_diverging_calls_only():
    trace = replace(diverging_trace(), decisions=())
    page = render_html(make_run(trace))
    parse(page)
    timeline = timeline_of(page)
    assert not re.search(r'class="d-\w+"><title>', timeline)  # the legend's bars only
    assert timeline.count("not recorded") == 2
    assert timeline.count('class="c-unwaived"') == 2
    assert "This result holds no per-call decision counts" in page


def test_html_timeline_buckets_50k_calls_into_columns_showing_the_worst_outcome():
    num_calls = 50_000
    # Worst case for the size: every column's worst outcome differs from its neighbours'.
    cycle = ((0, 0, 0, 0), (2, 2, 2, 2), (1, 2, 1, 2), (0, 3, 0, 3))
    decisions = tuple(cycle[(i * svg.TIMELINE_COLUMNS // num_calls) % 4] for i in range(num_calls))
    trace = replace(clean_trace("big", num_calls=num_calls), decisions=decisions)
    page = render_html(make_run(trace))
    parse(page)
    timeline = timeline_of(page)
    assert len(timeline) < 1_000_000
    bars = re.findall(r'<rect [^>]*class="d-(\w+)"><title>calls (\d+)-(\d+), control', timeline)
    assert len(bars) <= svg.TIMELINE_COLUMNS
    assert int(bars[0][1]) == 0 and int(bars[-1][2]) == num_calls - 1
    assert [outcome for outcome, _, _ in bars[:4]] == ["none", "hit", "some", "miss"]
    assert "shows the worst outcome among them" in page


def test_html_says_when_every_error_is_zero():
    page = render_html(make_run(clean_trace()))
    parse(page)
    assert "All 20 calls have a max abs error of exactly 0" in page
    assert "EQUIVALENT: 1 trace(s), 20 calls, 0 waived divergence(s)" in page


def test_both_forms_render_a_run_with_no_traces():
    run = make_run()
    parse(render_html(run))
    assert "No trace was compared." in render_html(run)
    assert render_markdown(run).splitlines()[0] == "**INSUFFICIENT EVIDENCE: no trace was compared**"


def test_both_forms_render_a_trace_with_no_calls():
    empty = TraceResult(trace_path="empty.kvtrace", trace_digest="sha256:22", num_calls=0,
                        num_tensors_compared=0)
    run = make_run(empty)
    parser = parse(render_html(run))
    assert PLOT_TITLES <= set(parser.svg_titles)
    assert "No per-call errors are recorded" in render_html(run)
    markdown = render_markdown(run)
    assert "| `empty.kvtrace` | 0 | 0 | 0 | 0 | - | - | - | 0.0 | 0.0 | - |" in markdown
    assert markdown.splitlines()[0] == ("**INSUFFICIENT EVIDENCE: 1 of 1 trace(s) replayed no "
                                        "call**")
    assert "- `empty.kvtrace`: replayed no call: no evidence either way" in markdown
