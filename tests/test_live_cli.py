"""`python -m harness live`: phases 1 and 2 on a real scenario, from the command line."""

from __future__ import annotations

import json

from harness import exit_codes
from harness.cli import main


def live(tmp_path, *argv: str) -> int:
    return main(["live", "scenarios/cartpole_pool_pressure.toml", "--steps", "4",
                 "--json", str(tmp_path / "live.json"), *argv])


def test_validate_mode_passes_with_the_honest_manager(tmp_path, capsys):
    assert live(tmp_path, "--mode", "validate") == exit_codes.OK
    out = capsys.readouterr().out
    assert "EQUIVALENT" in out and "live validate: 4 steps" in out
    report = json.loads((tmp_path / "live.json").read_text())
    assert report["traces"][0]["num_calls"] > 40 and report["exit_code"] == 0


def test_validate_mode_stops_at_the_first_divergence_of_a_faulty_manager(tmp_path, capsys):
    code = live(tmp_path, "--mode", "validate", "--manager", "harness.mutants:EnvSwapFallbackManager")
    assert code == exit_codes.DIVERGENCE
    out = capsys.readouterr().out
    assert "validate: the candidate refactored diverged from the control legacy at call" in out
    assert "FIRST" in out and "divergence" in out


def test_shadow_mode_records_divergences_and_returns_legacy_results(tmp_path, capsys):
    code = live(tmp_path, "--mode", "shadow", "--manager", "harness.mutants:EnvSwapFallbackManager")
    assert code == exit_codes.DIVERGENCE
    report = json.loads((tmp_path / "live.json").read_text())
    assert report["traces"][0]["num_unwaived_calls"] > 0
    assert "live shadow: 4 steps" in capsys.readouterr().out


def test_shadow_mode_switches_the_candidate_off_past_its_overhead_budget(tmp_path, capsys):
    assert live(tmp_path, "--mode", "shadow", "--overhead-budget", "0.01") == exit_codes.OK
    assert "candidate switched off" in capsys.readouterr().out
