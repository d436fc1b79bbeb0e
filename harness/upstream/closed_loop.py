"""Closed-loop replay: feed each engine its own earlier latents, as MCTS does.

A recurrent call's input latents are outputs of earlier calls (a root's embedding, or a leaf's
predicted next latent). Open loop, every engine gets the recorded bytes; a candidate that differs
from the control in the last bit then hashes the recorded latent, not its own, and misses cache
entries it stored under its own key. Closed loop, each row is replaced by the engine's own output
for the call and env that produced it, so a near-exact candidate still finds its keys.

:func:`latent_sources` recovers "which earlier call and env produced this input row" from a
trace's recorded outputs (byte-identical latents); :class:`ClosedLoopFeeder` keeps one engine's
own latents and rewrites its inputs; :func:`last_bits_only` tells a key change caused only by
last-bit differences in the latent from a real decision change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from harness.calls import RecordedCall, RecurrentCall, RootCall

__all__ = ["LatentSource", "latent_sources", "ClosedLoopFeeder", "last_bits_only", "LOOP_MODES"]

LOOP_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class LatentSource:
    """Input row ``row`` of call ``call_index`` is output row ``source_env`` of ``source_call``."""

    call_index: int
    row: int
    source_call: int
    source_env: int


def latent_sources(calls: Iterable[RecordedCall]) -> dict[tuple[int, int], LatentSource]:
    """``(call_index, row) -> LatentSource`` for every recurrent input row some earlier output
    produced bit for bit (the latest such output wins). Rows with no producer are absent."""
    producers: dict[bytes, tuple[int, int]] = {}
    sources: dict[tuple[int, int], LatentSource] = {}
    for recorded in calls:
        call = recorded.call
        if isinstance(call, RecurrentCall):
            latents = np.ascontiguousarray(call.latent_state, dtype=np.float32)
            for row in range(latents.shape[0]):
                found = producers.get(latents[row].tobytes())
                if found is not None:
                    sources[(recorded.index, row)] = LatentSource(recorded.index, row, *found)
        if isinstance(call, (RootCall, RecurrentCall)) and "latent" in recorded.outputs:
            latents = np.ascontiguousarray(recorded.outputs["latent"], dtype=np.float32)
            latents = latents.reshape(latents.shape[0], -1)
            for env in range(latents.shape[0]):
                producers[latents[env].tobytes()] = (recorded.index, env)
    return sources


class ClosedLoopFeeder:
    """One engine's own latents, and the inputs rewritten from them.

    Call :meth:`feed` before applying a recorded call to the engine, and :meth:`observe` with the
    engine's outputs after. Rows whose producing call the engine did not answer (an error) keep
    the recorded bytes.
    """

    def __init__(self, sources: Mapping[tuple[int, int], LatentSource]) -> None:
        self._sources = sources
        self._needed = {(s.source_call, s.source_env) for s in sources.values()}
        self._own: dict[tuple[int, int], np.ndarray] = {}

    def feed(self, recorded: RecordedCall) -> RecordedCall:
        call = recorded.call
        if not isinstance(call, RecurrentCall):
            return recorded
        latents = np.array(call.latent_state, dtype=np.float32, copy=True)
        for row in range(latents.shape[0]):
            source = self._sources.get((recorded.index, row))
            own = self._own.get((source.source_call, source.source_env)) if source else None
            if own is not None and own.shape == latents[row].shape:
                latents[row] = own
        return dataclasses.replace(recorded, call=dataclasses.replace(call, latent_state=latents))

    def observe(self, index: int, outputs: Mapping[str, np.ndarray]) -> None:
        latent = outputs.get("latent")
        if latent is None:
            return
        latent = np.asarray(latent, dtype=np.float32).reshape(latent.shape[0], -1)
        for env in range(latent.shape[0]):
            if (index, env) in self._needed:
                self._own[(index, env)] = latent[env].copy()


def last_bits_only(control: np.ndarray, candidate: np.ndarray, max_ulps: int = 4) -> bool:
    """Whether two float32 latents differ, but only within ``max_ulps`` units in the last place
    per element: a lookup whose key changed for this reason is its own class of divergence."""
    a = np.ascontiguousarray(control, dtype=np.float32).view(np.int32).astype(np.int64)
    b = np.ascontiguousarray(candidate, dtype=np.float32).view(np.int32).astype(np.int64)
    if a.shape != b.shape or np.array_equal(a, b):
        return False
    # map the sign-magnitude bit patterns onto one monotone integer line
    a = np.where(a < 0, -(a & 0x7FFFFFFF), a)
    b = np.where(b < 0, -(b & 0x7FFFFFFF), b)
    return int(np.max(np.abs(a - b))) <= max_ulps
