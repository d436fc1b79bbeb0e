"""The rollout gate: per-phase criteria from ``gate.toml``, judged on one comparison run.

``python -m harness gate --phase N [TRACE_OR_FOLDER...]`` replays the traces (default: the
bundled ones) through the phase's control and candidate, judges every criterion of the phase and
writes a sign-off (inputs' digests, criteria, results, versions, the whole run) to
``reports/signoff-phaseN.json`` with Markdown and HTML forms alongside.

Every criterion ends as ``pass``, ``fail``, ``insufficient`` or ``info``; the exit code is
decided in one place (:attr:`GateResult.exit_code`): any ``fail`` gives 1 (a divergence is
conclusive on any amount of evidence), else any ``insufficient`` gives 3, else 0. ``min_traces``
and ``min_calls`` must be at least 1, so no configuration can pass on nothing. A malformed config,
a missing trace file or an unreadable trace raises before anything is judged (exit 2).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from harness import exit_codes
from harness.errors import UsageError
from harness.coverage import COVERAGE_NAMES, REQUIRED
from harness.evidence import verify_trace_digests
from harness.fileio import file_digest
from harness.limits import DEFAULT_LIMITS, Limits
from harness.paths import DEFAULT_TRACE_DIR, ROOT, display_path, expand_traces
from harness.rejudge import rejudge_trace
from harness.replay import ReplayOptions
from harness.results import RunResult
from harness.run import ProgressFactory, load_run, merge_runs, run_comparison
from harness.versions import versions
from harness.schemas import GatePhaseTable, load_gate_file
from harness.trace import open_trace
from harness.waivers import DEFAULT_WAIVERS, WaiverSet, load_waivers, waiver_report

__all__ = ["DEFAULT_GATE_CONFIG", "SIGNOFF_SCHEMA", "GateConfigError", "PhaseCriteria",
           "CriterionResult", "GateResult", "load_gate_config", "evaluate", "run_gate",
           "judge_phase", "default_signoff_path", "measured_speedup"]

DEFAULT_GATE_CONFIG = ROOT / "gate.toml"
SIGNOFF_SCHEMA = "kvmigrate.signoff/1"
PHASES = (1, 2, 3)
TIMED_KINDS = ("root", "recurrent")
Status = Literal["pass", "fail", "insufficient", "info"]


class GateConfigError(UsageError):
    """A gate config that cannot be acted on; the message names the file, phase and key."""


@dataclass(frozen=True, slots=True)
class PhaseCriteria:
    """The criteria of one phase, as ``gate.toml`` states them (see the file's header)."""

    phase: int
    name: str
    description: str
    control: str
    candidate: str
    min_traces: int
    min_calls: int
    required_paths: tuple[str, ...]
    trace_producer: str | None = None
    max_unwaived_divergences: int | None = None
    max_engine_errors: int | None = None
    max_active_waivers: int | None = None
    allow_expired_waivers: bool = False
    min_speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["required_paths"] = list(self.required_paths)
        return data


def _criteria(phase: int, table: GatePhaseTable, where: str) -> PhaseCriteria:
    """The phase's criteria from its typed table, after the checks types cannot state."""
    unknown_paths = [p for p in table.required_paths or () if p not in COVERAGE_NAMES]
    if unknown_paths:
        raise GateConfigError(f"{where}.required_paths: expected names from the coverage table "
                              f"(docs/coverage.md), got {unknown_paths!r}")
    if table.min_speedup is not None and table.control == "golden":
        raise GateConfigError(f"{where}.min_speedup: expected no speedup floor with control "
                              f"'golden' (it replays recorded results, untimed)")
    return PhaseCriteria(phase=phase, name=table.name, description=table.description,
                         control=table.control, candidate=table.candidate,
                         min_traces=table.min_traces, min_calls=table.min_calls,
                         required_paths=(REQUIRED if table.required_paths is None
                                         else tuple(table.required_paths)),
                         trace_producer=table.trace_producer,
                         max_unwaived_divergences=table.max_unwaived_divergences,
                         max_engine_errors=table.max_engine_errors,
                         max_active_waivers=table.max_active_waivers,
                         allow_expired_waivers=table.allow_expired_waivers,
                         min_speedup=table.min_speedup)


def load_gate_config(path: str | Path | None = None) -> dict[int, PhaseCriteria]:
    """Read and validate every ``[phase.N]`` table of a gate config (default ``gate.toml``).

    Raises:
        GateConfigError: no such file, invalid TOML, an unknown phase or key, a bad value.
    """
    path = Path(path) if path is not None else DEFAULT_GATE_CONFIG
    tables = load_gate_file(path, GateConfigError, PHASES)
    if not tables:
        raise GateConfigError(f"{path}: expected [phase.N] tables for N in {list(PHASES)}")
    return {number: _criteria(number, table, f"{path}: [phase.{number}]")
            for number, table in tables.items()}


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One criterion judged: what was required, what the run showed, and the status."""

    name: str
    required: str
    observed: str
    status: Status

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "required": self.required, "observed": self.observed,
                "status": self.status}


def measured_speedup(run: RunResult) -> tuple[float | None, float, float]:
    """``(control_s / candidate_s, control_s, candidate_s)`` over root and recurrent calls.

    Each engine's time is ``sum(median_s * num_calls)`` over traces and call kinds: the replay
    interleaves the engines, and the median keeps one preempted call from deciding the ratio.
    The ratio is None when either side has no timed call.
    """
    totals = Counter()
    for trace in run.traces:
        for timing in trace.timings:
            if timing.call_kind in TIMED_KINDS:
                totals[timing.engine] += timing.median_s * timing.num_calls
    control, candidate = totals[run.control_engine], totals[run.candidate_engine]
    ratio = control / candidate if control > 0 and candidate > 0 else None
    return ratio, control, candidate


def _limit(name: str, limit: int | None, observed: int, detail: str = "") -> CriterionResult:
    shown = f"{observed}{detail}"
    if limit is None:
        return CriterionResult(name, "not gated in this phase", shown, "info")
    return CriterionResult(name, f"<= {limit}", shown, "pass" if observed <= limit else "fail")


def _calls_list(calls: Sequence[str], limit: int = 5) -> str:
    more = f", +{len(calls) - limit} more" if len(calls) > limit else ""
    return ", ".join(calls[:limit]) + more


def _waiver_results(criteria: PhaseCriteria, run: RunResult,
                    waivers: WaiverSet) -> list[CriterionResult]:
    report = waiver_report(waivers, run)
    exceeded, expired_hits = [], []
    for trace in run.traces:
        for call in trace.unwaived:
            where = f"{Path(trace.trace_path).name} call {call.call_index}"
            exceeded += [f"{w.id} ({where})" for w in waivers.active
                         if w.in_scope(call) and not w.cap_holds(call)]
            expired_hits += [f"{w.id} ({where})" for w in waivers.expired if w.in_scope(call)]
    expired = report["expired"]
    results = [
        CriterionResult("waiver caps hold", "no divergence in a waiver's scope beyond its cap",
                        _calls_list(exceeded) if exceeded else "none exceeded",
                        "fail" if exceeded else "pass"),
        CriterionResult("expired waivers",
                        "allowed (they waive nothing)" if criteria.allow_expired_waivers
                        else "none: renew or remove each",
                        ", ".join(expired) + (f"; would have covered {_calls_list(expired_hits)}"
                                              if expired_hits else "") if expired else "none",
                        "fail" if expired and not criteria.allow_expired_waivers else "pass"),
    ]
    active = [w.id for w in waivers.active]
    results.append(_limit("active waivers", criteria.max_active_waivers, len(active),
                          f" ({', '.join(active)})" if active else ""))
    stale = report["stale"]
    results.append(CriterionResult("stale waivers", "reported, not gated",
                                   ", ".join(stale) if stale else "none", "info"))
    return results


def evaluate(criteria: PhaseCriteria, run: RunResult, waivers: WaiverSet,
             producers: Mapping[str, str | None] | None = None) -> tuple[CriterionResult, ...]:
    """Judge every criterion of ``criteria`` on ``run``; pure, so tests can feed built records.

    Args:
        producers: trace path -> the engine named in its header (for ``trace_producer``).
    """
    traces = run.traces
    num_calls = sum(t.num_calls for t in traces)
    results = [
        CriterionResult("traces", f">= {criteria.min_traces}", str(len(traces)),
                        "pass" if len(traces) >= criteria.min_traces else "insufficient"),
        CriterionResult("calls", f">= {criteria.min_calls}", str(num_calls),
                        "pass" if num_calls >= criteria.min_calls else "insufficient"),
    ]
    cut = [Path(t.trace_path).name for t in traces if t.truncated]
    results.append(CriterionResult(
        "complete traces", "every trace ends with its end-of-trace record",
        f"truncated (a capture did not finish): {', '.join(cut)}" if cut else "all complete",
        "insufficient" if cut else "pass"))
    coverage = Counter()
    for trace in traces:
        coverage.update(trace.coverage)
    missing = [p for p in criteria.required_paths if coverage[p] < 1]
    results.append(CriterionResult(
        "path coverage", f"each of {len(criteria.required_paths)} paths >= 1",
        f"never exercised: {', '.join(missing)}" if missing
        else ", ".join(f"{p} {coverage[p]}" for p in criteria.required_paths),
        "insufficient" if missing else "pass"))
    if criteria.trace_producer is not None:
        wrong = sorted(f"{Path(p).name} ({e})" for p, e in (producers or {}).items()
                       if e != criteria.trace_producer)
        results.append(CriterionResult(
            "trace producer", f"every trace captured by {criteria.trace_producer}",
            f"other producer: {', '.join(wrong)}" if wrong else f"all {criteria.trace_producer}",
            "insufficient" if wrong else "pass"))
    unwaived = sum(t.num_unwaived_calls for t in traces)
    firsts = [f"{Path(t.trace_path).name} call {t.first_unwaived.call_index}"
              for t in traces if t.first_unwaived is not None]
    results.append(_limit("unwaived divergences", criteria.max_unwaived_divergences, unwaived,
                          f" (first: {_calls_list(firsts)})" if firsts else ""))
    errors = sum(c.classification == "error" for t in traces for c in t.unwaived)
    results.append(_limit("engine errors (unwaived)", criteria.max_engine_errors, errors))
    results += _waiver_results(criteria, run, waivers)
    results.append(_speedup_result(criteria, run))
    return tuple(results)


def _speedup_result(criteria: PhaseCriteria, run: RunResult) -> CriterionResult:
    ratio, control_s, candidate_s = measured_speedup(run)
    untimed = ("not measured: the golden control replays recorded results"
               if run.control_engine == "golden" else "no timed calls")
    shown = (untimed if ratio is None else
             f"{ratio:.2f}x ({run.control_engine} {control_s * 1e3:.0f} ms, "
             f"{run.candidate_engine} {candidate_s * 1e3:.0f} ms)")
    if criteria.min_speedup is None:
        return CriterionResult("speedup", "not gated in this phase", shown, "info")
    required = f">= {criteria.min_speedup:g}x (control time / candidate time)"
    if ratio is None:
        return CriterionResult("speedup", required, shown, "insufficient")
    return CriterionResult("speedup", required, shown,
                           "pass" if ratio >= criteria.min_speedup else "fail")


@dataclass(frozen=True, slots=True)
class GateResult:
    """A judged gate run; its exit code is decided here only."""

    criteria: PhaseCriteria
    results: tuple[CriterionResult, ...]
    run: RunResult
    inputs: Mapping[str, Any]
    waivers: Mapping[str, Any]
    versions: Mapping[str, Any]

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if "fail" in statuses:
            return exit_codes.DIVERGENCE
        if "insufficient" in statuses:
            return exit_codes.INSUFFICIENT_EVIDENCE
        return exit_codes.OK

    @property
    def verdict(self) -> str:
        return {exit_codes.OK: "PASS", exit_codes.DIVERGENCE: "FAIL",
                exit_codes.INSUFFICIENT_EVIDENCE: "INSUFFICIENT EVIDENCE"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SIGNOFF_SCHEMA, "phase": self.criteria.phase,
                "phase_name": self.criteria.name, "verdict": self.verdict,
                "exit_code": self.exit_code, "created_at": self.run.created_at.isoformat(),
                "inputs": dict(self.inputs), "criteria": self.criteria.to_dict(),
                "results": [r.to_dict() for r in self.results], "waivers": dict(self.waivers),
                "versions": dict(self.versions), "run": self.run.to_dict()}


def _trace_header(path: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such trace file")
    with open_trace(path, limits=limits) as reader:
        header = reader.header
    return header if isinstance(header, dict) else {}


def _digest_or_none(path: Path | str | None) -> str | None:
    return file_digest(str(path)) if path is not None and os.path.isfile(path) else None


def run_gate(criteria: PhaseCriteria, paths: Sequence[str], *, config_path: Path,
             waivers_path: str | None = None, device: str = "cpu", jobs: int = 1,
             progress: ProgressFactory | None = None,
             limits: Limits = DEFAULT_LIMITS) -> GateResult:
    """Replay ``paths`` through the phase's engines and judge every criterion.

    Raises:
        UsageError, TraceError, WaiverError: a missing or unreadable input (exit 2).
    """
    waivers = load_waivers(waivers_path)
    headers = {path: _trace_header(path, limits) for path in paths}
    options = ReplayOptions(control=criteria.control, candidate=criteria.candidate, device=device,
                            limits=limits)
    run = run_comparison(list(paths), options, waivers_path=waivers_path, jobs=jobs,
                         progress=progress)
    producers = {path: header.get("engine") for path, header in headers.items()}
    digests = {t.trace_path: t.trace_digest for t in run.traces}
    traces = [{"path": path, "digest": digests.get(path), "producer": producers[path],
               "scenario": headers[path].get("scenario", {}).get("name"),
               "captured_at": headers[path].get("created_at")} for path in paths]
    return _judge(criteria, run, waivers, producers, {"traces": traces},
                  config_path=config_path, waivers_path=waivers_path)


def _judge(criteria: PhaseCriteria, run: RunResult, waivers: WaiverSet,
           producers: Mapping[str, str | None], inputs: dict[str, Any], *, config_path: Path,
           waivers_path: str | None) -> GateResult:
    """Evaluate ``run`` and assemble the GateResult with the config's and waivers' digests."""
    waiver_file = waivers_path or (DEFAULT_WAIVERS if DEFAULT_WAIVERS.exists() else None)
    inputs = {**inputs,
              "gate_config": {"path": display_path(config_path), "digest": _digest_or_none(config_path)},
              "waivers": {"path": None if waiver_file is None else display_path(waiver_file),
                          "digest": _digest_or_none(waiver_file)}}
    report = waiver_report(waivers, run)
    report["active"] = [w.id for w in waivers.active]
    return GateResult(criteria=criteria, results=evaluate(criteria, run, waivers, producers),
                      run=run, inputs=inputs, waivers=report, versions=versions())


def run_gate_from_reports(criteria: PhaseCriteria, reports: Sequence[str], *, config_path: Path,
                          waivers_path: str | None = None,
                          allow_absent_traces: bool = False) -> GateResult:
    """Judge saved compare reports (e.g. the shards of a CI matrix) instead of replaying.

    The shards must be one complete set of one comparison; they are merged, their divergences
    re-judged with the current waivers, and every criterion evaluated as after a replay. A report
    is evidence only for the traces it names: each one present is hashed again and must match
    its recorded digest (a report is not authenticated by looking well-formed); traces absent
    from this machine leave the evidence unverified, which is insufficient (exit 3) unless
    ``allow_absent_traces``.

    Raises:
        UsageError: a report that cannot be read, shards of different comparisons, or engines
            other than the phase's.
        EvidenceError: an incomplete or mixed shard set, or a trace whose digest differs.
    """
    runs = [load_run(path) for path in reports]
    merged = merge_runs(runs, list(reports))
    checks = [verify_trace_digests(path, [(t.trace_path, t.trace_digest) for t in run.traces],
                                   allow_absent=True)
              for path, run in zip(reports, runs)]
    absent = [trace for check in checks for trace in check.absent]
    if (merged.control_engine, merged.candidate_engine) != (criteria.control, criteria.candidate):
        raise UsageError(f"{reports[0]}: the report compares {merged.control_engine} vs "
                         f"{merged.candidate_engine}; phase {criteria.phase} gates "
                         f"{criteria.control} vs {criteria.candidate}")
    waivers = load_waivers(waivers_path)
    run = dataclasses.replace(merged, traces=tuple(rejudge_trace(t, waivers.judge, None, None)[0]
                                                  for t in merged.traces))
    producers = {t.trace_path: (_trace_header(t.trace_path).get("engine")
                                if os.path.isfile(t.trace_path) else None) for t in run.traces}
    inputs = {
        "reports": [{"path": display_path(path), "digest": _digest_or_none(path)} for path in reports],
        "traces": [{"path": t.trace_path, "digest": t.trace_digest,
                    "producer": producers[t.trace_path]} for t in run.traces],
    }
    result = _judge(criteria, run, waivers, producers, inputs, config_path=config_path,
                    waivers_path=waivers_path)
    verified = sum(check.num_verified for check in checks)
    digests = CriterionResult(
        "trace digests", "every trace present here and matching its recorded digest",
        f"{verified} verified" + (f"; absent: {', '.join(absent[:5])}"
                                  + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
                                  if absent else ""),
        "pass" if not absent else "info" if allow_absent_traces else "insufficient")
    return dataclasses.replace(result, results=result.results + (digests,))


def default_signoff_path(phase: int) -> Path:
    return Path("reports") / f"signoff-phase{phase}.json"


def judge_phase(phase: int, items: Sequence[str], *, config: str | None, waivers: str | None,
                device: str = "cpu", jobs: int = 1, from_reports: Sequence[str] = (),
                progress: ProgressFactory | None = None,
                limits: Limits = DEFAULT_LIMITS, allow_absent_traces: bool = False) -> GateResult:
    """The gate as the CLI runs it: check the inputs, replay (or read reports), judge.

    Args:
        items: trace files, folders or globs; empty means the bundled traces.
        from_reports: judge these saved compare reports (merged) instead of replaying ``items``.

    Raises:
        UsageError (and the other user errors): bad inputs, before anything is judged.
    """
    config_path = Path(config) if config else DEFAULT_GATE_CONFIG
    phases = load_gate_config(config_path)
    if phase not in phases:
        raise UsageError(f"--phase {phase}: {config_path} defines phases {sorted(phases)}")
    if jobs < 1:
        raise UsageError(f"--jobs: expected a positive integer, got {jobs}")
    if from_reports:
        if items:
            raise UsageError("--from-report: give saved reports or traces, not both")
        return run_gate_from_reports(phases[phase], list(from_reports), config_path=config_path,
                                     waivers_path=waivers,
                                     allow_absent_traces=allow_absent_traces)
    items = list(items) or [str(DEFAULT_TRACE_DIR)]
    for item in items:
        if not os.path.exists(item) and not any(ch in item for ch in "*?["):
            raise UsageError(f"{item}: no such trace file or folder")
    paths = [display_path(p) for p in expand_traces(items)]
    return run_gate(phases[phase], paths, config_path=config_path, waivers_path=waivers,
                    device=device, jobs=jobs, progress=progress, limits=limits)
