"""A self-contained pytest file that replays a reduced trace and fails with its divergence."""

from __future__ import annotations

import os

from harness.minimize.reduce import MinimizeResult
from harness.replay import ReplayOptions

__all__ = ["MANAGER_VARIABLE", "write_pytest"]

MANAGER_VARIABLE = "KVMIGRATE_MANAGER"
"""Environment variable a written pytest file reads to replay under another cache manager."""


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
    options = ReplayOptions(control={control!r}, candidate={candidate!r}, manager=MANAGER{loop})
    result = replay_trace(str(TRACE), options)
    first = result.divergences[0] if result.divergences else None
    assert first is None, (
        f"call {{first.call_index}} ({{first.call_kind}}, envs {{list(first.env_ids)}}) diverges: "
        f"{{first.classification}}; "
        f"{{first.engine_error or (first.event_divergence.summary if first.event_divergence else '')}}"
        f"{{' '.join(d.path for d in first.tensor_divergences[:3])}}")
'''


def _loop_argument(options: ReplayOptions) -> str:
    """``, loop='closed'`` for a closed-loop replay (options that have a loop), else nothing."""
    loop = getattr(options, "loop", "open")  # ReplayOptions gained ``loop`` with closed loops
    return "" if loop == "open" else f", loop={loop!r}"


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
        variable=MANAGER_VARIABLE, trace=trace, name=name, loop=_loop_argument(options))
    with open(pytest_path, "w", encoding="utf-8") as handle:
        handle.write(text)
