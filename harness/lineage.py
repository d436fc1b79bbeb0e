"""Where each input latent came from: the earlier call and row (env) that produced it.

MCTS feeds a recurrent call the latents that earlier calls of the same search returned (row
``b`` of a call continues root ``b``). A :class:`LatentLineage` follows one search window (from
a root call to the next) and answers, for each row of a recurrent call's ``latent_state``, the
``(call index, row)`` whose output it is, by the latent's exact bytes. The recorder writes these
sources into the trace; a closed-loop replay (:class:`ClosedLoop`) uses them to feed each engine
its own earlier outputs instead of the recorded bytes, as MCTS does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.calls import RecordedCall, RecurrentCall, RootCall
from harness.observation import Observation

__all__ = ["LatentLineage", "ClosedLoop", "Source"]

Source = tuple[int, int] | None
"""``(call index, row)`` of the output a latent row came from; None when not found."""


class LatentLineage:
    """Latent bytes -> the latest ``(call index, row)`` that output them, within one search."""

    def __init__(self) -> None:
        self._by_bytes: dict[bytes, tuple[int, int]] = {}

    def observe(self, index: int, call: object, latent: np.ndarray | None) -> None:
        """Note a call's output latents (``[B, D]``); a root call starts a new search window."""
        if isinstance(call, RootCall):
            self._by_bytes.clear()
        if latent is None or latent.ndim != 2:
            return
        for row in range(latent.shape[0]):
            self._by_bytes[latent[row].tobytes()] = (index, row)

    def sources(self, latent_state: np.ndarray) -> tuple[Source, ...]:
        """The source of each row of a recurrent call's ``latent_state``."""
        if latent_state.ndim != 2:
            return ()
        return tuple(self._by_bytes.get(latent_state[row].tobytes())
                     for row in range(latent_state.shape[0]))


class ClosedLoop:
    """Feeds each engine its own earlier outputs where the trace recorded another's.

    For every recurrent call, each row whose source is known is replaced by the row that the
    same engine returned for that source call; rows with no known source keep the recorded
    bytes. Sources come from the trace (recorded by the capture) or, for traces without them,
    from the recorded outputs' bytes.
    """

    def __init__(self) -> None:
        self._lineage = LatentLineage()
        self._own: dict[str, dict[int, np.ndarray]] = {}

    def feed(self, engine: str, recorded: RecordedCall) -> RecordedCall:
        call = recorded.call
        if not isinstance(call, RecurrentCall):
            return recorded
        sources = call.latent_source or self._lineage.sources(call.latent_state)
        own = self._own.get(engine, {})
        latent = call.latent_state
        fed = None
        for row, source in enumerate(sources):
            if source is None or source[0] not in own:
                continue
            produced = own[source[0]]
            if source[1] >= produced.shape[0] or produced.shape[1:] != latent.shape[1:]:
                continue
            if fed is None:
                fed = latent.copy()
            fed[row] = produced[source[1]]
        if fed is None:
            return recorded
        return dataclasses.replace(recorded, call=dataclasses.replace(call, latent_state=fed))

    @staticmethod
    def drifted(control: RecordedCall, candidate: RecordedCall, rtol: float, atol: float) -> bool:
        """Were the two engines fed latents (each its own earlier output) that differ in their
        bits but agree within the latent's tolerance? Then their cache keys differ for that
        reason alone: the earlier outputs were judged equal."""
        a, b = control.call, candidate.call
        if not (isinstance(a, RecurrentCall) and isinstance(b, RecurrentCall)) \
                or a.latent_state.shape != b.latent_state.shape \
                or a.latent_state.tobytes() == b.latent_state.tobytes():
            return False
        expected = a.latent_state.astype(np.float64)
        error = np.abs(b.latent_state.astype(np.float64) - expected)
        return bool(np.all(error <= atol + rtol * np.abs(expected)))

    def observe(self, engine: str, recorded: RecordedCall, observation: Observation) -> None:
        """Keep the engine's own latents of this search window."""
        own = self._own.setdefault(engine, {})
        if isinstance(recorded.call, RootCall):
            own.clear()
        latent = observation.outputs.get("latent")
        if isinstance(latent, np.ndarray) and latent.ndim == 2:
            own[recorded.index] = latent

    def record(self, recorded: RecordedCall) -> None:
        """Advance the lineage past a call, from the outputs the trace recorded."""
        self._lineage.observe(recorded.index, recorded.call, recorded.outputs.get("latent"))
