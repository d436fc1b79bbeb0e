"""Causes reach the comparison: every quirk-1 divergence is labelled ``quirk-1`` and a waiver
scoped by cause alone covers exactly those; a faulty manager's own divergences stay
``unexplained`` and fail the run with the same waiver."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from test_cli import assert_bad_input, run_cli

REPO = Path(__file__).resolve().parents[1]
QUIRKS = REPO / "scenarios" / "traces-quirks"
QUIRK_WAIVERS = QUIRKS / "waivers.toml"
TRACE = QUIRKS / "context_len3_twins.kvtrace"


def compare(tmp_path: Path, *argv) -> tuple[int, Counter]:
    report = tmp_path / "report.json"
    result = run_cli("compare", TRACE, "--json", report, *argv)
    assert "Traceback" not in result.out + result.err, result.err
    divergences = json.loads(report.read_text())["traces"][0]["divergences"]
    return result.code, Counter((d["cause"], d["waived"]) for d in divergences)


def test_every_quirk_1_divergence_is_labelled_and_diverges_without_a_waiver(tmp_path):
    empty = tmp_path / "none.toml"
    empty.write_text("")
    code, causes = compare(tmp_path, "--waivers", empty)
    assert code == 1
    assert set(causes) == {("quirk-1", False)} and sum(causes.values()) > 10


def test_a_cause_waiver_covers_the_quirk_1_divergences(tmp_path):
    code, causes = compare(tmp_path, "--waivers", QUIRK_WAIVERS)
    assert code == 0
    assert set(causes) == {("quirk-1", True)}


def test_a_faulty_managers_divergences_are_unexplained_and_never_waived_by_cause(tmp_path):
    code, causes = compare(tmp_path, "--waivers", QUIRK_WAIVERS,
                           "--manager", "harness.mutants:LruManager")
    assert code == 1
    assert causes[("unexplained", False)] > 0
    assert all(waived == (cause == "quirk-1") for cause, waived in causes)


@pytest.mark.parametrize("cause, fragment", [("unexplained", "never waived by cause"),
                                             ("quirk-99", "expected one of quirk-1")])
def test_a_waiver_naming_no_waivable_cause_is_refused_in_one_line(tmp_path, cause, fragment):
    waivers = tmp_path / "w.toml"
    waivers.write_text(f'[[waiver]]\nid = "x"\nreason = "r"\nexpires = 2099-01-01\n'
                       f'cause = "{cause}"\n')
    assert_bad_input(run_cli("compare", TRACE, "--waivers", waivers, "--json",
                             tmp_path / "r.json"), "cause", fragment)
