"""Files at the trust boundary: inputs are regular files, outputs never replace inputs.

harness/fileio.py is what each command calls before work starts: a FIFO or device given as an
input is refused without being opened (no hang); an output that is an input of the same run,
a directory, or lies under a regular file is refused before any work; writes are atomic.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

import pytest

from harness.fileio import (InputFileError, OutputFileError, atomic_write_bytes,
                            atomic_write_text, check_input_dir, check_input_file,
                            check_output_path, open_input, read_input_bytes)
from harness.trace import TraceWriter


# ------------------------------------------------------------------ inputs
def test_a_regular_file_opens_and_reads(tmp_path):
    path = tmp_path / "in.toml"
    path.write_bytes(b"x = 1\n")
    with open_input(path, "scenario") as handle:
        assert handle.read() == b"x = 1\n"
    assert read_input_bytes(path, "scenario", 6) == b"x = 1\n"


def test_a_fifo_is_refused_without_blocking_even_with_no_writer(tmp_path):
    fifo = tmp_path / "in.toml"
    os.mkfifo(fifo)
    done = threading.Event()
    outcome = []

    def attempt() -> None:
        try:
            open_input(fifo, "scenario")
        except InputFileError as exc:
            outcome.append(str(exc))
        done.set()

    threading.Thread(target=attempt, daemon=True).start()
    assert done.wait(2.0), "opening a FIFO blocked"
    assert outcome == [f"{fifo}: is a FIFO (named pipe), expected a scenario"]


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "is a directory, expected a report"),
    (lambda p: p.symlink_to(p), "cannot read the report (Too many levels of symbolic links)"),
    (lambda p: None, "no such report"),
    (lambda p: p.symlink_to("/dev/null"), "is a character device, expected a report"),
])
def test_what_is_not_a_regular_file_is_refused_in_one_line(tmp_path, make, fragment):
    path = tmp_path / "run.json"
    make(path)
    start = time.perf_counter()
    with pytest.raises(InputFileError) as excinfo:
        read_input_bytes(path, "report", 100)
    assert time.perf_counter() - start < 2.0
    assert str(excinfo.value) == f"{path}: {fragment}"


def test_a_path_under_a_regular_file_and_a_nul_byte_are_user_errors(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(InputFileError, match="cannot read the trace file .Not a directory."):
        check_input_file(plain / "x.kvtrace", "trace file")
    with pytest.raises(InputFileError, match="not a usable path for the trace file"):
        check_input_file("bad\0name", "trace file")


def test_an_input_folder_must_be_a_directory(tmp_path):
    plain = tmp_path / "traces"
    plain.write_text("x")
    assert check_input_dir(tmp_path, "trace folder").st_mode
    with pytest.raises(InputFileError) as excinfo:
        check_input_dir(plain, "trace folder")
    assert str(excinfo.value) == f"{plain}: is a regular file, expected a trace folder"


def test_an_input_over_its_size_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * 2048)
    with pytest.raises(InputFileError) as excinfo:
        read_input_bytes(path, "report", 1024)
    assert str(excinfo.value) == (f"{path}: the report is 2048 bytes, over the limit "
                                  f"max_input_file_bytes = 1024")


def test_the_caller_chooses_the_error_class(tmp_path):
    class ScenarioError(ValueError):
        pass

    with pytest.raises(ScenarioError, match="no such scenario file"):
        check_input_file(tmp_path / "none.toml", "scenario file", error=ScenarioError)


# ------------------------------------------------------------------ outputs
def test_an_output_that_is_an_input_of_the_same_run_is_refused(tmp_path):
    trace = tmp_path / "X.kvtrace"
    trace.write_bytes(b"trace")
    with pytest.raises(OutputFileError) as excinfo:
        check_output_path(trace, "JSON report", inputs=[trace])
    assert str(excinfo.value) == (f"{trace}: the JSON report would overwrite the input {trace}; "
                                  f"choose another output path")
    assert trace.read_bytes() == b"trace"


def test_an_output_reaching_an_input_through_a_link_or_a_partial_sidecar_is_refused(tmp_path):
    scenario = tmp_path / "S.toml"
    scenario.write_text("name = 's'\n")
    link = tmp_path / "link.toml"
    link.symlink_to(scenario)
    with pytest.raises(OutputFileError, match="would overwrite the input"):
        atomic_write_text(link, "x", inputs=[scenario])
    partial = tmp_path / "S.kvtrace.partial"
    partial.write_bytes(b"old capture")
    with pytest.raises(OutputFileError, match="would overwrite the input"):
        check_output_path(tmp_path / "S.kvtrace", "trace", inputs=[partial])
    assert scenario.read_text() == "name = 's'\n" and partial.read_bytes() == b"old capture"


def test_an_output_that_is_a_directory_or_under_a_file_is_refused_before_work(tmp_path):
    with pytest.raises(OutputFileError) as excinfo:
        check_output_path(tmp_path, "trace")
    assert str(excinfo.value) == f"{tmp_path}: is a directory, expected a file path for the trace"
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(OutputFileError) as excinfo:
        check_output_path(plain / "sub" / "out.json", "JSON report")
    assert str(excinfo.value) == (f"{plain / 'sub' / 'out.json'}: {plain} is not a directory, so "
                                  f"the JSON report cannot be created under it")
    assert not list(tmp_path.glob("*.partial"))


def test_an_atomic_write_creates_folders_and_replaces_the_whole_file(tmp_path):
    out = tmp_path / "reports" / "run.json"
    assert atomic_write_text(out, "first") == out
    atomic_write_bytes(out, b"second")
    assert out.read_bytes() == b"second"
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "run.json"
    out.write_text("old")

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputFileError) as excinfo:
        atomic_write_text(out, "new", what="JSON report")
    assert str(excinfo.value) == f"{out}: cannot write the JSON report (No space left on device)"
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_reading_a_small_input_allocates_about_its_size_not_the_cap(tmp_path):
    path = tmp_path / "in.toml"
    path.write_bytes(b"x = 1\n" * 100)
    tracemalloc.start()
    try:
        assert len(read_input_bytes(path, "scenario", 256 * 2**20)) == 600
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_capture_into_a_directory_or_onto_its_scenario_is_refused_before_it_starts(tmp_path):
    scenario = tmp_path / "S.toml"
    scenario.write_text("name = 's'\n")
    with pytest.raises(OutputFileError, match="is a directory, expected a file path for the trace"):
        TraceWriter(tmp_path, {"schema": 1})
    with pytest.raises(OutputFileError, match="would overwrite the input"):
        TraceWriter(scenario, {"schema": 1}, inputs=[scenario])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S.toml"]
    assert scenario.read_text() == "name = 's'\n"
