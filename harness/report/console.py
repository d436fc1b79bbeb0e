"""Rich console layout of the report model (:mod:`harness.report.model`).

Report objects render themselves (``__rich_console__``); the facts come from
:func:`~harness.report.model.build_report`, so this module only arranges them. Tests render to
a fixed-width, colourless ``Console(file=StringIO())``. Colour follows rich's own rules, which
honour ``NO_COLOR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.report.facts import fmt_ms, fmt_total_ms
from harness.report.model import (Caps, CallView, Report, TraceRow, build_report, call_view)
from harness.results import CallComparison, RunResult

__all__ = ["RunReport", "DivergencePanel"]

_TENSOR_COLUMNS = ("tensor", "class", "mismatched", "max abs", "mean abs", "max rel",
                   "worst index", "candidate", "control")
_VERDICT_STYLE = {"EQUIVALENT": "bold green", "DIVERGED": "bold red",
                  "INSUFFICIENT EVIDENCE": "bold yellow"}


def _panel(view: CallView, *, first: bool) -> Panel:
    call = view.call
    parts: list[Any] = []
    if call.cause is not None:
        parts.append(Text(f"cause: {call.cause}"))
    if view.error:
        parts.append(Text(view.error))
    if view.tensor_rows:
        table = Table(show_edge=False, pad_edge=False)
        for column in _TENSOR_COLUMNS:
            # Fold, never ellipsise: a cut tensor path or number hides what diverged.
            table.add_column(column, overflow="fold")
        for cells in view.tensor_rows:
            table.add_row(*cells[:6], *cells[7:])  # mean rel is left to Markdown and HTML
        parts.append(table)
    if call.event_divergence is not None:
        parts.append(Text("cache decisions: " + call.event_divergence.summary))
    if view.reference is not None:
        parts.append(Text(f"max abs distance to the reference engine: control "
                          f"{view.reference[0]}, candidate {view.reference[1]}"))
    title = (f"{'FIRST ' if first else ''}{call.classification} divergence, "
             f"call {call.call_index} ({call.call_kind})")
    subtitle = f"{Path(call.trace).name}, envs {list(call.env_ids)}, {view.status}"
    return Panel(Group(*parts), title=title, title_align="left", subtitle=subtitle,
                 subtitle_align="left", border_style="yellow" if call.waived else "red")


class DivergencePanel:
    """One diverging call: where, what kind, tensor stats and the decision diff that explains it."""

    def __init__(self, call: CallComparison, first: bool = False) -> None:
        self.call = call
        self.first = first

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _panel(call_view(self.call), first=self.first)


def _summary(report: Report) -> Table:
    run = report.run
    table = Table(title=f"kvmigrate compare: control {run.control_engine} vs candidate "
                        f"{run.candidate_engine}"
                        + (f" (manager {run.manager_spec})" if run.manager_spec else ""),
                  title_justify="left")
    table.add_column("trace", no_wrap=True)
    for column in ("calls", "tensors", "unwaived", "waived", "first", "total ms\nctl|cand",
                   "ratio"):
        table.add_column(column, overflow="fold")
    for row in report.traces:
        table.add_row(row.name, str(row.trace.num_calls), str(row.trace.num_tensors_compared),
                      str(row.num_unwaived), str(row.num_waived),
                      "-" if row.focus is None else str(row.focus.call.call_index),
                      f"{fmt_total_ms(row.control_total_s)}|{fmt_total_ms(row.candidate_total_s)}",
                      row.total_ratio)
    return table


def _coverage(report: Report) -> Text:
    """Every row of the coverage table on one wrapped line per kind of row."""
    missing = [row.name for row in report.coverage if row.missing]
    match = ", ".join(f"{row.name} {row.count}" for row in report.coverage
                      if row.refactor == "match")
    other = ", ".join(f"{row.name} ({row.refactor}) {row.count}" for row in report.coverage
                      if row.refactor != "match")
    text = Text(f"coverage, required by the gate: {match}; never exercised: "
                f"{', '.join(missing) or 'none'}; not required: {other}")
    if missing:
        text.stylize("bold red")
    return text


def _hit_rates(report: Report) -> Table:
    table = Table(title="cache hit rate per pool", title_justify="left")
    for column in ("trace", "pool", "control", "candidate"):
        table.add_column(column, overflow="fold")
    for row in report.traces:
        for pool, control, candidate in row.pool_rates:
            table.add_row(row.name, pool, control, candidate)
    return table


def _timings(report: Report) -> Table:
    table = Table(title="time per call (interleaved; median / p95, ms)", title_justify="left")
    for column in ("trace", "kind", "calls", report.run.control_engine,
                   report.run.candidate_engine, "ratio (median)"):
        table.add_column(column)
    for row in report.traces:
        for timing in row.timings:
            sides = ["-" if t is None else f"{fmt_ms(t.median_s)} / {fmt_ms(t.p95_s)}"
                     for t in (timing.control, timing.candidate)]
            table.add_row(row.name, timing.call_kind, str(timing.num_calls), *sides, timing.ratio)
    return table


def _causes(report: Report) -> Table:
    table = Table(title="diverging calls by cause", title_justify="left")
    for column in ("cause", "unwaived", "waived", "first call"):
        table.add_column(column, overflow="fold")
    for group in report.causes:
        table.add_row(group.cause or "not attributed", str(group.num_unwaived),
                      str(group.num_waived), f"{Path(group.first_trace).name} {group.first_call}")
    return table


def _waived(report: Report) -> Table:
    groups = report.waivers.groups
    total = sum(group.num_calls for group in groups)
    table = Table(title=f"waived divergences ({total} {'call' if total == 1 else 'calls'}; "
                        f"expected, see waivers.toml)", title_justify="left")
    for column in ("trace", "waiver", "calls", "first..last", "kinds / classes"):
        table.add_column(column, overflow="fold")
    for group in groups:
        table.add_row(group.trace, group.waiver_id, str(group.num_calls),
                      f"{group.first_call}..{group.last_call}", group.kinds)
    return table


def _hidden_line(row: TraceRow) -> Text | None:
    if row.num_unwaived_not_detailed <= 0:
        return None
    return Text(f"... {row.num_unwaived_not_detailed} more unwaived diverging calls in "
                f"{Path(row.trace.trace_path).name} (see the JSON report)")


class RunReport:
    """The whole console report: summary per trace, timings, divergence panels, verdict.

    Args:
        run: the comparison run.
        waiver_report: ``harness.waivers.waiver_report`` output, if any.
        notes: extra one-line remarks.
        caps: how many calls are shown in full.
    """

    def __init__(self, run: RunResult, *, waiver_report: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = (), caps: Caps = Caps()) -> None:
        self.report = build_report(run, waiver_report=waiver_report, notes=notes, caps=caps)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        report = self.report
        yield _summary(report)
        facts = dict(report.header)
        yield Text(f"replay: {facts['replay']}; shard {facts['shard']}; reference engine "
                   f"{facts['reference engine']}; tolerances: {facts['tolerances']}")
        yield _timings(report)
        if any(row.pool_rates for row in report.traces):
            yield _hit_rates(report)
        if report.coverage:
            yield _coverage(report)
        for path, note in report.notes:
            yield Text(f"note: {note}" if path is None else f"note: {path}: {note}")
        if report.causes:
            yield _causes(report)
        focus = [row.focus for row in report.traces if row.focus is not None]
        for cause, views in report.detail_groups:
            if cause is not None:
                yield Text(f"cause {cause}:", style="bold")
            for view in views:
                yield _panel(view, first=any(view is first for first in focus))
        for row in report.traces:
            hidden = _hidden_line(row)
            if hidden is not None:
                yield hidden
        if report.waivers.groups:
            yield _waived(report)
        yield Text(report.verdict.counts)
        yield Text(report.verdict.sentence, style=_VERDICT_STYLE[report.verdict.label])
