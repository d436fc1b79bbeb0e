"""Checking that a saved report is evidence: trace digests that match, and complete shard sets.

A report is data: a hand-written one parses as well as a real one. Before a gate judges a
report, the digests it records are recomputed from the traces that are present, and a report
whose traces are all absent counts as insufficient evidence unless the caller allows it. Shard
reports carry ``K/N`` and the identity of the set they were cut from; a merge or gate accepts
only a complete set of one identity. No CLI here: the gate and merge commands call these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.fileio import file_digest
from harness.results import ShardInfo

__all__ = ["EvidenceError", "EvidenceCheck", "verify_trace_digests",
           "shard_set_id", "check_shard_set"]


class EvidenceError(UserError):
    """A report that cannot count as evidence; one line naming the report and the trace."""


@dataclass(frozen=True, slots=True)
class EvidenceCheck:
    """What the digest check established.

    Attributes:
        num_verified: traces present whose digest matched the report.
        absent: the report's traces that are not on this machine (unverified).
    """

    num_verified: int
    absent: tuple[str, ...]


def verify_trace_digests(report: str, traces: Sequence[tuple[str, str | None]], *,
                         base: Path | None = None, allow_absent: bool = False) -> EvidenceCheck:
    """Recompute the digest of every trace a report names that is present.

    Args:
        report: the report's path, for messages.
        traces: ``(trace_path, recorded_digest)`` pairs from the report.
        base: resolve relative trace paths against this folder (default: the working folder).
        allow_absent: accept a report none of whose traces is present (an explicit user flag).

    Raises:
        EvidenceError: a digest is missing or differs, or no trace is present and
            ``allow_absent`` is False.
    """
    verified, absent = 0, []
    for trace_path, recorded in traces:
        path = Path(trace_path) if base is None else base / trace_path
        if not path.exists():
            absent.append(trace_path)
            continue
        actual = file_digest(path, "trace file", error=EvidenceError)
        if recorded != actual:
            raise EvidenceError(f"{report}: trace {trace_path}: the report records digest "
                                f"{recorded!r} but the file's is {actual!r}")
        verified += 1
    if traces and not verified and not allow_absent:
        raise EvidenceError(f"{report}: none of its {len(traces)} traces is present, so its "
                            f"digests cannot be checked; insufficient evidence (pass the flag "
                            f"that accepts unverified reports to judge it anyway)")
    if not traces:
        raise EvidenceError(f"{report}: names no trace; insufficient evidence")
    return EvidenceCheck(verified, tuple(absent))


def shard_set_id(trace_paths: Iterable[str]) -> str:
    """The identity of the set a run was sharded from: a digest of its sorted trace paths."""
    digest = hashlib.sha256()
    for path in sorted(trace_paths):
        digest.update(path.encode("utf-8", "surrogatepass") + b"\0")
    return "sha256:" + digest.hexdigest()


def check_shard_set(shards: Sequence[tuple[str, ShardInfo | None]]) -> None:
    """Refuse an incomplete, duplicated or mixed set of shard reports (linear time).

    ``shards`` pairs each report path with the shard it records (None for an unsharded report,
    which must then be the only report). Messages count shards from 1, as ``--shard K/N`` does.
    """
    labels = [(report, label) for report, label in shards if label is not None]
    if not labels:
        if len(shards) > 1:
            raise EvidenceError(f"{shards[1][0]}: several unsharded reports; merge takes the "
                                f"shards of one sharded run")
        return
    if len(labels) != len(shards):
        unsharded = next(report for report, label in shards if label is None)
        raise EvidenceError(f"{unsharded}: records no shard K/N, but other reports are shards")
    first_report, first = labels[0]
    seen: dict[int, str] = {}
    for report, label in labels:
        if (label.set_id, label.count) != (first.set_id, first.count):
            raise EvidenceError(f"{report}: shard of set {label.set_id[:19]} ({label.count} "
                                f"shards), but {first_report} is of set {first.set_id[:19]} "
                                f"({first.count} shards); a mixed set")
        if label.index in seen:
            raise EvidenceError(f"{report}: shard {label.index + 1}/{label.count} also comes "
                                f"from {seen[label.index]}")
        seen[label.index] = report
    missing = [k + 1 for k in range(first.count) if k not in seen]
    if missing:
        shown = ", ".join(f"{k}/{first.count}" for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise EvidenceError(f"{first_report}: an incomplete shard set: missing {shown}{more}")
