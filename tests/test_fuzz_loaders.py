"""Property-based fuzzing of every TOML/JSON loader and the glob matcher (fixed small budget).

Whatever a configuration or record file holds, its loader returns typed data or raises the
caller's user-error class with one line; nothing else escapes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.globmatch import compile_glob
from harness.limits import LimitError, parse_limit_option
from harness.schemas import (GatePhaseTable, RolloutFile, ToleranceFile, WaiverFile,
                             load_gate_file, load_rollout_file, load_tolerance_file,
                             load_waiver_file)
from harness.tomlfile import convert, read_json, read_toml
from harness.waivers import WaiverError, load_waivers

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


class UserError(ValueError):
    """The caller's user-error class."""


def one_line(exc: Exception) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


# ------------------------------------------------------------------ bytes -> readers
toml_fragments = st.sampled_from([
    "[phase.1]\n", "[[waiver]]\n", "[[history]]\n", "[paths]\n", 'id = "a"\n', "x = nan\n",
    "expires = 2027-01-01\n", "calls = [1, 2]\n", "a = [[[[1]]]]\n", "n = 99999999999999999999\n",
    'k."²" = 1\n', "d = 1979-05-27T07:32:00Z\n", "s = '''\n", "b = true\n", "= 1\n", "\xff",
    "cap = inf\n", 'schema = "kvmigrate.rollout/1"\n', "phase = 1\n", "t = {a = 1, b = [1]}\n"])


@FUZZ
@given(pieces=st.lists(st.one_of(toml_fragments, st.text(max_size=12)), max_size=12),
       junk=st.binary(max_size=16))
def test_read_toml_and_every_toml_loader_return_data_or_one_user_error(tmp_path, pieces, junk):
    path = tmp_path / "input.toml"
    path.write_bytes("".join(pieces).encode("utf-8", "surrogatepass") + junk)
    for load in (lambda: read_toml(path, UserError, "input"),
                 lambda: load_gate_file(path, UserError),
                 lambda: load_rollout_file(path, UserError),
                 lambda: load_tolerance_file(path, UserError),
                 lambda: load_waiver_file(path, UserError)):
        try:
            load()
        except UserError as exc:
            one_line(exc)
    try:
        load_waivers(path)
    except WaiverError as exc:
        one_line(exc)


@FUZZ
@given(data=st.binary(max_size=64) | st.text(max_size=64).map(str.encode)
       | st.sampled_from([b"1e400", b"[-1e999]", b'{"a": 1E+309}', b"NaN", b"[Infinity]"]))
def test_read_json_returns_data_or_one_user_error(tmp_path, data):
    path = tmp_path / "input.json"
    path.write_bytes(data)
    try:
        value = read_json(path, UserError, "report")
    except UserError as exc:
        one_line(exc)
        return
    assert json.loads(json.dumps(value, allow_nan=False)) == value


# ------------------------------------------------------------------ data -> schemas
toml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
    | st.dates() | st.datetimes() | st.sampled_from(["decision", "advance", "equal", "*", "1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "reason", "expires", "cap", "calls", "class", "phase", "history",
                         "schema", "action", "from_phase", "to_phase", "paths", "nan", "rtol",
                         "atol", "name", "min_traces", "waiver", "1", "x"]), inner, max_size=5),
    max_leaves=16)


@FUZZ
@given(data=toml_values)
def test_every_schema_converts_or_raises_one_user_error(data):
    for schema in (WaiverFile, RolloutFile, ToleranceFile, GatePhaseTable):
        try:
            value = convert(data, schema, error=UserError, where="f.toml")
        except UserError as exc:
            one_line(exc)
            assert str(exc).startswith("f.toml: ")
            continue
        assert isinstance(value, schema)


@FUZZ
@given(cap=st.floats(), expires=st.dates(), calls=st.tuples(st.integers(-5, 5), st.integers(-5, 5)))
def test_a_converted_waiver_never_holds_a_nan_cap_or_negative_calls(cap, expires, calls):
    entry = {"id": "w", "reason": "r", "expires": expires, "cap": cap, "calls": list(calls)}
    try:
        document = convert({"waiver": [entry]}, WaiverFile, error=UserError, where="w.toml")
    except UserError:
        assert not (math.isfinite(cap) and cap >= 0) or min(calls) < 0
        return
    (waiver,) = document.waiver
    assert math.isfinite(waiver.cap) and waiver.cap >= 0 and min(waiver.calls) >= 0
    assert isinstance(waiver.expires, dt.date)


# ------------------------------------------------------------------ globs and options
def reference_regex(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(pattern=st.text(alphabet="ab*?.[", max_size=8), text=st.text(alphabet="ab.[", max_size=10))
def test_the_linear_glob_matcher_agrees_with_the_backtracking_regex(pattern, text):
    expected = reference_regex(pattern).fullmatch(text) is not None
    assert compile_glob(pattern).fullmatch(text) is expected


@FUZZ
@given(text=st.text(max_size=30))
def test_a_limit_option_parses_or_is_one_line(text):
    try:
        limits = parse_limit_option(text)
    except LimitError as exc:
        one_line(exc)
        return
    name = text.partition("=")[0].strip()
    assert getattr(limits, name) >= 1


@pytest.mark.parametrize("pattern, text, expected", [
    ("*", "", True), ("", "", True), ("", "a", False), ("a*", "a", True), ("*a", "ba", True),
    ("k[env?]", "k[env3]", True), ("*.kv.*", "x.kv.layer0", True), ("a*b*c", "acb", False),
    ("*??*", "a", False), ("a**b", "ab", True),
])
def test_glob_edge_cases(pattern, text, expected):
    assert compile_glob(pattern).fullmatch(text) is expected
