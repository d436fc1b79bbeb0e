"""Engines: build a world model from a trace header and apply recorded calls to it.

An engine turns one recorded call into an immutable ``Observation`` (outputs, cache events,
elapsed time, or the exception it raised — reported, never swallowed). The registry maps names
to engines: ``legacy``, ``refactored``, ``golden`` (the outputs and events recorded in the trace
itself) and any ``package.module:Attr`` naming a world-model class or factory ``(config, device)``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch

from harness.calls import RecordedCall, WeightsCall, invoke
from unizero.backends import WORLD_MODEL_BACKENDS, BackendError, load_object
from unizero.config import WorldModelConfig
from unizero.events import CacheEvent

__all__ = ["Observation", "Engine", "WorldModelEngine", "GoldenEngine", "build_engine",
           "ENGINE_NAMES", "check_isolation", "EngineError"]

ENGINE_NAMES = ("legacy", "refactored", "golden", "legacy-fix-quirk1")


class EngineError(ValueError):
    """An engine spec that cannot be built; the message names it."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one engine produced for one call."""

    outputs: Mapping[str, np.ndarray]
    events: tuple[CacheEvent, ...]
    elapsed_s: float
    error: str | None = None


class Engine(Protocol):
    name: str

    def apply(self, recorded: RecordedCall) -> Observation: ...


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def clone_call(call: Any) -> Any:
    """A deep copy of a call's inputs, so two engines never share a mutable array."""
    names = _INIT_FIELDS.get(type(call))
    if names is None:
        names = _INIT_FIELDS[type(call)] = tuple(f.name for f in dataclasses.fields(call) if f.init)
    values = {}
    for name in names:
        value = getattr(call, name)
        if isinstance(value, np.ndarray):
            value = value.copy()
        elif isinstance(call, WeightsCall) and name == "state":
            value = {k: v.copy() for k, v in value.items()}
        values[name] = value
    return type(call)(**values)


class WorldModelEngine:
    """Runs recorded calls through a live world model built from the trace's config."""

    def __init__(self, name: str, factory: Callable[[WorldModelConfig, Any], Any],
                 config: WorldModelConfig, device: torch.device | str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.weight_seed)
            self.model = factory(config, self.device)
        self.model.record_events(True)

    def apply(self, recorded: RecordedCall) -> Observation:
        call = clone_call(recorded.call)
        start = time.perf_counter()
        try:
            outputs = invoke(self.model, call)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # noqa: BLE001 - an engine failure is an observation to report
            elapsed = time.perf_counter() - start
            self.model.take_events()
            return Observation({}, (), elapsed, error=f"{type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - start
        arrays = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
        return Observation(arrays, tuple(self.model.take_events()), elapsed)


class GoldenEngine:
    """The control that outlives legacy: the outputs and events recorded in the trace."""

    def __init__(self, name: str = "golden") -> None:
        self.name = name
        self.model = None

    def apply(self, recorded: RecordedCall) -> Observation:
        return Observation(dict(recorded.outputs), recorded.events, 0.0)


def build_engine(spec: str, config: WorldModelConfig, *, device: torch.device | str = "cpu",
                 manager: str | None = None) -> Engine:
    """Build the engine named by ``spec`` for a trace whose model config is ``config``.

    Args:
        spec: ``legacy``, ``refactored``, ``golden`` or ``package.module:Attr``.
        manager: ``package.module:Class`` replacing the KVCacheManager of ``refactored``.
    """
    if spec == "golden":
        return GoldenEngine()
    try:
        if spec == "refactored" and manager is not None:
            manager_cls = load_object(manager)
            factory_cls = load_object(WORLD_MODEL_BACKENDS["refactored"])

            def factory(cfg: WorldModelConfig, dev: Any) -> Any:
                return factory_cls(cfg, dev, manager_cls=manager_cls)
        elif spec in WORLD_MODEL_BACKENDS:
            factory = load_object(WORLD_MODEL_BACKENDS[spec])
        elif ":" in spec:
            factory = load_object(spec)
        else:
            raise EngineError(f"engine {spec!r}: expected one of {', '.join(ENGINE_NAMES)} "
                              f"or 'package.module:Attr'")
    except BackendError as exc:
        raise EngineError(f"engine {spec!r}: {exc}") from None
    if not callable(factory):
        raise EngineError(f"engine {spec!r}: {factory!r} is not a world-model class or factory")
    return WorldModelEngine(spec if manager is None else f"{spec}[{manager}]", factory, config, device)


def check_isolation(first: Engine, second: Engine) -> None:
    """Assert two engines share no model object and no parameter or buffer storage."""
    a, b = getattr(first, "model", None), getattr(second, "model", None)
    if a is None or b is None:
        return
    assert a is not b, f"engines {first.name!r} and {second.name!r} share one model object"
    # An empty tensor owns no storage (data_ptr 0 for all of them): nothing to share.
    pointers = {t.data_ptr() for t in list(a.net.parameters()) + list(a.net.buffers())
                if t.numel()}
    shared = [name for name, t in list(b.net.named_parameters()) + list(b.net.named_buffers())
              if t.numel() and t.data_ptr() in pointers]
    assert not shared, (f"engines {first.name!r} and {second.name!r} share tensor storage: "
                        f"{', '.join(shared[:5])}")
