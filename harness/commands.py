"""The subcommands behind ``python -m harness`` (parsing lives in :mod:`harness.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness import exit_codes
from harness.cli import DEFAULT_TRACE_DIR, expand_traces
from harness.compare import ToleranceError, TolerancePolicy, parse_tol_option
from harness.errors import UsageError
from harness.recorder import TraceRecorder, make_header
from harness.replay import ReplayOptions, candidate_name, replay_trace
from harness.report.console import RunReport
from harness.report.files import write_reports
from harness.results import RunResult, TraceResult
from harness.scenario import Scenario, build_world_model_config, load_scenario, run_scenario
from harness.tomlfile import read_toml
from harness.trace import TraceWriter, open_trace
from harness.waivers import load_waivers, waiver_report
from unizero.backends import WORLD_MODEL_BACKENDS, build_world_model

__all__ = ["make_console", "cmd_merge", "merge_runs", "load_run", "cmd_capture", "cmd_inspect", "cmd_compare", "run_comparison", "shard_paths",
           "tolerance_policy", "DEFAULT_JSON"]

DEFAULT_JSON = Path("reports") / "compare.json"


def make_console() -> Console:
    """The CLI's console: the terminal's width, or 120 columns when output is a file or pipe
    (CI logs) unless COLUMNS says otherwise. Colour follows rich's rules (NO_COLOR honoured)."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    return Console(highlight=False, width=width)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


def _load_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario file named on the command line, with ``--steps`` applied."""
    scenario = load_scenario(args.scenario)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps: expected a positive integer, got {args.steps}")
        scenario = scenario.with_run(num_steps=args.steps, num_episodes=None)
    return scenario


def cmd_capture(args: argparse.Namespace) -> int:
    if args.engine not in WORLD_MODEL_BACKENDS and ":" not in args.engine:
        raise UsageError(f"--engine {args.engine!r}: expected one of "
                         f"{', '.join(WORLD_MODEL_BACKENDS)} or 'package.module:Attr'")
    scenario = _load_scenario(args)
    config = build_world_model_config(scenario)
    model = build_world_model(config, args.device, backend=args.engine)
    header = make_header(model, engine=args.engine,
                         scenario={**scenario.to_dict(), "path": str(args.scenario)})
    output = Path(args.output)
    if output.parent and not output.parent.exists():
        output.parent.mkdir(parents=True)
    console = make_console()
    with _progress(console) as progress, TraceWriter(output, header) as writer:
        task = progress.add_task(f"capture {scenario.name}", total=None)
        recorder = TraceRecorder(model, writer)
        summary = run_scenario(scenario, recorder,
                               progress=lambda done, total: progress.update(task, completed=done,
                                                                             total=total))
    console.print(f"wrote {output}: {recorder.num_records} records, {output.stat().st_size} bytes "
                  f"({summary.num_steps} steps, {summary.num_episodes} episodes, "
                  f"{summary.num_root_calls} root + {summary.num_recurrent_calls} recurrent calls)")
    return exit_codes.OK


def inspect_counts(path: str) -> tuple[dict, Counter, Counter, set[int], object]:
    """Calls by kind, event counts, env ids seen, and the reader (closed) of a trace."""
    calls, events, envs = Counter(), Counter(), set()
    with open_trace(path) as reader:
        header = reader.header
        for record in reader:
            calls[record.kind] += 1
            for event in record.meta.get("events", []):
                kind = event.get("type")
                if kind == "lookup":
                    envs.add(event["env"])
                    pool = event["pool"] or ("forced-miss" if event.get("forced") else "miss")
                    events[f"{event['path']} lookup: {'hit ' + pool if event['hit'] else pool}"] += 1
                elif kind == "store":
                    events[f"store {event['pool']}"] += 1
                    if event["evicted"] is not None:
                        events[f"eviction {event['pool']}"] += 1
                elif kind == "trim":
                    events[f"trim {event['pool']}"] += 1
                elif kind == "clear":
                    events[f"clear {event['scope']} ({event['reason']})"] += 1
    return header, calls, events, envs, reader


def cmd_inspect(args: argparse.Namespace) -> int:
    header, calls, events, envs, reader = inspect_counts(args.trace)
    console = make_console()
    scenario = header.get("scenario", {})
    console.print(f"trace {args.trace}: {os.path.getsize(args.trace)} bytes on disk, "
                  f"{reader.num_records} records, schema {header.get('schema')}, "
                  f"engine {header.get('engine')}, torch {header.get('torch_version')}, "
                  f"device {header.get('device')}, created {header.get('created_at')}")
    env = scenario.get("env", {})
    console.print(f"scenario {scenario.get('name')} ({env.get('id')}, seeds "
                  f"{env.get('seeds')}); envs seen: {sorted(envs)}")
    table = Table(title="calls and cache events", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for kind, count in sorted(calls.items()):
        table.add_row(f"call {kind}", str(count))
    for name, count in sorted(events.items()):
        table.add_row(name, str(count))
    console.print(table)
    if reader.truncated:
        console.print(f"note: {reader.tail_note}")
    return exit_codes.OK


def shard_paths(paths: list[str], shard: str | None) -> list[str]:
    """Deterministic split: shard ``K/N`` takes every N-th trace of the sorted list from K-1."""
    if shard is None:
        return paths
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard: expected K/N with integers, got {shard!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard: expected 1 <= K <= N, got {shard!r}")
    return [p for i, p in enumerate(sorted(paths)) if i % n == k - 1]


def tolerance_policy(args: argparse.Namespace) -> TolerancePolicy:
    data: dict = {}
    if args.tolerances:
        data = read_toml(args.tolerances, UsageError, "tolerance file")
    try:
        policy = TolerancePolicy.from_mapping(data) if data else TolerancePolicy()
    except ToleranceError as exc:
        raise UsageError(f"{args.tolerances}: {exc}") from None
    policy = policy.with_overrides(parse_tol_option(text) for text in args.tol)
    if args.nan is not None:
        policy = TolerancePolicy(overrides=policy.overrides, nan=args.nan)
    return policy


def _init_worker(num_threads: int) -> None:
    """A spawned worker starts with torch's default thread count; give it the parent's."""
    import torch
    torch.set_num_threads(num_threads)


def _replay_one(path: str, options: ReplayOptions, waivers_path: str | None) -> TraceResult:
    waivers = load_waivers(waivers_path)
    return replay_trace(path, options, judge=waivers.judge)


def run_comparison(paths: list[str], options: ReplayOptions, *, waivers_path: str | None,
                   jobs: int = 1, console: Console | None = None) -> RunResult:
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
        waivers = load_waivers(waivers_path)
        results = []
        console = console or make_console()
        with _progress(console) as progress:
            for path in paths:
                task = progress.add_task(f"replay {Path(path).name}", total=None)
                results.append(replay_trace(
                    path, options, judge=waivers.judge,
                    progress=lambda done, total, task=task: progress.update(task, completed=done,
                                                                            total=total)))
    return RunResult(created_at=created, control_engine=options.control,
                     candidate_engine=candidate_name(options), manager_spec=options.manager,
                     tolerances=options.policy.to_dict(), traces=tuple(results))


def cmd_compare(args: argparse.Namespace) -> int:
    paths = shard_paths(expand_traces(args.traces or [str(DEFAULT_TRACE_DIR)]), args.shard)
    if not paths:
        raise UsageError(f"no traces found in {' '.join(args.traces) or DEFAULT_TRACE_DIR}")
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such trace file")
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected a positive integer, got {args.jobs}")
    options = ReplayOptions(control=args.control, candidate=args.candidate, manager=args.manager,
                            policy=tolerance_policy(args), device=args.device,
                            self_check=args.self_check)
    console = make_console()
    run = run_comparison(paths, options, waivers_path=args.waivers, jobs=args.jobs, console=console)
    console.print(RunReport(run))
    report = waiver_report(load_waivers(args.waivers), run)
    written = write_reports(run, json_path=Path(args.json) if args.json else DEFAULT_JSON,
                            markdown_path=args.markdown, html_path=args.html, waiver_report=report)
    console.print("reports: " + ", ".join(str(p) for p in written))
    return run.exit_code


def load_run(path: str) -> RunResult:
    """Read a JSON compare report; one-line errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return RunResult.from_dict(data)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such report file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not a JSON report ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a kvmigrate compare report ({exc})") from None


def merge_runs(runs: list[RunResult], sources: list[str]) -> RunResult:
    """One RunResult from shard reports of the same comparison (same engines and tolerances)."""
    first = runs[0]
    for run, source in zip(runs[1:], sources[1:]):
        for name in ("control_engine", "candidate_engine", "manager_spec", "tolerances"):
            if getattr(run, name) != getattr(first, name):
                raise UsageError(f"{source}: {name} {getattr(run, name)!r} differs from "
                                 f"{sources[0]}'s {getattr(first, name)!r}; only shards of one "
                                 f"comparison can be merged")
    traces = sorted((trace for run in runs for trace in run.traces), key=lambda t: t.trace_path)
    paths = [trace.trace_path for trace in traces]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise UsageError(f"trace(s) {', '.join(duplicates)} appear in more than one report")
    return RunResult(created_at=min(run.created_at for run in runs), control_engine=first.control_engine,
                     candidate_engine=first.candidate_engine, manager_spec=first.manager_spec,
                     tolerances=first.tolerances, traces=tuple(traces))


def cmd_merge(args: argparse.Namespace) -> int:
    runs = [load_run(path) for path in args.reports]
    merged = merge_runs(runs, list(args.reports))
    console = make_console()
    console.print(RunReport(merged))
    written = write_reports(merged, json_path=Path(args.output), markdown_path=args.markdown,
                            html_path=args.html)
    console.print("reports: " + ", ".join(str(p) for p in written))
    return merged.exit_code


def cmd_live(args: argparse.Namespace) -> int:
    """Run a scenario live through ShadowWorldModel (phase 1 shadow / phase 2 validate)."""
    from harness.engines import build_engine
    from harness.shadow import DivergenceError, ShadowWorldModel
    scenario = _load_scenario(args)
    config = build_world_model_config(scenario)
    control = build_world_model(config, args.device, backend="legacy")
    candidate = build_engine("refactored", config, device=args.device, manager=args.manager).model
    budget = args.overhead_budget if args.mode == "shadow" else None
    shadow = ShadowWorldModel(control, candidate, mode=args.mode, overhead_budget=budget,
                              judge=load_waivers(args.waivers).judge, label=f"live:{scenario.name}")
    console = make_console()
    try:
        summary = run_scenario(scenario, shadow)
    except DivergenceError as exc:
        console.print(f"validate: the refactored cache diverged from legacy at call "
                      f"{exc.comparison.call_index}:")
        console.print(str(exc), markup=False, highlight=False)
        return exit_codes.DIVERGENCE
    run = shadow.run_result()
    console.print(RunReport(run))
    written = write_reports(run, json_path=Path(args.json))
    console.print("reports: " + ", ".join(str(p) for p in written))
    stats = shadow.stats()
    overhead = "-" if stats.overhead is None else f"{stats.overhead:.2f}x"
    console.print(f"live {args.mode}: {summary.num_steps} steps, {stats.num_calls} calls, "
                  f"{stats.num_compared} compared; shadow overhead {overhead} of the control's time"
                  + (f"; candidate switched off: {stats.disabled_reason}" if stats.disabled_reason else ""))
    return run.exit_code
