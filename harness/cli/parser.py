"""The command line of ``python -m harness``: argparse only."""

from __future__ import annotations

import argparse

from harness.errors import UsageError

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one ``error:`` line (exit 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _add_limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="raise (or lower) a bound on what input files may declare, e.g. "
                             "max_embed_dim=4096 (docs/security.md lists them); repeatable")


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    _add_limit_option(parser)
    parser.add_argument("--control", default="legacy",
                        help="control engine: legacy, refactored, golden or package.module:Attr")
    parser.add_argument("--candidate", default="refactored", help="candidate engine (same forms)")
    parser.add_argument("--manager",
                        help="package.module:Class replacing the refactored KVCacheManager "
                             "(refactored candidates only)")
    parser.add_argument("--tol", action="append", default=[], metavar="PATH=RTOL,ATOL",
                        help="per-tensor tolerance override (glob on the tensor path); repeatable")
    parser.add_argument("--tolerances", metavar="FILE", help="TOML file of tolerance overrides")
    parser.add_argument("--nan", choices=("equal", "fail"), default=None,
                        help="NaN policy: equal NaNs match (default) or always fail")
    parser.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    parser.add_argument("--device", default="cpu", help="torch device for live engines (cpu, cuda)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="replay traces in N processes")
    parser.add_argument("--shard", metavar="K/N", help="replay only shard K of N (1-based)")
    parser.add_argument("--loop", choices=("open", "closed"), default="open",
                        help="open: feed both engines the recorded inputs (default); closed: feed "
                             "each engine its own earlier output latents, as MCTS does")


def _add_gate_options(parser: argparse.ArgumentParser) -> None:
    _add_limit_option(parser)
    parser.add_argument("--config", metavar="FILE", help="gate criteria (default: gate.toml)")
    parser.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    parser.add_argument("--device", default="cpu", help="torch device for live engines")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="replay traces in N processes")


def _add_capture(sub: argparse._SubParsersAction) -> None:
    capture = sub.add_parser("capture", help="run a scenario and record every imagine call")
    capture.add_argument("scenario", help="scenario TOML file")
    capture.add_argument("-o", "--output", required=True, help="trace file to write")
    capture.add_argument("--engine", default="legacy", help="world model that produces the trace")
    capture.add_argument("--device", default="cpu")
    capture.add_argument("--steps", type=int, help="override the scenario's step count")
    _add_limit_option(capture)
    inspect = sub.add_parser("inspect", help="summarise a trace")
    inspect.add_argument("trace")
    _add_limit_option(inspect)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser("compare", help="replay traces through control and candidate")
    compare.add_argument("traces", nargs="*", help="trace files or folders (default: bundled)")
    _add_compare_options(compare)
    compare.add_argument("--reference", choices=("uncached",),
                         help="also replay every call through the uncached reference (a full "
                              "recompute, no cache); each divergence shows how far each side is "
                              "from it (docs/reference.md)")
    compare.add_argument("--self-check", action="store_true",
                         help="replay the control against a fresh copy of itself")
    compare.add_argument("--json", metavar="PATH", help="JSON report path (default reports/compare.json)")
    compare.add_argument("--markdown", metavar="PATH", help="also write a Markdown summary")
    compare.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report")
    rejudge = sub.add_parser("rejudge", help="re-decide a saved report under new waivers or "
                                             "tolerances, without replaying")
    rejudge.add_argument("report", help="JSON report written by compare")
    rejudge.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    rejudge.add_argument("--tol", action="append", default=[], metavar="PATH=RTOL,ATOL",
                         help="per-tensor tolerance override; repeatable")
    rejudge.add_argument("--tolerances", metavar="FILE", help="TOML file of tolerance overrides")
    rejudge.add_argument("-o", "--output", metavar="PATH", help="write the re-judged JSON report")
    merge = sub.add_parser("merge", help="combine shard JSON reports into one result")
    merge.add_argument("reports", nargs="+", help="JSON reports written by compare --shard K/N")
    merge.add_argument("-o", "--output", default="reports/compare.json", help="merged JSON report")
    merge.add_argument("--markdown", metavar="PATH", help="also write a Markdown summary")
    merge.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report")


def _add_gate(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser("gate", help="judge a rollout phase's criteria (gate.toml); sign-off")
    gate.add_argument("--phase", type=int, required=True, help="the phase to enter: 1, 2 or 3")
    gate.add_argument("traces", nargs="*", help="trace files or folders (default: bundled)")
    _add_gate_options(gate)
    gate.add_argument("--signoff", metavar="PATH",
                      help="sign-off JSON path (default reports/signoff-phaseN.json)")
    gate.add_argument("--from-report", action="append", metavar="REPORT.json",
                      help="judge saved compare reports (e.g. CI shards; repeatable) instead of "
                           "replaying traces")
    gate.add_argument("--allow-absent-traces", action="store_true",
                      help="with --from-report: judge reports whose traces are not on this "
                           "machine (their digests cannot be checked); otherwise that is "
                           "insufficient evidence (exit 3)")
    rollout = sub.add_parser("rollout", help="the rollout record: status, advance, rollback")
    rollout_sub = rollout.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, text in (("status", "current phase and history"),
                       ("advance", "run the next phase's gate; move only when it passes"),
                       ("rollback", "move back a phase, with a reason (no gate)")):
        action = rollout_sub.add_parser(name, help=text)
        action.add_argument("--record", metavar="FILE", help="default reports/rollout.toml")
    advance = rollout_sub.choices["advance"]
    advance.add_argument("traces", nargs="*", help="trace files or folders (default: bundled)")
    advance.add_argument("--reason", help="why now (default: 'gate passed')")
    _add_gate_options(advance)
    rollback = rollout_sub.choices["rollback"]
    rollback.add_argument("--reason", required=True, help="what went wrong")
    rollback.add_argument("--to", type=int, help="phase to return to (default: one back)")


def _add_live_and_mutate(sub: argparse._SubParsersAction) -> None:
    live = sub.add_parser("live", help="run a scenario live with the refactored cache beside legacy "
                                       "(phase 1 shadow / phase 2 validate)")
    live.add_argument("scenario", help="scenario TOML file")
    live.add_argument("--control", default="legacy",
                      help="the world model whose results the run uses: legacy, refactored, "
                           "lightzero:PATH, lightzero-manager:PATH or package.module:Attr")
    live.add_argument("--candidate", default="refactored", help="the world model beside it")
    live.add_argument("--mode", choices=("shadow", "validate"), default="shadow")
    live.add_argument("--overhead-budget", type=float, default=None,
                      help="shadow: switch the candidate off past this overhead ratio")
    live.add_argument("--manager", help="package.module:Class replacing the refactored KVCacheManager")
    live.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    live.add_argument("--steps", type=int, help="override the scenario's step count")
    live.add_argument("--device", default="cpu")
    live.add_argument("--json", default="reports/live.json", help="JSON report path")
    _add_limit_option(live)
    mutate = sub.add_parser("mutate", help="mutation self-test: faulty managers must all be caught")
    mutate.add_argument("traces", nargs="*", help="trace files or folders (default: bundled)")
    mutate.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    mutate.add_argument("--device", default="cpu", help="torch device for live engines")
    _add_limit_option(mutate)


def _add_minimize(sub: argparse._SubParsersAction) -> None:
    minimize = sub.add_parser("minimize", help="reduce a diverging trace to a small one that "
                                               "diverges the same way (and a pytest file)")
    minimize.add_argument("trace", help="a trace that diverges under the engines given")
    minimize.add_argument("-o", "--output", required=True, help="the reduced trace to write")
    minimize.add_argument("--pytest", metavar="PATH",
                          help="also write a self-contained pytest file that replays the reduced "
                               "trace and fails until the bug is fixed")
    minimize.add_argument("--control", default="legacy", help="control engine")
    minimize.add_argument("--candidate", default="refactored", help="candidate engine")
    minimize.add_argument("--manager", help="package.module:Class replacing the refactored "
                                            "KVCacheManager")
    minimize.add_argument("--waivers", metavar="FILE", help="waiver file (default: waivers.toml)")
    minimize.add_argument("--loop", choices=("open", "closed"), default="open")
    minimize.add_argument("--max-replays", type=int, default=400,
                          help="replays at most; then the smallest failing reduction is kept")
    minimize.add_argument("--device", default="cpu")
    _add_limit_option(minimize)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m harness",
                     description="kvmigrate: legacy vs refactored KV cache harness")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the models are small and extra "
                             "threads only spin against each other)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_capture(sub)
    _add_compare(sub)
    _add_gate(sub)
    _add_live_and_mutate(sub)
    _add_minimize(sub)
    return parser
