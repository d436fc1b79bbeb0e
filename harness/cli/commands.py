"""``capture``, ``inspect``, ``compare``, ``merge`` and ``live``: argparse in, printing out."""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack
from typing import Any
from collections import Counter
from pathlib import Path

from rich.table import Table

from harness import exit_codes
from harness.cli.console import make_console, make_progress, replay_progress
from harness.calls import call_from_record
from harness.engines import build_engine, check_engine_options
from harness.upstream.engine import UpstreamEngine, is_upstream_spec
from harness.errors import UsageError
from harness.fileio import check_output_path
from harness.limits import DEFAULT_LIMITS, Limits, apply_limit_options
from harness.paths import DEFAULT_TRACE_DIR, expand_traces
from harness.recorder import TraceRecorder, make_header
from harness.replay import ReplayOptions
from harness.rejudge import rejudge_run
from harness.report.console import RunReport
from harness.report.files import check_report_paths, write_reports
from harness.run import build_policy, load_run, merge_runs, run_comparison, shard_paths
from harness.scenario import Scenario, build_world_model_config, load_scenario, run_scenario
from harness.trace import TraceReader, TraceWriter, open_trace
from harness.waivers import load_waivers, waiver_report
from unizero.backends import WORLD_MODEL_BACKENDS, build_world_model
from unizero.config import WorldModelConfig
from unizero.events import Clear, Lookup, Store, Trim

__all__ = ["cmd_capture", "cmd_inspect", "cmd_compare", "cmd_merge", "cmd_rejudge", "cmd_live",
           "DEFAULT_JSON"]

DEFAULT_JSON = Path("reports") / "compare.json"


def _load_scenario(args: argparse.Namespace) -> Scenario:
    """The scenario file named on the command line, with ``--steps`` applied."""
    scenario = load_scenario(args.scenario)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps: expected a positive integer, got {args.steps}")
        scenario = scenario.with_run(num_steps=args.steps, num_episodes=None)
    return scenario


def _capture_upstream(args: argparse.Namespace, output: Path) -> int:
    """``capture --engine lightzero:PATH``: upstream's model in its worker, driven by our MCTS."""
    from harness.upstream.capture import capture_upstream
    scenario = _load_scenario(args)
    output.parent.mkdir(parents=True, exist_ok=True)
    console = make_console()
    with make_progress(console) as progress:
        task = progress.add_task(f"capture {scenario.name} ({args.engine})", total=None)
        summary, num_records = capture_upstream(
            scenario, args.engine, output, scenario_path=str(args.scenario),
            inputs=[args.scenario],
            progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"wrote {output}: {num_records} records, {output.stat().st_size} bytes "
                  f"({summary.num_steps} steps, {summary.num_root_calls} root + "
                  f"{summary.num_recurrent_calls} recurrent calls)")
    return exit_codes.OK


def cmd_capture(args: argparse.Namespace) -> int:
    if is_upstream_spec(args.engine):
        return _capture_upstream(args, check_output_path(args.output, "trace",
                                                         inputs=[args.scenario]))
    if args.engine not in WORLD_MODEL_BACKENDS and ":" not in args.engine:
        raise UsageError(f"--engine {args.engine!r}: expected one of "
                         f"{', '.join(WORLD_MODEL_BACKENDS)} or 'package.module:Attr'")
    output = check_output_path(args.output, "trace", inputs=[args.scenario])
    scenario = _load_scenario(args)
    config = build_world_model_config(scenario)
    model = build_world_model(config, args.device, backend=args.engine)
    header = make_header(model, engine=args.engine,
                         scenario={**scenario.to_dict(), "path": str(args.scenario)})
    output.parent.mkdir(parents=True, exist_ok=True)
    console = make_console()
    with make_progress(console) as progress, \
            TraceWriter(output, header, inputs=[args.scenario]) as writer:
        task = progress.add_task(f"capture {scenario.name}", total=None)
        recorder = TraceRecorder(model, writer)
        summary = run_scenario(scenario, recorder,
                               progress=lambda done, total: progress.update(task, completed=done,
                                                                             total=total))
    console.print(f"wrote {output}: {recorder.num_records} records, {output.stat().st_size} bytes "
                  f"({summary.num_steps} steps, {summary.num_episodes} episodes, "
                  f"{summary.num_root_calls} root + {summary.num_recurrent_calls} recurrent calls)")
    return exit_codes.OK


def _event_name(event: object) -> str | None:
    if isinstance(event, Lookup):
        outcome = (f"hit {event.pool}" if event.hit
                   else "forced-miss" if event.forced else "miss")
        return f"{event.path} lookup: {outcome}"
    if isinstance(event, Store):
        return f"store {event.pool}"
    if isinstance(event, Trim):
        return f"trim {event.pool}"
    if isinstance(event, Clear):
        return f"clear {event.scope} ({event.reason})"
    return None


def inspect_counts(path: str, limits: Limits = DEFAULT_LIMITS
                   ) -> tuple[dict, Counter, Counter, set[int], TraceReader]:
    """Calls by kind, event counts, env ids seen, and the reader (closed) of a trace.

    Every record is decoded as the replay decodes it (a malformed field is one line, exit 2).
    """
    calls, events, envs = Counter(), Counter(), set()
    with open_trace(path, limits=limits) as reader:
        header = reader.header if isinstance(reader.header, dict) else {}
        for record in reader:
            recorded = call_from_record(record.index, record.kind, record.meta, record.arrays,
                                        where=path)
            calls[recorded.kind] += 1
            for event in recorded.events:
                events[_event_name(event)] += 1
                if isinstance(event, Lookup):
                    envs.add(event.env)
                elif isinstance(event, Store) and event.evicted is not None:
                    events[f"eviction {event.pool}"] += 1
    return header, calls, events, envs, reader


def _text(value: object) -> str:
    """A header field as shown: scalars (and short lists of them) as they are, anything else
    as its type; at most 200 characters (the header is data, possibly hostile)."""
    scalar = (str, int, float, type(None))
    if isinstance(value, scalar) or (isinstance(value, list) and len(value) <= 64
                                     and all(isinstance(v, scalar) for v in value)):
        text = str(value)
        return text if len(text) <= 200 else text[:199] + "…"
    return f"<{type(value).__name__}>"


def cmd_inspect(args: argparse.Namespace) -> int:
    header, calls, events, envs, reader = inspect_counts(args.trace,
                                                         apply_limit_options(args.limit))
    console = make_console()
    scenario = header.get("scenario") if isinstance(header.get("scenario"), dict) else {}
    env = scenario.get("env") if isinstance(scenario.get("env"), dict) else {}
    console.print(f"trace {args.trace}: {os.path.getsize(args.trace)} bytes on disk, "
                  f"{reader.num_records} records, schema {_text(header.get('schema'))}, "
                  f"engine {_text(header.get('engine'))}, "
                  f"torch {_text(header.get('torch_version'))}, "
                  f"device {_text(header.get('device'))}, "
                  f"created {_text(header.get('created_at'))}", markup=False)
    console.print(f"scenario {_text(scenario.get('name'))} ({_text(env.get('id'))}, seeds "
                  f"{_text(env.get('seeds'))}); envs seen: {sorted(envs)}", markup=False)
    table = Table(title="calls and cache events", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for kind, count in sorted(calls.items()):
        table.add_row(f"call {kind}", str(count))
    for name, count in sorted(events.items()):
        table.add_row(name, str(count))
    console.print(table)
    if reader.truncated:
        console.print(f"note: {reader.tail_note}", markup=False)
    return exit_codes.OK


def cmd_compare(args: argparse.Namespace) -> int:
    if not args.self_check:
        check_engine_options(args.candidate, args.manager)
    paths, shard = shard_paths(expand_traces(args.traces or [str(DEFAULT_TRACE_DIR)]), args.shard)
    if not paths:
        raise UsageError(f"no traces found in {' '.join(args.traces) or DEFAULT_TRACE_DIR}")
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such trace file")
    if args.jobs < 1:
        raise UsageError(f"--jobs: expected a positive integer, got {args.jobs}")
    json_path = Path(args.json) if args.json else DEFAULT_JSON
    inputs = [*paths, *(p for p in (args.tolerances, args.waivers) if p)]
    check_report_paths(json_path=json_path, markdown_path=args.markdown, html_path=args.html,
                       inputs=inputs)
    options = ReplayOptions(control=args.control, candidate=args.candidate, manager=args.manager,
                            policy=build_policy(args.tolerances, args.tol, args.nan),
                            device=args.device, self_check=args.self_check, loop=args.loop,
                            limits=apply_limit_options(args.limit), reference=args.reference)
    waivers = load_waivers(args.waivers)
    console = make_console()
    with make_progress(console) as progress:
        run = run_comparison(paths, options, waivers_path=args.waivers, jobs=args.jobs,
                             progress=replay_progress(progress), shard=shard)
    console.print(RunReport(run))
    written = write_reports(run, json_path=json_path, markdown_path=args.markdown,
                            html_path=args.html, waiver_report=waiver_report(waivers, run),
                            inputs=inputs)
    console.print("reports: " + ", ".join(str(p) for p in written))
    return run.exit_code


def cmd_merge(args: argparse.Namespace) -> int:
    check_report_paths(json_path=args.output, markdown_path=args.markdown, html_path=args.html,
                       inputs=args.reports)
    runs = [load_run(path) for path in args.reports]
    merged = merge_runs(runs, list(args.reports))
    console = make_console()
    console.print(RunReport(merged))
    written = write_reports(merged, json_path=args.output, markdown_path=args.markdown,
                            html_path=args.html, inputs=args.reports)
    console.print("reports: " + ", ".join(str(p) for p in written))
    return merged.exit_code


def cmd_rejudge(args: argparse.Namespace) -> int:
    """Re-decide a saved report; exit 1 divergence, 3 when something needs a replay, else 0."""
    inputs = [args.report, *(p for p in (args.tolerances, args.waivers) if p)]
    if args.output:
        check_report_paths(json_path=args.output, inputs=inputs)
    run = load_run(args.report)
    policy = (build_policy(args.tolerances, args.tol) if args.tolerances or args.tol else None)
    waivers = load_waivers(args.waivers)
    rejudged = rejudge_run(run, judge=waivers.judge, policy=policy)
    console = make_console()
    console.print(RunReport(rejudged.run))
    for item in rejudged.undecided:
        where = "" if item.call_index is None else f" call {item.call_index}"
        console.print(f"needs a replay: {item.trace}{where}: {item.why}", markup=False)
    if args.output:
        written = write_reports(rejudged.run, json_path=args.output,
                                waiver_report=waiver_report(waivers, rejudged.run), inputs=inputs)
        console.print("reports: " + ", ".join(str(p) for p in written))
    return rejudged.exit_code


def _live_model(spec: str, config: WorldModelConfig, device: str, manager: str | None,
                running: ExitStack) -> Any:
    """A world model to run live: in process, or upstream's in its worker (closed on exit)."""
    if is_upstream_spec(spec):
        from harness.upstream.capture import UpstreamWorldModel
        engine = running.enter_context(UpstreamEngine(spec, config))
        return UpstreamWorldModel(engine, config)
    if spec == "golden":
        raise UsageError("live: 'golden' replays a recorded trace; name a world model to run")
    return build_engine(spec, config, device=device, manager=manager).model


def cmd_live(args: argparse.Namespace) -> int:
    """Run a scenario live through ShadowWorldModel (phase 1 shadow / phase 2 validate)."""
    from harness.shadow import DivergenceError, ShadowWorldModel
    if args.overhead_budget is not None and not args.overhead_budget > 0:
        raise UsageError(f"--overhead-budget: expected a positive ratio, got {args.overhead_budget}")
    check_engine_options(args.candidate, args.manager)
    check_report_paths(json_path=args.json, inputs=[args.scenario])
    scenario = _load_scenario(args)
    config = build_world_model_config(scenario)
    budget = args.overhead_budget if args.mode == "shadow" else None
    with ExitStack() as running:
        control = _live_model(args.control, config, args.device, None, running)
        candidate = _live_model(args.candidate, config, args.device, args.manager, running)
        shadow = ShadowWorldModel(control, candidate, mode=args.mode, overhead_budget=budget,
                                  judge=load_waivers(args.waivers).judge,
                                  label=f"live:{scenario.name}")
        console = make_console()
        try:
            summary = run_scenario(scenario, shadow)
        except DivergenceError as exc:
            console.print(f"validate: the candidate {args.candidate} diverged from the control "
                          f"{args.control} at call {exc.comparison.call_index}:", markup=False)
            console.print(str(exc), markup=False, highlight=False)
            return exit_codes.DIVERGENCE
    run = shadow.run_result()
    console.print(RunReport(run))
    written = write_reports(run, json_path=args.json, inputs=[args.scenario])
    console.print("reports: " + ", ".join(str(p) for p in written))
    stats = shadow.stats()
    overhead = "-" if stats.overhead is None else f"{stats.overhead:.2f}x"
    console.print(f"live {args.mode}: {summary.num_steps} steps, {stats.num_calls} calls, "
                  f"{stats.num_compared} compared; shadow overhead {overhead} of the control's time"
                  + (f"; candidate switched off: {stats.disabled_reason}" if stats.disabled_reason else ""))
    return run.exit_code
