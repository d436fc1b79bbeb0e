"""Record every imagine call of a world model into a trace, transparently.

``TraceRecorder`` has the world-model API. Each call goes to the wrapped model unchanged (the
recorder only copies inputs and reads outputs), so a recorded run is bit-identical to an
unrecorded one; the call, the outputs and the drained cache events become one trace record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from harness.calls import Call, RecurrentCall, WeightsCall, call_to_record, invoke
from harness.lineage import LatentLineage
from harness.proxy import WorldModelProxy, copy_array
from harness.trace import TraceWriter

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


class TraceRecorder(WorldModelProxy):
    """A world-model proxy that writes each call, its outputs and its cache events to a trace.

    Record 0 is the model's initial weights (a ``weights`` call with ``initial``), so every replay
    starts from the same parameters.
    """

    def __init__(self, model: Any, writer: TraceWriter) -> None:
        super().__init__(self._run, model)
        self.model = model
        self._writer = writer
        self._num_records = 0
        self._lineage = LatentLineage()
        model.record_events(True)
        model.take_events()
        self._record(WeightsCall(state={k: copy_array(v) for k, v in model.net.state_dict().items()},
                                 initial=True), {})

    @property
    def num_records(self) -> int:
        return self._num_records

    def _record(self, call: Call, outputs: dict[str, torch.Tensor]) -> None:
        kind, meta, arrays = call_to_record(call, outputs, self.model.take_events())
        self._writer.append(kind, meta, arrays)
        self._num_records += 1

    def _run(self, call: Call) -> dict[str, torch.Tensor]:
        if isinstance(call, RecurrentCall):
            call = dataclasses.replace(call, latent_source=self._lineage.sources(call.latent_state))
        index = self._num_records
        outputs = invoke(self.model, call)
        self._record(call, outputs)
        latent = outputs.get("latent")
        self._lineage.observe(index, call,
                              None if latent is None else latent.detach().cpu().numpy())
        return outputs
