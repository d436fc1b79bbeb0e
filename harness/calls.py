"""The imagine calls a trace records, and the one place that maps them onto a world model.

Record layout inside a trace (see docs/trace-format.md): ``kind`` is the call kind; inputs are
arrays named ``in/<name>``, the producing engine's outputs ``out/<name>``; scalar inputs live in
``meta["inputs"]`` and the cache events in ``meta["events"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np
import torch

from harness.errors import UserError
from unizero.events import CacheEvent, event_from_dict, event_to_dict

__all__ = ["RootCall", "RecurrentCall", "ClearCall", "WeightsCall", "ReanalyzeCall", "Call",
           "RecordedCall", "CALL_KINDS", "CLEAR_OPS", "invoke", "call_to_record", "call_from_record",
           "CallFormatError"]

CALL_KINDS = ("root", "recurrent", "clear", "weights", "reanalyze")
CLEAR_OPS = ("all", "root_env", "epoch")
OUTPUT_NAMES = ("latent", "reward_logits", "policy_logits", "value_logits")


class CallFormatError(UserError):
    """A trace record that does not describe a valid call; the message names the field."""


@dataclass(frozen=True, slots=True)
class RootCall:
    last_obs: np.ndarray          # [N, obs_dim] float32
    last_actions: np.ndarray      # [N] int64, -1 on a first step
    current_obs: np.ndarray       # [B, obs_dim] float32
    start_pos: np.ndarray         # [B] int64
    kind: str = field(default="root", init=False)


@dataclass(frozen=True, slots=True)
class RecurrentCall:
    latent_state: np.ndarray      # [B, D] float32 (the MCTS leaves' parent latents)
    actions: np.ndarray           # [B] int64
    search_depth: np.ndarray      # [B] int64
    start_pos: np.ndarray         # [B] int64
    simulation_index: int
    # Per row, the (record index, row) whose output latent this row is; None where unknown.
    # Provenance written by the recorder; the closed-loop replay feeds engines by it.
    latent_source: tuple[tuple[int, int] | None, ...] | None = None
    kind: str = field(default="recurrent", init=False)


@dataclass(frozen=True, slots=True)
class ClearCall:
    op: str                       # "all" (clear_caches), "root_env", "epoch" (recompute + clear)
    reason: str
    env: int | None = None
    kind: str = field(default="clear", init=False)


@dataclass(frozen=True, slots=True)
class WeightsCall:
    state: Mapping[str, np.ndarray]
    initial: bool = False
    kind: str = field(default="weights", init=False)


@dataclass(frozen=True, slots=True)
class ReanalyzeCall:
    on: bool
    kind: str = field(default="reanalyze", init=False)


Call = Union[RootCall, RecurrentCall, ClearCall, WeightsCall, ReanalyzeCall]


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """A call as read back from a trace: its inputs, the producer's outputs and events."""

    index: int
    call: Call
    outputs: Mapping[str, np.ndarray]
    events: tuple[CacheEvent, ...]

    @property
    def kind(self) -> str:
        return self.call.kind

    @property
    def env_ids(self) -> tuple[int, ...]:
        call = self.call
        if isinstance(call, RootCall):
            return tuple(range(call.current_obs.shape[0]))
        if isinstance(call, RecurrentCall):
            return tuple(range(call.latent_state.shape[0]))
        if isinstance(call, ClearCall) and call.env is not None:
            return (call.env,)
        return ()


def invoke(model: Any, call: Call) -> dict[str, torch.Tensor]:
    """Apply ``call`` to ``model`` through its public API; return its named outputs."""
    if isinstance(call, RootCall):
        return model.initial_inference(call.last_obs, call.last_actions, call.current_obs,
                                       call.start_pos).as_dict()
    if isinstance(call, RecurrentCall):
        return model.recurrent_inference(call.latent_state, call.actions, call.simulation_index,
                                         call.search_depth, call.start_pos).as_dict()
    if isinstance(call, ClearCall):
        if call.op == "all":
            model.clear_caches(reason=call.reason)
        elif call.op == "root_env":
            model.clear_root_cache(call.env, reason=call.reason)
        else:
            model.recompute_pos_emb_diff_and_clear_cache()
        return {}
    if isinstance(call, WeightsCall):
        device = model.device
        model.load_weights({name: torch.from_numpy(np.array(value)).to(device)
                            for name, value in call.state.items()})
        return {}
    model.set_reanalyze_phase(call.on)
    return {}


def _outputs_to_arrays(outputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f"out/{name}": value.detach().cpu().numpy() for name, value in outputs.items()}


def call_to_record(call: Call, outputs: Mapping[str, torch.Tensor],
                   events: list[CacheEvent]) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """``(kind, meta, arrays)`` for a trace writer."""
    arrays: dict[str, np.ndarray] = _outputs_to_arrays(outputs)
    inputs: dict[str, Any] = {}
    if isinstance(call, (RootCall, RecurrentCall)):
        names = (("last_obs", "last_actions", "current_obs", "start_pos") if isinstance(call, RootCall)
                 else ("latent_state", "actions", "search_depth", "start_pos"))
        arrays.update({f"in/{name}": getattr(call, name) for name in names})
        if isinstance(call, RecurrentCall):
            inputs["simulation_index"] = call.simulation_index
            if call.latent_source is not None:
                inputs["latent_source"] = [None if s is None else list(s)
                                           for s in call.latent_source]
    elif isinstance(call, ClearCall):
        inputs = {"op": call.op, "reason": call.reason, "env": call.env}
    elif isinstance(call, WeightsCall):
        arrays.update({f"w/{name}": value for name, value in call.state.items()})
        inputs["initial"] = call.initial
    else:
        inputs["on"] = call.on
    meta = {"inputs": inputs, "events": [event_to_dict(e) for e in events]}
    return call.kind, meta, arrays


def _array(arrays: Mapping[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in arrays:
        raise CallFormatError(f"{where}: missing array {name!r}")
    return arrays[name]


def _check_rows(where: str, *named: tuple[str, np.ndarray, int]) -> None:
    """Each array has its rank and at least one row, and all have the same number of rows."""
    rows = None
    for name, value, ndim in named:
        if value.ndim != ndim or value.shape[0] < 1:
            raise CallFormatError(f"{where}: in/{name}: expected {ndim} dimension(s) with at "
                                  f"least one row, got shape {list(value.shape)}")
        if rows is not None and value.shape[0] != rows:
            raise CallFormatError(f"{where}: in/{name}: expected {rows} rows like "
                                  f"in/{named[0][0]}, got {value.shape[0]}")
        rows = value.shape[0]


def _int(inputs: Mapping[str, Any], name: str, where: str) -> int:
    value = inputs.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CallFormatError(f"{where}: inputs.{name}: expected an integer, got {value!r}")
    return value


def _latent_source(data: Any, index: int, latent_state: np.ndarray,
                   where: str) -> tuple[tuple[int, int] | None, ...] | None:
    """Validate recorded provenance: one ``[record, row]`` (an earlier record) or null per row."""
    if data is None:
        return None
    rows = latent_state.shape[0] if latent_state.ndim else 0
    if not isinstance(data, list) or len(data) != rows:
        raise CallFormatError(f"{where}: inputs.latent_source: expected a list of {rows} "
                              f"[record, row] pairs or nulls")
    sources: list[tuple[int, int] | None] = []
    for item in data:
        if item is None:
            sources.append(None)
            continue
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                or not 0 <= item[0] < index or item[1] < 0):
            raise CallFormatError(f"{where}: inputs.latent_source: expected [record, row] with "
                                  f"0 <= record < {index} and row >= 0, got {item!r}")
        sources.append((item[0], item[1]))
    return tuple(sources)


def call_from_record(index: int, kind: str, meta: Mapping[str, Any],
                     arrays: Mapping[str, np.ndarray], where: str = "trace") -> RecordedCall:
    """Rebuild a RecordedCall from a trace record; raises CallFormatError naming the bad field."""
    where = f"{where}: record {index} ({kind})"
    inputs = meta.get("inputs", {}) if isinstance(meta, Mapping) else None
    if not isinstance(inputs, Mapping):
        raise CallFormatError(f"{where}: meta.inputs: expected a table")
    try:
        if kind == "root":
            call: Call = RootCall(*(_array(arrays, f"in/{n}", where) for n in
                                    ("last_obs", "last_actions", "current_obs", "start_pos")))
            _check_rows(where, ("last_obs", call.last_obs, 2), ("last_actions", call.last_actions, 1))
            _check_rows(where, ("current_obs", call.current_obs, 2), ("start_pos", call.start_pos, 1))
        elif kind == "recurrent":
            latent_state, actions, search_depth, start_pos = (
                _array(arrays, f"in/{n}", where)
                for n in ("latent_state", "actions", "search_depth", "start_pos"))
            _check_rows(where, ("latent_state", latent_state, 2), ("actions", actions, 1),
                        ("search_depth", search_depth, 1), ("start_pos", start_pos, 1))
            call = RecurrentCall(latent_state, actions, search_depth, start_pos,
                                 simulation_index=_int(inputs, "simulation_index", where),
                                 latent_source=_latent_source(inputs.get("latent_source"), index,
                                                              latent_state, where))
        elif kind == "clear":
            if inputs.get("op") not in CLEAR_OPS:
                raise CallFormatError(f"{where}: inputs.op: expected one of {CLEAR_OPS}, "
                                      f"got {inputs.get('op')!r}")
            call = ClearCall(op=inputs["op"], reason=str(inputs.get("reason", "")), env=inputs.get("env"))
        elif kind == "weights":
            call = WeightsCall(state={k[2:]: v for k, v in arrays.items() if k.startswith("w/")},
                               initial=bool(inputs.get("initial", False)))
        elif kind == "reanalyze":
            call = ReanalyzeCall(on=bool(inputs["on"]))
        else:
            raise CallFormatError(f"{where}: unknown call kind; expected one of {CALL_KINDS}")
        events = tuple(event_from_dict(e) for e in meta.get("events", []))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CallFormatError):
            raise
        raise CallFormatError(f"{where}: malformed record ({exc})") from None
    outputs = {k[4:]: v for k, v in arrays.items() if k.startswith("out/")}
    return RecordedCall(index=index, call=call, outputs=outputs, events=events)
