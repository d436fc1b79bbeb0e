"""Replay one trace through a control and a candidate engine, call by call, and compare.

Each engine keeps its own cache state across the whole trace and is fed the recorded inputs
(cloned per engine): open loop. Closed loop (``loop="closed"``) feeds each engine its own earlier
output latents where the trace recorded the producer's (:mod:`harness.lineage`), as MCTS does, so
a candidate that differs from the control in the last bit still finds its own cache keys. The two engines run interleaved, alternating which goes first, so their
timings see the same machine state. Every call pair is judged by the one accumulator
(:class:`~harness.experiment.TraceAccumulator`) the live wrapper uses too. Memory stays flat:
records stream from disk and only the first ``max_kept`` diverging calls keep their detail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from harness.calls import call_from_record
from harness.causes import CauseLabeller
from harness.compare import TolerancePolicy
from harness.engines import Engine, build_engine, check_engine_options, check_isolation, engine_label
from harness.errors import UsageError
from harness.experiment import Judge, TraceAccumulator
from harness.limits import DEFAULT_LIMITS, Limits, config_from_header
from harness.lineage import ClosedLoop
from harness.fileio import file_digest
from harness.recorder import TRACE_SCHEMA
from harness.results import TraceResult
from harness.trace import TraceError, TraceReader, open_trace
from unizero.config import WorldModelConfig

__all__ = ["ReplayOptions", "replay_trace", "candidate_name", "LOOPS", "Loop"]

Loop = Literal["open", "closed"]
EXPLAINED_CONTROLS = ("legacy", "golden")
"""Controls whose divergences the counterfactual controls (legacy variants) can explain."""
LOOPS: tuple[Loop, ...] = ("open", "closed")


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how to judge it."""

    control: str = "legacy"
    candidate: str = "refactored"
    manager: str | None = None
    policy: TolerancePolicy = field(default_factory=TolerancePolicy)
    device: str = "cpu"
    self_check: bool = False
    max_kept: int = 200
    loop: Loop = "open"
    limits: Limits = DEFAULT_LIMITS
    explain: bool = True
    reference: str | None = None
    """An engine every call is also replayed through (``uncached``): each divergence then says
    how far control and candidate are from it."""
    """Label each divergence's cause by counterfactual controls (:mod:`harness.causes`) when
    the control is legacy (or its recording, ``golden``)."""

    def __post_init__(self) -> None:
        if not self.self_check:
            check_engine_options(self.candidate, self.manager)
        if self.loop not in LOOPS:
            raise UsageError(f"--loop: expected one of {', '.join(LOOPS)}, got {self.loop!r}")


def candidate_name(options: ReplayOptions) -> str:
    """The name the candidate's timings and pool stats are recorded under."""
    if options.self_check:
        return f"{options.control}#2"
    return engine_label(options.candidate, options.manager)


def _build_engines(config: WorldModelConfig, options: ReplayOptions) -> tuple[Engine, Engine]:
    control = build_engine(options.control, config, device=options.device)
    try:
        if options.self_check:
            candidate = build_engine(options.control, config, device=options.device)
            candidate.name = candidate_name(options)
        else:
            candidate = build_engine(options.candidate, config, device=options.device,
                                     manager=options.manager)
    except BaseException:
        control.close()
        raise
    check_isolation(control, candidate)
    return control, candidate


def replay_trace(path: str, options: ReplayOptions, *, judge: Judge | None = None,
                 progress: Callable[[int, int], None] | None = None) -> TraceResult:
    """Replay ``path`` through both engines and return its comparison.

    Raises:
        TraceError: the file is not a readable trace (named, with record and offset).
    """
    with open_trace(path, limits=options.limits) as reader:
        header = reader.header
        if not isinstance(header, dict) or header.get("schema") != TRACE_SCHEMA:
            found = header.get("schema") if isinstance(header, dict) else header
            raise TraceError(path, f"header.schema: expected {TRACE_SCHEMA!r}, got {found!r}")
        config = config_from_header(header, path, options.limits)
        control, candidate = _build_engines(config, options)
        reference: Engine | None = None
        labeller: CauseLabeller | None = None
        try:
            if options.reference is not None:
                reference = build_engine(options.reference, config, device=options.device)
            if options.explain and not options.self_check \
                    and options.control in EXPLAINED_CONTROLS:
                labeller = CauseLabeller(path, config, policy=options.policy,
                                         device=options.device, limits=options.limits)
            return _replay(path, reader, {"control": control, "candidate": candidate,
                                          "reference": reference}, options, judge, progress,
                           labeller)
        finally:
            for engine in (control, candidate, reference):
                if engine is not None:
                    engine.close()
            if labeller is not None:
                labeller.close()


def _replay(path: str, reader: TraceReader, engines: dict[str, Engine | None],
            options: ReplayOptions, judge: Judge | None,
            progress: Callable[[int, int], None] | None,
            labeller: CauseLabeller | None) -> TraceResult:
    """The replay loop over an open trace, with the engines built (``reference`` optional)."""
    control, candidate, reference = engines["control"], engines["candidate"], engines["reference"]
    explain = (None if labeller is None
               else lambda recorded, observed: labeller.label(recorded.index, observed))
    accumulator = TraceAccumulator(path, control.name, candidate.name, options.policy,
                                   judge=judge, max_kept=options.max_kept, explain=explain)
    loop = ClosedLoop() if options.loop == "closed" else None
    latent_tol = options.policy.tolerance_for("latent", "float32")
    for record in reader:
        recorded = call_from_record(record.index, record.kind, record.meta, record.arrays,
                                    where=path)
        order = ("control", "candidate") if record.index % 2 == 0 else ("candidate", "control")
        observed, fed = {}, {}
        for role in order:
            fed[role] = recorded if loop is None else loop.feed(role, recorded)
            observed[role] = engines[role].apply(fed[role])
            if loop is not None:
                loop.observe(role, recorded, observed[role])
        drifted = False
        if loop is not None:
            loop.record(recorded)
            drifted = ClosedLoop.drifted(fed["control"], fed["candidate"], latent_tol.rtol,
                                         latent_tol.atol)
        accumulator.observe(recorded, observed["control"], observed["candidate"],
                            reference=None if reference is None else reference.apply(recorded),
                            drifted=drifted)
        if progress:
            progress(accumulator.num_calls, reader.num_records)
    if reader.truncated:
        accumulator.note(reader.tail_note)
    truncated = reader.truncated
    return accumulator.result(trace_path=path, trace_digest=file_digest(path),
                              self_check=options.self_check, truncated=truncated)
