"""The rollout record: the current phase and every move, committed as ``reports/rollout.toml``.

``python -m harness rollout status | advance | rollback --reason TEXT``:

* ``advance`` runs the gate of the next phase (:mod:`harness.gate`) and moves only when it
  passes; the sign-off is archived under ``reports/rollout/`` and the entry keeps its digest.
* ``rollback`` moves back (one phase, or ``--to K``) with a reason and never runs a gate: it is
  the incident path of the refactor guide's rollback plan and must work when nothing else does.
  It prints that plan's remaining steps for the phase rolled back to.
* ``status`` prints the phase, how the world model is served in it, the history, and checks
  every archived sign-off against its recorded digest (exit 1 when one is missing or changed).

A missing record means phase 0 with no history. The record is written by these commands only;
its history must chain (each move starts where the previous one ended) or it is rejected.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

from rich.console import Console
from rich.table import Table

from harness import exit_codes
from harness.errors import UsageError
from harness.replay import file_digest
from harness.tomlfile import read_toml

__all__ = ["RECORD_SCHEMA", "DEFAULT_RECORD", "Phase", "PHASES", "RolloutEntry", "RolloutRecord",
           "RolloutError", "load_record", "save_record", "record_to_toml", "rollback_steps",
           "cmd_rollout"]

RECORD_SCHEMA = "kvmigrate.rollout/1"
DEFAULT_RECORD = Path("reports") / "rollout.toml"
Action = Literal["advance", "rollback"]


class RolloutError(UsageError):
    """A rollout record or move that cannot be acted on; the message says why."""


@dataclass(frozen=True, slots=True)
class Phase:
    """One rollout phase: who serves results and how the world model is built in it."""

    number: int
    name: str
    serves: str
    world_model: str


PHASES = (
    Phase(0, "legacy", "legacy only; the refactored cache is not built",
          "build_world_model(config) with use_new_cache_manager = false"),
    Phase(1, "shadow", "legacy serves; the refactored cache runs on cloned inputs, divergences "
                       "and overhead recorded",
          'ShadowWorldModel(legacy, refactored, mode="shadow", overhead_budget=...)'),
    Phase(2, "validate", "legacy serves; every call runs both and a mismatch raises "
                         "DivergenceError (cache_validation_mode)",
          'ShadowWorldModel(legacy, refactored, mode="validate")'),
    Phase(3, "switch", "refactored only; legacy deleted, checked against golden traces",
          "build_world_model(config) with use_new_cache_manager = true"),
)
LAST_PHASE = PHASES[-1].number


def rollback_steps(frm: int, to: int, signoff: str | None) -> list[str]:
    """The refactor guide's rollback plan (回滚计划) for a move from ``frm`` back to ``to``."""
    steps = [f"stop using the new code: serve with phase {to}'s world model "
             f"({PHASES[to].world_model})"]
    if frm == LAST_PHASE:
        steps.append("restore legacy/world_model.py from git (phase 3 deleted it; the guide's "
                     "backup copy)")
    steps.append("verify: make test" + (f" && make gate PHASE={to}" if to >= 1 else ""))
    steps.append(f"analyse: the phase {frm} sign-off ({signoff or 'none recorded'}) and the "
                 f"divergence reports of the shadow/validate runs")
    return steps


@dataclass(frozen=True, slots=True)
class RolloutEntry:
    """One move. ``signoff`` (relative to the record's folder) and its digest: advances only."""

    action: Action
    from_phase: int
    to_phase: int
    date: str
    reason: str
    signoff: str | None = None
    signoff_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"action": self.action, "from_phase": self.from_phase, "to_phase": self.to_phase,
                "date": self.date, "reason": self.reason, "signoff": self.signoff,
                "signoff_digest": self.signoff_digest}
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    phase: int = 0
    history: tuple[RolloutEntry, ...] = ()

    def last_signoff(self, phase: int) -> RolloutEntry | None:
        """The advance that last entered ``phase`` (its sign-off is the phase's evidence)."""
        for entry in reversed(self.history):
            if entry.action == "advance" and entry.to_phase == phase:
                return entry
        return None


def _entry(data: Any, where: str) -> RolloutEntry:
    if not isinstance(data, Mapping):
        raise RolloutError(f"{where}: expected a table")
    try:
        entry = RolloutEntry(**data)
    except TypeError as exc:
        raise RolloutError(f"{where}: {exc}") from None
    if entry.action not in ("advance", "rollback"):
        raise RolloutError(f"{where}.action: expected 'advance' or 'rollback', got {entry.action!r}")
    step_ok = (entry.to_phase == entry.from_phase + 1 if entry.action == "advance"
               else 0 <= entry.to_phase < entry.from_phase)
    if not step_ok or entry.to_phase > LAST_PHASE:
        raise RolloutError(f"{where}: {entry.action} from phase {entry.from_phase} to "
                           f"{entry.to_phase} is not a valid move")
    if entry.action == "advance" and (entry.signoff is None or entry.signoff_digest is None):
        raise RolloutError(f"{where}: an advance must name its sign-off and digest")
    return entry


def load_record(path: Path) -> RolloutRecord:
    """Read and check a record; a missing file is phase 0 with no history."""
    if not path.exists():
        return RolloutRecord()
    data = read_toml(path, RolloutError, "rollout record")
    if data.get("schema") != RECORD_SCHEMA:
        raise RolloutError(f"{path}: schema: expected {RECORD_SCHEMA!r}, got {data.get('schema')!r}")
    history = tuple(_entry(item, f"{path}: history[{i}]")
                    for i, item in enumerate(data.get("history", [])))
    phase = 0
    for i, entry in enumerate(history):
        if entry.from_phase != phase:
            raise RolloutError(f"{path}: history[{i}] starts at phase {entry.from_phase} but the "
                               f"previous move ended at phase {phase}")
        phase = entry.to_phase
    if data.get("phase") != phase:
        raise RolloutError(f"{path}: phase: the history ends at phase {phase}, "
                           f"the record says {data.get('phase')!r}")
    return RolloutRecord(phase=phase, history=history)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def record_to_toml(record: RolloutRecord) -> str:
    lines = ["# The rollout record, written by `python -m harness rollout advance | rollback`.",
             "# Not edited by hand: advance moves only through the gate (docs/rollout.md).",
             f"schema = {_toml_value(RECORD_SCHEMA)}", f"phase = {record.phase}"]
    for entry in record.history:
        lines += ["", "[[history]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry.to_dict().items()]
    return "\n".join(lines) + "\n"


def save_record(record: RolloutRecord, path: Path) -> None:
    from harness.report.files import atomic_write_text
    atomic_write_text(path, record_to_toml(record))


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _phase(number: int) -> Phase:
    return PHASES[number]


def _status(args: argparse.Namespace, record: RolloutRecord, path: Path, console: Console) -> int:
    phase = _phase(record.phase)
    console.print(f"rollout phase {phase.number} ({phase.name}): {phase.serves}")
    console.print(f"world model: {phase.world_model}")
    if not path.exists():
        console.print(f"no rollout record at {path} yet (phase 0)")
        return exit_codes.OK
    table = Table(title=f"history ({path})", title_justify="left")
    for column in ("date", "move", "reason", "sign-off", "digest"):
        table.add_column(column, overflow="fold")
    broken = 0
    for entry in record.history:
        check = "-"
        if entry.signoff is not None:
            archived = path.parent / entry.signoff
            if not archived.exists():
                check, broken = "MISSING", broken + 1
            elif file_digest(str(archived)) != entry.signoff_digest:
                check, broken = "CHANGED", broken + 1
            else:
                check = "ok"
        table.add_row(entry.date, f"{entry.action} {entry.from_phase} -> {entry.to_phase}",
                      entry.reason, entry.signoff or "-", check)
    console.print(table)
    if broken:
        console.print(f"{broken} archived sign-off(s) missing or changed since they were recorded")
        return exit_codes.DIVERGENCE
    return exit_codes.OK


def _advance(args: argparse.Namespace, record: RolloutRecord, path: Path, console: Console) -> int:
    from harness.gate import gate_and_sign
    target = record.phase + 1
    if target > LAST_PHASE:
        raise RolloutError(f"already at phase {record.phase} ({_phase(record.phase).name}), "
                           f"the last phase")
    now = _now()
    archive = path.parent / "rollout" / f"signoff-phase{target}-{now:%Y%m%dT%H%M%SZ}.json"
    result, _ = gate_and_sign(target, args.traces, config=args.config, waivers=args.waivers,
                              signoff=archive, device=args.device, jobs=args.jobs,
                              console=console, with_html=False)
    if result.exit_code != exit_codes.OK:
        console.print(f"not advanced: the phase {target} gate says {result.verdict}; "
                      f"the rollout stays at phase {record.phase}")
        return result.exit_code
    entry = RolloutEntry(action="advance", from_phase=record.phase, to_phase=target,
                         date=now.isoformat(), reason=args.reason or "gate passed",
                         signoff=os.path.relpath(archive, path.parent),
                         signoff_digest=file_digest(str(archive)))
    save_record(RolloutRecord(phase=target, history=record.history + (entry,)), path)
    console.print(f"advanced to phase {target} ({_phase(target).name}); recorded in {path}")
    return exit_codes.OK


def _rollback(args: argparse.Namespace, record: RolloutRecord, path: Path, console: Console) -> int:
    if not args.reason or not args.reason.strip():
        raise RolloutError("rollback: --reason is required (it is the record's only account)")
    target = record.phase - 1 if args.to is None else args.to
    if not 0 <= target < record.phase:
        raise RolloutError(f"rollback: expected a phase in [0, {record.phase}) to roll back to "
                           f"from phase {record.phase}, got {target}")
    entry = RolloutEntry(action="rollback", from_phase=record.phase, to_phase=target,
                         date=_now().isoformat(), reason=args.reason.strip())
    save_record(replace(record, phase=target, history=record.history + (entry,)), path)
    left = record.last_signoff(record.phase)
    console.print(f"rolled back from phase {record.phase} to {target} "
                  f"({_phase(target).name}); recorded in {path}. Next steps:")
    for number, step in enumerate(rollback_steps(record.phase, target,
                                                 left.signoff if left else None), 1):
        console.print(f"  {number}. {step}")
    return exit_codes.OK


def cmd_rollout(args: argparse.Namespace) -> int:
    """``python -m harness rollout status | advance | rollback --reason TEXT``."""
    path = Path(args.record) if args.record else DEFAULT_RECORD
    record = load_record(path)
    from harness.commands import make_console
    console = make_console()
    console.soft_wrap = True  # message lines carry paths: never wrap them
    action = {"status": _status, "advance": _advance, "rollback": _rollback}[args.action]
    return action(args, record, path, console)
