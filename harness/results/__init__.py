"""The one result model of a comparison run, and its JSON form (schema ``kvmigrate.compare/1``).

The records live in :mod:`harness.results.records`, the msgspec codec in
:mod:`harness.results.codec`; this module adds the report file: :func:`dump_run` writes it,
:func:`load_run` reads and validates it (one-line :class:`ReportError` naming the field).
"""

from __future__ import annotations

import os
import secrets

import msgspec

from harness.fileio import read_input_bytes
from harness.results.codec import ReportError, decode_json, to_builtins
from harness.results.records import (EXIT_DIVERGENCE, EXIT_EQUIVALENT, EXIT_INSUFFICIENT_EVIDENCE,
                                     SCHEMA_VERSION, CallComparison, EngineTiming,
                                     EventDivergence, PoolStats, ReferenceDistance, RunResult,
                                     ShardInfo, SlotDifference, TensorDivergence, TraceResult)

__all__ = ["SCHEMA_VERSION", "EXIT_EQUIVALENT", "EXIT_DIVERGENCE", "EXIT_INSUFFICIENT_EVIDENCE",
           "ReportError", "TensorDivergence", "SlotDifference", "EventDivergence",
           "ReferenceDistance", "CallComparison", "EngineTiming", "PoolStats", "TraceResult",
           "ShardInfo", "RunResult", "dump_run", "load_run", "MAX_REPORT_BYTES"]

MAX_REPORT_BYTES = 2 ** 31
_SERIES = ("max_errors", "decisions")  # per-call series: one compact line each, not one per value


def dump_run(run: RunResult) -> bytes:
    """The report as indented UTF-8 JSON ending in a newline, each trace's per-call series on
    one compact line (a 50k-call trace would otherwise take hundreds of thousands of lines)."""
    data = to_builtins(run)
    series: dict[bytes, bytes] = {}
    nonce = secrets.token_hex(8)  # text from a trace cannot forge a placeholder it cannot guess
    for index, trace in enumerate(data["traces"]):
        for name in _SERIES:
            token = f"@@kvmigrate-series-{nonce}-{index}-{name}@@"
            series[f'"{token}"'.encode()] = msgspec.json.encode(trace[name])
            trace[name] = token
    text = msgspec.json.format(msgspec.json.encode(data), indent=2)
    for token, compact in series.items():
        text = text.replace(token, compact, 1)
    return text + b"\n"


def load_run(source: str | os.PathLike[str] | bytes) -> RunResult:
    """Read and validate a compare report: a file path, or the JSON bytes themselves.

    Raises:
        ReportError: one line naming the file (``<bytes>`` for bytes), the field path and what
            was expected, e.g. ``reports/x.json: $.traces[0].num_calls: expected int >= 0,
            got -1``; also for a missing or unreadable file.
    """
    if isinstance(source, bytes):
        name, data = "<bytes>", source
    else:
        name = str(source)
        data = read_input_bytes(source, "compare report", MAX_REPORT_BYTES, error=ReportError)
    return decode_json(data, RunResult, name)
