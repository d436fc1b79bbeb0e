"""Closed-loop replay: feed each engine its own earlier latents, as MCTS does.

A recurrent call's input latents are outputs of earlier calls (a root's embedding, or a leaf's
predicted next latent). Open loop, every engine gets the recorded bytes; a candidate that differs
from the control in the last bit then hashes the recorded latent, not its own, and misses cache
entries it stored under its own key. Closed loop, each row is replaced by the engine's own output
for the call and env that produced it, so a near-exact candidate still finds its keys.

:class:`LatentProvenance` recovers "which earlier call and env produced this input row" from a
trace's recorded outputs (byte-identical latents: the recorder wrote exactly what was fed);
:class:`ClosedLoopFeeder` keeps one engine's own latents and rewrites its inputs; :func:`last_bits_only` tells a key change caused only by
last-bit differences in the latent from a real decision change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from harness.calls import RecordedCall, RecurrentCall, RootCall
from unizero.events import CacheEvent, Lookup

__all__ = ["LatentSource", "LatentProvenance", "latent_sources", "key_drift_envs", "ClosedLoopFeeder", "last_bits_only", "LOOP_MODES"]

LOOP_MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class LatentSource:
    """Input row ``row`` of call ``call_index`` is output row ``source_env`` of ``source_call``."""

    call_index: int
    row: int
    source_call: int
    source_env: int


class LatentProvenance:
    """Streams a trace's calls in order and says where each recurrent input row came from.

    A search's latents come from its own root call and the recurrent calls after it, so the
    table of producers restarts at every root call: memory stays bounded on long traces.
    """

    def __init__(self) -> None:
        self._producers: dict[bytes, tuple[int, int]] = {}

    def trace(self, recorded: RecordedCall) -> tuple[LatentSource, ...]:
        """The sources of ``recorded``'s input rows (those some earlier output produced bit for
        bit, the latest such output winning); then ``recorded``'s outputs become producers."""
        call, found = recorded.call, []
        if isinstance(call, RootCall):
            self._producers.clear()
        if isinstance(call, RecurrentCall):
            latents = np.ascontiguousarray(call.latent_state, dtype=np.float32)
            latents = latents.reshape(latents.shape[0], -1)
            for row in range(latents.shape[0]):
                producer = self._producers.get(latents[row].tobytes())
                if producer is not None:
                    found.append(LatentSource(recorded.index, row, *producer))
        if isinstance(call, (RootCall, RecurrentCall)) and "latent" in recorded.outputs:
            latents = np.ascontiguousarray(recorded.outputs["latent"], dtype=np.float32)
            latents = latents.reshape(latents.shape[0], -1)
            for env in range(latents.shape[0]):
                self._producers[latents[env].tobytes()] = (recorded.index, env)
        return tuple(found)


def latent_sources(calls: Iterable[RecordedCall]) -> dict[tuple[int, int], LatentSource]:
    """``(call_index, row) -> LatentSource`` over a whole trace (see :class:`LatentProvenance`)."""
    provenance = LatentProvenance()
    return {(s.call_index, s.row): s for recorded in calls for s in provenance.trace(recorded)}


class ClosedLoopFeeder:
    """One engine's own latents, and its inputs rewritten from them.

    Per call, in trace order: :meth:`feed` with the call's sources (from one
    :class:`LatentProvenance` shared by all engines) before applying it to the engine, then
    :meth:`observe` with the engine's outputs. A row whose producing call the engine did not
    answer (an error) keeps the recorded bytes. Own latents are kept for the current search only.
    """

    def __init__(self) -> None:
        self._own: dict[tuple[int, int], np.ndarray] = {}

    def feed(self, recorded: RecordedCall, sources: Sequence[LatentSource]) -> RecordedCall:
        call = recorded.call
        if isinstance(call, RootCall):
            self._own.clear()
        if not isinstance(call, RecurrentCall) or not sources:
            return recorded
        latents = np.array(call.latent_state, dtype=np.float32, copy=True)
        for source in sources:
            own = self._own.get((source.source_call, source.source_env))
            if own is not None and own.shape == latents[source.row].shape:
                latents[source.row] = own
        return dataclasses.replace(recorded, call=dataclasses.replace(call, latent_state=latents))

    def observe(self, index: int, outputs: Mapping[str, np.ndarray]) -> None:
        latent = outputs.get("latent")
        if latent is None:
            return
        latent = np.asarray(latent, dtype=np.float32).reshape(latent.shape[0], -1)
        for env in range(latent.shape[0]):
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


def key_drift_envs(control: Sequence[CacheEvent], candidate: Sequence[CacheEvent],
                   control_latents: np.ndarray, candidate_latents: np.ndarray) -> tuple[int, ...]:
    """Envs of one recurrent call whose lookup key differs between the engines only because the
    latent each engine hashed (its own input row) differs in the last bits: a class of its own,
    not a cache decision the candidate got wrong."""
    a = {e.env: e for e in control if isinstance(e, Lookup)}
    b = {e.env: e for e in candidate if isinstance(e, Lookup)}
    rows_a = np.asarray(control_latents, dtype=np.float32).reshape(len(control_latents), -1)
    rows_b = np.asarray(candidate_latents, dtype=np.float32).reshape(len(candidate_latents), -1)
    return tuple(sorted(env for env in a.keys() & b.keys()
                        if a[env].key != b[env].key and env < min(len(rows_a), len(rows_b))
                        and last_bits_only(rows_a[env], rows_b[env])))
