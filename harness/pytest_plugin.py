"""pytest plugin: ``pytest --kv-traces DIR`` makes each trace a test item.

Each ``*.kvtrace`` under the given files or folders becomes one item (marked ``kvtrace``, so
``-m kvtrace`` runs only those) that replays the trace through ``--kv-control`` and
``--kv-candidate`` with the waiver file in force, and fails on an unwaived divergence; the
failure shows the trace's console report (summary, timings, divergence panels) as plain text.
Items are built identically in every process, so ``-n N`` (pytest-xdist) spreads them.

Without ``--kv-traces`` the plugin only adds its options and marker. Registered as the
``pytest11`` entry point ``kvmigrate``; ``-p harness.pytest_plugin`` loads it by hand.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

__all__ = ["KvTraceFile", "KvTraceItem", "TraceDivergence"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvmigrate", "kvmigrate trace replay")
    group.addoption("--kv-traces", action="append", default=[], metavar="PATH",
                    help="replay these trace files or folders of *.kvtrace as test items "
                         "(repeatable)")
    group.addoption("--kv-control", default="legacy", metavar="ENGINE",
                    help="control engine for --kv-traces (default legacy)")
    group.addoption("--kv-candidate", default="refactored", metavar="ENGINE",
                    help="candidate engine for --kv-traces (default refactored)")
    group.addoption("--kv-waivers", default=None, metavar="FILE",
                    help="waiver file for --kv-traces (default waivers.toml)")
    group.addoption("--kv-threads", type=int, default=1, metavar="N",
                    help="torch intra-op threads while a trace replays (default 1, as the CLI: "
                         "the models are small and extra threads only spin against each other)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kvtrace: a trace replayed by the kvmigrate plugin")
    if config.option.kv_threads < 1:
        raise pytest.UsageError(f"--kv-threads: expected a positive integer, "
                                f"got {config.option.kv_threads}")


class TraceDivergence(Exception):
    """A replayed trace has an unwaived divergence; carries the trace's result."""

    def __init__(self, result: Any) -> None:
        super().__init__(f"{result.trace_path}: {result.num_unwaived_calls} unwaived diverging call(s)")
        self.result = result


class KvTraceItem(pytest.Item):
    """One trace, replayed through control and candidate."""

    def __init__(self, *, trace: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trace = trace
        self.add_marker("kvtrace")

    def runtest(self) -> None:
        import torch

        from harness.replay import ReplayOptions, replay_trace
        from harness.waivers import load_waivers
        options = self.config.option
        waivers = load_waivers(options.kv_waivers)
        replay = ReplayOptions(control=options.kv_control, candidate=options.kv_candidate)
        threads = torch.get_num_threads()
        torch.set_num_threads(options.kv_threads)
        try:
            result = replay_trace(str(self.trace), replay, judge=waivers.judge)
        finally:
            torch.set_num_threads(threads)
        if not result.ok:
            raise TraceDivergence(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        from harness.errors import UserError as USER_ERRORS
        if isinstance(excinfo.value, TraceDivergence):
            return _render(self.config, excinfo.value.result)
        if isinstance(excinfo.value, USER_ERRORS):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.trace, None, f"kvtrace {self.trace.name}"


def _render(config: pytest.Config, result: Any) -> str:
    from harness.report.console import RunReport
    from harness.report.text import render_text
    from harness.results import RunResult
    options = config.option
    run = RunResult(created_at=datetime.now(timezone.utc), control_engine=options.kv_control,
                    candidate_engine=options.kv_candidate, manager_spec=None, tolerances={},
                    traces=(result,))
    return render_text(RunReport(run), width=120)


class KvTraceFile(pytest.File):
    """A ``.kvtrace`` file: one item named after the trace."""

    def collect(self) -> Iterator[KvTraceItem]:
        yield KvTraceItem.from_parent(self, name=self.path.stem, trace=self.path)


def _trace_paths(config: pytest.Config) -> list[Path]:
    paths: list[Path] = []
    for given in config.option.kv_traces:
        path = Path(given)
        if not path.is_absolute():
            path = Path(config.invocation_params.dir) / path
        if path.is_dir():
            paths.extend(sorted(path.glob("*.kvtrace")))
        elif path.exists():
            paths.append(path)
        else:
            raise pytest.UsageError(f"--kv-traces {given}: no such trace file or folder")
    return paths


def _nodeid(config: pytest.Config, path: Path) -> str:
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return path.as_posix()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Append one item per trace, before ``-k``/``-m`` deselection sees the list."""
    if not config.option.kv_traces:
        return
    seen = {item.nodeid for item in items}
    for path in _trace_paths(config):
        node = KvTraceFile.from_parent(session, path=path, nodeid=_nodeid(config, path))
        added = [item for item in node.collect() if item.nodeid not in seen]
        seen.update(item.nodeid for item in added)
        items.extend(added)
        # Report them like any collected file, so counts and --collect-only include them.
        session.ihook.pytest_collectreport(report=pytest.CollectReport(
            nodeid=node.nodeid, outcome="passed", longrepr=None, result=added))
