"""``gate``, ``rollout`` and ``mutate``: the rollout tools, argparse in, printing out."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness import exit_codes, rollout
from harness.cli.console import make_console, make_progress, replay_progress
from harness.errors import UsageError
from harness.limits import apply_limit_options
from harness.engines import check_engine_options
from harness.fileio import check_output_path
from harness.minimize import minimize_trace, write_pytest
from harness.replay import ReplayOptions
from harness.waivers import load_waivers
from harness.gate import GateResult, default_signoff_path, judge_phase
from harness.mutate import run_mutation_suite
from harness.paths import DEFAULT_TRACE_DIR, expand_traces
from harness.report.console import RunReport
from harness.signoff import GateReport, write_signoff

__all__ = ["cmd_gate", "cmd_rollout", "cmd_mutate", "cmd_minimize"]


def _gate(phase: int, args: argparse.Namespace, console: Console, signoff: Path, *,
          with_html: bool = True) -> GateResult:
    """Judge ``phase`` on the command line's inputs, print the reports, write the sign-off."""
    with make_progress(console) as progress:
        result = judge_phase(phase, args.traces, config=args.config, waivers=args.waivers,
                             device=args.device, jobs=args.jobs,
                             from_reports=getattr(args, "from_report", None) or (),
                             progress=replay_progress(progress),
                             limits=apply_limit_options(args.limit),
                             allow_absent_traces=getattr(args, "allow_absent_traces", False))
    if result.run.traces:
        console.print(RunReport(result.run))
    console.print(GateReport(result))
    written = write_signoff(result, signoff, with_html=with_html)
    console.print("sign-off: " + ", ".join(str(p) for p in written), soft_wrap=True)
    return result


def cmd_gate(args: argparse.Namespace) -> int:
    """``python -m harness gate --phase N [TRACE_OR_FOLDER...]``."""
    signoff = Path(args.signoff) if args.signoff else default_signoff_path(args.phase)
    return _gate(args.phase, args, make_console(), signoff).exit_code


def _status(args: argparse.Namespace, record: rollout.RolloutRecord, path: Path,
            console: Console) -> int:
    phase = rollout.phase_info(record.phase)
    console.print(f"rollout phase {phase.number} ({phase.name}): {phase.serves}")
    console.print(f"world model: {phase.world_model}")
    if not path.exists():
        console.print(f"no rollout record at {path} yet (phase 0)")
        return exit_codes.OK
    table = Table(title=f"history ({path})", title_justify="left")
    for column in ("date", "move", "reason", "sign-off", "digest"):
        table.add_column(column, overflow="fold")
    checked = rollout.check_archive(record, path)
    for entry, check in checked:
        table.add_row(entry.date, f"{entry.action} {entry.from_phase} -> {entry.to_phase}",
                      entry.reason, entry.signoff or "-", check)
    console.print(table)
    broken = sum(check in ("MISSING", "CHANGED") for _, check in checked)
    if broken:
        console.print(f"{broken} archived sign-off(s) missing or changed since they were recorded")
        return exit_codes.DIVERGENCE
    return exit_codes.OK


def _advance(args: argparse.Namespace, record: rollout.RolloutRecord, path: Path,
             console: Console) -> int:
    target = rollout.next_phase(record)
    when = rollout.now()
    archive = rollout.archive_path(path, target, when)
    result = _gate(target, args, console, archive, with_html=False)
    if result.exit_code != exit_codes.OK:
        console.print(f"not advanced: the phase {target} gate says {result.verdict}; "
                      f"the rollout stays at phase {record.phase}")
        return result.exit_code
    rollout.record_advance(record, path, archive=archive, when=when, reason=args.reason)
    console.print(f"advanced to phase {target} ({rollout.phase_info(target).name}); "
                  f"recorded in {path}")
    return exit_codes.OK


def _rollback(args: argparse.Namespace, record: rollout.RolloutRecord, path: Path,
              console: Console) -> int:
    updated, steps = rollout.record_rollback(record, path, reason=args.reason, to=args.to)
    console.print(f"rolled back from phase {record.phase} to {updated.phase} "
                  f"({rollout.phase_info(updated.phase).name}); recorded in {path}. Next steps:")
    for number, step in enumerate(steps, 1):
        console.print(f"  {number}. {step}")
    return exit_codes.OK


def cmd_rollout(args: argparse.Namespace) -> int:
    """``python -m harness rollout status | advance | rollback --reason TEXT``."""
    path = Path(args.record) if args.record else rollout.DEFAULT_RECORD
    record = rollout.load_record(path)
    console = make_console()
    console.soft_wrap = True  # message lines carry paths: never wrap them
    action = {"status": _status, "advance": _advance, "rollback": _rollback}[args.action]
    return action(args, record, path, console)


def cmd_minimize(args: argparse.Namespace) -> int:
    """``python -m harness minimize TRACE -o OUT [--pytest PATH]``: exit 0 when written."""
    check_engine_options(args.candidate, args.manager)
    if args.max_replays < 1:
        raise UsageError(f"--max-replays: expected a positive integer, got {args.max_replays}")
    outputs = [(args.output, "reduced trace"), (args.pytest, "pytest file")]
    for path, what in outputs:
        if path:
            check_output_path(path, what, inputs=[args.trace])
    options = ReplayOptions(control=args.control, candidate=args.candidate, manager=args.manager,
                            device=args.device, loop=args.loop,
                            limits=apply_limit_options(args.limit))
    console = make_console()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with make_progress(console) as progress:
        task = progress.add_task("minimize", total=None)
        result = minimize_trace(
            args.trace, args.output, options, judge=load_waivers(args.waivers).judge,
            max_replays=args.max_replays,
            progress=lambda p: progress.update(
                task, description=f"minimize: {p.stage}, {p.num_calls}/{p.num_calls_before} "
                                  f"calls, {p.num_replays} replays"))
    if args.pytest:
        write_pytest(args.pytest, result, options)
    console.print(f"wrote {result.output_path}: {result.num_calls_after} of "
                  f"{result.num_calls_before} calls ({result.ratio:.1%}), first divergence "
                  f"{result.classification} at call {result.reduced.call_index} (was call "
                  f"{result.original.call_index}), {result.num_replays} replays in "
                  f"{result.elapsed_s:.1f}s" + (" (replay budget ran out)"
                                                if result.budget_exhausted else ""),
                  soft_wrap=True)
    if args.pytest:
        console.print(f"wrote {args.pytest}: fails until the divergence is fixed", soft_wrap=True)
    return exit_codes.OK


def cmd_mutate(args: argparse.Namespace) -> int:
    """``python -m harness mutate [TRACE...] [--waivers FILE] [--device DEV]``."""
    paths = expand_traces(args.traces or [str(DEFAULT_TRACE_DIR)])
    if not paths:
        raise UsageError(f"no traces found in {' '.join(args.traces) or DEFAULT_TRACE_DIR}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"{missing[0]}: no such trace file")
    console = make_console()
    with make_progress(console) as progress:
        task = progress.add_task("mutate", total=None)
        report = run_mutation_suite(
            paths, waivers_path=args.waivers, device=args.device,
            limits=apply_limit_options(args.limit),
            progress=lambda name, done, total: progress.update(
                task, description=f"mutate: {name}", completed=done, total=total))
    console.print(report)
    return report.exit_code
