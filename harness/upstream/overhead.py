"""What the worker boundary costs per call: ``python -m harness.upstream.overhead TRACE SPEC``.

Three numbers, each a mean over many calls:

* ``round_trip_s`` — an empty request and reply through the execnet channel (codec included);
* ``in_process_s`` — the same empty record encoded and decoded twice in this process (what the
  call would cost without the process boundary);
* ``per_call_overhead_s`` — the median, over the trace's root and recurrent calls, the client's wall time
  minus the worker's own time for the call (transfer of the real inputs and outputs included).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np

from harness.calls import call_from_record
from harness.trace import open_trace
from harness.trace.codec import decode_record, encode_record
from harness.upstream.engine import UpstreamEngine
from unizero.config import WorldModelConfig

__all__ = ["Overhead", "measure_overhead", "main"]


@dataclass(frozen=True, slots=True)
class Overhead:
    """Seconds per call: boundary costs, the worker's own time, and the whole replay's wall time."""

    round_trip_s: float
    in_process_s: float
    per_call_overhead_s: float
    worker_call_s: float
    num_calls: int
    replay_wall_s: float


def _in_process(repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        decode_record(encode_record("result", {}, {}))
        decode_record(encode_record("noop", {}, {}))
    return (time.perf_counter() - start) / repeats


def measure_overhead(trace: str, spec: str, repeats: int = 500) -> Overhead:
    """Replay ``trace`` open loop on ``spec`` once, timing both sides of every call."""
    with open_trace(trace) as reader:
        config = WorldModelConfig.from_dict(reader.header["config"])
        calls = [call_from_record(r.index, r.kind, r.meta, r.arrays) for r in reader]
    with UpstreamEngine(spec, config) as engine:
        round_trip = engine.round_trip_s(repeats)
        start = time.perf_counter()
        gaps, inside = [], []
        for recorded in calls:
            before = time.perf_counter()
            observation = engine.apply(recorded)
            wall = time.perf_counter() - before
            if recorded.kind in ("root", "recurrent") and observation.error is None:
                gaps.append(wall - observation.elapsed_s)
                inside.append(observation.elapsed_s)
        replay_wall = time.perf_counter() - start
    return Overhead(round_trip, _in_process(repeats), float(np.median(gaps)), float(np.median(inside)),
                    len(gaps), replay_wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.upstream.overhead")
    parser.add_argument("trace")
    parser.add_argument("spec", help="lightzero:PATH or lightzero-manager:PATH")
    args = parser.parse_args(argv)
    result = measure_overhead(args.trace, args.spec)
    print(f"empty round trip {result.round_trip_s * 1e3:.3f} ms vs in-process "
          f"{result.in_process_s * 1e3:.3f} ms; per call {result.per_call_overhead_s * 1e3:.3f} ms "
          f"of boundary over {result.worker_call_s * 1e3:.3f} ms in the worker "
          f"({result.num_calls} calls, replay {result.replay_wall_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
