"""The mutation self-test: each faulty manager is caught where its fault first shows.

One short capture of ``scenarios/mutation_pressure.toml`` (12 steps, legacy engine) is replayed
once for the honest manager and every mutant; expected call indices are derived from the
trace's own calls and recorded events, so the pins hold on any machine that captures it.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from harness import exit_codes
from harness.calls import RootCall, call_from_record
from harness.errors import UsageError
from harness.mutants import CATALOGUE, Mutant, mutant_named
from harness.cli.phases import cmd_mutate
from harness.mutate import (HONEST, MutantOutcome, MutationReport, replay_until_caught,
                            run_mutation_suite)
from harness.recorder import TraceRecorder, make_header
from harness.results import CallComparison, EventDivergence
from harness.scenario import (BUNDLED_SCENARIO_DIR, build_world_model_config, load_scenario,
                              run_scenario)
from harness.trace import TraceWriter, open_trace
from refactored.kv_cache_manager import KVCacheManager
from unizero.backends import build_world_model, load_object

SCENARIO = BUNDLED_SCENARIO_DIR / "mutation_pressure.toml"
NUM_STEPS = 12  # past env 0's episode end (step 7) and the first periodic clear (step 9)


@dataclasses.dataclass(frozen=True)
class TraceCalls:
    """The calls of the captured trace, reduced to what the pins need."""

    path: str
    kinds: tuple[str, ...]                # call kind per call index
    continuing_roots: tuple[int, ...]     # root calls with real previous actions
    clears: tuple[tuple[int, str], ...]   # (call index, scope) of clear calls
    recurrent_hits: tuple[int, ...]       # calls whose recorded lookups hit the recurrent pool

    def indices(self, kind: str) -> list[int]:
        return [index for index, k in enumerate(self.kinds) if k == kind]

    def first_after(self, kind: str, index: int) -> int:
        return next(i for i in self.indices(kind) if i > index)

    def first_clear(self, scope: str) -> int:
        return next(index for index, s in self.clears if s == scope)


def capture(scenario_path: Path, output: Path, num_steps: int) -> None:
    scenario = load_scenario(scenario_path).with_run(num_steps=num_steps)
    model = build_world_model(build_world_model_config(scenario), "cpu", backend="legacy")
    header = make_header(model, engine="legacy",
                         scenario={**scenario.to_dict(), "path": str(scenario_path)})
    with TraceWriter(output, header) as writer:
        run_scenario(scenario, TraceRecorder(model, writer))


def read_calls(path: Path) -> TraceCalls:
    kinds, continuing, clears, hits = [], [], [], []
    with open_trace(path) as reader:
        for record in reader:
            kinds.append(record.kind)
            events = record.meta.get("events", [])
            call = call_from_record(record.index, record.kind, record.meta, record.arrays,
                                    where=str(path))
            if isinstance(call.call, RootCall) and int(np.max(call.call.last_actions)) != -1:
                continuing.append(record.index)
            if record.kind == "clear":
                clears.extend((record.index, e["scope"]) for e in events if e["type"] == "clear")
            if any(e["type"] == "lookup" and e["pool"] == "recurrent" for e in events):
                hits.append(record.index)
    return TraceCalls(str(path), tuple(kinds), tuple(continuing), tuple(clears), tuple(hits))


@pytest.fixture(scope="session")
def trace(tmp_path_factory) -> TraceCalls:
    path = tmp_path_factory.mktemp("mutation") / "mutation_pressure.kvtrace"
    capture(SCENARIO, path, NUM_STEPS)
    return read_calls(path)


@pytest.fixture(scope="session")
def report(trace) -> MutationReport:
    ticks = itertools.count()
    return run_mutation_suite([trace.path], clock=lambda: float(next(ticks)))


def caught_at(report: MutationReport, name: str) -> CallComparison:
    outcome = next(o for o in report.mutants if o.mutant.name == name)
    assert outcome.first_divergence is not None, f"{name} survived"
    return outcome.first_divergence


def where(call: CallComparison) -> tuple[int, str, str]:
    return call.call_index, call.call_kind, call.classification


# ------------------------------------------------------------------ the honest manager
def test_honest_manager_passes_the_pressure_trace(report, trace):
    assert report.honest.caught is False
    assert report.honest.num_traces_replayed == 1
    assert report.failed_traces == ()


def test_timings_come_from_the_injected_clock(report):
    assert [o.elapsed_s for o in (report.honest, *report.mutants)] == [1.0] * (1 + len(CATALOGUE))


# ------------------------------------------------------------------ where each mutant is caught
def test_aliasing_mutant_diverges_within_the_first_search(report, trace):
    # Which call first reads a clobbered entry depends on which buffer the world model hands to
    # set_*; any call of the first search, after the first stores, is a catch on time.
    call = caught_at(report, "Aliasing")
    first_root, second_root = trace.indices("root")[:2]
    assert first_root < call.call_index < second_root
    assert call.call_kind == "recurrent" and call.classification in ("tensor", "decision", "both")


def test_sizeless_copy_mutant_diverges_on_the_size_of_the_first_hit(report, trace):
    call = caught_at(report, "SizelessCopy")
    assert where(call) == (trace.indices("recurrent")[0], "recurrent", "both")
    assert call.event_divergence.summary.endswith("control size 1, candidate size 0")


def test_wrong_bytes_key_mutant_diverges_at_the_first_store(report, trace):
    call = caught_at(report, "WrongBytesKey")
    assert where(call) == (trace.indices("root")[0], "root", "decision")


def test_env_swap_root_mutant_diverges_at_the_first_continuing_root_call(report, trace):
    call = caught_at(report, "EnvSwapRoot")
    assert where(call) == (trace.continuing_roots[0], "root", "decision")
    assert call.event_divergence.summary.endswith("control hit (root pool), candidate miss")


def test_env_swap_fallback_mutant_diverges_at_the_first_recurrent_root_lookup(report, trace):
    call = caught_at(report, "EnvSwapFallback")
    assert where(call) == (trace.indices("recurrent")[0], "recurrent", "decision")


def test_tiny_recurrent_pool_evicts_on_the_second_simulation(report, trace):
    # num_simulations=2 slots: the first simulation's two stores fill it.
    call = caught_at(report, "TinyRecurrentPool")
    assert where(call) == (trace.indices("recurrent")[1], "recurrent", "decision")
    assert call.event_divergence.summary.startswith(
        "keys evicted by this call: control none; candidate recurrent 0x")


def test_no_recurrent_fallback_diverges_at_the_first_recurrent_pool_hit(report, trace):
    call = caught_at(report, "NoRecurrentFallback")
    assert where(call) == (trace.recurrent_hits[0], "recurrent", "both")
    assert call.event_divergence.summary.endswith("control hit (recurrent pool), candidate miss")


def test_lru_mutant_evicts_another_key_once_the_recurrent_pool_wraps(report):
    call = caught_at(report, "Lru")
    assert (call.call_kind, call.classification) == ("recurrent", "decision")
    summary = call.event_divergence.summary
    assert summary.startswith("keys evicted by this call: control recurrent 0x")
    assert "; candidate recurrent 0x" in summary


def test_no_recurrent_clear_mutant_evicts_a_stale_key_in_the_second_search(report, trace):
    call = caught_at(report, "NoRecurrentClear")
    second_search = trace.first_after("recurrent", trace.indices("root")[1])
    assert where(call) == (second_search, "recurrent", "decision")


def test_clear_all_keeping_roots_hits_after_the_first_periodic_clear(report, trace):
    call = caught_at(report, "ClearAllKeepsRoots")
    assert where(call) == (trace.first_after("root", trace.first_clear("all")), "root", "both")
    assert call.event_divergence.summary.endswith("control miss, candidate hit (root pool)")


@pytest.mark.parametrize("name", ["EpisodeEndClearsNeighbour", "EpisodeEndClearsAll"])
def test_episode_end_clear_mutants_evict_differently_at_the_next_root_store(report, trace, name):
    call = caught_at(report, name)
    assert where(call) == (trace.first_after("root", trace.first_clear("root_env")), "root",
                           "decision")


def test_only_first_write_wins_survives_it_needs_duplicate_keys(report):
    # Distinct envs with a trained-looking model never store one key twice while it is live;
    # cartpole_twin_envs and cartpole_zero_init do, and catch it.
    assert [o.mutant.name for o in report.survivors] == ["FirstWriteWins"]


def test_equivalent_fifo_reset_mutant_survives(report):
    outcome = next(o for o in report.mutants if o.mutant.name == "FifoResetOnClear")
    assert outcome.mutant.equivalent and not outcome.caught and outcome.as_expected
    assert report.refuted == ()


# ------------------------------------------------------------------ replay control
def test_replay_stops_at_the_first_unwaived_divergence(trace):
    judged = []

    def judge(call: CallComparison) -> CallComparison:
        judged.append(call.call_index)
        return call

    first = replay_until_caught(trace.path, mutant_named("Aliasing").spec, judge)
    assert judged == [first.call_index]


def test_replay_runs_past_waived_divergences(trace):
    judged = []

    def waive_all(call: CallComparison) -> CallComparison:
        judged.append(call.call_index)
        return dataclasses.replace(call, waiver_id="test-waives-all")

    assert replay_until_caught(trace.path, mutant_named("WrongBytesKey").spec, waive_all) is None
    assert judged[0] == trace.indices("root")[0] and len(judged) > 1


# ------------------------------------------------------------------ catalogue and verdict
def test_catalogue_names_are_unique_and_specs_load():
    assert len({m.name for m in CATALOGUE}) == len(CATALOGUE)
    for mutant in CATALOGUE:
        assert issubclass(load_object(mutant.spec), KVCacheManager), mutant.spec


def test_mutant_named_rejects_an_unknown_name():
    with pytest.raises(KeyError, match="mutant 'Nope': expected one of Aliasing"):
        mutant_named("Nope")


def make_call(index: int, summary: str = "env 0 store: control key 0x1…, candidate key 0x2…",
              trace: str = "t/a.kvtrace") -> CallComparison:
    event = EventDivergence(summary=summary, first_index=0, num_control_events=1,
                            num_candidate_events=1, deepdiff={})
    return CallComparison(trace=trace, call_index=index, call_kind="root", env_ids=(0, 1),
                          event_divergence=event)


CAUGHT = Mutant("Caught", "x:Caught", "a fault")
SURVIVOR = Mutant("Survivor", "x:Survivor", "another fault")
EQUIVALENT = Mutant("Same", "x:Same", "no fault", equivalent_reason="slots only")


def make_report(*outcomes: MutantOutcome, honest_first: CallComparison | None = None,
                failed: tuple[str, ...] = ()) -> MutationReport:
    honest = MutantOutcome(HONEST, honest_first, 1, 2.0)
    return MutationReport(("t/a.kvtrace",), honest, outcomes, failed)


def test_exit_code_is_ok_when_every_mutant_does_what_the_catalogue_says():
    report = make_report(MutantOutcome(CAUGHT, make_call(3), 1, 0.5),
                         MutantOutcome(EQUIVALENT, None, 1, 2.0))
    assert (report.ok, report.exit_code) == (True, exit_codes.OK)


@pytest.mark.parametrize("outcome, honest_first", [
    (MutantOutcome(SURVIVOR, None, 1, 2.0), None),
    (MutantOutcome(EQUIVALENT, make_call(5), 1, 0.1), None),
    (MutantOutcome(CAUGHT, make_call(3), 1, 0.5), make_call(1)),
], ids=["survivor", "refuted-equivalent", "honest-caught"])
def test_exit_code_is_divergence_when_anything_is_unexpected(outcome, honest_first):
    report = make_report(outcome, honest_first=honest_first)
    assert (report.ok, report.exit_code) == (False, exit_codes.DIVERGENCE)


def render(report: MutationReport) -> str:
    console = Console(file=io.StringIO(), width=110, color_system=None, highlight=False)
    console.print(report)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def test_report_renders_one_row_per_manager_and_the_verdict():
    report = make_report(MutantOutcome(CAUGHT, make_call(3), 1, 0.5),
                         MutantOutcome(SURVIVOR, None, 1, 2.4),
                         MutantOutcome(EQUIVALENT, None, 1, 2.0))
    assert render(report) == textwrap.dedent("""\
        mutation self-test over 1 trace(s)
        ┏━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━━┳━━━━━━┳━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━┓
        ┃ mutant   ┃ expected ┃ result     ┃ trace     ┃ call ┃ kind ┃ class    ┃ traces ┃ time s ┃
        ┡━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━━╇━━━━━━╇━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━┩
        │ honest   │ pass     │ pass       │ -         │    - │ -    │ -        │      1 │    2.0 │
        │ Caught   │ caught   │ caught     │ a.kvtrace │    3 │ root │ decision │      1 │    0.5 │
        │ Survivor │ caught   │ survived ! │ -         │    - │ -    │ -        │      1 │    2.4 │
        │ Same     │ survive  │ survived   │ -         │    - │ -    │ -        │      1 │    2.0 │
        └──────────┴──────────┴────────────┴───────────┴──────┴──────┴──────────┴────────┴────────┘
        survivor Survivor (another fault): no trace exercises its fault; add a scenario that does
        equivalent Same: slots only
        FAIL: honest manager passes; 1/2 mutants caught; 1 listed equivalent""")


def test_report_names_traces_the_honest_manager_fails_on():
    report = make_report(honest_first=make_call(1, "env 0 lookup: control hit, candidate miss"),
                         failed=("t/a.kvtrace",))
    lines = render(report).splitlines()
    assert ("│ honest │ pass     │ diverges ! │ a.kvtrace │    1 │ root │ decision │      1 │"
            "    2.0 │") in lines
    assert "honest manager diverges on t/a.kvtrace: mutants were not replayed on it" in lines
    assert ("honest first divergence: a.kvtrace call 1 (root) env 0 lookup: control hit, "
            "candidate miss") in lines
    assert lines[-1] == "FAIL: honest manager FAILS; 0/0 mutants caught; 0 listed equivalent"


def test_cmd_mutate_rejects_a_missing_trace(tmp_path):
    args = argparse.Namespace(traces=[str(tmp_path / "missing.kvtrace")], waivers=None,
                              device="cpu")
    with pytest.raises(UsageError, match="missing.kvtrace: no such trace file"):
        cmd_mutate(args)
