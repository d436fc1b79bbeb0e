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

import json
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import msgspec

from harness.errors import UsageError
from harness.fileio import atomic_write_text, file_digest
from harness.schemas import RolloutEntryFields, load_rollout_file

__all__ = ["RECORD_SCHEMA", "DEFAULT_RECORD", "Phase", "PHASES", "RolloutEntry", "RolloutRecord",
           "RolloutError", "load_record", "save_record", "record_to_toml", "rollback_steps",
           "check_archive", "next_phase", "archive_path", "record_advance", "record_rollback",
           "phase_info", "now"]

RECORD_SCHEMA = "kvmigrate.rollout/1"
DEFAULT_RECORD = Path("reports") / "rollout.toml"


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


RolloutEntry = RolloutEntryFields
"""One move (the record's typed ``[[history]]`` table). ``signoff`` (relative to the record's
folder) and its digest: advances only."""


def entry_fields(entry: RolloutEntry) -> dict[str, Any]:
    """The entry's fields as the record writes them (unset optional fields left out)."""
    return {key: value for key, value in msgspec.structs.asdict(entry).items()
            if value is not None}


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


def _checked(entry: RolloutEntry, where: str) -> RolloutEntry:
    """A typed history entry, after the checks its types cannot state."""
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
    data = load_rollout_file(path, RolloutError)
    history = tuple(_checked(item, f"{path}: history[{i}]") for i, item in enumerate(data.history))
    phase = 0
    for i, entry in enumerate(history):
        if entry.from_phase != phase:
            raise RolloutError(f"{path}: history[{i}] starts at phase {entry.from_phase} but the "
                               f"previous move ended at phase {phase}")
        phase = entry.to_phase
    if data.phase != phase:
        raise RolloutError(f"{path}: phase: the history ends at phase {phase}, "
                           f"the record says {data.phase!r}")
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
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry_fields(entry).items()]
    return "\n".join(lines) + "\n"


def save_record(record: RolloutRecord, path: Path) -> None:
    atomic_write_text(path, record_to_toml(record))


def now() -> datetime:
    """The time a move is recorded at (UTC, whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def phase_info(number: int) -> Phase:
    return PHASES[number]


ArchiveCheck = Literal["ok", "MISSING", "CHANGED", "-"]


def check_archive(record: RolloutRecord, path: Path) -> list[tuple[RolloutEntry, ArchiveCheck]]:
    """Each history entry with the state of its archived sign-off (``-`` for none)."""
    checked: list[tuple[RolloutEntry, ArchiveCheck]] = []
    for entry in record.history:
        check: ArchiveCheck = "-"
        if entry.signoff is not None:
            archived = path.parent / entry.signoff
            if not archived.exists():
                check = "MISSING"
            elif file_digest(archived) != entry.signoff_digest:
                check = "CHANGED"
            else:
                check = "ok"
        checked.append((entry, check))
    return checked


def next_phase(record: RolloutRecord) -> int:
    """The phase an advance would enter; refuses past the last phase."""
    if record.phase >= LAST_PHASE:
        raise RolloutError(f"already at phase {record.phase} ({phase_info(record.phase).name}), "
                           f"the last phase")
    return record.phase + 1


def archive_path(path: Path, target: int, when: datetime) -> Path:
    """Where the sign-off of an advance to ``target`` is archived, beside the record."""
    return path.parent / "rollout" / f"signoff-phase{target}-{when:%Y%m%dT%H%M%SZ}.json"


def record_advance(record: RolloutRecord, path: Path, *, archive: Path, when: datetime,
                   reason: str | None) -> RolloutRecord:
    """Enter the next phase, whose gate passed with the sign-off at ``archive``; save it."""
    target = next_phase(record)
    entry = RolloutEntry(action="advance", from_phase=record.phase, to_phase=target,
                         date=when.isoformat(), reason=reason or "gate passed",
                         signoff=os.path.relpath(archive, path.parent),
                         signoff_digest=file_digest(archive))
    updated = RolloutRecord(phase=target, history=record.history + (entry,))
    save_record(updated, path)
    return updated


def record_rollback(record: RolloutRecord, path: Path, *, reason: str | None,
                    to: int | None) -> tuple[RolloutRecord, list[str]]:
    """Move back (one phase, or to ``to``) with a reason; save it; return the plan's steps."""
    if not reason or not reason.strip():
        raise RolloutError("rollback: --reason is required (it is the record's only account)")
    target = record.phase - 1 if to is None else to
    if not 0 <= target < record.phase:
        raise RolloutError(f"rollback: expected a phase in [0, {record.phase}) to roll back to "
                           f"from phase {record.phase}, got {target}")
    entry = RolloutEntry(action="rollback", from_phase=record.phase, to_phase=target,
                         date=now().isoformat(), reason=reason.strip())
    updated = replace(record, phase=target, history=record.history + (entry,))
    save_record(updated, path)
    left = record.last_signoff(record.phase)
    return updated, rollback_steps(record.phase, target, left.signoff if left else None)
