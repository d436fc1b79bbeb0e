"""The trace recorder (harness/recorder.py): transparent to the run, exact on the round trip.

One short scenario (8 lock-step CartPole steps, two 4-step training rounds with a weight update,
a reanalysis search, periodic and episode-end clears, searches wider than the recurrent pool) is
run twice per module: once recorded, once unrecorded. Spies sit on both sides of the recorder:
the outer one logs what the runner passed and got back, the inner one what the model saw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from harness.calls import (Call, ClearCall, ReanalyzeCall, RecordedCall, RecurrentCall, RootCall,
                           WeightsCall, call_from_record)
from harness.engines import build_engine
from harness.recorder import TRACE_SCHEMA, TraceRecorder, make_header, state_digest
from harness.scenario import (RunSummary, Scenario, build_world_model_config, load_scenario,
                              run_scenario)
from harness.scenario.spec import ReanalyzeSpec, WeightUpdateSpec
from harness.trace import TraceWriter, open_trace
from legacy.world_model import LegacyWorldModel
from unizero.config import WorldModelConfig
from unizero.events import Lookup, Store

from conftest import first_actions, make_legacy, make_obs

SCENARIO_FILE = Path(__file__).resolve().parents[1] / "scenarios" / "cartpole_small.toml"
OUTPUT_NAMES = {"latent", "reward_logits", "policy_logits", "value_logits"}


def short_scenario() -> Scenario:
    """cartpole_small cut to 8 steps, with every lifecycle call the runner can make."""
    scenario = load_scenario(SCENARIO_FILE).with_run(
        num_steps=8, steps_per_round=4, warmup_rounds=0, clear_interval=3, max_episode_steps=(5, 7))
    return dataclasses.replace(
        scenario,
        # 10 simulations against a recurrent pool sized for 8: stores wrap and evict.
        search=dataclasses.replace(scenario.search, num_simulations=10),
        weights=WeightUpdateSpec(kind="perturb", every=2, scale=0.01, learning_rate=0.01, seed=0),
        reanalyze=ReanalyzeSpec(every=2, num_simulations=2, seed=0))


# --- spies -------------------------------------------------------------------------------------

def _snapshot(value: Any) -> Any:
    """A private copy of an argument as the callee saw it (tensors become numpy, dtype kept)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {name: _snapshot(item) for name, item in value.items()}
    if isinstance(value, list):
        return np.array(value)
    return value


@dataclass(frozen=True, slots=True)
class SpiedCall:
    method: str
    args: dict[str, Any]
    outputs: dict[str, np.ndarray]


class ApiSpy:
    """Forwards the world-model API to ``inner``, logging each call's arguments and outputs.

    Anything else (``config``, ``net``, ``device``, ``record_events``...) is looked up on
    ``inner``, so a spy can stand between the runner and the recorder or the recorder and
    the model.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[SpiedCall] = []

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _forward(self, method: str, **args: Any) -> Any:
        seen = {name: _snapshot(value) for name, value in args.items()}
        result = getattr(self._inner, method)(**args)
        outputs = ({} if result is None else
                   {name: value.detach().cpu().numpy().copy()
                    for name, value in result.as_dict().items()})
        self.calls.append(SpiedCall(method, seen, outputs))
        return result

    def initial_inference(self, last_obs, last_actions, current_obs, start_pos=None):
        return self._forward("initial_inference", last_obs=last_obs, last_actions=last_actions,
                             current_obs=current_obs, start_pos=start_pos)

    def recurrent_inference(self, latent_state, actions, simulation_index=0, search_depth=None,
                            start_pos=None):
        return self._forward("recurrent_inference", latent_state=latent_state, actions=actions,
                             simulation_index=simulation_index, search_depth=search_depth,
                             start_pos=start_pos)

    def clear_caches(self, reason="clear_caches"):
        return self._forward("clear_caches", reason=reason)

    def clear_root_cache(self, env_id, reason="episode_end"):
        return self._forward("clear_root_cache", env_id=env_id, reason=reason)

    def recompute_pos_emb_diff_and_clear_cache(self):
        return self._forward("recompute_pos_emb_diff_and_clear_cache")

    def load_weights(self, state_dict):
        return self._forward("load_weights", state_dict=state_dict)

    def set_reanalyze_phase(self, on):
        return self._forward("set_reanalyze_phase", on=on)


def _zeros_if_none(value: Any, rows: int) -> np.ndarray:
    return np.zeros(rows, dtype=np.int64) if value is None else np.asarray(value)


def call_seen(spied: SpiedCall) -> Call:
    """The harness Call that describes a spied call, arrays exactly as they were passed."""
    a = spied.args
    if spied.method == "initial_inference":
        return RootCall(np.asarray(a["last_obs"]), np.asarray(a["last_actions"]),
                        np.asarray(a["current_obs"]),
                        _zeros_if_none(a["start_pos"], np.asarray(a["current_obs"]).shape[0]))
    if spied.method == "recurrent_inference":
        rows = a["latent_state"].shape[0]
        return RecurrentCall(a["latent_state"], np.asarray(a["actions"]),
                             _zeros_if_none(a["search_depth"], rows),
                             _zeros_if_none(a["start_pos"], rows), int(a["simulation_index"]))
    if spied.method == "clear_caches":
        return ClearCall(op="all", reason=a["reason"])
    if spied.method == "clear_root_cache":
        return ClearCall(op="root_env", reason=a["reason"], env=a["env_id"])
    if spied.method == "recompute_pos_emb_diff_and_clear_cache":
        return ClearCall(op="epoch", reason="epoch")
    if spied.method == "load_weights":
        return WeightsCall(state=a["state_dict"])
    assert spied.method == "set_reanalyze_phase", f"unexpected spied method {spied.method!r}"
    return ReanalyzeCall(on=a["on"])


def assert_same_array(actual: np.ndarray, expected: np.ndarray, where: str, *,
                      dtype: bool = True) -> None:
    """Bit-exact: same dtype (unless ``dtype=False``), shape and values (NaN == NaN)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if dtype:
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
    if dtype and actual.dtype.kind == "f":
        assert actual.tobytes() == expected.tobytes(), f"{where}: bits differ"
    assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f"), \
        f"{where}: values differ"


def assert_same_call(recorded: Call, seen: Call, where: str, *, dtype: bool = True) -> None:
    assert recorded.kind == seen.kind, f"{where}: recorded {recorded.kind}, saw {seen.kind}"
    for f in dataclasses.fields(recorded):
        if not f.init or f.name == "latent_source":  # provenance the recorder adds, not an input
            continue
        ours, theirs = getattr(recorded, f.name), getattr(seen, f.name)
        if isinstance(ours, np.ndarray):
            assert_same_array(ours, theirs, f"{where}.{f.name}", dtype=dtype)
        elif f.name == "state":
            assert set(ours) == set(theirs), f"{where}: weight names differ"
            for name in ours:
                assert_same_array(ours[name], theirs[name], f"{where}.state[{name}]", dtype=dtype)
        elif not (isinstance(recorded, WeightsCall) and f.name == "initial"):
            assert ours == theirs, f"{where}.{f.name}: recorded {ours!r}, saw {theirs!r}"


# --- the module's one recorded run -------------------------------------------------------------

@dataclass(frozen=True)
class Capture:
    scenario: Scenario
    config: WorldModelConfig
    initial_state: dict[str, np.ndarray]
    summary: RunSummary
    runner_side: ApiSpy        # what run_scenario passed to the recorder and got back
    model_side: ApiSpy         # what the legacy model was given by the recorder
    header: dict[str, Any]
    records: list[RecordedCall]
    num_records_written: int
    started: datetime
    finished: datetime


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Capture:
    scenario = short_scenario()
    config = build_world_model_config(scenario)
    model = LegacyWorldModel(config)
    initial_state = {k: v.detach().cpu().numpy().copy() for k, v in model.net.state_dict().items()}
    path = tmp_path_factory.mktemp("recorder") / "short.kvtrace"
    started = datetime.now(timezone.utc).replace(microsecond=0)
    model_side = ApiSpy(model)
    header = make_header(model, engine="legacy", scenario=scenario.to_dict())
    with TraceWriter(path, header) as writer:
        recorder = TraceRecorder(model_side, writer)
        runner_side = ApiSpy(recorder)
        summary = run_scenario(scenario, runner_side)
    finished = datetime.now(timezone.utc)
    with open_trace(path, strict=True) as reader:
        stored_header = reader.header
        records = [call_from_record(r.index, r.kind, r.meta, r.arrays, where=str(path))
                   for r in reader]
    return Capture(scenario, config, initial_state, summary, runner_side, model_side,
                   stored_header, records, recorder.num_records, started, finished)


@pytest.fixture(scope="module")
def unrecorded(capture: Capture) -> tuple[RunSummary, ApiSpy]:
    spy = ApiSpy(LegacyWorldModel(capture.config))
    return run_scenario(capture.scenario, spy), spy


# --- a recorded run is the unrecorded run ------------------------------------------------------

def test_the_short_scenario_exercises_every_call_kind_evictions_and_a_weight_update(capture):
    kinds = [r.kind for r in capture.records]
    assert set(kinds) == {"weights", "root", "recurrent", "clear", "reanalyze"}
    assert {r.call.op for r in capture.records if r.kind == "clear"} == {"all", "root_env", "epoch"}
    assert capture.summary.num_weight_updates == 1
    assert capture.summary.num_reanalyze_searches == 1
    assert capture.summary.num_episode_end_clears == 2
    events = [e for r in capture.records for e in r.events]
    assert any(isinstance(e, Store) and e.evicted is not None for e in events)
    assert any(isinstance(e, Lookup) and e.hit for e in events)
    assert any(isinstance(e, Lookup) and e.forced for e in events)


def test_a_recorded_run_has_the_same_summary_as_an_unrecorded_run(capture, unrecorded):
    summary, _ = unrecorded
    assert capture.summary == summary
    assert capture.summary.actions_digest == summary.actions_digest


def test_a_recorded_run_returns_bit_identical_outputs_to_an_unrecorded_run(capture, unrecorded):
    _, plain = unrecorded
    recorded = capture.runner_side.calls
    assert [c.method for c in recorded] == [c.method for c in plain.calls]
    for index, (ours, theirs) in enumerate(zip(recorded, plain.calls)):
        where = f"runner call {index} ({ours.method})"
        assert_same_call(call_seen(ours), call_seen(theirs), where)
        assert ours.outputs.keys() == theirs.outputs.keys(), where
        for name in ours.outputs:
            assert_same_array(ours.outputs[name], theirs.outputs[name], f"{where} out/{name}")


# --- round trip: what was recorded is what happened --------------------------------------------

def test_the_trace_holds_one_record_per_model_call_after_the_initial_weights(capture):
    assert len(capture.records) == capture.num_records_written == 1 + len(capture.model_side.calls)
    assert [r.index for r in capture.records] == list(range(len(capture.records)))
    assert len(capture.runner_side.calls) == len(capture.model_side.calls)


def test_every_recorded_input_is_bit_identical_to_what_the_model_saw(capture):
    for recorded, seen in zip(capture.records[1:], capture.model_side.calls, strict=True):
        assert_same_call(recorded.call, call_seen(seen), f"record {recorded.index}")


def test_every_recorded_input_equals_what_the_runner_passed_in_canonical_dtypes(capture):
    canonical = {"last_obs": np.float32, "current_obs": np.float32, "latent_state": np.float32,
                 "last_actions": np.int64, "actions": np.int64, "search_depth": np.int64,
                 "start_pos": np.int64}
    for recorded, passed in zip(capture.records[1:], capture.runner_side.calls, strict=True):
        assert_same_call(recorded.call, call_seen(passed), f"record {recorded.index}", dtype=False)
        for name, dtype in canonical.items():
            if hasattr(recorded.call, name):
                assert getattr(recorded.call, name).dtype == dtype, \
                    f"record {recorded.index}.{name}"


def test_every_recorded_output_is_what_the_recorder_returned_to_the_runner(capture):
    for recorded, passed in zip(capture.records[1:], capture.runner_side.calls, strict=True):
        assert recorded.outputs.keys() == passed.outputs.keys(), f"record {recorded.index}"
        for name, value in recorded.outputs.items():
            assert_same_array(value, passed.outputs[name], f"record {recorded.index} out/{name}")


def test_every_recorded_output_and_event_equals_a_fresh_legacy_replay(capture):
    config = WorldModelConfig.from_dict(capture.header["config"], where="header.config")
    engine = build_engine("legacy", config)
    num_events = 0
    for recorded in capture.records:
        observed = engine.apply(recorded)
        where = f"record {recorded.index} ({recorded.kind})"
        assert observed.error is None, f"{where}: {observed.error}"
        expected_names = OUTPUT_NAMES if recorded.kind in ("root", "recurrent") else set()
        assert set(recorded.outputs) == set(observed.outputs) == expected_names, where
        for name, value in recorded.outputs.items():
            assert_same_array(value, observed.outputs[name], f"{where} out/{name}")
        assert recorded.events == observed.events, where
        num_events += len(recorded.events)
    assert num_events > len(capture.records)


# --- header and weights records ----------------------------------------------------------------

def test_the_header_names_schema_engine_config_weights_scenario_and_versions(capture):
    header = capture.header
    assert {"schema", "engine", "config", "weights_digest", "scenario", "torch_version", "device",
            "dtype", "created_at"} <= set(header)
    assert header["schema"] == TRACE_SCHEMA == "kvmigrate.calls/1"
    assert header["engine"] == "legacy"
    assert header["config"] == capture.config.to_dict()
    assert WorldModelConfig.from_dict(header["config"], where="header.config") == capture.config
    assert header["weights_digest"] == state_digest(capture.initial_state)
    assert header["scenario"] == capture.scenario.to_dict()
    assert header["torch_version"] == torch.__version__
    assert header["device"] == "cpu"
    assert header["dtype"] == "float32"
    created = datetime.fromisoformat(header["created_at"])
    assert created.tzinfo is not None
    assert capture.started <= created <= capture.finished


def test_the_weights_digest_is_the_digest_of_a_fresh_model_from_the_config(capture):
    fresh = LegacyWorldModel(WorldModelConfig.from_dict(capture.header["config"], where="config"))
    assert state_digest(fresh.net.state_dict()) == capture.header["weights_digest"]


def test_the_first_record_is_the_initial_weights_without_events(capture):
    first = capture.records[0]
    assert first.kind == "weights" and first.call.initial is True
    assert first.outputs == {} and first.events == ()
    assert set(first.call.state) == set(capture.initial_state)
    for name, value in capture.initial_state.items():
        assert_same_array(first.call.state[name], value, f"initial weights {name}")
    assert state_digest(first.call.state) == capture.header["weights_digest"]


def test_weights_records_appear_only_on_updates_and_hold_the_loaded_state(capture):
    updates = [r for r in capture.records[1:] if r.kind == "weights"]
    loads = [c for c in capture.model_side.calls if c.method == "load_weights"]
    assert len(updates) == len(loads) == capture.summary.num_weight_updates == 1
    for record, load in zip(updates, loads):
        assert record.call.initial is False
        assert_same_call(record.call, call_seen(load), f"record {record.index}")
        assert state_digest(record.call.state) != capture.header["weights_digest"]


# --- recorder mechanics on a small model -------------------------------------------------------

def _read_back(path: Path) -> list[RecordedCall]:
    with open_trace(path, strict=True) as reader:
        return [call_from_record(r.index, r.kind, r.meta, r.arrays) for r in reader]


def _record_with(tmp_path: Path, drive: Callable[[TraceRecorder], None]) -> list[RecordedCall]:
    model = make_legacy(record=True)
    path = tmp_path / "small.kvtrace"
    with TraceWriter(path, make_header(model, engine="legacy", scenario={})) as writer:
        drive(TraceRecorder(model, writer))
    return _read_back(path)


def test_events_emitted_before_the_recorder_was_attached_are_not_recorded(tmp_path):
    model = make_legacy(record=True)
    model.initial_inference(make_obs(0, 2), first_actions(2), make_obs(1, 2))
    path = tmp_path / "late.kvtrace"
    with TraceWriter(path, make_header(model, engine="legacy", scenario={})) as writer:
        TraceRecorder(model, writer)
    (only,) = _read_back(path)
    assert only.kind == "weights" and only.events == ()


def test_a_caller_mutating_its_arrays_after_the_call_does_not_change_the_record(tmp_path):
    last_obs, current_obs = make_obs(0, 2), make_obs(1, 2)
    actions = np.array([-1, -1], dtype=np.int64)
    originals = (last_obs.copy(), actions.copy(), current_obs.copy())

    def drive(recorder: TraceRecorder) -> None:
        recorder.initial_inference(last_obs, actions, current_obs)
        last_obs[:] = 7.0
        current_obs[:] = -7.0
        actions[:] = 1

    _, root = _record_with(tmp_path, drive)
    for name, original in zip(("last_obs", "last_actions", "current_obs"), originals):
        assert_same_array(getattr(root.call, name), original, name)


def test_list_inputs_and_missing_start_positions_are_recorded_as_canonical_arrays(tmp_path):
    obs = make_obs(3, 2).tolist()

    def drive(recorder: TraceRecorder) -> None:
        root = recorder.initial_inference(obs, [-1, -1], obs)
        latent = root.latent.detach().cpu().numpy()
        recorder.recurrent_inference(latent, [0, 2], simulation_index=1)

    _, root, recurrent = _record_with(tmp_path, drive)
    assert root.call.current_obs.dtype == np.float32 and root.call.last_actions.dtype == np.int64
    assert_same_array(root.call.start_pos, np.zeros(2, dtype=np.int64), "root start_pos")
    assert_same_array(recurrent.call.actions, np.array([0, 2], dtype=np.int64), "actions")
    assert_same_array(recurrent.call.search_depth, np.zeros(2, dtype=np.int64), "search_depth")
    assert_same_array(recurrent.call.start_pos, np.zeros(2, dtype=np.int64), "recurrent start_pos")
    assert recurrent.call.simulation_index == 1


def test_each_recurrent_latent_names_the_earlier_output_it_came_from(capture):
    """Provenance: every row's source is an earlier record whose output row has its exact bits."""
    by_index = {record.index: record for record in capture.records}
    num_sourced = 0
    for record in capture.records:
        call = record.call
        if not isinstance(call, RecurrentCall):
            continue
        assert call.latent_source is not None and len(call.latent_source) == len(call.latent_state)
        for row, source in enumerate(call.latent_source):
            assert source is not None, f"record {record.index} row {row}: no source"
            index, source_row = source
            assert index < record.index
            produced = by_index[index].outputs["latent"][source_row]
            assert produced.tobytes() == call.latent_state[row].tobytes()
            num_sourced += 1
    assert num_sourced > 0
