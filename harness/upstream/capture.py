"""Capture a trace from upstream LightZero: kvmigrate's MCTS over a scenario's gymnasium envs,
driving upstream's world model in its worker.

:class:`UpstreamWorldModel` gives an :class:`~harness.upstream.engine.UpstreamEngine` the world-model
API that :class:`harness.recorder.TraceRecorder` and :func:`harness.scenario.run_scenario` drive,
so the trace is written by the same recorder as any other. Its first record is upstream's
initial weights (seeded random by default), so every replay loads them and recomputes the trim
tables (``precompute_pos_emb_diff_kv``) and any tree replays from the same start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness.calls import (Call, ClearCall, ReanalyzeCall, RecordedCall, RecurrentCall, RootCall,
                           WeightsCall)
from harness.recorder import TraceRecorder, make_header
from harness.scenario import RunSummary, Scenario, build_world_model_config, run_scenario
from harness.trace import TraceWriter
from harness.upstream.engine import UpstreamEngine, UpstreamSpecError
from unizero.events import CacheEvent
from unizero.world_model import InferenceOutput

__all__ = ["UpstreamWorldModel", "UpstreamWorkerError", "upstream_header", "check_capturable",
           "capture_upstream"]


class UpstreamWorkerError(RuntimeError):
    """The worker answered a call with an error during capture; the message is one line."""


class _RemoteNet:
    """Stands in for ``model.net``: the recorder reads the initial weights through it."""

    def __init__(self, engine: UpstreamEngine) -> None:
        self._engine = engine

    def state_dict(self) -> dict[str, np.ndarray]:
        return self._engine.state_dict()


class UpstreamWorldModel:
    """The world-model API over an upstream worker, for capture and live runs."""

    def __init__(self, engine: UpstreamEngine, config: Any) -> None:
        self.engine = engine
        self.config = config
        self.net = _RemoteNet(engine)
        self._events: list[CacheEvent] = []
        self._recording = False
        self._index = 0
        self.aliasing: list[str] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def record_events(self, on: bool = True) -> None:
        self._recording = on
        if not on:
            self._events = []

    def take_events(self) -> list[CacheEvent]:
        events, self._events = self._events, []
        return events

    def _run(self, call: Call) -> dict[str, torch.Tensor]:
        observation = self.engine.apply(RecordedCall(self._index, call, {}, ()))
        self._index += 1
        if observation.error is not None:
            raise UpstreamWorkerError(f"engine {self.engine.name!r}, call {self._index - 1} "
                                      f"({call.kind}): {observation.error}")
        if self._recording:
            self._events.extend(observation.events)
        self.aliasing.extend(getattr(observation, "aliasing", ()))
        return {name: torch.from_numpy(np.array(value)) for name, value in observation.outputs.items()}

    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        rows = np.asarray(current_obs).shape[0]
        call = RootCall(np.asarray(last_obs, dtype=np.float32), np.asarray(last_actions, dtype=np.int64),
                        np.asarray(current_obs, dtype=np.float32),
                        np.asarray(np.zeros(rows) if start_pos is None else start_pos, dtype=np.int64))
        return InferenceOutput(**self._run(call))

    def recurrent_inference(self, latent_state: np.ndarray, actions: Any, simulation_index: int = 0,
                            search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        rows = latent_state.shape[0]
        call = RecurrentCall(np.asarray(latent_state, dtype=np.float32), np.asarray(actions, dtype=np.int64),
                             np.asarray(np.zeros(rows) if search_depth is None else search_depth, dtype=np.int64),
                             np.asarray(np.zeros(rows) if start_pos is None else start_pos, dtype=np.int64),
                             int(simulation_index))
        return InferenceOutput(**self._run(call))

    def clear_caches(self, reason: str = "clear_caches") -> None:
        self._run(ClearCall(op="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        self._run(ClearCall(op="root_env", reason=reason, env=int(env_id)))

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        self._run(ClearCall(op="epoch", reason="epoch"))

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        self._run(WeightsCall(state={k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                                     for k, v in state_dict.items()}))

    def set_reanalyze_phase(self, on: bool) -> None:
        self._run(ReanalyzeCall(on=bool(on)))


def upstream_header(engine: UpstreamEngine) -> dict[str, Any]:
    """What a trace header adds for an upstream capture: the engine, its tree and the exact
    upstream config the model was built from (plain data, information for readers)."""
    return {"engine": engine.name, "tree": str(engine.spec.tree),
            "use_new_cache_manager": engine.spec.manager, "model": engine.model_spec.to_dict()}


def check_capturable(scenario: Scenario) -> None:
    """Refuse, in one line, scenario parts upstream capture has no counterpart for.

    Raises:
        UpstreamSpecError: ``[weights]`` (updates are computed on kvmigrate's own network) or
            ``[reanalyze]`` (upstream's reanalysis skips the lookups the observer sees).
    """
    if scenario.weights is not None:
        raise UpstreamSpecError(f"{scenario.source}: [weights]: upstream capture has no weight "
                                f"updater (it trains kvmigrate's own network); remove the table")
    if scenario.reanalyze is not None:
        raise UpstreamSpecError(f"{scenario.source}: [reanalyze]: not supported for upstream "
                                f"capture; remove the table")


def capture_upstream(scenario: Scenario, engine_spec: str, output: str | Path, *,
                     scenario_path: str = "", progress: Any = None) -> tuple[RunSummary, int]:
    """Run ``scenario`` on upstream's model named by ``engine_spec`` and write ``output``.

    Returns ``(summary, num_records)``. Raises UpstreamSpecError / UpstreamConfigError (bad spec,
    config or scenario, one line) or UpstreamWorkerError (the worker failed a call).
    """
    check_capturable(scenario)
    config = build_world_model_config(scenario)
    with UpstreamEngine(engine_spec, config) as engine:
        model = UpstreamWorldModel(engine, config)
        header = make_header(model, engine=engine_spec,
                             scenario={**scenario.to_dict(), "path": scenario_path})
        header["upstream"] = upstream_header(engine)
        with TraceWriter(Path(output), header) as writer:
            recorder = TraceRecorder(model, writer)
            summary = run_scenario(scenario, recorder, progress=progress)
        return summary, recorder.num_records
