"""Old (legacy) vs new (refactored) KV cache, measured side by side in one run.

    python benchmarks/benchmark_kv_cache.py [--atari-steps N] [--passes N] [--json PATH]

Two workloads, each a trace of real MCTS searches replayed through fresh legacy and refactored
world models with the two engines interleaved call by call (see benchmarks/kvbench.py for what
"cache operations" and "bytes moved" mean):

* small: the bundled ``cartpole_small`` trace (L=2, H=4, D=32, C=8, 2 envs);
* atari: the Atari UniZero geometry (L=2, H=8, D=768, C=8, 8 envs, 50 simulations), captured on
  demand into scenarios/generated/ (not committed).

Prints ``Old``, ``New`` and ``Speedup`` per figure and one line per target as
``Speedup <cache-ops|imagine> <small|atari>: <ratio>x`` (legacy time / refactored time, medians).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kvbench import REPO, ensure_trace, load_calls, replay_timed  # noqa: E402

WORKLOADS = {
    "small": ("cartpole_small", REPO / "scenarios" / "traces" / "cartpole_small.kvtrace", None),
    "atari": ("atari_like", REPO / "scenarios" / "generated" / "atari_like.kvtrace", 3),
}


def measure(name: str, *, passes: int, atari_steps: int, device: str) -> dict:
    scenario, path, steps = WORKLOADS[name]
    if name == "atari":
        path = path.with_name(f"atari_like_{atari_steps}steps.kvtrace")
        steps = atari_steps
    config, calls = load_calls(ensure_trace(scenario, path, steps=steps))
    merged: dict[str, dict[str, list]] = {}
    for _ in range(passes):
        for engine, figures in replay_timed(config, calls, device).items():
            for key, values in figures.items():
                merged.setdefault(engine, {}).setdefault(key, []).extend(values.tolist())
    counted = replay_timed(config, calls[: min(len(calls), 120)], device, count_bytes=True)
    out = {"workload": name, "trace": str(path.relative_to(REPO)), "device": device,
           "geometry": {"num_layers": config.num_layers, "num_heads": config.num_heads,
                        "embed_dim": config.embed_dim, "context_length": config.context_length,
                        "env_num": config.env_num, "num_simulations": config.num_simulations},
           "num_imagine_calls": len(merged["legacy"]["imagine"]), "passes": passes}
    for figure in ("imagine", "cache"):
        old = float(np.median(merged["legacy"][figure]))
        new = float(np.median(merged["refactored"][figure]))
        out[figure] = {"old_ms": old * 1e3, "new_ms": new * 1e3, "speedup": old / new}
    out["bytes_per_call"] = {engine: float(np.mean(counted[engine]["bytes"]))
                             for engine in ("legacy", "refactored")}
    return out


def print_workload(result: dict) -> None:
    g = result["geometry"]
    print(f"== {result['workload']}: L={g['num_layers']} H={g['num_heads']} D={g['embed_dim']} "
          f"C={g['context_length']} E={g['env_num']} S={g['num_simulations']}, "
          f"{result['num_imagine_calls']} imagine calls per engine ({result['device']})")
    for figure, label in (("imagine", "whole imagine call"), ("cache", "cache operations")):
        f = result[figure]
        print(f"  {label:20s} Old: {f['old_ms']:8.3f} ms  New: {f['new_ms']:8.3f} ms  "
              f"Speedup: {f['speedup']:.2f}x")
    b = result["bytes_per_call"]
    print(f"  {'bytes moved per call':20s} Old: {b['legacy'] / 1024:8.1f} KiB New: "
          f"{b['refactored'] / 1024:8.1f} KiB ratio: {b['legacy'] / max(b['refactored'], 1):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=3, help="replays of the small trace")
    parser.add_argument("--atari-steps", type=int, default=3, help="collect steps of the atari trace")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=str(REPO / "reports" / "bench_kv_cache.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [measure("small", passes=args.passes, atari_steps=args.atari_steps, device=args.device),
               measure("atari", passes=1, atari_steps=args.atari_steps, device=args.device)]
    for result in results:
        print_workload(result)
    for result in results:
        print(f"Speedup cache-ops {result['workload']}: {result['cache']['speedup']:.2f}x")
        print(f"Speedup imagine {result['workload']}: {result['imagine']['speedup']:.2f}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"workloads": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
