"""The minimisation driver: replays candidate reductions and keeps the ones that still fail."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from harness.calls import call_from_record, call_to_record
from harness.engines import build_engine
from harness.errors import UserError
from harness.minimize.ddmin import ddmin
from harness.minimize.records import (RawRecord, recurrent_parents, renumber_sources, slice_envs,
                                      split_units, write_records)
from harness.replay import ReplayOptions, replay_trace
from harness.results import CallComparison
from harness.trace import open_trace
from unizero.config import WorldModelConfig

__all__ = ["Judge", "MinimizeError", "MinimizeProgress", "MinimizeResult", "Progress",
           "minimize_trace", "rerecorded"]


@dataclass(frozen=True, slots=True)
class MinimizeProgress:
    """Where a minimisation stands, after each replay.

    Attributes:
        stage: ``locating`` (the input's first divergence), then ``searches``,
            ``simulations`` or ``envs``.
        num_calls: calls of the candidate reduction just replayed.
        num_calls_before: calls of the input trace.
        num_replays: replays so far.
    """

    stage: str
    num_calls: int
    num_calls_before: int
    num_replays: int


Progress = Callable[[MinimizeProgress], None]


class MinimizeError(UserError):
    """A trace that cannot be minimised (it does not diverge); the message says why."""


@dataclass(frozen=True, slots=True)
class MinimizeResult:
    """What a minimisation produced.

    Attributes:
        trace_path, output_path: the diverging input and the reduced trace written.
        num_calls_before, num_calls_after: calls (records) in each.
        classification: the first-divergence class both share.
        original: the input's first divergence; reduced: the output's.
        kept_envs: the input's env positions the reduced trace keeps, in order.
        num_replays: replays run (the check of each candidate reduction is one).
        elapsed_s: wall time.
        budget_exhausted: the replay budget ran out; the result is the smallest failing
            reduction found by then, not a 1-minimal one.
    """

    trace_path: str
    output_path: str
    num_calls_before: int
    num_calls_after: int
    classification: str
    original: CallComparison
    reduced: CallComparison
    kept_envs: tuple[int, ...]
    num_replays: int
    elapsed_s: float
    budget_exhausted: bool = False

    @property
    def ratio(self) -> float:
        """Calls after over calls before."""
        return self.num_calls_after / self.num_calls_before


def _reduced_header(header: dict[str, Any], trace_path: str, num_calls: int,
                    original: CallComparison, options: ReplayOptions,
                    envs: tuple[int, ...]) -> dict[str, Any]:
    """The input's header plus where the reduced trace came from; its outputs and events are
    the control's (re-recorded) unless the control is ``golden``."""
    engine = header.get("engine") if options.control == "golden" else options.control
    return {**header, "engine": engine, "minimized_from": {
        "trace": os.path.basename(trace_path), "num_calls": num_calls,
        "first_divergence": original.classification, "call_index": original.call_index,
        "control": options.control, "candidate": options.candidate, "manager": options.manager,
        "kept_envs": list(envs)}}


def same_failure(found: CallComparison, original: CallComparison) -> bool:
    """The same first-divergence class and, where causal attribution labelled the original,
    the same cause."""
    cause = getattr(original, "cause", None)  # only results of an attributed run carry a cause
    return found.classification == original.classification and (
        cause is None or getattr(found, "cause", None) == cause)


class _FirstDivergence(Exception):
    """Stops a candidate's replay at its first divergence (a signal, not a failure)."""

    def __init__(self, call: CallComparison) -> None:
        super().__init__(call.call_index)
        self.call = call


Judge = Callable[[CallComparison], CallComparison]
"""Marks a divergence waived (or not), as :func:`harness.replay.replay_trace` takes it."""


class _Minimizer:
    """Holds the records, the divergence to keep and the replays of one minimisation."""

    def __init__(self, header: dict[str, Any], records: list[RawRecord], options: ReplayOptions,
                 workdir: str, progress: Progress | None, judge: Judge | None,
                 max_replays: int) -> None:
        self.header, self.records, self.options, self.judge = header, records, options, judge
        self.workdir, self.progress, self.max_replays = workdir, progress, max_replays
        self.budget_exhausted = False
        self.target: CallComparison | None = None
        self.num_replays = 0
        self._seen: dict[tuple, int | None] = {}  # choice -> its first divergence's position

    # -------------------------------------------------------------- replaying a candidate
    def first_divergence(self, indices: Sequence[int], envs: Sequence[int]) -> CallComparison | None:
        """Replay the candidate reduction up to its first divergence (the replay stops there)."""
        path = os.path.join(self.workdir, f"candidate-{self.num_replays}.kvtrace")
        write_records(path, self.header, [r for _, r in self.select(indices, envs)],
                      compress_level=0)
        try:
            return self.first_divergence_of(path)
        finally:
            os.remove(path)

    def first_divergence_of(self, path: str) -> CallComparison | None:
        """The first unwaived divergence of the trace at ``path`` (its replay stops there)."""
        self.num_replays += 1
        try:
            replay_trace(path, self.options, judge=self._stop_at_unwaived)
        except _FirstDivergence as found:
            return found.call
        return None

    def _stop_at_unwaived(self, call: CallComparison) -> CallComparison:
        judged = self.judge(call) if self.judge is not None else call
        if not judged.waived:
            raise _FirstDivergence(judged)
        return judged

    def still_fails(self, indices: Sequence[int], envs: Sequence[int], stage: str) -> bool:
        key = (tuple(indices), tuple(envs))
        if key not in self._seen and self.num_replays >= self.max_replays:
            self.budget_exhausted = True  # keep what fails so far; try nothing new
            return False
        if key not in self._seen:
            found = self.first_divergence(indices, envs)
            self._seen[key] = (found.call_index if found is not None
                               and same_failure(found, self.target) else None)
            self.report(stage, len(self.select(indices, envs)))
        return self._seen[key] is not None

    def report(self, stage: str, num_calls: int) -> None:
        if self.progress is not None:
            self.progress(MinimizeProgress(stage, num_calls, len(self.records), self.num_replays))

    def truncated(self, indices: tuple[int, ...], envs: tuple[int, ...]) -> tuple[int, ...]:
        """``indices`` without the calls after the first divergence of that failing choice (as
        it is when that choice was never replayed: the input's prefix)."""
        position = self._seen.get((indices, envs))
        if position is None:
            return indices
        last = self.select(indices, envs)[position][0]
        return tuple(index for index in indices if index <= last)

    def select(self, indices: Sequence[int], envs: Sequence[int]) -> list[tuple[int, RawRecord]]:
        """The chosen records (env rows sliced), each with its index in the input trace."""
        keep_all = tuple(envs) == tuple(range(self.num_envs))
        chosen = [(i, self.records[i] if keep_all else slice_envs(self.records[i], envs))
                  for i in indices]
        chosen = [(i, record) for i, record in chosen if record is not None]
        positions = {index: position for position, (index, _) in enumerate(chosen)}
        rows = {env: row for row, env in enumerate(envs)}
        return [(i, renumber_sources(record, positions, rows)) for i, record in chosen]

    @property
    def num_envs(self) -> int:
        return int(self.header["config"]["env_num"])

    # -------------------------------------------------------------- the three reductions
    def reduce_units(self, indices: tuple[int, ...], envs: tuple[int, ...]) -> tuple[int, ...]:
        units = split_units(self.records, indices)
        fixed, movable = units[0], units[1:]
        kept = ddmin(movable, lambda chosen: self.still_fails(
            _flatten((fixed, *chosen)), envs, "searches"))
        return _flatten((fixed, *kept))

    def reduce_recurrent(self, indices: tuple[int, ...], envs: tuple[int, ...]) -> tuple[int, ...]:
        parents = recurrent_parents(self.records, indices)
        movable = tuple(i for i in indices if i in parents)
        fixed = tuple(i for i in indices if i not in parents)

        def closed(chosen: tuple[int, ...]) -> tuple[int, ...]:
            kept: set[int] = set()
            for index in chosen:  # in trace order: a parent is decided before its children
                if parents[index] <= kept:
                    kept.add(index)
            return tuple(sorted(set(fixed) | kept))

        result = ddmin(movable, lambda chosen: self.still_fails(closed(chosen), envs, "simulations"))
        return closed(result)

    def reduce_envs(self, indices: tuple[int, ...], envs: tuple[int, ...]) -> tuple[int, ...]:
        return ddmin(envs, lambda chosen: self.still_fails(indices, chosen, "envs"))


def _flatten(units: Sequence[Sequence[int]]) -> tuple[int, ...]:
    return tuple(index for unit in units for index in unit)


def rerecorded(header: dict[str, Any], records: Sequence[RawRecord], options: ReplayOptions) -> list[RawRecord]:
    """``records`` with the outputs and events the control engine produces on their inputs
    (unchanged when the control is ``golden``, or for a call the control raised on)."""
    if options.control == "golden":
        return list(records)
    config = WorldModelConfig.from_dict(header["config"], where="header.config")
    engine = build_engine(options.control, config, device=options.device)
    out = []
    for index, record in enumerate(records):
        recorded = call_from_record(index, record.kind, record.meta, record.arrays)
        observation = engine.apply(recorded)
        if observation.error is not None:
            out.append(record)
            continue
        outputs = {name: torch.from_numpy(np.array(value)) for name, value in observation.outputs.items()}
        kind, meta, arrays = call_to_record(recorded.call, outputs, list(observation.events))
        out.append(RawRecord(kind, meta, arrays))
    return out


def minimize_trace(trace_path: str, output_path: str, options: ReplayOptions, *,
                   judge: Judge | None = None, progress: Progress | None = None,
                   max_rounds: int = 3, max_replays: int = 400) -> MinimizeResult:
    """Reduce ``trace_path`` to a small trace at ``output_path`` that diverges the same way.

    Args:
        trace_path: a trace whose replay under ``options`` diverges.
        output_path: where the reduced trace is written (its directory must exist).
        options: control, candidate, manager, tolerances and device of the replay.
        judge: waives expected divergences (e.g. from a waivers file); the minimiser keeps the
            first *unwaived* divergence. None: every divergence counts.
        progress: called with a :class:`MinimizeProgress` before the first replay and after
            each one.
        max_rounds: rounds of the three reductions at most (a round that removes nothing ends).
        max_replays: candidate replays at most; then the smallest failing reduction found so
            far is written and ``budget_exhausted`` is set.

    Raises:
        MinimizeError: the trace does not diverge under ``options``, or ``output_path`` is the
            input itself.
        TraceError: ``trace_path`` is not a readable trace.
    """
    start = time.perf_counter()
    if os.path.abspath(output_path) == os.path.abspath(trace_path):
        raise MinimizeError(f"{output_path}: expected an output path other than the input trace")
    with open_trace(trace_path, limits=options.limits) as reader:
        header = dict(reader.header)
        records = [RawRecord(r.kind, r.meta, r.arrays) for r in reader]
    with tempfile.TemporaryDirectory(prefix="kvmin-") as workdir:
        work = _Minimizer(header, records, options, workdir, progress, judge, max_replays)
        envs = tuple(range(work.num_envs))
        work.report("locating", len(records))
        original = work.first_divergence(range(len(records)), envs)
        if original is None:
            raise MinimizeError(f"{trace_path}: control {options.control!r} and candidate "
                                f"{options.candidate!r} have no unwaived divergence; "
                                f"nothing to minimise")
        work.target = original
        indices = tuple(range(original.call_index + 1))
        for _ in range(max_rounds):
            before = (indices, envs)
            indices = work.truncated(work.reduce_units(indices, envs), envs)
            indices = work.truncated(work.reduce_recurrent(indices, envs), envs)
            envs = work.reduce_envs(indices, envs)
            indices = work.truncated(indices, envs)
            if (indices, envs) == before:
                break
        kept = rerecorded(header, [r for _, r in work.select(indices, envs)], options)
        write_records(output_path, _reduced_header(header, trace_path, len(records), original,
                                                   options, envs), kept)
        reduced = work.first_divergence_of(output_path)
    assert reduced is not None and same_failure(reduced, original), (
        f"{output_path}: the re-recorded reduction diverges as {reduced} instead of "
        f"{original.classification!r}: the replay is not deterministic")
    return MinimizeResult(trace_path, output_path, len(records), len(kept),
                          original.classification, original, reduced, envs,
                          work.num_replays, time.perf_counter() - start, work.budget_exhausted)
