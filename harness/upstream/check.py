"""``make lightzero-check``: kvmigrate on upstream LightZero's real history, through its CLI.

Captures ``scenarios/lightzero/lightzero_small.toml`` from the ``legacy`` tree, then replays it
closed loop:

* legacy against ``lightzero-manager:…/buggy`` -> exit 1, first divergence on the first
  recurrent call, explained by the aliasing probe;
* against ``lightzero-manager:…/fixed`` -> exit 0;
* ``lightzero:…/head`` against ``lightzero-manager:…/head`` -> exit 0;
* ``lightzero:…/legacy`` against ``lightzero-manager:…/head`` -> exit 1 with a report (not a crash).

Where the LightZero environment cannot import upstream's world model, it says so in one line and
fails. Prints one line per step; exit 0 when every expectation holds, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.upstream.engine import REPO_ROOT

__all__ = ["Expectation", "main", "environment_problem"]

SCENARIO = REPO_ROOT / "scenarios" / "lightzero" / "lightzero_small.toml"
_IMPORT = "import lzero.model.unizero_world_models.world_model"


@dataclass(frozen=True, slots=True)
class Expectation:
    """One compare run and what its exit code and JSON report must show."""

    title: str
    control: str
    candidate: str
    exit_code: int
    report_check: Callable[[dict], str | None]  # None when the report is as expected, else why not


def environment_problem(python: str, tree: Path) -> str | None:
    """None when ``python`` imports upstream's world model from ``tree``, else one line why not."""
    if not Path(python).is_file():
        return f"no LightZero interpreter at {python} (make lightzero builds it)"
    if not (tree / "lzero").is_dir():
        return f"no LightZero tree at {tree}"
    done = subprocess.run([python, "-c", _IMPORT], env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{python} cannot import upstream's world model from {tree}: {last}"
    return None


def _first(report: dict) -> dict | None:
    trace = report["traces"][0]
    first = trace.get("first_divergence_call")
    return next((d for d in trace["divergences"] if d["call_index"] == first), None)


def _buggy_caught(report: dict) -> str | None:
    first = _first(report)
    if first is None or first["call_kind"] != "recurrent" or first["call_index"] != 2:
        return f"first divergence should be record 2 (the first recurrent call), got {first and first['call_index']}"
    if "shares tensor storage" not in json.dumps(first):
        return "the first divergence does not carry the aliasing probe's explanation"
    return None


def _head_report(report: dict) -> str | None:
    first = _first(report)
    return None if first is not None else "expected divergences at the padded envs, got none"


def _equivalent(report: dict) -> str | None:
    return None if report["traces"][0]["first_divergence_call"] is None else "expected no divergence"


def expectations(trees: Path) -> list[Expectation]:
    legacy, buggy = f"lightzero:{trees / 'legacy'}", f"lightzero-manager:{trees / 'buggy'}"
    fixed, head = f"lightzero-manager:{trees / 'fixed'}", trees / "head"
    return [
        Expectation("legacy vs buggy manager: caught", legacy, buggy, 1, _buggy_caught),
        Expectation("legacy vs fixed manager: equivalent", legacy, fixed, 0, _equivalent),
        Expectation("head old path vs head manager: equivalent", f"lightzero:{head}",
                    f"lightzero-manager:{head}", 0, _equivalent),
        Expectation("legacy vs head manager: a report at the padded envs", legacy,
                    f"lightzero-manager:{head}", 1, _head_report),
    ]


def _harness(*args: str, env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
    return done.returncode, tail[0], time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.upstream.check")
    parser.add_argument("--trees", default=str(REPO_ROOT.parent / "shared" / "lightzero"))
    parser.add_argument("--lightzero-python", default=str(REPO_ROOT / ".venv-lightzero" / "bin" / "python"))
    parser.add_argument("--workdir", default=None, help="keep the trace and reports here")
    args = parser.parse_args(argv)
    trees = Path(args.trees).resolve()
    problem = environment_problem(args.lightzero_python, trees / "legacy")
    if problem is not None:
        print(f"lightzero-check: FAILED: the LightZero environment is not usable: {problem}", file=sys.stderr)
        return 1
    # absolute(), not resolve(): a venv's python is a symlink to the base interpreter.
    env = {**os.environ, "KVMIGRATE_LIGHTZERO_PYTHON": str(Path(args.lightzero_python).absolute())}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="lightzero-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    trace = workdir / "legacy.kvtrace"
    code, tail, wall = _harness("capture", str(SCENARIO), "--engine", f"lightzero:{trees / 'legacy'}",
                                "-o", str(trace), env=env)
    print(f"capture from legacy: exit {code} in {wall:.1f}s: {tail}")
    if code != 0:
        return 1
    failures = 0
    for number, item in enumerate(expectations(trees)):
        report_path = workdir / f"compare-{number}.json"
        code, tail, wall = _harness("compare", str(trace), "--control", item.control, "--candidate",
                                    item.candidate, "--loop", "closed", "--json", str(report_path),
                                    env=env)
        why = f"exit {code}, expected {item.exit_code}" if code != item.exit_code else None
        if why is None:
            why = item.report_check(json.loads(report_path.read_text(encoding="utf-8")))
        failures += why is not None
        print(f"{'ok  ' if why is None else 'FAIL'} {item.title}: exit {code} in {wall:.1f}s"
              f"{'' if why is None else ': ' + why + ' (' + tail + ')'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
