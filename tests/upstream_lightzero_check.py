"""Upstream LightZero's real history, side by side, through the worker engines.

Needs ``.venv-lightzero`` (``make lightzero``) and the trees in ``../shared/lightzero``; run by
``make lightzero-check``, not by ``make test`` (the file name is outside pytest's default
pattern, so only an explicit path collects it). Each test drives the engines directly, closed
loop, so it pins the engine seam the CLI's compare uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.calls import RecordedCall, call_from_record
from harness.scenario import load_scenario
from harness.trace import open_trace
from harness.upstream.capture import capture_upstream
from harness.lineage import ClosedLoop
from harness.upstream.engine import UpstreamEngine, UpstreamSpecError
from harness.upstream.config import UpstreamConfigError
from unizero.config import WorldModelConfig
from unizero.events import Lookup

REPO = Path(__file__).resolve().parents[1]
TREES = Path(os.environ.get("LIGHTZERO_TREES", REPO.parent / "shared" / "lightzero")).resolve()
SCENARIO = REPO / "scenarios" / "lightzero" / "lightzero_small.toml"


def spec(kind: str, tree: str) -> str:
    return f"{kind}:{TREES / tree}"


@dataclass(frozen=True, slots=True)
class SideBySide:
    first_divergence: int | None
    first_kind: str | None
    aliasing_at_first: tuple[str, ...]
    envs_at_first: tuple[int, ...]
    padded_at_first: tuple[int, ...]
    diverged_envs: tuple[int, ...]
    num_calls: int
    hits: tuple[int, int]
    wall_s: float


def load_calls(path: Path) -> tuple[WorldModelConfig, list[RecordedCall]]:
    with open_trace(path) as reader:
        config = WorldModelConfig.from_dict(reader.header["config"])
        calls = [call_from_record(r.index, r.kind, r.meta, r.arrays) for r in reader]
    return config, calls


def differing_envs(control: dict, candidate: dict, tol: float) -> set[int]:
    envs = set()
    for name, value in control.items():
        a, b = value.reshape(value.shape[0], -1), candidate[name].reshape(value.shape[0], -1)
        close = np.abs(a - b) <= tol + tol * np.abs(a) if tol else a == b
        envs |= set(np.nonzero(~np.all(close, axis=1))[0].tolist())
    return envs


def padded_envs(events: tuple) -> set[int]:
    """Envs whose context is shorter than the call's longest: upstream left-pads them."""
    sizes = {e.env: e.size for e in events if isinstance(e, Lookup)}
    return {env for env, size in sizes.items() if size < max(sizes.values(), default=0)}


def side_by_side(trace: Path, control: str, candidate: str, tol: float = 0.0,
                 judge_events: bool = True, loop: str = "closed") -> SideBySide:
    """Closed-loop replay of ``trace`` through two engines; outputs equal within ``tol``
    (0: bit for bit), events equal (unless not ``judge_events``), no aliasing finding."""
    start = time.perf_counter()
    config, calls = load_calls(trace)
    first = kind = None
    aliasing: tuple[str, ...] = ()
    at_first: tuple[int, ...] = ()
    padded: tuple[int, ...] = ()
    envs: set[int] = set()
    hits = [0, 0]
    with UpstreamEngine(control, config) as a, UpstreamEngine(candidate, config) as b:
        closed = ClosedLoop() if loop == "closed" else None
        for recorded in calls:
            obs = []
            for side, engine in enumerate((a, b)):
                fed = recorded if closed is None else closed.feed(str(side), recorded)
                observation = engine.apply(fed)
                assert observation.error is None, observation.error
                if closed is not None:
                    closed.observe(str(side), recorded, observation)
                hits[side] += sum(1 for e in observation.events if isinstance(e, Lookup) and e.hit)
                obs.append(observation)
            if closed is not None:
                closed.record(recorded)
            differing = differing_envs(obs[0].outputs, obs[1].outputs, tol)
            events_differ = judge_events and obs[0].events != obs[1].events
            if (differing or events_differ or obs[1].findings) and first is None:
                first, kind, aliasing = recorded.index, recorded.kind, obs[1].findings
                at_first = tuple(sorted(differing))
                padded = tuple(sorted(padded_envs(obs[0].events)))
            envs |= differing
    return SideBySide(first, kind, aliasing, at_first, padded, tuple(sorted(envs)), len(calls), tuple(hits),
                      time.perf_counter() - start)


@pytest.fixture(scope="module")
def legacy_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lz") / "legacy.kvtrace"
    summary, num_records = capture_upstream(load_scenario(SCENARIO), spec("lightzero", "legacy"), out)
    assert summary.num_recurrent_calls == 24 and num_records == 29
    return out


def test_buggy_manager_diverges_on_the_first_recurrent_call_explained_by_aliasing(legacy_trace: Path) -> None:
    result = side_by_side(legacy_trace, spec("lightzero", "legacy"), spec("lightzero-manager", "buggy"))
    assert result.first_kind == "recurrent"
    assert result.first_divergence == 2  # record 0 weights, 1 root, 2 the first recurrent call
    assert result.aliasing_at_first and "shares tensor storage" in result.aliasing_at_first[0]
    assert result.hits[0] == result.hits[1]  # hit and miss counts cannot show the bug


def test_fixed_manager_matches_legacy_bit_for_bit(legacy_trace: Path) -> None:
    result = side_by_side(legacy_trace, spec("lightzero", "legacy"), spec("lightzero-manager", "fixed"))
    assert result.first_divergence is None and result.diverged_envs == ()


def test_head_old_path_and_manager_agree(legacy_trace: Path) -> None:
    result = side_by_side(legacy_trace, spec("lightzero", "head"), spec("lightzero-manager", "head"))
    assert result.first_divergence is None


def test_head_against_legacy_reports_the_padded_envs_without_crashing(legacy_trace: Path) -> None:
    # Legacy weights reach head's 4x-wide heads through a widening exact up to rounding, so
    # outputs are judged within a tolerance and cache keys (exact hashes of those latents) differ
    # from the first recurrent call on; closed loop still finds every key (equal hit counts).
    result = side_by_side(legacy_trace, spec("lightzero", "legacy"), spec("lightzero-manager", "head"),
                          tol=1e-5, judge_events=False)
    assert result.hits[0] == result.hits[1]
    assert result.first_divergence is not None and result.first_kind == "recurrent"
    assert result.envs_at_first and set(result.envs_at_first) <= set(result.padded_at_first)


def test_open_loop_loses_cache_keys_that_closed_loop_keeps(legacy_trace: Path) -> None:
    control, candidate = spec("lightzero", "legacy"), spec("lightzero-manager", "head")
    open_loop = side_by_side(legacy_trace, control, candidate, tol=1e-5, judge_events=False, loop="open")
    closed = side_by_side(legacy_trace, control, candidate, tol=1e-5, judge_events=False)
    assert closed.hits[1] == closed.hits[0]
    assert open_loop.hits[1] < open_loop.hits[0]


def test_a_worker_that_dies_mid_replay_is_an_engine_error_not_a_crash(legacy_trace: Path) -> None:
    config, calls = load_calls(legacy_trace)
    engine = UpstreamEngine(spec("lightzero", "legacy"), config)
    assert engine.apply(calls[0]).error is None
    engine._gateway.exit()  # the process goes away under the harness
    observation = engine.apply(calls[1])
    assert observation.error is not None and observation.error.startswith("worker ")
    assert "\n" not in observation.error and observation.outputs == {}
    engine.close()


def test_manager_spec_on_a_tree_without_a_manager_is_refused_in_one_line() -> None:
    with pytest.raises(UpstreamSpecError, match="has no KVCacheManager") as info:
        UpstreamEngine(spec("lightzero-manager", "legacy"), load_scenario(SCENARIO).model)
    assert "\n" not in str(info.value)


def test_a_field_without_upstream_counterpart_is_refused_before_any_worker_starts() -> None:
    with pytest.raises(UpstreamConfigError, match="model.encoder_hidden"):
        UpstreamEngine(spec("lightzero", "legacy"), WorldModelConfig())


def readme_commands() -> list[str]:
    """The shell commands of the README's "Use it on your LightZero checkout" section, with
    continuation lines joined, except ``make lightzero-check`` (which runs this file)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it on your LightZero checkout", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in section.split("```bash")[1:]:
        body = block.split("```", 1)[0].replace("\\\n", " ")
        commands += [line.split("  #", 1)[0].strip() for line in body.splitlines() if line.strip()]
    return [command for command in commands if command != "make lightzero-check"]


def test_every_readme_command_runs_on_a_checkout(tmp_path: Path) -> None:
    """The README's commands, with ``$HOME/LightZero`` replaced by upstream's head tree."""
    commands = readme_commands()
    assert [c.split()[0] for c in commands] == ["make", ".venv/bin/python", ".venv/bin/python"]
    for command in commands:
        command = command.replace("$HOME/LightZero", str(TREES / "head")).replace(
            "lz.kvtrace", str(tmp_path / "lz.kvtrace")).replace(
            "reports/lz.json", str(tmp_path / "lz.json"))
        done = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "NO_COLOR": "1"})
        assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert json.loads((tmp_path / "lz.json").read_text())["loop"] == "closed"


@pytest.mark.parametrize("candidate, code", [("buggy", 1), ("fixed", 0)])
def test_live_validate_runs_upstream_engines_side_by_side(tmp_path: Path, candidate: str,
                                                          code: int) -> None:
    """Phase 2 live on upstream's own trees: the buggy manager raises on its first recurrent
    call, the fixed one runs the whole scenario."""
    done = subprocess.run([sys.executable, "-m", "harness", "live", str(SCENARIO), "--mode",
                           "validate", "--control", spec("lightzero", "legacy"), "--candidate",
                           spec("lightzero-manager", candidate), "--json",
                           str(tmp_path / "live.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
    if code:
        assert "diverged from the control" in done.stdout and "at call 1:" in done.stdout
