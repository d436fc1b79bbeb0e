"""The mutation self-test: every faulty manager of the catalogue must fail the comparison.

The honest refactored manager is replayed first, over every trace, and must pass. Each mutant
is then replayed over the traces the honest manager passed, in order, and stops at its first
unwaived divergence — later calls and later traces cannot uncatch it. A non-equivalent mutant
that survives every trace means the traces do not exercise what it breaks; an equivalent mutant
that is caught means its equivalence argument is wrong (or the comparator looks at internals),
so both fail the suite.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from harness import exit_codes
from harness.limits import DEFAULT_LIMITS, Limits
from harness.mutants import CATALOGUE, Mutant
from harness.replay import ReplayOptions, replay_trace
from harness.results import CallComparison
from harness.waivers import load_waivers

__all__ = ["HONEST", "MutantOutcome", "MutationReport", "run_mutation_suite", "replay_until_caught"]

HONEST = Mutant("honest", "refactored.kv_cache_manager:KVCacheManager",
                "the refactored manager as shipped")

Judge = Callable[[CallComparison], CallComparison]


@dataclass(frozen=True, slots=True)
class MutantOutcome:
    """What the comparison made of one manager.

    Attributes:
        mutant: the catalogue entry (``HONEST`` for the honest manager).
        first_divergence: the first unwaived diverging call, on the first trace that has one;
            None when the manager survived every trace replayed.
        num_traces_replayed: traces replayed, the catching one included.
        elapsed_s: wall time of those replays.
    """

    mutant: Mutant
    first_divergence: CallComparison | None
    num_traces_replayed: int
    elapsed_s: float

    @property
    def caught(self) -> bool:
        return self.first_divergence is not None

    @property
    def as_expected(self) -> bool:
        """Honest and equivalent managers must survive; every other mutant must be caught."""
        must_survive = self.mutant is HONEST or self.mutant.equivalent
        return self.caught != must_survive


@dataclass(frozen=True, slots=True)
class MutationReport:
    """The honest manager's outcome, each mutant's, and the traces they ran on.

    Attributes:
        trace_paths: every trace given, in replay order.
        honest: the honest manager over all of them.
        mutants: one outcome per catalogue entry, in catalogue order.
        failed_traces: traces the honest manager diverges on; mutants skip them, since a
            divergence there says nothing about the mutant.
    """

    trace_paths: tuple[str, ...]
    honest: MutantOutcome
    mutants: tuple[MutantOutcome, ...]
    failed_traces: tuple[str, ...] = ()

    @property
    def survivors(self) -> tuple[MutantOutcome, ...]:
        """Non-equivalent mutants no trace caught."""
        return tuple(o for o in self.mutants if not o.mutant.equivalent and not o.caught)

    @property
    def refuted(self) -> tuple[MutantOutcome, ...]:
        """Mutants listed as equivalent that a trace caught after all."""
        return tuple(o for o in self.mutants if o.mutant.equivalent and o.caught)

    @property
    def ok(self) -> bool:
        return self.honest.as_expected and all(o.as_expected for o in self.mutants)

    @property
    def exit_code(self) -> int:
        """0 when the honest manager passes and every mutant does what the catalogue says."""
        return exit_codes.OK if self.ok else exit_codes.DIVERGENCE

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = Table(title=f"mutation self-test over {len(self.trace_paths)} trace(s)",
                      title_justify="left")
        for column in ("mutant", "expected", "result", "trace", "call", "kind", "class",
                       "traces", "time s"):
            table.add_column(column, justify="right" if column in ("call", "traces", "time s")
                             else "left")
        for outcome in (self.honest, *self.mutants):
            table.add_row(*_row(outcome))
        yield Group(table, *_notes(self), _verdict(self))


def _row(outcome: MutantOutcome) -> tuple[str, ...]:
    mutant, first = outcome.mutant, outcome.first_divergence
    expected = "pass" if mutant is HONEST else ("survive" if mutant.equivalent else "caught")
    if mutant is HONEST:
        result = "diverges" if outcome.caught else "pass"
    else:
        result = "caught" if outcome.caught else "survived"
    if not outcome.as_expected:
        result += " !"
    where = (("-",) * 4 if first is None else
             (Path(first.trace).name, str(first.call_index), first.call_kind,
              first.classification))
    return (mutant.name, expected, result, *where, str(outcome.num_traces_replayed),
            f"{outcome.elapsed_s:.1f}")


def _notes(report: MutationReport) -> list[Text]:
    notes = []
    for path in report.failed_traces:
        notes.append(Text(f"honest manager diverges on {path}: mutants were not replayed on it"))
    honest_first = report.honest.first_divergence
    if honest_first is not None:
        notes.append(Text(f"honest first divergence: {_describe(honest_first)}"))
    for outcome in report.survivors:
        notes.append(Text(f"survivor {outcome.mutant.name} ({outcome.mutant.description}): "
                          f"no trace exercises its fault; add a scenario that does"))
    for outcome in report.refuted:
        notes.append(Text(f"{outcome.mutant.name} is listed as equivalent but was caught: "
                          f"{_describe(outcome.first_divergence)}"))
    for outcome in report.mutants:
        if outcome.mutant.equivalent and not outcome.caught:
            notes.append(Text(f"equivalent {outcome.mutant.name}: "
                              f"{outcome.mutant.equivalent_reason}"))
    return notes


def _describe(call: CallComparison | None) -> str:
    if call is None:
        return "-"
    what = (call.engine_error or (call.event_divergence.summary if call.event_divergence else
                                  ", ".join(d.path for d in call.tensor_divergences[:3])))
    return f"{Path(call.trace).name} call {call.call_index} ({call.call_kind}) {what}"


def _verdict(report: MutationReport) -> Text:
    num_must = sum(not o.mutant.equivalent for o in report.mutants)
    num_caught = sum(not o.mutant.equivalent and o.caught for o in report.mutants)
    honest = "passes" if report.honest.as_expected else "FAILS"
    text = (f"{'OK' if report.ok else 'FAIL'}: honest manager {honest}; {num_caught}/{num_must} "
            f"mutants caught; {len(report.mutants) - num_must} listed equivalent")
    return Text(text, style="bold green" if report.ok else "bold red")


class _Caught(Exception):
    """Stops a replay at its first unwaived divergence (a signal, not a failure)."""

    def __init__(self, call: CallComparison) -> None:
        super().__init__(call.call_index)
        self.call = call


def replay_until_caught(path: str, manager: str, judge: Judge, *, device: str = "cpu",
                        limits: Limits = DEFAULT_LIMITS) -> CallComparison | None:
    """Replay ``path`` with ``manager`` as the candidate's cache manager, legacy as control.

    Returns:
        The first unwaived diverging call (the replay stops there), or None if there is none.
    """
    def stop_at_unwaived(call: CallComparison) -> CallComparison:
        judged = judge(call)
        if not judged.waived:
            raise _Caught(judged)
        return judged

    options = ReplayOptions(candidate="refactored", manager=manager, device=device, max_kept=1,
                            limits=limits)
    try:
        replay_trace(path, options, judge=stop_at_unwaived)
    except _Caught as caught:
        return caught.call
    return None


def _run_one(mutant: Mutant, paths: Sequence[str], judge: Judge, device: str, limits: Limits,
             clock: Callable[[], float], advance: Callable[[], None]) -> MutantOutcome:
    start = clock()
    first, num_replayed = None, 0
    for path in paths:
        num_replayed += 1
        first = replay_until_caught(path, mutant.spec, judge, device=device, limits=limits)
        advance()
        if first is not None:
            break
    return MutantOutcome(mutant, first, num_replayed, clock() - start)


def run_mutation_suite(trace_paths: Sequence[str], *,
                       progress: Callable[[str, int, int], None] | None = None,
                       catalogue: Sequence[Mutant] = CATALOGUE, waivers_path: str | None = None,
                       device: str = "cpu", limits: Limits = DEFAULT_LIMITS,
                       clock: Callable[[], float] = time.perf_counter) -> MutationReport:
    """Replay every trace for the honest manager, then each mutant until a trace catches it.

    Args:
        trace_paths: traces to replay, in order (put the cheap, catching ones first).
        progress: called as ``(manager name, replays done, replays at most)``.
        catalogue: the mutants to run.
        waivers_path: waiver file; None reads the project's ``waivers.toml``.
        device: torch device of both engines.
        limits: bounds on what the traces may declare.
        clock: seconds counter for the timings (injected by tests).
    """
    paths = tuple(trace_paths)
    judge = load_waivers(waivers_path).judge
    total = len(paths) * (1 + len(catalogue))
    done = 0

    def advance(name: str, steps: int = 1) -> None:
        nonlocal done
        done += steps
        if progress is not None:
            progress(name, done, total)

    honest_results = []
    start = clock()
    for path in paths:
        honest_results.append(replay_until_caught(path, HONEST.spec, judge, device=device,
                                                  limits=limits))
        advance(HONEST.name)
    failed = tuple(p for p, first in zip(paths, honest_results) if first is not None)
    honest = MutantOutcome(HONEST, next((f for f in honest_results if f is not None), None),
                           len(paths), clock() - start)
    usable = tuple(p for p in paths if p not in failed)
    outcomes = []
    for mutant in catalogue:
        outcome = _run_one(mutant, usable, judge, device, limits, clock,
                           lambda name=mutant.name: advance(name))
        advance(mutant.name, len(paths) - outcome.num_traces_replayed)
        outcomes.append(outcome)
    return MutationReport(paths, honest, tuple(outcomes), failed)
