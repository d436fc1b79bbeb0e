"""``minimize`` and ``compare --reference uncached`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.trace import open_trace
from test_cli import assert_bad_input, run_cli

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "scenarios" / "traces" / "mutation_pressure.kvtrace"
MUTANT = "harness.mutants:EnvSwapRootManager"


def num_records(path: Path) -> int:
    with open_trace(path) as reader:
        return sum(1 for _ in reader)


def test_minimize_writes_a_small_trace_that_still_diverges_and_a_pytest_file(tmp_path):
    out, test_file = tmp_path / "reduced.kvtrace", tmp_path / "test_reduced.py"
    result = run_cli("minimize", TRACE, "--manager", MUTANT, "-o", out, "--pytest", test_file)
    assert result.code == 0, result.out + result.err
    before, after = num_records(TRACE), num_records(out)
    assert after <= min(30, before // 10), (before, after)
    assert "def test_" in test_file.read_text()
    compared = run_cli("compare", out, "--manager", MUTANT, "--json", tmp_path / "r.json")
    assert compared.code == 1
    honest = run_cli("compare", out, "--json", tmp_path / "h.json")
    assert honest.code == 0


def test_minimize_refuses_a_trace_that_does_not_diverge_and_its_own_input(tmp_path):
    assert_bad_input(run_cli("minimize", TRACE, "-o", tmp_path / "r.kvtrace"), "diverge")
    assert_bad_input(run_cli("minimize", TRACE, "--manager", MUTANT, "-o", TRACE),
                     "would overwrite the input")


def test_compare_with_the_uncached_reference_shows_each_sides_distance(tmp_path):
    report, markdown = tmp_path / "r.json", tmp_path / "r.md"
    result = run_cli("compare", TRACE, "--manager", "harness.mutants:AliasingManager",
                     "--reference", "uncached", "--json", report, "--markdown", markdown)
    assert result.code == 1
    data = json.loads(report.read_text())
    assert data["reference_engine"] == "uncached"
    first = data["traces"][0]["divergences"][0]
    distances = first["reference"]
    # The aliasing mutant is wrong and legacy is right at its first divergence: the candidate
    # is far from the full recompute, the control next to it.
    assert distances["control_max_abs"] < 1e-4 < distances["candidate_max_abs"]
    assert "distance to the reference engine" in markdown.read_text()
