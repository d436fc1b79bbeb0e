"""``make bench``: every performance figure of the project, measured in one run.

Prints one line per speed target exactly as ``Speedup <cache-ops|imagine> <small|atari>: <r>x``
(legacy time / refactored time, medians of interleaved calls), then the bytes moved per call,
the harness overhead and the memory figures, and writes them all to ``reports/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benchmark_harness import SMALL_TRACE, measure_memory, measure_overhead  # noqa: E402
from benchmarks.benchmark_kv_cache import measure, print_workload  # noqa: E402
from benchmarks.kvbench import REPO  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=3, help="replays of the small trace")
    parser.add_argument("--atari-steps", type=int, default=3)
    parser.add_argument("--long-calls", type=int, default=50_000, help="calls of the long trace")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=str(REPO / "reports" / "bench.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    workloads = [measure("small", passes=args.passes, atari_steps=args.atari_steps, device=args.device),
                 measure("atari", passes=1, atari_steps=args.atari_steps, device=args.device)]
    for result in workloads:
        print_workload(result)
    overhead = measure_overhead(SMALL_TRACE)
    memory = measure_memory(args.long_calls)
    for result in workloads:
        print(f"Speedup cache-ops {result['workload']}: {result['cache']['speedup']:.2f}x")
        print(f"Speedup imagine {result['workload']}: {result['imagine']['speedup']:.2f}x")
    for result in workloads:
        b = result["bytes_per_call"]
        print(f"Bytes per call {result['workload']}: legacy {b['legacy']:.0f} B, "
              f"refactored {b['refactored']:.0f} B ({b['legacy'] / b['refactored']:.2f}x less)")
    parts = overhead["breakdown_s"]
    base = overhead["engines_only_s"]
    print(f"Harness overhead: comparator {parts['comparator'] / base:.1%} + event capture "
          f"{parts['event_capture'] / base:.1%} = "
          f"{(parts['comparator'] + parts['event_capture']) / base:.1%} of replaying both engines "
          f"(all harness work incl. trace decoding and bookkeeping: {overhead['overhead_fraction']:.1%})")
    print(f"Memory: compare peak {memory['short_peak_mib']:.0f} MiB at {memory['short_calls']} calls, "
          f"{memory['long_peak_mib']:.0f} MiB at {memory['long_calls']} calls "
          f"({memory['growth_fraction']:+.1%})")
    report = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "processor": platform.machine(), "threads": torch.get_num_threads()},
              "workloads": workloads, "harness_overhead": overhead, "memory": memory}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
