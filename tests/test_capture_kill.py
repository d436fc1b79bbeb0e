"""A real capture (`python -m harness capture`) killed mid-run leaves a loadable trace prefix."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.calls import call_from_record
from harness.cli import main
from harness.trace import TraceError, open_trace

REPO = Path(__file__).resolve().parents[1]


def _complete_records(partial: Path) -> int:
    """Records a reader sees in a capture still being written (0 before its header exists)."""
    try:
        with open_trace(partial) as reader:
            return reader.num_records
    except (FileNotFoundError, TraceError):  # not created yet, or its header is not written yet
        return 0


def test_a_capture_killed_at_a_random_moment_leaves_a_loadable_prefix(tmp_path, capsys):
    target = tmp_path / "killed.kvtrace"
    partial = Path(f"{target}.partial")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "capture",
                             "scenarios/cartpole_small.toml", "-o", str(target)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _complete_records(partial) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the capture finished before it could be killed"
            time.sleep(0.05)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 0.5))  # a random moment after that
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not target.exists(), "a killed capture must not leave a finished-looking trace"
    with open_trace(partial) as reader:
        assert reader.truncated and "did not finish" in reader.tail_note
        calls = [call_from_record(r.index, r.kind, r.meta, r.arrays) for r in reader]
    assert len(calls) == reader.num_records >= 3 and calls[0].kind == "weights"
    assert main(["compare", str(partial), "--json", str(tmp_path / "prefix.json")]) == 0
    assert "note:" in capsys.readouterr().out
