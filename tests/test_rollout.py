"""The rollout record: moves through the gate, rollbacks with a reason, the kept history."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import exit_codes
from harness.cli import main
from harness.fileio import file_digest
from harness.rollout import (RolloutEntry, RolloutError, RolloutRecord, load_record,
                             record_to_toml, rollback_steps, save_record)

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "cartpole_pool_pressure.toml"
PATHS = '["hit_root_pool", "hit_recurrent_pool", "eviction"]'
GATE = f"""
[phase.1]
name = "shadow"
control = "legacy"
candidate = "refactored"
min_traces = 1
min_calls = 20
required_paths = {PATHS}
max_engine_errors = 0

[phase.2]
name = "validate"
control = "legacy"
candidate = "refactored"
min_traces = 1
min_calls = 20
required_paths = {PATHS}
max_unwaived_divergences = 0

[phase.3]
name = "switch"
control = "golden"
candidate = "refactored"
min_traces = 1
min_calls = 100000
required_paths = {PATHS}
"""


def advance(at: int, to: int, signoff: str = "rollout/s.json",
            digest: str = "sha256:00") -> RolloutEntry:
    return RolloutEntry(action="advance", from_phase=at, to_phase=to, date="2026-06-01T00:00:00+00:00",
                        reason="gate passed", signoff=signoff, signoff_digest=digest)


def rollback(at: int, to: int, reason: str = "cache mismatch in prod") -> RolloutEntry:
    return RolloutEntry(action="rollback", from_phase=at, to_phase=to,
                        date="2026-06-02T00:00:00+00:00", reason=reason)


# ---------------------------------------------------------------- the record
def test_a_missing_record_is_phase_0_with_no_history(tmp_path):
    assert load_record(tmp_path / "rollout.toml") == RolloutRecord(phase=0, history=())


def test_record_round_trips_through_toml(tmp_path):
    record = RolloutRecord(phase=1, history=(advance(0, 1), advance(1, 2),
                                             rollback(2, 1, 'quote " and\nnewline')))
    path = tmp_path / "rollout.toml"
    save_record(record, path)
    assert load_record(path) == record
    assert 'reason = "quote \\" and\\nnewline"' in path.read_text()


def test_record_toml_has_no_signoff_keys_on_a_rollback():
    text = record_to_toml(RolloutRecord(phase=0, history=(advance(0, 1), rollback(1, 0))))
    assert text.count("signoff =") == 1


@pytest.mark.parametrize("history, phase, message", [
    ((advance(0, 1), advance(2, 3)), 3, "history\\[1\\] starts at phase 2"),
    ((advance(0, 2),), 2, "advance from phase 0 to 2 is not a valid move"),
    ((advance(0, 1),), 2, "the history ends at phase 1, the record says 2"),
    ((RolloutEntry("advance", 0, 1, "d", "r"),), 1, "an advance must name its sign-off"),
])
def test_a_record_whose_history_does_not_chain_is_rejected(tmp_path, history, phase, message):
    path = tmp_path / "rollout.toml"
    text = record_to_toml(RolloutRecord(phase=1, history=history)).replace("phase = 1\n",
                                                                           f"phase = {phase}\n", 1)
    path.write_text(text)
    with pytest.raises(RolloutError, match=message):
        load_record(path)


def test_last_signoff_is_the_latest_advance_into_the_phase():
    record = RolloutRecord(phase=1, history=(advance(0, 1, "a"), advance(1, 2, "b"),
                                             rollback(2, 1), advance(1, 2, "c"), rollback(2, 1)))
    assert record.last_signoff(2).signoff == "c"
    assert record.last_signoff(3) is None


# ---------------------------------------------------------------- the commands
@pytest.fixture(scope="session")
def short_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rollout-traces") / "pool_pressure.kvtrace"
    assert main(["capture", str(SCENARIO), "-o", str(path), "--steps", "3"]) == 0
    return path


@pytest.fixture
def setup(tmp_path, short_trace) -> dict[str, str]:
    (tmp_path / "gate.toml").write_text(GATE)
    (tmp_path / "waivers.toml").write_text("")
    return {"record": str(tmp_path / "reports" / "rollout.toml"),
            "config": str(tmp_path / "gate.toml"), "waivers": str(tmp_path / "waivers.toml"),
            "trace": str(short_trace)}


def rollout(setup: dict[str, str], action: str, *argv: str) -> int:
    extra = ["--config", setup["config"], "--waivers", setup["waivers"], setup["trace"]] \
        if action == "advance" else []
    return main(["rollout", action, "--record", setup["record"], *extra, *argv])


def test_advance_moves_one_phase_when_the_gate_passes_and_archives_the_signoff(setup, capsys):
    assert rollout(setup, "advance", "--reason", "shadow on in staging") == exit_codes.OK
    record_path = Path(setup["record"])
    record = load_record(record_path)
    assert record.phase == 1
    (entry,) = record.history
    assert (entry.action, entry.from_phase, entry.to_phase, entry.reason) == \
        ("advance", 0, 1, "shadow on in staging")
    archived = record_path.parent / entry.signoff
    assert entry.signoff.startswith("rollout/signoff-phase1-") and archived.exists()
    assert file_digest(str(archived)) == entry.signoff_digest
    assert "advanced to phase 1 (shadow)" in capsys.readouterr().out


def test_advance_stays_put_when_the_gate_does_not_pass(setup, capsys):
    assert rollout(setup, "advance") == exit_codes.OK
    assert rollout(setup, "advance") == exit_codes.OK
    assert rollout(setup, "advance") == exit_codes.INSUFFICIENT_EVIDENCE  # phase 3 asks 100000
    assert load_record(Path(setup["record"])).phase == 2
    assert "the rollout stays at phase 2" in capsys.readouterr().out


def test_rollback_needs_a_reason(setup, capsys):
    assert rollout(setup, "advance") == exit_codes.OK
    assert rollout(setup, "rollback") == exit_codes.BAD_INPUT
    assert rollout(setup, "rollback", "--reason", "  ") == exit_codes.BAD_INPUT
    assert load_record(Path(setup["record"])).phase == 1


def test_rollback_moves_back_and_keeps_the_history(setup, capsys):
    assert rollout(setup, "advance") == exit_codes.OK
    assert rollout(setup, "advance") == exit_codes.OK
    assert rollout(setup, "rollback", "--reason", "validate raised in prod", "--to", "0") == \
        exit_codes.OK
    record = load_record(Path(setup["record"]))
    assert record.phase == 0
    assert [(e.action, e.from_phase, e.to_phase) for e in record.history] == \
        [("advance", 0, 1), ("advance", 1, 2), ("rollback", 2, 0)]
    assert record.history[-1].reason == "validate raised in prod"
    out = capsys.readouterr().out
    assert "rolled back from phase 2 to 0 (legacy)" in out
    assert "use_new_cache_manager = false" in out and "make test" in out


def test_rollback_below_phase_0_is_refused(setup, capsys):
    assert rollout(setup, "rollback", "--reason", "x") == exit_codes.BAD_INPUT
    assert "expected a phase in [0, 0)" in capsys.readouterr().err


def test_advance_past_the_last_phase_is_refused(setup, capsys):
    save_record(RolloutRecord(phase=3, history=(advance(0, 1), advance(1, 2), advance(2, 3))),
                Path(setup["record"]))
    assert rollout(setup, "advance") == exit_codes.BAD_INPUT
    assert "the last phase" in capsys.readouterr().err


def test_status_verifies_archived_signoffs(setup, capsys):
    assert rollout(setup, "advance") == exit_codes.OK
    capsys.readouterr()
    assert rollout(setup, "status") == exit_codes.OK
    out = capsys.readouterr().out
    assert "rollout phase 1 (shadow)" in out and "ok" in out
    record_path = Path(setup["record"])
    archived = record_path.parent / load_record(record_path).history[0].signoff
    archived.write_text(archived.read_text() + " ")
    assert rollout(setup, "status") == exit_codes.DIVERGENCE
    assert "CHANGED" in capsys.readouterr().out


def test_status_without_a_record_says_phase_0(setup, capsys):
    assert rollout(setup, "status") == exit_codes.OK
    assert "rollout phase 0 (legacy)" in capsys.readouterr().out


def test_rollback_plan_from_phase_3_restores_legacy_then_verifies_with_the_gate():
    steps = rollback_steps(3, 2, "rollout/signoff-phase3.json")
    assert steps[0].startswith("stop using the new code: serve with phase 2's world model")
    assert steps[1].startswith("restore legacy/world_model.py from git")
    assert steps[2] == "verify: make test && make gate PHASE=2"
    assert "rollout/signoff-phase3.json" in steps[3]
    assert rollback_steps(1, 0, None)[1] == "verify: make test"
