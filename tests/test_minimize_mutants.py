"""`minimize` on a bundled trace with faulty managers: small reductions, same divergence class,
and a written pytest file that fails under the fault and passes under the honest manager."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.minimize import MANAGER_VARIABLE, MinimizeProgress, minimize_trace, write_pytest
from harness.mutants import mutant_named
from harness.mutate import HONEST
from harness.replay import ReplayOptions, replay_trace
from harness.trace import open_trace

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "scenarios" / "traces" / "mutation_pressure.kvtrace"


def run_pytest(test_file: Path, manager: str) -> subprocess.CompletedProcess:
    env = {**os.environ, MANAGER_VARIABLE: manager, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(test_file.parent), str(test_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["ClearAllKeepsRoots", "EpisodeEndClearsNeighbour", "NoRecurrentClear"])
def test_minimize_reduces_a_mutant_divergence_to_a_failing_pytest(name: str, tmp_path: Path) -> None:
    spec = mutant_named(name).spec
    options = ReplayOptions(manager=spec)
    progress: list[MinimizeProgress] = []
    out = tmp_path / f"{name.lower()}.kvtrace"
    result = minimize_trace(str(TRACE), str(out), options, progress=progress.append)
    assert result.num_calls_after <= min(30, result.num_calls_before // 10), result
    assert result.reduced.classification == result.original.classification
    assert progress[0] == MinimizeProgress("locating", 176, 176, 0)
    assert progress[-1].num_replays == result.num_replays - 1
    assert result.num_calls_after in {p.num_calls for p in progress[1:]}
    assert {p.stage for p in progress[1:]} <= {"searches", "simulations", "envs"}
    replayed = replay_trace(str(out), options)
    assert replayed.divergences[0].classification == result.classification
    assert not replay_trace(str(out), ReplayOptions(manager=HONEST.spec)).divergences

    test_file = tmp_path / f"test_{name.lower()}_repro.py"
    write_pytest(str(test_file), result, options)
    failing = run_pytest(test_file, spec)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"diverges: {result.classification}" in failing.stdout
    passing = run_pytest(test_file, HONEST.spec)
    assert passing.returncode == 0, passing.stdout + passing.stderr


def test_minimize_is_deterministic(tmp_path: Path) -> None:
    options = ReplayOptions(manager=mutant_named("NoRecurrentClear").spec)
    first = minimize_trace(str(TRACE), str(tmp_path / "a.kvtrace"), options)
    second = minimize_trace(str(TRACE), str(tmp_path / "b.kvtrace"), options)
    assert (first.num_calls_after, first.kept_envs, first.num_replays) == \
        (second.num_calls_after, second.kept_envs, second.num_replays)
    kinds = []
    for path in (first.output_path, second.output_path):
        with open_trace(path) as reader:
            kinds.append([(r.kind, sorted(r.arrays), [a.tobytes() for a in r.arrays.values()])
                          for r in reader])
    assert kinds[0] == kinds[1]
