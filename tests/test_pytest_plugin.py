"""The pytest plugin (``--kv-traces``) and the guide's ``python tests/compare_old_new_cache.py``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness.cli import main

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "cartpole_pool_pressure.toml"

FAULTY_MODULE = '''
from refactored.kv_cache_manager import KVCacheManager
from refactored.world_model import RefactoredWorldModel


class NoRecurrentFallback(KVCacheManager):
    def hierarchical_get(self, env_id, cache_key):
        entry = self.get_init_cache(env_id, cache_key)
        return (entry, "root") if entry is not None else (None, None)


def faulty(config, device="cpu"):
    return RefactoredWorldModel(config, device, manager_cls=NoRecurrentFallback)
'''


def plugin_args() -> list[str]:
    """Load the plugin by hand unless its ``pytest11`` entry point is installed."""
    installed = metadata.entry_points(group="pytest11", name="kvmigrate")
    return [] if installed else ["-p", "harness.pytest_plugin"]


@pytest.fixture(scope="session")
def short_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin-traces") / "pool_pressure.kvtrace"
    assert main(["capture", str(SCENARIO), "-o", str(path), "--steps", "2"]) == 0
    return path


@pytest.fixture
def traces(pytester, short_trace) -> Path:
    folder = pytester.path / "traces"
    folder.mkdir()
    for name in ("first", "second"):
        shutil.copy(short_trace, folder / f"{name}.kvtrace")
    (pytester.path / "no_waivers.toml").write_text("")
    return folder


def test_plugin_is_inert_without_kv_traces(pytester, traces):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest(*plugin_args(), "-q")
    result.assert_outcomes(passed=1)


def test_each_trace_becomes_one_passing_item(pytester, traces):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest(*plugin_args(), f"--kv-traces={traces}", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["traces/first.kvtrace::first PASSED*",
                                 "traces/second.kvtrace::second PASSED*"])


def test_marker_selects_only_the_trace_items(pytester, traces):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest(*plugin_args(), f"--kv-traces={traces / 'first.kvtrace'}",
                                "-m", "kvtrace")
    result.assert_outcomes(passed=1, deselected=1)


def test_a_diverging_trace_fails_with_the_rendered_report(pytester, traces):
    pytester.makepyfile(faulty_wm=FAULTY_MODULE)
    pytester.syspathinsert()
    result = pytester.runpytest(*plugin_args(), f"--kv-traces={traces / 'first.kvtrace'}",
                                "--kv-candidate=faulty_wm:faulty", "--kv-waivers=no_waivers.toml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kvmigrate compare: control legacy vs candidate faulty_wm:faulty*",
                                 "*FIRST both divergence, call * (recurrent)*",
                                 "*cache decisions: env *",
                                 "DIVERGED: * unwaived diverging call(s) in 1 trace(s)"])
    assert "Traceback" not in result.stdout.str() and "\x1b[" not in result.stdout.str()


def test_an_unreadable_trace_fails_with_one_line(pytester, traces):
    (traces / "broken.kvtrace").write_text("not a trace")
    result = pytester.runpytest(*plugin_args(), f"--kv-traces={traces}")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*TraceError: *broken.kvtrace: not a kvtrace file*"])


def test_a_missing_trace_path_is_a_usage_error(pytester):
    result = pytester.runpytest(*plugin_args(), "--kv-traces=nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kv-traces nowhere: no such trace file or folder*"])


def test_trace_items_spread_over_xdist_workers(pytester, traces):
    result = pytester.runpytest_subprocess(*plugin_args(), f"--kv-traces={traces}", "-n", "2",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_guides_compare_command_prints_the_report_and_exits_like_compare(tmp_path, short_trace):
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "compare_old_new_cache.py"),
                           str(short_trace), "--json", str(tmp_path / "compare.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "EQUIVALENT: 1 trace(s), 23 calls, 0 waived divergence(s)" in done.stdout
    assert (tmp_path / "compare.json").exists()
