"""``python -m harness``: capture, inspect and compare traces, and the rollout tools.

The CLI layer: argparse and printing only, on top of the harness libraries; nothing in the
harness imports it. Exit codes (:mod:`harness.exit_codes`): 0 equivalent / pass, 1 divergence or
criteria unmet, 2 bad input or usage, 3 insufficient evidence. User errors print one line on
stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from harness import exit_codes
from harness.cli.parser import build_parser
from harness.errors import UserError
from unizero.backends import BackendError
from unizero.config import ConfigError
from unizero.world_model import InputError

__all__ = ["main", "build_parser", "USER_ERRORS"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, BackendError, ConfigError, InputError,
    OSError, UnicodeDecodeError, RecursionError, OverflowError)
"""What the CLI reports as bad input (one line, exit 2) rather than as a crash."""


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    from harness.cli import commands, phases
    return {"capture": commands.cmd_capture, "inspect": commands.cmd_inspect,
            "compare": commands.cmd_compare, "merge": commands.cmd_merge,
            "rejudge": commands.cmd_rejudge,
            "live": commands.cmd_live, "gate": phases.cmd_gate,
            "rollout": phases.cmd_rollout, "mutate": phases.cmd_mutate,
            "minimize": phases.cmd_minimize}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "input nested too deeply to read (recursion limit)"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except SystemExit as exc:  # --help
        return exit_codes.BAD_INPUT if exc.code not in (0, None) else exit_codes.OK
    _configure_logging(args.verbose)
    if args.threads < 1:
        print(f"error: --threads: expected a positive integer, got {args.threads}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    import torch
    torch.set_num_threads(args.threads)
    try:
        return _commands()[args.command](args)
    except USER_ERRORS as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
