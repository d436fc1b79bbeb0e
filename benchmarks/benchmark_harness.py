"""What the harness itself costs: comparator and event-capture overhead, and memory flatness.

    python benchmarks/benchmark_harness.py [--long-calls 50000] [--json PATH]

* Overhead: the bundled ``cartpole_small`` trace replayed (a) through both engines alone, events
  off, no comparison, and (b) through ``replay_trace`` (events on, comparator, coverage, stats),
  in one process. Overhead = (b - a) / a, broken down into trace decoding, event capture and
  comparison.
* Memory: peak RSS of ``python -m harness compare`` in a fresh process on a 1k-call and a long
  trace (the tiny scenario's records repeated), printed side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kvbench import REPO, load_calls  # noqa: E402
from harness import replay as replay_module  # noqa: E402
from harness.calls import call_from_record, invoke  # noqa: E402
from harness.engines import build_engine, clone_call  # noqa: E402
from harness.replay import ReplayOptions, replay_trace  # noqa: E402
from harness.trace import TraceWriter, open_trace  # noqa: E402

SMALL_TRACE = REPO / "scenarios" / "traces" / "cartpole_small.kvtrace"
GENERATED = REPO / "scenarios" / "generated"


def _engines_alone(path: Path, record_events: bool) -> float:
    """Wall time of both engines on every call (decoded calls in memory), no comparison."""
    config, calls = load_calls(path)
    engines = [build_engine(name, config) for name in ("legacy", "refactored")]
    for engine in engines:
        engine.model.record_events(record_events)
    start = time.perf_counter()
    for recorded in calls:
        for engine in engines:
            invoke(engine.model, clone_call(recorded.call))
            engine.model.take_events()
    return time.perf_counter() - start


def _decode_time(path: Path) -> float:
    start = time.perf_counter()
    with open_trace(path) as reader:
        for record in reader:
            call_from_record(record.index, record.kind, record.meta, record.arrays)
    return time.perf_counter() - start


def _full_replay(path: Path) -> tuple[float, float]:
    """Wall time of ``replay_trace`` and the part of it spent in the comparator."""
    compare_seconds = 0.0
    original = replay_module.compare_call

    def timed_compare(*args, **kwargs):
        nonlocal compare_seconds
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            compare_seconds += time.perf_counter() - start

    replay_module.compare_call = timed_compare
    try:
        start = time.perf_counter()
        replay_trace(str(path), ReplayOptions())
        return time.perf_counter() - start, compare_seconds
    finally:
        replay_module.compare_call = original


def measure_overhead(path: Path, rounds: int = 3) -> dict:
    """Medians over ``rounds`` interleaved rounds, after one warm-up round."""
    samples: dict[str, list[float]] = {"plain": [], "events": [], "decode": [], "full": [],
                                       "compare": []}
    for round_index in range(rounds + 1):
        plain, events = _engines_alone(path, False), _engines_alone(path, True)
        decode, (full, compare) = _decode_time(path), _full_replay(path)
        if round_index == 0:
            continue  # warm-up: allocator, caches, lazy imports
        for name, value in (("plain", plain), ("events", events), ("decode", decode),
                            ("full", full), ("compare", compare)):
            samples[name].append(value)
    med = {name: statistics.median(values) for name, values in samples.items()}
    return {"trace": str(path.relative_to(REPO)), "rounds": rounds,
            "engines_only_s": med["plain"], "replay_s": med["full"],
            "overhead_fraction": (med["full"] - med["plain"]) / med["plain"],
            "breakdown_s": {"trace_decode": med["decode"],
                            "event_capture": med["events"] - med["plain"],
                            "comparator": med["compare"],
                            "other (timing, coverage, stats, isolation)":
                                med["full"] - med["events"] - med["decode"] - med["compare"]}}


def long_trace(source: Path, num_calls: int) -> Path:
    """``source``'s calls repeated until ``num_calls`` (its initial weights record once)."""
    out = GENERATED / f"{source.stem}_x{num_calls}.kvtrace"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_trace(source) as reader:
        header = dict(reader.header)
        records = [(r.kind, r.meta, r.arrays) for r in reader]
    head, body = records[:1], records[1:]
    with TraceWriter(out, header) as writer:
        for kind, meta, arrays in head:
            writer.append(kind, meta, arrays)
        for index in range(num_calls):
            kind, meta, arrays = body[index % len(body)]
            writer.append(kind, meta, arrays)
    return out


_PROBE = """
import sys
from harness.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
sys.exit(code)
"""


def peak_rss_mib(trace: Path) -> float:
    """Peak RSS (VmHWM) of a fresh ``python -m harness compare`` process on ``trace``.

    Read inside the child from /proc: ``ru_maxrss`` would also count the pages a forked child
    shares with this (large) benchmark process before it execs.
    """
    done = subprocess.run([sys.executable, "-c", _PROBE, "compare", str(trace), "--json",
                           str(GENERATED / "memory_probe.json")], cwd=REPO, check=True,
                          capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024  # kB -> MiB


def measure_memory(long_calls: int) -> dict:
    from benchmarks.kvbench import ensure_trace
    tiny = ensure_trace(REPO / "benchmarks" / "scenarios" / "memory_tiny.toml",
                        GENERATED / "memory_tiny.kvtrace")
    short, long = long_trace(tiny, 1000), long_trace(tiny, long_calls)
    short_mib = peak_rss_mib(short)
    long_mib = peak_rss_mib(long)
    return {"short_calls": 1000, "long_calls": long_calls, "short_peak_mib": short_mib,
            "long_peak_mib": long_mib, "growth_fraction": long_mib / short_mib - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long-calls", type=int, default=50_000)
    parser.add_argument("--json", default=str(REPO / "reports" / "bench_harness.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overhead = measure_overhead(SMALL_TRACE)
    print(f"== harness overhead on {overhead['trace']}")
    print(f"  engines alone (events off): {overhead['engines_only_s']:.2f} s; full replay: "
          f"{overhead['replay_s']:.2f} s")
    for name, seconds in overhead["breakdown_s"].items():
        print(f"  {name:45s} {seconds:7.3f} s  ({seconds / overhead['engines_only_s']:6.1%})")
    print(f"Harness overhead: {overhead['overhead_fraction']:.1%}")
    memory = measure_memory(args.long_calls)
    print(f"== compare peak memory: {memory['short_calls']} calls {memory['short_peak_mib']:.0f} MiB, "
          f"{memory['long_calls']} calls {memory['long_peak_mib']:.0f} MiB")
    print(f"Memory growth 1k->{memory['long_calls'] // 1000}k calls: {memory['growth_fraction']:+.1%}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"overhead": overhead, "memory": memory}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
