"""Minimise a diverging trace to a small one that still diverges the same way (delta debugging).

The reduced trace must diverge with the same first-divergence class (``error``, ``tensor``,
``decision`` or ``both``) under the same control, candidate and manager. Replays are
deterministic, so the calls after the first diverging one are dropped at once; then ``ddmin``
(Zeller and Hildebrandt) removes, in order:

1. whole *units*: a search (its root call and its recurrent calls), a reanalysis block, a
   clear, a weight update — never part of a search, so each kept root still stores what its
   searches look up;
2. recurrent calls inside the kept searches, each only together with its descendants (a call
   whose parent latent another call produced goes when that call goes), so a lookup still
   sees the stores it depends on;
3. envs: their rows of every call, their episode-end clears and their cache events (the
   envs left are renumbered in order, as the world models index envs by batch position);

and repeats 1-3 until a round removes nothing. The initial weights record always stays. The
kept calls are finally re-recorded by the control engine, so the reduced trace's outputs and
events are what the control produces on exactly those inputs. No argparse, no printing:
progress goes to a callback.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from harness.calls import call_from_record, call_to_record
from harness.engines import build_engine
from harness.replay import ReplayOptions, replay_trace
from harness.results import CallComparison
from harness.trace import open_trace, TraceWriter
from unizero.config import WorldModelConfig
from unizero.hashing import hash_state

__all__ = ["MinimizeError", "MinimizeResult", "Progress", "minimize_trace", "ddmin",
           "write_pytest", "MANAGER_VARIABLE"]

MANAGER_VARIABLE = "KVMIGRATE_MANAGER"
"""Environment variable a written pytest file reads to replay under another cache manager."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, num_calls, num_replays)``: the stage, calls left, replays so far."""

_ROW_ARRAYS = {"root": ("in/current_obs", "in/start_pos"),
               "recurrent": ("in/latent_state", "in/actions", "in/search_depth", "in/start_pos")}
_ENV_ROWS = ("in/last_obs", "in/last_actions")


class MinimizeError(ValueError):
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

    @property
    def ratio(self) -> float:
        """Calls after over calls before."""
        return self.num_calls_after / self.num_calls_before


@dataclass(frozen=True, slots=True)
class _Record:
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def ddmin(items: Sequence[Any], still_fails: Callable[[tuple[Any, ...]], bool]) -> tuple[Any, ...]:
    """A 1-minimal subsequence of ``items`` for which ``still_fails`` holds (``items`` must).

    Tries each of ``n`` chunks alone, then each complement; doubles ``n`` when neither fails.
    Deterministic: the order of tries depends only on ``items``.
    """
    current, n = tuple(items), 2
    while len(current) >= 2:
        size = -(-len(current) // n)
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for candidate in [*chunks, *(_without(chunks, i) for i in range(len(chunks)))]:
            if len(candidate) < len(current) and still_fails(candidate):
                n = 2 if len(candidate) <= size else max(n - 1, 2)
                current = candidate
                break
        else:
            if n >= len(current):
                break
            n = min(2 * n, len(current))
    return current


def _without(chunks: list[tuple[Any, ...]], index: int) -> tuple[Any, ...]:
    return tuple(item for i, chunk in enumerate(chunks) if i != index for item in chunk)


class _FirstDivergence(Exception):
    """Stops a candidate's replay at its first divergence (a signal, not a failure)."""

    def __init__(self, call: CallComparison) -> None:
        super().__init__(call.call_index)
        self.call = call


def _stop_at_first(call: CallComparison) -> CallComparison:
    raise _FirstDivergence(call)


class _Minimizer:
    """Holds the records, the target class and the replay budget of one minimisation."""

    def __init__(self, header: dict[str, Any], records: list[_Record], options: ReplayOptions,
                 workdir: str, progress: Progress | None) -> None:
        self.header, self.records, self.options = header, records, options
        self.workdir, self.progress = workdir, progress
        self.target: str | None = None
        self.num_replays = 0
        self._seen: dict[tuple, int | None] = {}  # choice -> its first divergence's position

    # -------------------------------------------------------------- replaying a candidate
    def first_divergence(self, indices: Sequence[int], envs: Sequence[int]) -> CallComparison | None:
        """Replay the candidate reduction up to its first divergence (the replay stops there)."""
        path = os.path.join(self.workdir, f"candidate-{self.num_replays}.kvtrace")
        write_records(path, self.header, [r for _, r in self.select(indices, envs)],
                      compress_level=0)
        self.num_replays += 1
        try:
            replay_trace(path, self.options, judge=_stop_at_first)
        except _FirstDivergence as found:
            return found.call
        finally:
            os.remove(path)
        return None

    def still_fails(self, indices: Sequence[int], envs: Sequence[int], stage: str) -> bool:
        key = (tuple(indices), tuple(envs))
        if key not in self._seen:
            found = self.first_divergence(indices, envs)
            self._seen[key] = (found.call_index if found is not None
                               and found.classification == self.target else None)
            if self.progress is not None:
                self.progress(stage, len(indices), self.num_replays)
        return self._seen[key] is not None

    def truncated(self, indices: tuple[int, ...], envs: tuple[int, ...]) -> tuple[int, ...]:
        """``indices`` without the calls after the first divergence of that (failing) choice."""
        assert self.still_fails(indices, envs, "truncate"), "only a failing choice is truncated"
        last = self.select(indices, envs)[self._seen[(indices, envs)]][0]
        return tuple(index for index in indices if index <= last)

    def select(self, indices: Sequence[int], envs: Sequence[int]) -> list[tuple[int, _Record]]:
        """The chosen records (env rows sliced), each with its index in the input trace."""
        keep_all = tuple(envs) == tuple(range(self.num_envs))
        chosen = [(i, self.records[i] if keep_all else slice_envs(self.records[i], envs))
                  for i in indices]
        return [(i, record) for i, record in chosen if record is not None]

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


def split_units(records: Sequence[_Record], indices: Sequence[int]) -> list[tuple[int, ...]]:
    """Group ``indices`` into removable units; the first unit is the initial-weights record(s)
    before the first other call, which always stays."""
    units: list[list[int]] = [[]]
    in_reanalysis = False
    for index in indices:
        record = records[index]
        if record.kind == "weights" and record.meta.get("inputs", {}).get("initial"):
            units[0].append(index)
        elif record.kind == "recurrent" and len(units) > 1 and not in_reanalysis:
            units[-1].append(index)
        elif in_reanalysis:
            units[-1].append(index)
            in_reanalysis = not (record.kind == "reanalyze" and not record.meta["inputs"].get("on"))
        else:
            units.append([index])
            in_reanalysis = record.kind == "reanalyze" and bool(record.meta["inputs"].get("on"))
    return [tuple(unit) for unit in units]


def recurrent_parents(records: Sequence[_Record], indices: Sequence[int]) -> dict[int, set[int]]:
    """For each recurrent call among ``indices``: the recurrent calls whose outputs it expands.

    A row's parent latent is matched by its bytes to the latest earlier output of the same row
    in the same search (MCTS hands a node's latent back byte for byte).
    """
    parents: dict[int, set[int]] = {}
    producers: dict[tuple[int, int], int] = {}
    for index in indices:
        record = records[index]
        if record.kind == "root":
            producers.clear()
        if record.kind != "recurrent":
            continue
        latents = record.arrays["in/latent_state"]
        parents[index] = {producers[(row, hash_state(latents[row]))] for row in range(len(latents))
                          if (row, hash_state(latents[row])) in producers}
        outputs = record.arrays.get("out/latent")
        for row in range(0 if outputs is None else len(outputs)):
            producers[(row, hash_state(np.ascontiguousarray(outputs[row])))] = index
    return parents


def slice_envs(record: _Record, envs: Sequence[int]) -> _Record | None:
    """``record`` restricted to the env positions ``envs`` (renumbered 0, 1, ... in order), or
    None when no row of it is left."""
    position = {env: new for new, env in enumerate(envs)}
    meta = dict(record.meta)
    if record.kind == "clear" and meta["inputs"].get("env") is not None:
        if meta["inputs"]["env"] not in position:
            return None
        meta["inputs"] = {**meta["inputs"], "env": position[meta["inputs"]["env"]]}
    arrays = dict(record.arrays)
    if record.kind in _ROW_ARRAYS:
        num_rows = len(arrays[_ROW_ARRAYS[record.kind][0]])
        rows = [env for env in envs if env < num_rows]
        if not rows:
            return None
        for name, value in record.arrays.items():
            if name in _ROW_ARRAYS[record.kind] or name.startswith("out/") or name in _ENV_ROWS:
                arrays[name] = np.ascontiguousarray(value[[env for env in envs if env < len(value)]])
    meta["events"] = [{**event, "env": position[event["env"]]} if event.get("env") is not None
                      else event for event in record.meta.get("events", [])
                      if event.get("env") is None or event["env"] in position]
    return _Record(record.kind, meta, arrays)


def write_records(path: str, header: dict[str, Any], records: Sequence[_Record], *,
                  compress_level: int = 6) -> None:
    with TraceWriter(path, header, compress_level=compress_level) as writer:
        for record in records:
            writer.append(record.kind, record.meta, record.arrays)


def rerecorded(header: dict[str, Any], records: Sequence[_Record], options: ReplayOptions) -> list[_Record]:
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
        out.append(_Record(kind, meta, arrays))
    return out


def minimize_trace(trace_path: str, output_path: str, options: ReplayOptions, *,
                   progress: Progress | None = None, max_rounds: int = 3) -> MinimizeResult:
    """Reduce ``trace_path`` to a small trace at ``output_path`` that diverges the same way.

    Args:
        trace_path: a trace whose replay under ``options`` diverges.
        output_path: where the reduced trace is written (its directory must exist).
        options: control, candidate, manager, tolerances and device of the replay.
        progress: called after each replay as ``progress(stage, num_calls, num_replays)``.
        max_rounds: rounds of the three reductions at most (a round that removes nothing ends).

    Raises:
        MinimizeError: the trace does not diverge under ``options``.
        TraceError: ``trace_path`` is not a readable trace.
    """
    start = time.perf_counter()
    with open_trace(trace_path) as reader:
        header = dict(reader.header)
        records = [_Record(r.kind, r.meta, r.arrays) for r in reader]
    with tempfile.TemporaryDirectory(prefix="kvmin-") as workdir:
        work = _Minimizer(header, records, options, workdir, progress)
        envs = tuple(range(work.num_envs))
        original = work.first_divergence(range(len(records)), envs)
        if original is None:
            raise MinimizeError(f"{trace_path}: control {options.control!r} and candidate "
                                f"{options.candidate!r} agree on every call; nothing to minimise")
        work.target = original.classification
        indices = tuple(range(original.call_index + 1))
        for _ in range(max_rounds):
            before = (indices, envs)
            indices = work.truncated(work.reduce_units(indices, envs), envs)
            indices = work.truncated(work.reduce_recurrent(indices, envs), envs)
            envs = work.reduce_envs(indices, envs)
            indices = work.truncated(indices, envs)
            if (indices, envs) == before:
                break
        reduced_header = {**header, "minimized_from": {
            "trace": os.path.basename(trace_path), "num_calls": len(records),
            "first_divergence": original.classification, "call_index": original.call_index,
            "control": options.control, "candidate": options.candidate,
            "manager": options.manager, "kept_envs": list(envs)}}
        kept = rerecorded(header, [r for _, r in work.select(indices, envs)], options)
        write_records(output_path, reduced_header, kept)
        result = replay_trace(output_path, options)
    if not result.divergences or result.divergences[0].classification != original.classification:
        raise MinimizeError(f"{output_path}: the re-recorded reduction no longer diverges as "
                            f"{original.classification!r}; this is a minimiser bug, please report it")
    return MinimizeResult(trace_path, output_path, len(records), len(kept),
                          original.classification, original, result.divergences[0], envs,
                          work.num_replays + 1, time.perf_counter() - start)


_PYTEST_TEMPLATE = '''"""Reproduces a divergence that `harness minimize` reduced from {source} ({before} calls).

The trace beside this file ({after} calls) diverges first as {classification!r} under control
{control!r} and candidate {candidate!r} with manager {manager!r}. This test fails with that
divergence until the bug is fixed. ``{variable}=package.module:Class`` replays it under another
cache manager (an empty value: the candidate's own).
"""

import os
from pathlib import Path

from harness.replay import ReplayOptions, replay_trace

TRACE = Path(__file__).resolve().parent / {trace!r}
MANAGER = os.environ.get({variable!r}, {manager!r}) or None


def test_{name}_replays_without_divergence() -> None:
    options = ReplayOptions(control={control!r}, candidate={candidate!r}, manager=MANAGER)
    result = replay_trace(str(TRACE), options)
    first = result.divergences[0] if result.divergences else None
    assert first is None, (
        f"call {{first.call_index}} ({{first.call_kind}}, envs {{list(first.env_ids)}}) diverges: "
        f"{{first.classification}}; "
        f"{{first.engine_error or (first.event_divergence.summary if first.event_divergence else '')}}"
        f"{{' '.join(d.path for d in first.tensor_divergences[:3])}}")
'''


def write_pytest(pytest_path: str, result: MinimizeResult, options: ReplayOptions) -> None:
    """Write a self-contained pytest file replaying ``result``'s trace (found relative to it).

    The test replays with the control, candidate and manager of ``options`` (default
    tolerances, CPU) and fails with the first divergence; ``KVMIGRATE_MANAGER`` overrides the
    manager, so the same file shows the honest manager passing.
    """
    directory = os.path.dirname(os.path.abspath(pytest_path))
    trace = os.path.relpath(os.path.abspath(result.output_path), directory)
    stem = os.path.splitext(os.path.basename(result.output_path))[0]
    name = "".join(ch if ch.isalnum() else "_" for ch in stem).strip("_").lower() or "trace"
    text = _PYTEST_TEMPLATE.format(
        source=os.path.basename(result.trace_path), before=result.num_calls_before,
        after=result.num_calls_after, classification=result.classification,
        control=options.control, candidate=options.candidate, manager=options.manager,
        variable=MANAGER_VARIABLE, trace=trace, name=name)
    with open(pytest_path, "w", encoding="utf-8") as handle:
        handle.write(text)
