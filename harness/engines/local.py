"""In-process engines: a live world model, or the outputs and events a trace recorded.

An engine turns one call into an immutable :class:`~harness.observation.Observation`
(outputs, cache events, elapsed time, or the exception it raised: reported, never swallowed).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Protocol

import numpy as np
import torch

from harness.calls import Call, RecordedCall, WeightsCall, invoke
from harness.observation import Observation, describe_exception
from unizero.config import WorldModelConfig

__all__ = ["Engine", "WorldModelEngine", "UncachedEngine", "GoldenEngine", "clone_call",
           "check_isolation"]


class Engine(Protocol):
    """What the replay drives: a name, and one observation per recorded call."""

    name: str

    def apply(self, recorded: RecordedCall) -> Observation: ...

    def close(self) -> None: ...


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def clone_call(call: Call) -> Call:
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
    """Runs calls through a live world model (any object with the world-model API).

    Args:
        name: the engine's name in reports.
        model: the world model; its events are switched on and drained per call.
    """

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self.model = model
        self.device = torch.device(model.device)
        model.record_events(True)
        model.take_events()

    @classmethod
    def build(cls, name: str, factory: Callable[[WorldModelConfig, Any], Any],
              config: WorldModelConfig, device: torch.device | str = "cpu") -> WorldModelEngine:
        """Build the model with ``factory(config, device)`` under the config's weight seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.weight_seed)
            model = factory(config, torch.device(device))
        return cls(name, model)

    def run(self, call: Call) -> tuple[dict[str, torch.Tensor] | None, Observation,
                                       Exception | None]:
        """Apply ``call`` as given (no copy).

        Returns:
            ``(outputs, observation, exception)``: the raw output tensors (None when the call
            raised), the observation, and the exception the call raised (None when it returned).
        """
        start = time.perf_counter()
        try:
            outputs = invoke(self.model, call)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # noqa: BLE001 - an engine failure is an observation to report
            elapsed = time.perf_counter() - start
            self.model.take_events()
            return None, Observation({}, (), elapsed, error=describe_exception(exc)), exc
        elapsed = time.perf_counter() - start
        arrays = {name: value.detach().cpu().numpy() for name, value in outputs.items()}
        return outputs, Observation(arrays, tuple(self.model.take_events()), elapsed), None

    def apply(self, recorded: RecordedCall) -> Observation:
        return self.run(clone_call(recorded.call))[1]

    def close(self) -> None:
        """Nothing to release: the model lives in this process."""


class UncachedEngine(WorldModelEngine):
    """The uncached reference (:class:`reference.world_model.UncachedWorldModel`): every call
    recomputed from its full recorded context, no cache. It is told the latents the trace
    recorded for each call, so later calls name their parents by those exact bytes."""

    def apply(self, recorded: RecordedCall) -> Observation:
        observation = super().apply(recorded)
        latent = recorded.outputs.get("latent")
        if observation.error is None and recorded.kind in ("root", "recurrent") \
                and latent is not None:
            self.model.note_recorded_latents(latent)
        return observation


class GoldenEngine:
    """The control that outlives legacy: the outputs and events recorded in the trace."""

    def __init__(self, name: str = "golden") -> None:
        self.name = name

    def apply(self, recorded: RecordedCall) -> Observation:
        return Observation(dict(recorded.outputs), recorded.events, 0.0)

    def close(self) -> None:
        """Nothing to release."""


def _storages(model: Any) -> dict[int, str]:
    """Storage address -> tensor name, for every parameter and buffer with elements."""
    net = getattr(model, "net", None)
    if not isinstance(net, torch.nn.Module):  # e.g. a model in a worker process: nothing shared
        return {}
    named = list(net.named_parameters()) + list(net.named_buffers())
    return {tensor.untyped_storage().data_ptr(): name for name, tensor in named
            if tensor.numel() > 0}


def check_isolation(first: Any, second: Any) -> None:
    """Assert two engines share no model object and no parameter or buffer storage.

    Zero-element tensors own no storage (their address is 0 on every side), so they are skipped.
    """
    a, b = getattr(first, "model", None), getattr(second, "model", None)
    if a is None or b is None:
        return
    assert a is not b, f"engines {first.name!r} and {second.name!r} share one model object"
    pointers = _storages(a)
    shared = [name for pointer, name in _storages(b).items() if pointer in pointers]
    assert not shared, (f"engines {first.name!r} and {second.name!r} share tensor storage: "
                        f"{', '.join(shared[:5])}")
