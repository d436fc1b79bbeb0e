"""Hostile TOML and JSON inputs: every one is refused in one line naming the file and field.

Covers the shared readers (harness/tomlfile.py), the typed schemas (harness/schemas.py) of the
waiver file, rollout record, gate config and tolerance file, and the waiver loader end to end,
plus the CLI's exit code for a hostile tolerance file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.globmatch import compile_glob
from harness.schemas import (ToleranceFile, load_gate_file, load_rollout_file,
                             load_tolerance_file, load_waiver_file)
from harness.tomlfile import convert, load_json, read_json, read_toml
from harness.waivers import WaiverError, load_waivers

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / "scenarios" / "traces" / "cartpole_zero_init.kvtrace"


class UserError(ValueError):
    """Stands in for a command's user-error class."""


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def one_line(excinfo: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ------------------------------------------------------------------ the readers
DEEP_TOML = "a = " + "[" * 100_000 + "]" * 100_000 + "\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("reader, name, data, fragments", [
    (read_toml, "bad.toml", b"a = \"\xff\xfe\"\n", ("not valid UTF-8 at byte 5",)),
    (read_json, "bad.json", b'{"a": "\xc3"}', ("not valid UTF-8 at byte 7",)),
    (read_toml, "deep.toml", DEEP_TOML, ("cannot be read as TOML (nested too deeply)",)),
    (read_json, "deep.json", DEEP_JSON, ("cannot be read as JSON (nested too deeply)",)),
    (read_toml, "big.toml", "a = " + "9" * 5000 + "\n", ("not valid TOML", "cannot be read")),
    (read_json, "big.json", "[" + "9" * 5000 + "]", ("cannot be read as JSON", "digits")),
    (read_json, "nan.json", '{"x": NaN}', ("cannot be read as JSON (NaN is not a JSON number)",)),
    (read_json, "inf.json", '{"x": -Infinity}', ("-Infinity is not a JSON number",)),
    (read_json, "huge.json", '{"x": 1e400}', ("1e400 does not fit a finite float",)),
    (read_toml, "syntax.toml", "x = = 1\n", ("not valid TOML (",)),
    (read_json, "syntax.json", "{", ("not valid JSON (line 1, column 2",)),
])
def test_malformed_text_is_one_line_naming_the_file(tmp_path, reader, name, data, fragments):
    path = write(tmp_path, name, data)
    with pytest.raises(UserError) as excinfo:
        reader(path, UserError, "input")
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert any(fragment in message for fragment in fragments), message


@pytest.mark.parametrize("reader", [read_toml, read_json])
def test_a_fifo_a_directory_and_a_symlink_loop_are_refused_at_once(tmp_path, reader):
    fifo, loop = tmp_path / "pipe", tmp_path / "loop"
    os.mkfifo(fifo)
    loop.symlink_to(loop)
    start = time.perf_counter()
    for path, fragment in ((fifo, "is a FIFO (named pipe), expected a waiver file"),
                           (tmp_path, "is a directory, expected a waiver file"),
                           (loop, "cannot read the waiver file ("),
                           (tmp_path / "none", "no such waiver file")):
        with pytest.raises(UserError) as excinfo:
            reader(path, UserError, "waiver file")
        one_line(excinfo, path, fragment)
    assert time.perf_counter() - start < 2.0


def test_an_input_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path, "big.toml", "x = 1\n" * 1000)
    with pytest.raises(UserError) as excinfo:
        read_toml(path, UserError, "gate config", max_bytes=1000)
    one_line(excinfo, path, "the gate config is 6000 bytes, over the limit max_input_file_bytes = 1000")


# ------------------------------------------------------------------ the schemas
@pytest.mark.parametrize("loader, text, fragments", [
    (load_waiver_file, "waiver = [1, 2]\n", ("waiver[0]: expected `object`, got `int`",)),
    (load_waiver_file, 'waiver = "all"\n', ("waiver: expected `array`, got `str`",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01\ncap = nan\n',
     ("waiver[0].cap: expected `float` >= 0.0",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01T00:00:00\n',
     ("waiver[0].expires: expected `date`, got `datetime`",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01\nclass = "all"\n',
     ("waiver[0].class: invalid enum value 'all'",)),
    (load_waiver_file, '[[waiver]]\nid = 7\nreason = "r"\nexpires = 2027-01-01\n',
     ("waiver[0].id: expected `str`, got `int`",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01\ncalls = [-1, 3]\n',
     ("waiver[0].calls[0]: expected `int` >= 0",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nexpires = 2027-01-01\n',
     ("waiver[0]: object missing required field `reason`",)),
    (load_waiver_file, '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01\nscope = 1\n',
     ("waiver[0]: object contains unknown field `scope`",)),
    (load_rollout_file, 'schema = "kvmigrate.rollout/1"\nphase = 0\nhistory = 5\n',
     ("history: expected `array`, got `int`",)),
    (load_rollout_file, 'schema = "kvmigrate.rollout/1"\nphase = 1\n[[history]]\naction = "advance"\n'
                  'from_phase = "0"\nto_phase = 1\ndate = "d"\nreason = "r"\n',
     ("history[0].from_phase: expected `int`, got `str`",)),
    (load_rollout_file, 'schema = "kvmigrate.rollout/1"\nphase = -1\n', ("phase: expected `int` >= 0",)),
    (load_rollout_file, 'schema = "other"\nphase = 0\n', ("schema: invalid enum value 'other'",)),
    (load_gate_file, '[phase."²"]\nname = "x"\n', ("phase key: expected `str` matching regex '^[0-9]{1,2}$'",)),
    (load_gate_file, '[phase.1]\nname = "x"\ncontrol = "legacy"\ncandidate = "refactored"\n'
               'min_traces = 0\nmin_calls = 1\nrequired_paths = []\n',
     ("[phase.1]: min_traces: expected `int` >= 1",)),
    (load_gate_file, '[phase.1]\nname = "x"\ncontrol = "legacy"\ncandidate = "refactored"\n'
               'min_traces = 1\nmin_calls = 1\nrequired_paths = []\nmin_speedup = inf\n',
     ("[phase.1]: min_speedup: expected `float` <= 1e+300",)),
    (load_gate_file, '[phase.1]\nname = "x"\n',
     ("[phase.1]: object missing required field `control`",)),
    (load_tolerance_file, 'nan = "ignore"\n', ("nan: invalid enum value 'ignore'",)),
    (load_tolerance_file, '[paths]\nlatent = 5\n', ("paths.'latent': expected `str | object | array`, got `int`",)),
    (load_tolerance_file, '[paths]\nlatent = {rtol = 1e-5, atol = -1.0}\n',
     ("paths.'latent': atol: expected `float` >= 0.0",)),
])
def test_every_schema_refuses_wrong_types_and_ranges_naming_the_field(tmp_path, loader, text,
                                                                      fragments):
    path = write(tmp_path, "input.toml", text)
    with pytest.raises(UserError) as excinfo:
        loader(path, UserError)
    one_line(excinfo, path, *fragments)


def test_the_bundled_configuration_files_pass_their_schemas():
    gate = load_gate_file(REPO / "gate.toml", UserError)
    assert sorted(gate) == [1, 2, 3] and gate[3].name == "switch"
    assert load_waiver_file(REPO / "waivers.toml", UserError).waiver == []


def test_a_json_document_is_typed_by_the_same_mechanism(tmp_path):
    path = write(tmp_path, "t.json", '{"nan": "fail", "paths": {"kv.*": [1e-4, 1e-5]}}')
    policy = load_json(path, ToleranceFile, UserError, "tolerance file")
    assert policy.nan == "fail" and policy.paths == {"kv.*": (1e-4, 1e-5)}
    with pytest.raises(UserError, match=r"^here: paths\[\.\.\.\]: expected `array` of length 2, got 1$"):
        convert({"paths": {"kv.*": [1.0]}}, ToleranceFile, error=UserError, where="here")


# ------------------------------------------------------------------ the waiver loader
def test_a_waiver_file_of_wrong_types_is_a_one_line_waiver_error(tmp_path):
    path = write(tmp_path, "waivers.toml", "waiver = [1, 2]\n")
    with pytest.raises(WaiverError) as excinfo:
        load_waivers(path)
    assert str(excinfo.value) == f"{path}: waiver[0]: expected `object`, got `int`"


def test_a_waiver_with_a_reversed_call_range_is_refused(tmp_path):
    path = write(tmp_path, "waivers.toml",
                 '[[waiver]]\nid = "a"\nreason = "r"\nexpires = 2027-01-01\ncalls = [5, 2]\n')
    with pytest.raises(WaiverError) as excinfo:
        load_waivers(path)
    assert str(excinfo.value) == (f"{path}: waiver[0].calls: expected [first, last] with "
                                  f"first <= last, got [5, 2]")


def test_a_valid_waiver_file_loads_into_typed_waivers(tmp_path):
    path = write(tmp_path, "waivers.toml",
                 '[[waiver]]\nid = "q1"\nreason = "quirk 1"\nexpires = 2027-06-30\n'
                 'trace = "*twin*"\nclass = "decision"\ncalls = [3, 9]\ncap = 0.5\n')
    (waiver,) = load_waivers(path, today=dt.date(2027, 1, 1)).waivers
    assert (waiver.id, waiver.divergence_class, waiver.calls, waiver.cap) == ("q1", "decision",
                                                                              (3, 9), 0.5)
    assert waiver.expires == dt.date(2027, 6, 30)


def test_a_backtracking_glob_matches_a_long_path_in_linear_time():
    pattern = compile_glob("*?" * 40 + "x")
    path = "a" * 20_000
    start = time.perf_counter()
    assert not pattern.fullmatch(path)
    assert pattern.fullmatch(path + "x")
    # Microseconds here; the regex this matcher replaced backtracks for minutes.
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------ through the CLI
def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize("data, fragment", [
    (b"nan = \"\xff\"\n", "not valid UTF-8 at byte 7"),
    (DEEP_TOML.encode(), "nested too deeply"),
    (b"[paths]\nlatent = 5\n", "latent"),
])
def test_a_hostile_tolerance_file_exits_2_with_one_line(tmp_path, data, fragment):
    path = write(tmp_path, "tol.toml", data)
    code, err = run_cli("compare", str(TRACE), "--tolerances", str(path))
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert fragment in err and "Traceback" not in err


def test_a_capture_into_a_directory_exits_2_before_capturing(tmp_path):
    scenario = tmp_path / "S.toml"
    scenario.write_bytes((REPO / "scenarios" / "cartpole_small.toml").read_bytes())
    code, err = run_cli("capture", str(scenario), "-o", str(tmp_path))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{tmp_path}: is a directory, expected a file path for the trace" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S.toml"]  # no DIR.partial
