"""Measurement helpers shared by the benchmarks: network timing, byte counting, workloads.

*Cache operations* are everything an imagine call does outside the network's forward passes:
lookups, assembly of the batch cache, trimming, stores and clears. They are measured as the
call's wall time minus the time spent inside the network's methods (forward, encode, heads; the
same wrapper on both engines). *Bytes moved* counts every tensor byte written by an aten op
outside the network during a call (mutating ops count the tensor they write, views count
nothing), through a ``TorchDispatchMode``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.calls import RecordedCall, call_from_record, invoke
from harness.engines import clone_call
from harness.recorder import TraceRecorder, make_header
from harness.scenario import build_world_model_config, load_scenario, run_scenario
from harness.trace import TraceWriter, open_trace
from unizero.backends import build_world_model
from unizero.config import WorldModelConfig

__all__ = ["NetTimer", "ByteCounter", "ensure_trace", "load_calls", "build_models", "IMAGINE_KINDS"]

REPO = Path(__file__).resolve().parents[1]
IMAGINE_KINDS = ("root", "recurrent")
_NET_METHODS = ("forward_tokens", "forward_last", "encode", "embed_actions", "action_heads",
                "observation_heads")


class NetTimer:
    """Accumulates the wall time spent inside a model's network methods."""

    def __init__(self, model) -> None:
        self.seconds = 0.0
        self.inside = False
        for name in _NET_METHODS:
            setattr(model.net, name, self._wrap(getattr(model.net, name)))

    def _wrap(self, method):
        def timed(*args, **kwargs):
            if self.inside:
                return method(*args, **kwargs)
            self.inside = True
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.inside = False
        return timed


class ByteCounter(TorchDispatchMode):
    """Counts bytes written by aten ops while ``active`` and outside the network."""

    def __init__(self, timer: NetTimer) -> None:
        super().__init__()
        self.timer = timer
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.timer.inside or func.__name__.startswith(("empty", "_to_copy", "lift")):
            return out
        if func._schema.is_mutable:
            written = args[0]
        else:
            written = out
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            if isinstance(out, torch.Tensor) and any(
                    a.untyped_storage().data_ptr() == out.untyped_storage().data_ptr() for a in inputs):
                return out  # a view
        if isinstance(written, torch.Tensor):
            self.bytes += written.numel() * written.element_size()
            self.ops += 1
        return out


def ensure_trace(scenario: str | Path, out: Path, *, steps: int | None = None) -> Path:
    """Capture ``scenario`` (a bundled name or a path) with legacy into ``out`` unless it exists."""
    if out.exists():
        return out
    path = Path(scenario) if str(scenario).endswith(".toml") else REPO / "scenarios" / f"{scenario}.toml"
    spec = load_scenario(path)
    if steps is not None:
        spec = spec.with_run(num_steps=steps, num_episodes=None)
    model = build_world_model(build_world_model_config(spec), "cpu", backend="legacy")
    out.parent.mkdir(parents=True, exist_ok=True)
    with TraceWriter(out, make_header(model, engine="legacy", scenario=spec.to_dict())) as writer:
        run_scenario(spec, TraceRecorder(model, writer))
    return out


def load_calls(path: Path) -> tuple[WorldModelConfig, list[RecordedCall]]:
    with open_trace(path) as reader:
        config = WorldModelConfig.from_dict(reader.header["config"])
        calls = [call_from_record(r.index, r.kind, r.meta, r.arrays, where=str(path)) for r in reader]
    return config, calls


def build_models(config: WorldModelConfig, device: str = "cpu") -> dict[str, object]:
    models = {}
    for name in ("legacy", "refactored"):
        with torch.random.fork_rng(devices=[]):
            models[name] = build_world_model(config, device, backend=name)
    return models


@contextmanager
def counting(timer: NetTimer) -> Iterator[ByteCounter]:
    counter = ByteCounter(timer)
    with counter:
        yield counter


def replay_timed(config: WorldModelConfig, calls: list[RecordedCall], device: str = "cpu",
                 count_bytes: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Replay ``calls`` through fresh legacy and refactored models, interleaved per call.

    Returns per engine: ``imagine`` (wall s per imagine call), ``cache`` (the same minus network
    time) and, when ``count_bytes``, ``bytes`` (bytes written outside the network per call).
    """
    models = build_models(config, device)
    timers = {name: NetTimer(model) for name, model in models.items()}
    samples = {name: {"imagine": [], "cache": [], "bytes": []} for name in models}
    order = list(models)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for index, recorded in enumerate(calls):
        for name in (order if index % 2 == 0 else order[::-1]):
            model, timer = models[name], timers[name]
            call = clone_call(recorded.call)
            net_before = timer.seconds
            if count_bytes:
                with counting(timer) as counter:
                    invoke(model, call)
                if recorded.kind in IMAGINE_KINDS:
                    samples[name]["bytes"].append(counter.bytes)
                continue
            sync()
            start = time.perf_counter()
            invoke(model, call)
            sync()
            elapsed = time.perf_counter() - start
            if recorded.kind in IMAGINE_KINDS:
                samples[name]["imagine"].append(elapsed)
                samples[name]["cache"].append(elapsed - (timer.seconds - net_before))
    return {name: {k: np.asarray(v) for k, v in d.items()} for name, d in samples.items()}
