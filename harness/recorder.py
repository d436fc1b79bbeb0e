"""Record every imagine call of a world model into a trace, transparently.

``TraceRecorder`` has the world-model API. Each call goes to the wrapped model unchanged (the
recorder only copies inputs and reads outputs), so a recorded run is bit-identical to an
unrecorded one; the call, the outputs and the drained cache events become one trace record.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import torch

from harness.calls import (Call, ClearCall, ReanalyzeCall, RecurrentCall, RootCall, WeightsCall,
                           call_to_record, invoke)
from harness.trace import TraceWriter
from unizero.world_model import InferenceOutput

__all__ = ["TraceRecorder", "make_header", "state_digest", "TRACE_SCHEMA"]

TRACE_SCHEMA = "kvmigrate.calls/1"


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 over parameter names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        digest.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def make_header(model: Any, *, engine: str, scenario: dict[str, Any]) -> dict[str, Any]:
    """The trace header: schema, producing engine, config, weight digest, scenario, versions."""
    return {
        "schema": TRACE_SCHEMA,
        "engine": engine,
        "config": model.config.to_dict(),
        "weights_digest": state_digest(model.net.state_dict()),
        "weights_location": "record 0 (kind 'weights', initial)",
        "scenario": scenario,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "device": str(model.device),
        "dtype": "float32",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _copy(value: Any, dtype: Any) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return np.array(arr, dtype=dtype, copy=True)


class TraceRecorder:
    """A world-model proxy that writes each call, its outputs and its cache events to a trace."""

    def __init__(self, model: Any, writer: TraceWriter) -> None:
        self.model = model
        self.config = model.config
        self.net = model.net
        self._writer = writer
        self._num_records = 0
        model.record_events(True)
        model.take_events()
        self._record(WeightsCall(state={k: _copy(v, None) for k, v in model.net.state_dict().items()},
                                 initial=True), {})

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_records(self) -> int:
        return self._num_records

    def _record(self, call: Call, outputs: dict[str, torch.Tensor]) -> None:
        kind, meta, arrays = call_to_record(call, outputs, self.model.take_events())
        self._writer.append(kind, meta, arrays)
        self._num_records += 1

    def _run(self, call: Call) -> dict[str, torch.Tensor]:
        outputs = invoke(self.model, call)
        self._record(call, outputs)
        return outputs

    def initial_inference(self, last_obs: Any, last_actions: Any, current_obs: Any,
                          start_pos: Any = None) -> InferenceOutput:
        rows = np.asarray(current_obs).shape[0]
        call = RootCall(last_obs=_copy(last_obs, np.float32), last_actions=_copy(last_actions, np.int64),
                        current_obs=_copy(current_obs, np.float32),
                        start_pos=_copy(np.zeros(rows) if start_pos is None else start_pos, np.int64))
        return InferenceOutput(**self._run(call))

    def recurrent_inference(self, latent_state: np.ndarray, actions: Any, simulation_index: int = 0,
                            search_depth: Sequence[int] | None = None,
                            start_pos: Any = None) -> InferenceOutput:
        rows = latent_state.shape[0]
        call = RecurrentCall(
            latent_state=np.array(latent_state, copy=True), actions=_copy(actions, np.int64),
            search_depth=_copy(np.zeros(rows) if search_depth is None else search_depth, np.int64),
            start_pos=_copy(np.zeros(rows) if start_pos is None else start_pos, np.int64),
            simulation_index=int(simulation_index))
        return InferenceOutput(**self._run(call))

    def clear_caches(self, reason: str = "clear_caches") -> None:
        self._run(ClearCall(op="all", reason=reason))

    def clear_root_cache(self, env_id: int, reason: str = "episode_end") -> None:
        self._run(ClearCall(op="root_env", reason=reason, env=int(env_id)))

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        self._run(ClearCall(op="epoch", reason="epoch"))

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        self._run(WeightsCall(state={k: _copy(v, None) for k, v in state_dict.items()}))

    def set_reanalyze_phase(self, on: bool) -> None:
        self._run(ReanalyzeCall(on=bool(on)))
