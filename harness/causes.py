"""Causes by counterfactual: which documented legacy defect explains a divergence, if any.

A counterfactual control is legacy with exactly one quirk of legacy-spec §12 corrected
(:mod:`legacy.counterfactual`). When a candidate diverges from legacy at call *i*, the trace is
replayed from its start through call *i* in each counterfactual (the caches' state at *i*
depends on the whole history: write pointers never reset, quirk 2) and the divergence is
labelled with the cause of the first counterfactual whose observation at *i* agrees with the
candidate's — the same outputs within the tolerance policy and the same cache decisions — or
:data:`UNEXPLAINED` when none does.

Replays are lazy and forward-only: a trace without divergences costs nothing, and each
counterfactual is advanced only as far as the latest divergence asked about, so labelling every
divergence of a trace costs at most one extra replay per counterfactual. This module is a
library: no argparse, no printing. The comparison driver calls :meth:`CauseLabeller.label` with
the candidate's observation of each diverging call; :func:`label_divergences` is the standalone
form that replays the candidate itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from harness.calls import RecordedCall, call_from_record
from harness.causenames import COUNTERFACTUAL_CAUSES, UNEXPLAINED
from harness.compare import TolerancePolicy
from harness.compare.call import compare_observations
from harness.engines import Engine, Observation, build_engine
from harness.limits import DEFAULT_LIMITS, Limits, config_from_header
from harness.trace import open_trace
from legacy.counterfactual import COUNTERFACTUALS, Counterfactual
from unizero.config import WorldModelConfig

__all__ = ["CAUSES", "CauseLabeller", "label_divergences", "observations_agree", "trace_config"]

CAUSES: tuple[str, ...] = COUNTERFACTUAL_CAUSES


def observations_agree(first: Observation, second: Observation, policy: TolerancePolicy) -> bool:
    """Same error (or none), the same outputs within ``policy`` and the same cache decisions:
    the one per-call comparison (:func:`harness.compare.call.compare_observations`) finds
    nothing."""
    return not compare_observations(first, second, policy, same_error_agrees=True).diverged


def trace_config(path: str, limits: Limits = DEFAULT_LIMITS) -> WorldModelConfig:
    """The world-model config in a trace's header, checked against ``limits``."""
    with open_trace(path, limits=limits) as reader:
        header = reader.header
    return config_from_header(header, path, limits)


def _records(path: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[RecordedCall]:
    with open_trace(path, limits=limits) as reader:
        for record in reader:
            yield call_from_record(record.index, record.kind, record.meta, record.arrays, where=path)


@dataclass(slots=True)
class _Control:
    """One counterfactual engine and the last call it applied."""

    counterfactual: Counterfactual
    engine: Engine
    last_index: int = -1
    last: Observation | None = None


class CauseLabeller:
    """Labels the divergences of one trace, in increasing call order.

    Args:
        path: the trace the divergences come from (it is read again, from the start).
        config: the trace's world-model config; read from its header when None.
        policy: the tolerance policy the comparison used; agreement uses the same one.
        device: device of the counterfactual engines.
        counterfactuals: the controls to try, in order; default every registered one.
    """

    def __init__(self, path: str, config: WorldModelConfig | None = None, *,
                 policy: TolerancePolicy | None = None, device: str | torch.device = "cpu",
                 counterfactuals: Sequence[Counterfactual] = COUNTERFACTUALS,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = path
        self.limits = limits
        self.policy = policy or TolerancePolicy()
        self._config = config
        self._device = device
        self._counterfactuals = tuple(counterfactuals)
        self._controls: list[_Control] | None = None
        self._records: Iterator[RecordedCall] | None = None

    def _start(self) -> list[_Control]:
        if self._controls is None:
            config = self._config or trace_config(self.path, self.limits)
            self._controls = [_Control(c, build_engine(c.engine, config, device=self._device))
                              for c in self._counterfactuals]
            self._records = _records(self.path, self.limits)
        return self._controls

    def _advance(self, call_index: int) -> None:
        controls = self._start()
        reached = controls[0].last_index if controls else call_index
        if call_index < reached:
            raise ValueError(f"{self.path}: call {call_index}: divergences must be labelled in "
                             f"increasing call order (already at call {reached})")
        assert self._records is not None, "the record stream starts with the controls"
        while reached < call_index:
            recorded = next(self._records, None)
            if recorded is None:
                raise ValueError(f"{self.path}: call {call_index}: the trace ends at call {reached}")
            for control in controls:
                control.last = control.engine.apply(recorded)
                control.last_index = recorded.index
            reached = recorded.index

    def label(self, call_index: int, candidate: Observation) -> str:
        """The cause of the candidate's divergence at ``call_index``, or ``unexplained``.

        Args:
            call_index: the diverging call; at or after every call labelled before.
            candidate: what the candidate engine produced for that call.
        """
        self._advance(call_index)
        for control in self._controls or ():
            assert control.last is not None, f"counterfactual {control.counterfactual.engine} ran no call"
            if observations_agree(candidate, control.last, self.policy):
                return control.counterfactual.cause
        return UNEXPLAINED

    def close(self) -> None:
        """Stop reading the trace and release the controls (idempotent)."""
        if self._records is not None:
            self._records.close()  # type: ignore[attr-defined]
            self._records = None
        for control in self._controls or ():
            control.engine.close()
        self._controls = None


def label_divergences(path: str, call_indices: Iterable[int], *, candidate: str = "refactored",
                      manager: str | None = None, policy: TolerancePolicy | None = None,
                      device: str | torch.device = "cpu") -> Mapping[int, str]:
    """Replay ``candidate`` and the counterfactuals over ``path`` and label each given call.

    Args:
        path: a trace file.
        call_indices: the diverging calls (e.g. ``[c.call_index for c in result.divergences]``).
        candidate: the candidate engine spec, as for ``compare --candidate``.
        manager: ``package.module:Class`` replacing the refactored engine's manager.
        policy: tolerances; the default policy when None.

    Returns:
        ``{call_index: cause}`` with a cause from :data:`CAUSES` or ``unexplained``.
    """
    wanted = sorted(set(int(i) for i in call_indices))
    if not wanted:
        return {}
    config = trace_config(path)
    engine = build_engine(candidate, config, device=device, manager=manager)
    labeller = CauseLabeller(path, config, policy=policy, device=device)
    labels: dict[int, str] = {}
    records = _records(path)
    try:
        for recorded in records:
            observation = engine.apply(recorded)
            if recorded.index in wanted:
                labels[recorded.index] = labeller.label(recorded.index, observation)
            if recorded.index >= wanted[-1]:
                break
    finally:
        records.close()
        labeller.close()
    return labels
