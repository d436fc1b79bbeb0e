"""Delta debugging of diverging traces: ddmin, the reduction units, env slicing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from harness.minimize import (MinimizeError, RawRecord, ddmin, minimize_trace, recurrent_parents,
                              renumber_sources, slice_envs, split_units)
from harness.mutants import mutant_named
from harness.replay import ReplayOptions
from harness.trace import open_trace

TRACE_DIR = Path(__file__).resolve().parent.parent / "scenarios" / "traces"


def load(name: str) -> list[RawRecord]:
    with open_trace(TRACE_DIR / f"{name}.kvtrace") as reader:
        return [RawRecord(r.kind, r.meta, r.arrays) for r in reader]


def test_ddmin_finds_the_one_failing_item_and_logs_a_deterministic_order() -> None:
    tried: list[tuple[int, ...]] = []

    def fails(items: tuple[int, ...]) -> bool:
        tried.append(items)
        return 6 in items

    assert ddmin(range(10), fails) == (6,)
    first = list(tried)
    tried.clear()
    ddmin(range(10), fails)
    assert tried == first


def test_ddmin_keeps_a_pair_that_only_fails_together() -> None:
    assert ddmin(range(16), lambda items: 3 in items and 12 in items) == (3, 12)


def test_ddmin_returns_the_input_when_nothing_can_go() -> None:
    assert ddmin((1, 2, 3), lambda items: len(items) == 3) == (1, 2, 3)


def test_units_are_whole_searches_and_the_initial_weights_stay_first() -> None:
    records = load("mutation_pressure")
    units = split_units(records, range(len(records)))
    assert units[0] == (0,) and records[0].kind == "weights"
    kinds = [[records[i].kind for i in unit] for unit in units[1:]]
    searches = [unit for unit in kinds if unit[0] == "root"]
    assert searches and all(set(unit[1:]) <= {"recurrent"} for unit in searches)
    assert all(unit == ["clear"] for unit in kinds if unit[0] == "clear")
    assert sum(len(unit) for unit in units) == len(records)


def test_a_recurrent_call_depends_on_the_calls_that_produced_its_parent_latents() -> None:
    records = load("mutation_pressure")
    parents = recurrent_parents(records, range(12))
    # Record 1 is a root and 8 the next one: 2 and 3 expand the roots, 4 and 5 children of 2,
    # 6 and 7 children of 5; a root call starts a new search.
    assert parents == {2: set(), 3: set(), 4: {2}, 5: {2}, 6: {5}, 7: {5},
                       9: set(), 10: set(), 11: {9}}
    assert [records[i].kind for i in (1, 8)] == ["root", "root"]


def test_slicing_keeps_only_the_chosen_env_rows_and_renumbers_their_events() -> None:
    records = load("mutation_pressure")
    recurrent = next(r for r in records if r.kind == "recurrent")
    sliced = slice_envs(recurrent, (1,))
    assert sliced is not None
    np.testing.assert_array_equal(sliced.arrays["in/latent_state"], recurrent.arrays["in/latent_state"][[1]])
    np.testing.assert_array_equal(sliced.arrays["out/latent"], recurrent.arrays["out/latent"][[1]])
    kept_keys = [e["key"] for e in recurrent.meta["events"] if e.get("env") == 1]
    assert [e["key"] for e in sliced.meta["events"]] == kept_keys
    assert {e["env"] for e in sliced.meta["events"]} == {0}


def test_an_episode_end_clear_of_a_dropped_env_is_dropped_and_others_renumbered() -> None:
    records = load("mutation_pressure")
    clears = [r for r in records if r.kind == "clear" and r.meta["inputs"].get("env") is not None]
    env1 = next(r for r in clears if r.meta["inputs"]["env"] == 1)
    assert slice_envs(env1, (0,)) is None
    assert slice_envs(env1, (1,)).meta["inputs"]["env"] == 0


def test_a_trace_that_does_not_diverge_is_refused_naming_it(tmp_path: Path) -> None:
    path = TRACE_DIR / "cartpole_twin_envs.kvtrace"
    with pytest.raises(MinimizeError, match="cartpole_twin_envs.kvtrace: control 'legacy' and "
                                            "candidate 'refactored' have no unwaived divergence"):
        minimize_trace(str(path), str(tmp_path / "out.kvtrace"), ReplayOptions())


def test_waived_divergences_are_not_minimised(tmp_path: Path) -> None:
    path = TRACE_DIR / "mutation_pressure.kvtrace"
    options = ReplayOptions(manager=mutant_named("WrongBytesKey").spec)
    with pytest.raises(MinimizeError, match="no unwaived divergence"):
        minimize_trace(str(path), str(tmp_path / "out.kvtrace"), options,
                       judge=lambda call: dataclasses.replace(call, waiver_id="all"))


def test_recorded_latent_provenance_follows_the_kept_records_and_rows() -> None:
    records = load("mutation_pressure")
    recurrent = next(r for r in records if r.kind == "recurrent")
    with_source = RawRecord(recurrent.kind, {**recurrent.meta, "inputs": {
        **recurrent.meta["inputs"], "latent_source": [[1, 0], [1, 1]]}}, recurrent.arrays)
    sliced = slice_envs(with_source, (1,))
    assert sliced.meta["inputs"]["latent_source"] == [[1, 1]]
    moved = renumber_sources(sliced, {0: 0, 1: 1, 5: 2}, {1: 0})
    assert moved.meta["inputs"]["latent_source"] == [[1, 0]]
    dropped = renumber_sources(sliced, {0: 0, 5: 1}, {1: 0})
    assert dropped.meta["inputs"]["latent_source"] == [None]


def test_the_input_trace_is_never_the_output(tmp_path: Path) -> None:
    path = TRACE_DIR / "mutation_pressure.kvtrace"
    with pytest.raises(MinimizeError, match="expected an output path other than the input trace"):
        minimize_trace(str(path), str(path), ReplayOptions())


def test_a_reanalysis_block_is_one_unit_from_switch_on_to_switch_off() -> None:
    records = load("cartpole_pool_pressure")
    units = split_units(records, range(len(records)))
    blocks = [unit for unit in units if records[unit[0]].kind == "reanalyze"]
    assert blocks
    for unit in blocks:
        kinds = [records[i].kind for i in unit]
        assert kinds[0] == kinds[-1] == "reanalyze" and kinds[1] == "root"
        assert [records[unit[0]].meta["inputs"]["on"], records[unit[-1]].meta["inputs"]["on"]] == [True, False]
        assert set(kinds[2:-1]) == {"recurrent"}


def test_a_spent_replay_budget_keeps_the_smallest_failing_reduction_found(tmp_path: Path) -> None:
    path = TRACE_DIR / "mutation_pressure.kvtrace"
    options = ReplayOptions(manager=mutant_named("EpisodeEndClearsNeighbour").spec)
    result = minimize_trace(str(path), str(tmp_path / "out.kvtrace"), options, max_replays=3)
    assert result.budget_exhausted
    assert result.num_replays == 4  # three during the reduction, then the written trace's check
    assert result.reduced.classification == result.original.classification == "decision"
    assert result.num_calls_after <= result.original.call_index + 1
