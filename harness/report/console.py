"""Rich console rendering of a comparison run.

Report objects render themselves (``__rich_console__``), so the result model stays free of
presentation and tests can render to a fixed-width, colourless ``Console(file=StringIO())``.
Colour follows rich's own rules, which honour ``NO_COLOR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.results import CallComparison, RunResult, TensorDivergence, TraceResult

__all__ = ["RunReport", "DivergencePanel", "fmt_ms", "engine_total", "max_panels"]

max_panels = 10


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _fmt_num(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}"


def engine_total(trace: TraceResult, engine: str) -> float:
    return sum(t.total_s for t in trace.timings if t.engine == engine)


def _short(trace_path: str) -> str:
    """A trace's name without folder and the .kvtrace suffix, for narrow tables."""
    name = Path(trace_path).name
    return name[: -len(".kvtrace")] if name.endswith(".kvtrace") else name


def _hit_rate(trace: TraceResult, engine: str, pool: str) -> str:
    for stats in trace.pool_stats:
        if stats.engine == engine and stats.pool == pool and stats.hit_rate is not None:
            return f"{stats.hit_rate:.0%}"
    return "-"


class DivergencePanel:
    """One diverging call: where, what kind, tensor stats and the decision diff that explains it."""

    def __init__(self, call: CallComparison, first: bool = False) -> None:
        self.call = call
        self.first = first

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        call = self.call
        parts: list = []
        if call.engine_error:
            parts.append(Text(f"engine error: {call.engine_error}"))
        if call.tensor_divergences:
            parts.append(_tensor_table(call.tensor_divergences))
        if call.event_divergence is not None:
            parts.append(Text("cache decisions: " + call.event_divergence.summary))
        status = f"waived by {call.waiver_id}" if call.waived else "unwaived"
        title = (f"{'FIRST ' if self.first else ''}{call.classification} divergence, "
                 f"call {call.call_index} ({call.call_kind})")
        subtitle = f"{Path(call.trace).name}, envs {list(call.env_ids)}, {status}"
        yield Panel(Group(*parts), title=title, title_align="left", subtitle=subtitle,
                    subtitle_align="left", border_style="yellow" if call.waived else "red")


def _tensor_table(divergences: Iterable[TensorDivergence]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("tensor", "class", "mismatched", "max abs", "mean abs", "max rel",
                   "worst index", "candidate", "control"):
        # Fold, never ellipsise: a cut tensor path or number hides what diverged.
        table.add_column(column, overflow="fold")
    for div in divergences:
        mismatched = (f"{div.num_mismatched}/{div.num_elements}"
                      if div.num_mismatched is not None else "-")
        index = "-" if div.worst_index is None else str(list(div.worst_index))
        table.add_row(div.path, div.kind, mismatched, _fmt_num(div.max_abs_err),
                      _fmt_num(div.mean_abs_err), _fmt_num(div.max_rel_err), index,
                      _fmt_num(div.actual_value), _fmt_num(div.expected_value))
    return table


def _waived_table(calls: list[CallComparison]) -> Table:
    """Waived divergences grouped by trace and waiver: expected, so one row per group."""
    groups: dict[tuple[str, str], list[CallComparison]] = {}
    for call in calls:
        groups.setdefault((Path(call.trace).name, str(call.waiver_id)), []).append(call)
    noun = "call" if len(calls) == 1 else "calls"
    table = Table(title=f"waived divergences ({len(calls)} {noun}; expected, see waivers.toml)",
                  title_justify="left")
    for column in ("trace", "waiver", "calls", "first..last", "kinds / classes"):
        table.add_column(column, overflow="fold")
    for (trace, waiver), group in groups.items():
        kinds = sorted({f"{c.call_kind} {c.classification}" for c in group})
        table.add_row(trace, waiver, str(len(group)),
                      f"{group[0].call_index}..{group[-1].call_index}", ", ".join(kinds))
    return table


class RunReport:
    """The whole console report: summary per trace, timings, divergence panels, verdict."""

    def __init__(self, run: RunResult) -> None:
        self.run = run

    def _summary(self) -> Table:
        run = self.run
        control, candidate = run.control_engine, run.candidate_engine
        table = Table(title=f"kvmigrate compare: control {control} vs candidate {candidate}"
                            + (f" (manager {run.manager_spec})" if run.manager_spec else ""),
                      title_justify="left")
        table.add_column("trace", no_wrap=True)
        for column in ("calls", "tensors", "unwaived", "waived", "first", "root hit\nctl|cand",
                       "recur hit\nctl|cand", "ms\nctl|cand", "ratio"):
            table.add_column(column, overflow="fold")
        for trace in run.traces:
            t_control = engine_total(trace, control)
            t_candidate = engine_total(trace, candidate)
            ratio = f"{t_control / t_candidate:.2f}x" if t_candidate > 0 and t_control > 0 else "-"
            first = trace.first_unwaived or trace.first_divergence
            waived = sum(call.waived for call in trace.divergences)
            table.add_row(_short(trace.trace_path), str(trace.num_calls),
                          str(trace.num_tensors_compared), str(trace.num_unwaived_calls), str(waived),
                          "-" if first is None else str(first.call_index),
                          *(f"{_hit_rate(trace, control, pool)}|{_hit_rate(trace, candidate, pool)}"
                            for pool in ("root", "recurrent")),
                          f"{t_control * 1e3:.0f}|{t_candidate * 1e3:.0f}", ratio)
        return table

    def _timings(self) -> Table:
        table = Table(title="time per call (interleaved; median / p95, ms)", title_justify="left")
        for column in ("trace", "kind", "calls", f"{self.run.control_engine}",
                       f"{self.run.candidate_engine}", "ratio (median)"):
            table.add_column(column)
        for trace in self.run.traces:
            by_kind: dict[str, dict[str, object]] = {}
            for timing in trace.timings:
                by_kind.setdefault(timing.call_kind, {})[timing.engine] = timing
            for kind in sorted(by_kind):
                control = by_kind[kind].get(self.run.control_engine)
                candidate = by_kind[kind].get(self.run.candidate_engine)
                if control is None or candidate is None or kind not in ("root", "recurrent"):
                    continue
                ratio = (f"{control.median_s / candidate.median_s:.2f}x"
                         if candidate.median_s > 0 and control.median_s > 0 else "-")
                table.add_row(_short(trace.trace_path), kind, str(control.num_calls),
                              f"{fmt_ms(control.median_s)} / {fmt_ms(control.p95_s)}",
                              f"{fmt_ms(candidate.median_s)} / {fmt_ms(candidate.p95_s)}", ratio)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        run = self.run
        yield self._summary()
        yield self._timings()
        shown = 0
        for trace in run.traces:
            for note in trace.notes:
                yield Text(f"note: {note}")
            if trace.self_check:
                yield Text(f"self-check {trace.trace_path}: noise floor (max |a-e| on equal "
                           f"tensors) = {trace.noise_floor!r}")
            unwaived = [call for call in trace.divergences if not call.waived]
            # The panel budget is shared by all traces: count what this trace could show.
            num_shown_here = 0
            for position, call in enumerate(unwaived):
                if shown >= max_panels:
                    break
                yield DivergencePanel(call, first=position == 0)
                shown += 1
                num_shown_here += 1
            hidden = trace.num_unwaived_calls - num_shown_here
            if hidden > 0:
                yield Text(f"... {hidden} more unwaived diverging calls in {Path(trace.trace_path).name} "
                           f"(see the JSON report)")
        waived = [call for trace in run.traces for call in trace.divergences if call.waived]
        if waived:
            yield _waived_table(waived)
        total_unwaived = sum(t.num_unwaived_calls for t in run.traces)
        total_waived = sum(sum(c.waived for c in t.divergences) for t in run.traces)
        if run.ok:
            verdict = Text(f"EQUIVALENT: {len(run.traces)} trace(s), "
                           f"{sum(t.num_calls for t in run.traces)} calls, "
                           f"{total_waived} waived divergence(s)", style="bold green")
        else:
            verdict = Text(f"DIVERGED: {total_unwaived} unwaived diverging call(s) in "
                           f"{sum(not t.ok for t in run.traces)} trace(s)", style="bold red")
        yield verdict
