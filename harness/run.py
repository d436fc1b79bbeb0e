"""Run orchestration: one comparison over many traces (in processes, sharded), and saved runs.

A library: no argparse, no printing. Progress reaches the caller through a callback factory.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

from harness.compare import ToleranceError, TolerancePolicy, parse_tol_option
from harness.errors import UsageError
from harness.replay import ReplayOptions, candidate_name, replay_trace
from harness.evidence import check_shard_set, shard_set_id
from harness.results import ReportError, RunResult, ShardInfo, TraceResult
from harness.results import load_run as load_report
from harness.schemas import load_tolerance_file
from harness.waivers import load_waivers

__all__ = ["run_comparison", "shard_paths", "build_policy", "load_run", "merge_runs",
           "ProgressFactory"]

MAX_SHARDS = 1_000_000
ProgressFactory = Callable[[str], Callable[[int, int], None]]
"""Given a trace path, a callback ``(calls done, calls total)`` for its replay."""


def shard_paths(paths: Sequence[str], shard: str | None) -> tuple[list[str], ShardInfo | None]:
    """Deterministic split: shard ``K/N`` takes every N-th trace of the sorted list from K-1.

    Returns:
        The shard's traces, and what the shard's report records about its place: K/N and the
        identity of the whole set (None when not sharded).
    """
    if shard is None:
        return list(paths), None
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard: expected K/N with integers, got {shard!r}") from None
    if not 1 <= k <= n <= MAX_SHARDS:
        raise UsageError(f"--shard: expected 1 <= K <= N <= {MAX_SHARDS}, got {shard!r}")
    return ([p for i, p in enumerate(sorted(paths)) if i % n == k - 1],
            ShardInfo(k - 1, n, shard_set_id(paths)))


def build_policy(tolerances_path: str | None, tol_options: Iterable[str] = (),
                 nan: str | None = None) -> TolerancePolicy:
    """The tolerance policy of a tolerance file, then ``--tol`` overrides, then ``--nan``."""
    policy = TolerancePolicy()
    if tolerances_path:
        typed = load_tolerance_file(tolerances_path, UsageError)
        paths = {pattern: (spec if isinstance(spec, (str, tuple)) else [spec.rtol, spec.atol])
                 for pattern, spec in typed.paths.items()}
        try:
            policy = TolerancePolicy.from_mapping({"nan": typed.nan, "paths": paths})
        except ToleranceError as exc:
            raise UsageError(f"{tolerances_path}: {exc}") from None
    policy = policy.with_overrides(parse_tol_option(text) for text in tol_options)
    if nan is not None:
        policy = TolerancePolicy(overrides=policy.overrides, nan=nan)
    return policy


def _init_worker(num_threads: int) -> None:
    """A spawned worker starts with torch's default thread count; give it the parent's."""
    import torch
    torch.set_num_threads(num_threads)


def _replay_one(path: str, options: ReplayOptions, waivers_path: str | None) -> TraceResult:
    return replay_trace(path, options, judge=load_waivers(waivers_path).judge)


def run_comparison(paths: Sequence[str], options: ReplayOptions, *, waivers_path: str | None,
                   jobs: int = 1, progress: ProgressFactory | None = None,
                   shard: ShardInfo | None = None) -> RunResult:
    """Replay every trace (in ``jobs`` processes when > 1) and collect one RunResult."""
    created = datetime.now(timezone.utc)
    if jobs > 1 and len(paths) > 1:
        import multiprocessing

        import torch
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(torch.get_num_threads(),)) as pool:
            results = list(pool.map(partial(_replay_one, options=options, waivers_path=waivers_path),
                                    paths))
    else:
        judge = load_waivers(waivers_path).judge
        results = [replay_trace(path, options, judge=judge,
                                progress=progress(path) if progress else None) for path in paths]
    return RunResult(created_at=created, control_engine=options.control,
                     candidate_engine=candidate_name(options), manager_spec=options.manager,
                     tolerances=options.policy.to_dict(), traces=tuple(results),
                     loop=options.loop, reference_engine=options.reference, shard=shard)


def load_run(path: str) -> RunResult:
    """Read and validate a JSON compare report; one-line errors name the file and field."""
    try:
        return load_report(path)
    except ReportError as exc:
        raise UsageError(str(exc)) from None


def merge_runs(runs: Sequence[RunResult], sources: Sequence[str]) -> RunResult:
    """One RunResult from the shard reports of one comparison: every shard K/N of one set, once
    each (or a single unsharded report), with the same engines, tolerances and loop. Linear in
    the number of traces.

    Raises:
        EvidenceError: an incomplete, duplicated or mixed set of shards.
        UsageError: shards of different comparisons, or a trace in two reports.
    """
    check_shard_set(list(zip(sources, (run.shard for run in runs))))
    first = runs[0]
    for run, source in zip(runs[1:], sources[1:]):
        for name in ("control_engine", "candidate_engine", "manager_spec", "tolerances", "loop",
                     "reference_engine"):
            if getattr(run, name) != getattr(first, name):
                raise UsageError(f"{source}: {name} {getattr(run, name)!r} differs from "
                                 f"{sources[0]}'s {getattr(first, name)!r}; only shards of one "
                                 f"comparison can be merged")
    traces = sorted((trace for run in runs for trace in run.traces), key=lambda t: t.trace_path)
    counts = Counter(trace.trace_path for trace in traces)
    duplicates = sorted(path for path, count in counts.items() if count > 1)
    if duplicates:
        raise UsageError(f"trace(s) {', '.join(duplicates)} appear in more than one report")
    return RunResult(created_at=min(run.created_at for run in runs), control_engine=first.control_engine,
                     candidate_engine=first.candidate_engine, manager_spec=first.manager_spec,
                     tolerances=first.tolerances, traces=tuple(traces), loop=first.loop,
                     reference_engine=first.reference_engine)
