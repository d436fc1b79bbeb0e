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
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from harness.calls import Call, RecordedCall
from harness.proxy import WorldModelProxy
from harness.recorder import TraceRecorder, make_header
from harness.scenario import RunSummary, Scenario, build_world_model_config, run_scenario
from harness.trace import TraceWriter
from harness.upstream.engine import UpstreamEngine, UpstreamSpecError
from unizero.events import CacheEvent

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


class UpstreamWorldModel(WorldModelProxy):
    """The world-model API over an upstream worker, for capture and live runs."""

    def __init__(self, engine: UpstreamEngine, config: Any) -> None:
        super().__init__(self._run, SimpleNamespace(config=config, net=_RemoteNet(engine),
                                                    device=torch.device("cpu")))
        self.engine = engine
        self._events: list[CacheEvent] = []
        self._recording = False
        self._index = 0
        self.findings: list[str] = []

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
        self.findings.extend(observation.findings)
        return {name: torch.from_numpy(np.array(value)) for name, value in observation.outputs.items()}


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
                     scenario_path: str = "", progress: Any = None,
                     inputs: Sequence[str | Path] = ()) -> tuple[RunSummary, int]:
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
        with TraceWriter(Path(output), header, inputs=inputs) as writer:
            recorder = TraceRecorder(model, writer)
            summary = run_scenario(scenario, recorder, progress=progress)
        return summary, recorder.num_records
