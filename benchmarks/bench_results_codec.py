"""Encode and decode time and peak memory of a 50k-call compare report, per JSON codec.

Codecs: ``msgspec`` (the project's: ``harness.results.dump_run`` / ``load_run``, validation
included), ``hand-written`` (the v0.1 ``to_dict``/``from_dict`` with the stdlib ``json``, loaded
from git history at ``--baseline-rev``), and, where installed, ``pydantic`` (``TypeAdapter`` over
the same dataclasses) and ``cattrs`` (``cattrs.preconf.json``). cattrs and pydantic are not
project dependencies; to compare them, run this in a throwaway venv::

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install msgspec cattrs pydantic
    /tmp/bench-venv/bin/python benchmarks/bench_results_codec.py

The synthetic run has one trace of ``--calls`` calls (its per-call series hold one value per
call) and ``--diverging`` kept diverging calls, each with two tensor divergences and a decision
diff. Each codec runs in a fresh process. Time is the best of ``--repeat`` runs. Memory is given two
ways, each over one more run: the rise of the process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs``; counts compiled extensions' allocations, but not memory the
process already held and reused) and the Python heap peak (tracemalloc; exact for everything
allocated through Python, blind to pydantic-core's Rust allocator).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]


def synthetic_run(module: ModuleType, num_calls: int, num_diverging: int) -> Any:
    """A run of ``module``'s record classes (the current ones or the v0.1 ones)."""
    def tensor(path: str, index: int) -> Any:
        return module.TensorDivergence(
            path=path, kind="value", actual_dtype="float32", expected_dtype="float32",
            actual_shape=(8, 64), expected_shape=(8, 64), rtol=1.3e-6, atol=1e-5,
            num_mismatched=3, num_elements=512, max_abs_err=0.5 + index, mean_abs_err=0.25,
            max_rel_err=2.0, mean_rel_err=0.75, worst_flat_index=3, worst_index=(0, 3),
            actual_value=math.inf if index % 50 == 0 else 1.5, expected_value=1.0)

    def call(index: int) -> Any:
        event = module.EventDivergence(
            f"env {index % 8} lookup key 0x{index:016x}: control hit, candidate miss", 0, 6, 6,
            {"values_changed": {"root[0]['hit']": {"old_value": True, "new_value": False}}},
            (module.SlotDifference(1, "recurrent", 2 ** 63 + index, 4, 9),))
        return module.CallComparison(
            trace="t.kvtrace", call_index=index, call_kind="recurrent", env_ids=tuple(range(8)),
            tensor_divergences=(tensor("latent", index), tensor("policy_logits", index)),
            event_divergence=event, waiver_id="W-1" if index % 3 == 0 else None)

    step = max(num_calls // max(num_diverging, 1), 1)
    trace = module.TraceResult(
        trace_path="t.kvtrace", trace_digest="sha256:" + "0" * 64, num_calls=num_calls,
        num_tensors_compared=4 * num_calls,
        divergences=tuple(call(i * step) for i in range(num_diverging)),
        timings=tuple(module.EngineTiming(engine, kind, num_calls // 2, 0.001, 0.002, 25.0)
                      for engine in ("legacy", "refactored") for kind in ("root", "recurrent")),
        pool_stats=tuple(module.PoolStats(engine, pool, 600, 400, 1000, 12)
                         for engine in ("legacy", "refactored") for pool in ("root", "recurrent")),
        num_unwaived_calls=num_diverging, coverage={"miss": 400, "hit_root_pool": 600},
        max_errors=tuple((i % 97) * 1e-7 for i in range(num_calls)),
        decisions=tuple((i % 3, 3, i % 3, 3) for i in range(num_calls)))
    return module.RunResult(created_at=datetime(2026, 1, 2, tzinfo=timezone.utc),
                            control_engine="legacy", candidate_engine="refactored",
                            manager_spec=None, tolerances={"nan": "equal", "paths": {}},
                            traces=(trace,))


def _v01_module(rev: str) -> ModuleType | None:
    """The v0.1 ``harness/results.py`` (hand-written to/from dict) from git history."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:harness/results.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("results_v01", handle.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_v01"] = module
    spec.loader.exec_module(module)
    return module


def _hand_written(module: ModuleType) -> Codec:
    def encode(run: Any) -> bytes:
        return json.dumps(run.to_dict(), allow_nan=False).encode()

    def decode(data: bytes) -> Any:
        return module.RunResult.from_dict(json.loads(data))
    return encode, decode


def _pydantic() -> Codec | None:
    try:
        import pydantic_core
        from pydantic import TypeAdapter
    except ImportError:
        return None
    adapter = TypeAdapter(results.RunResult)
    return (lambda run: pydantic_core.to_json(run, inf_nan_mode="strings"),
            adapter.validate_json)


def _cattrs() -> Codec | None:
    try:
        from cattrs.preconf.json import make_converter
    except ImportError:
        return None
    import typing
    converter = make_converter()
    # The worst-index values: a number, or the text of a non-finite one (the record turns it
    # back into a float); cattrs cannot structure that union by itself.
    worst_value = typing.get_type_hints(results.TensorDivergence)["actual_value"]
    converter.register_structure_hook(worst_value, lambda value, _: value)
    converter.register_unstructure_hook(
        results.codec.NonFiniteFloat, lambda value: {"nan": "NaN", "inf": "Infinity",
                                                     "-inf": "-Infinity"}[repr(float(value))])
    return (lambda run: converter.dumps(run).encode(),
            lambda data: converter.loads(data, results.RunResult))


def _peak_rss_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> int | None:
    """Reset the peak resident set to the current one; returns the current one (KiB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _peak_rss_kib()


def measure(op: Callable[[], Any], repeat: int) -> tuple[float, float | None, float, Any]:
    """Best wall time (s) of ``repeat`` runs, then for one more run the rise of the peak
    resident set and the Python heap peak (tracemalloc), both MiB, and the op's result."""
    best = math.inf
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = op()
        best = min(best, time.perf_counter() - start)
    del result
    gc.collect()
    base = _reset_peak()
    result = op()
    peak = _peak_rss_kib()
    rss = None if base is None or peak is None else (peak - base) / 1024
    del result
    gc.collect()
    tracemalloc.start()
    result = op()
    heap = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return best, rss, heap, result


def _fmt_mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _codecs(rev: str) -> dict[str, tuple[Codec | None, ModuleType | None]]:
    v01 = _v01_module(rev)
    return {"msgspec": ((results.dump_run, results.load_run), results),
            "hand-written": (None if v01 is None else _hand_written(v01), v01),
            "pydantic": (_pydantic(), results),
            "cattrs": (_cattrs(), results)}


def run_one(name: str, args: argparse.Namespace, num_diverging: int) -> str:
    """One codec on one scenario, as one table line (run in a fresh process per line)."""
    codec, module = _codecs(args.baseline_rev)[name]
    if codec is None or module is None:
        return f"{name:13} {args.calls:>6} {num_diverging:>9}  not available here"
    encode, decode = codec
    run = synthetic_run(module, args.calls, num_diverging)
    t_enc, rss_enc, heap_enc, data = measure(lambda: encode(run), args.repeat)
    t_dec, rss_dec, heap_dec, back = measure(lambda: decode(data), args.repeat)
    same = "exact" if encode(back) == data else "DIFFERS"
    return (f"{name:13} {args.calls:>6} {num_diverging:>9} {len(data):>10} {t_enc * 1e3:>9.1f} "
            f"{t_dec * 1e3:>9.1f} {_fmt_mib(rss_enc):>7} {_fmt_mib(rss_dec):>7} "
            f"{heap_enc:>8.1f} {heap_dec:>8.1f}  {same}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--diverging", type=int, nargs="+", default=[200, 50_000],
                        help="kept diverging calls, one scenario each")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-rev", default="8992bcf",
                        help="git revision holding the v0.1 hand-written harness/results.py")
    parser.add_argument("--only", help="measure this codec only, in this process")
    args = parser.parse_args(argv)
    if args.only:
        for num_diverging in args.diverging:
            print(run_one(args.only, args, num_diverging), flush=True)
        return 0
    print(f"{'codec':13} {'calls':>6} {'diverging':>9} {'bytes':>10} {'enc ms':>9} "
          f"{'dec ms':>9} {'enc RSS':>7} {'dec RSS':>7} {'enc heap':>8} {'dec heap':>8}  "
          f"round trip   (RSS: peak resident rise, heap: tracemalloc peak; MiB)", flush=True)
    for num_diverging in args.diverging:
        for name in ("msgspec", "hand-written", "pydantic", "cattrs"):
            subprocess.run([sys.executable, __file__, "--only", name, "--calls", str(args.calls),
                            "--diverging", str(num_diverging), "--repeat", str(args.repeat),
                            "--baseline-rev", args.baseline_rev], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
