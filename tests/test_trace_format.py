"""The kvtrace container: round trips, streaming, truncation, corruption, safety, memory.

Crafted files are built here from the layout in docs/trace-format.md with struct, zlib and
xxhash alone, so these tests also pin the documented layout against the implementation.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.trace import codec
from harness.trace import (ALLOWED_DTYPES, FORMAT_VERSION, NotATraceError, TraceCorruptError,
                           TraceError, TraceReader, TraceTruncatedError, TraceVersionError,
                           TraceWriter, iter_records, open_trace)

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADER = {"schema": 1, "engine": "legacy", "config": {"env_num": 2}, "seeds": [0, 1]}


# ------------------------------------------------------------------ factories
def make_trace(path: Path, records, header=HEADER, **writer_kwargs) -> Path:
    with TraceWriter(path, header, **writer_kwargs) as writer:
        for kind, meta, arrays in records:
            writer.append(kind, meta, arrays)
    return path


def sample_records(num_records: int = 5):
    """Varied records: arrays of several dtypes, no arrays, a compressible block."""
    records = []
    for i in range(num_records):
        arrays = {"latent": np.full((2, 4), i, np.float32), "actions": np.array([i, -1], np.int64)}
        if i % 3 == 1:
            arrays = {}
        if i % 3 == 2:
            arrays["weights"] = np.zeros((64,), np.float16)
        records.append(("recurrent", {"i": i, "key": 2**64 - 1 - i}, arrays))
    return records


def bits(array: np.ndarray) -> bytes:
    return array.tobytes()


def record_offsets(path: Path) -> tuple[list[int], int, int]:
    """(record frame offsets, end-of-trace frame offset, header frame end) of a finished trace."""
    data = path.read_bytes()
    offsets = [record.offset for record in iter_records(path)]
    (end_offset,) = struct.unpack("<Q", data[-16:-8])
    header_end = offsets[0] if offsets else end_offset
    return offsets, end_offset, header_end


# The documented layout, written independently of harness.trace.codec.
def spec_preamble(major: int = 1, minor: int = 0) -> bytes:
    body = b"\x89KVT\r\n\x1a\n" + struct.pack("<HH", major, minor)
    return body + struct.pack("<I", zlib.crc32(body))


def spec_frame(kind: bytes, payload: bytes) -> bytes:
    body = struct.pack("<cBHIIQ", kind, 0, 0, len(payload), len(payload),
                       xxhash.xxh64_intdigest(payload))
    return body + struct.pack("<I", zlib.crc32(body)) + payload


def spec_record(doc_text: bytes, blocks: list[bytes] = ()) -> bytes:
    def padded(data: bytes, used: int) -> bytes:
        return data + bytes(-used % 8)
    out = padded(struct.pack("<I", len(doc_text)) + doc_text, 4 + len(doc_text))
    for block in blocks:
        out += padded(block, len(block))
    return out


def spec_file(path: Path, record_payloads: list[bytes], num_records: int | None = None,
              preamble: bytes | None = None) -> Path:
    data = (preamble or spec_preamble()) + spec_frame(b"H", json.dumps(HEADER).encode())
    for payload in record_payloads:
        data += spec_frame(b"R", payload)
    end_offset = len(data)
    count = len(record_payloads) if num_records is None else num_records
    data += spec_frame(b"E", json.dumps({"num_records": count}).encode())
    path.write_bytes(data + struct.pack("<Q", end_offset) + b"\x89KVTEND\n")
    return path


def spec_array_record(name: str, dtype: str, shape: list[int], block: bytes,
                      nbytes: int | None = None) -> bytes:
    desc = {"name": name, "dtype": dtype, "shape": shape,
            "nbytes": len(block) if nbytes is None else nbytes}
    doc = json.dumps({"kind": "root", "meta": {}, "arrays": [desc]}).encode()
    return spec_record(doc, [block])


# ------------------------------------------------------------------ round trips
def extreme_arrays() -> dict[str, np.ndarray]:
    nan_payloads = np.array([0x7FC00001, 0xFFC12345, 0x7F800001, 0x80000000], np.uint32)
    return {
        "f16": np.array([np.nan, -0.0, np.inf, 6.1e-5, 65504], np.float16),
        "f32_nan_payloads": nan_payloads.view(np.float32),
        "f64_nan_payload": np.array([0x7FF8DEADBEEF0001, 0x8000000000000000], np.uint64).view(np.float64),
        "f64_subnormal": np.array([5e-324, -np.inf]),
        "i8": np.array([-128, 127], np.int8),
        "i16": np.array([-32768, 32767], np.int16),
        "i32": np.array([-2**31, 2**31 - 1], np.int32),
        "i64": np.array([-2**63, 2**63 - 1], np.int64),
        "u8": np.array([0, 255], np.uint8),
        "u64": np.array([0, 2**64 - 1], np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "scalar_0d": np.array(np.float32(-0.0)),
        "empty": np.zeros((0, 3), np.float32),
        "empty_3d": np.zeros((2, 0, 5), np.uint64),
        "transposed": np.arange(12, dtype=np.int32).reshape(3, 4).T,
        "strided": np.arange(20, dtype=np.float64)[::3],
    }


def test_every_allowed_dtype_round_trips_bit_exactly(tmp_path):
    arrays = extreme_arrays()
    assert {np.dtype(a.dtype).newbyteorder("<").str for a in arrays.values()} == set(ALLOWED_DTYPES)
    path = make_trace(tmp_path / "a.kvtrace", [("root", {}, arrays)])

    (record,) = iter_records(path)

    assert list(record.arrays) == list(arrays)
    for name, expected in arrays.items():
        got = record.arrays[name]
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape), name
        assert bits(got) == bits(expected), name


def test_big_endian_arrays_read_back_little_endian_with_the_same_bits(tmp_path):
    big = np.array([0x7FC00001, 1], ">u4").view(">f4")
    path = make_trace(tmp_path / "a.kvtrace", [("root", {}, {"x": big, "k": np.array([2**64 - 1], ">u8")})])

    (record,) = iter_records(path)

    assert record.arrays["x"].dtype == np.dtype("<f4")
    assert record.arrays["x"].view("<u4").tolist() == [0x7FC00001, 1]
    assert record.arrays["k"].tolist() == [2**64 - 1]


def test_arrays_read_back_writable(tmp_path):
    path = make_trace(tmp_path / "a.kvtrace", [("root", {}, {"x": np.zeros(3, np.float32)})])
    (record,) = iter_records(path)
    record.arrays["x"][0] = 1.0
    assert record.arrays["x"].tolist() == [1.0, 0.0, 0.0]


def test_meta_round_trips_big_ints_signed_zero_and_non_finite_floats(tmp_path):
    meta = {"keys": [2**64 - 1, 0, -2**63], "neg_zero": -0.0, "nan": math.nan, "inf": -math.inf,
            "tiny": 5e-324, "third": 1 / 3, "text": "ünïcode \ud800 \n", "none": None, "flag": True,
            "nested": {"a": [[], {}, [1, [2.5]]]}, "np_key": np.uint64(2**64 - 1),
            "np_float": np.float32(0.1), "np_bool": np.bool_(False), "tuple": (1, 2)}
    path = make_trace(tmp_path / "a.kvtrace", [("root", meta, {})])

    (record,) = iter_records(path)

    got = record.meta
    assert got["keys"] == [2**64 - 1, 0, -2**63] and type(got["keys"][0]) is int
    assert math.copysign(1.0, got["neg_zero"]) == -1.0
    assert math.isnan(got["nan"]) and got["inf"] == -math.inf and got["tiny"] == 5e-324
    assert got["third"] == 1 / 3 and got["text"] == "ünïcode \ud800 \n"
    assert (got["none"], got["flag"], got["nested"]) == (None, True, {"a": [[], {}, [1, [2.5]]]})
    assert (got["np_key"], got["np_float"], got["np_bool"]) == (2**64 - 1, float(np.float32(0.1)), False)
    assert type(got["np_key"]) is int and type(got["np_bool"]) is bool
    assert got["tuple"] == [1, 2]


json_leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
               | st.floats(allow_nan=False) | st.text(max_size=8))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_any_json_meta_round_trips_exactly(tmp_path, meta):
    path = make_trace(tmp_path / "h.kvtrace", [("root", meta, {})])
    (record,) = iter_records(path)
    assert json.dumps(record.meta) == json.dumps(meta)  # also tells -0.0 from 0.0


@pytest.mark.parametrize("kind, meta, arrays, message", [
    ("root", {1: "x"}, {}, "meta: key 1 is a int, expected str"),
    ("root", {"a": [0, 2**64]}, {}, "meta['a'][1]: int 18446744073709551616 is outside"),
    ("root", {"a": {"b": {1, 2}}}, {}, "meta['a']['b']: set is not JSON data"),
    ("root", {"a": b"raw"}, {}, "meta['a']: bytes is not JSON data"),
    ("root", [("a", 1)], {}, "meta: expected a dict, got list"),
    ("root", {}, {"x": np.zeros(2, np.uint32)}, "arrays['x']: dtype uint32 is not allowed"),
    ("root", {}, {"x": np.zeros(2, np.complex64)}, "arrays['x']: dtype complex64 is not allowed"),
    ("root", {}, {"x": np.array([object()])}, "arrays['x']: dtype object is not allowed"),
    ("root", {}, {"x": [1.0, 2.0]}, "arrays['x']: expected a plain numpy.ndarray, got builtins.list"),
    ("root", {}, {"x": np.ma.masked_array([1.0])}, "expected a plain numpy.ndarray, got numpy.ma"),
    ("root", {}, {7: np.zeros(1)}, "arrays: names must be non-empty str, got 7"),
    ("", {}, {}, "kind: expected a non-empty str, got ''"),
])
def test_writer_rejects_what_would_not_round_trip_and_writes_nothing(tmp_path, kind, meta, arrays,
                                                                     message):
    path = tmp_path / "a.kvtrace"
    with TraceWriter(path, HEADER) as writer:
        writer.append("clear", {"n": 0})
        with pytest.raises((TypeError, ValueError)) as excinfo:
            writer.append(kind, meta, arrays)
        writer.append("clear", {"n": 1})

    assert message in str(excinfo.value)
    assert [r.meta["n"] for r in iter_records(path)] == [0, 1]


def test_an_oversized_record_is_refused_without_breaking_the_compressed_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(codec, "_MAX_RAW_LEN", 4096)
    path = tmp_path / "a.kvtrace"
    with TraceWriter(path, HEADER) as writer:
        writer.append("root", {"i": 0}, {"x": np.ones(16, np.float32)})
        with pytest.raises(ValueError, match="exceeds the 4096-byte limit"):
            writer.append("root", {"i": 1}, {"x": np.ones(2048, np.float32)})
        writer.append("root", {"i": 2}, {"x": np.ones(16, np.float32)})

    assert [r.meta["i"] for r in iter_records(path)] == [0, 2]


def test_writer_rejects_a_header_that_is_not_json_before_creating_any_file(tmp_path):
    with pytest.raises(TypeError, match=r"header\['device'\]: object is not JSON data"):
        TraceWriter(tmp_path / "a.kvtrace", {"device": object()})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ streaming
def test_streamed_records_read_back_in_order_with_header_and_footer(tmp_path):
    path = tmp_path / "a.kvtrace"
    with TraceWriter(path, HEADER) as writer:
        for i in range(3000):
            assert writer.append("recurrent", {"i": i}, {"latent": np.full(4, i, np.float32)}) == i
        assert not path.exists()

    reader = open_trace(path)
    records = list(reader)

    assert (reader.header, reader.footer, reader.num_records) == (HEADER, {"num_records": 3000}, 3000)
    assert (reader.format_version, reader.truncated, reader.tail_note) == (FORMAT_VERSION, False, None)
    assert [r.index for r in records] == [r.meta["i"] for r in records] == list(range(3000))
    assert all(r.arrays["latent"].tolist() == [r.index] * 4 for r in records)
    assert [r.offset for r in records] == sorted({r.offset for r in records})
    assert [r.index for r in reader] == list(range(3000))  # iteration repeats
    reader.close()


def test_stream_compression_shrinks_repetitive_records_and_level_zero_stores_raw(tmp_path):
    records = [("recurrent", {"i": i, "scope": "all"}, {"w": np.zeros(256, np.float32)})
               for i in range(200)]
    packed = make_trace(tmp_path / "packed.kvtrace", records)
    raw = make_trace(tmp_path / "raw.kvtrace", records, compress_level=0)

    assert packed.stat().st_size * 20 < raw.stat().st_size
    assert [r.meta for r in iter_records(packed)] == [r.meta for r in iter_records(raw)]


def test_writer_refuses_to_append_after_close_and_close_is_idempotent(tmp_path):
    writer = TraceWriter(tmp_path / "a.kvtrace", HEADER)
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="cannot append: the writer is closed"):
        writer.append("clear")


# ------------------------------------------------------------------ truncation
def test_every_cut_point_yields_exactly_the_complete_records(tmp_path):
    records = sample_records(5)
    full = make_trace(tmp_path / "full.kvtrace", records)
    data = full.read_bytes()
    offsets, end_offset, header_end = record_offsets(full)
    frame_ends = offsets[1:] + [end_offset]
    cut_path = tmp_path / "cut.kvtrace"

    for cut in range(len(data)):
        cut_path.write_bytes(data[:cut])
        if cut == 0:
            with pytest.raises(NotATraceError):
                open_trace(cut_path)
            continue
        if cut < header_end:
            with pytest.raises(TraceTruncatedError, match="the capture did not") as excinfo:
                open_trace(cut_path)
            assert excinfo.value.frame == (None if cut < 16 else "header"), cut
            continue
        num_complete = sum(end <= cut for end in frame_ends)
        reader = open_trace(cut_path)
        got = list(reader)
        reader.close()
        cut_at = frame_ends[num_complete - 1] if num_complete else header_end
        assert (reader.truncated, reader.num_records, len(got)) == (True, num_complete, num_complete), cut
        assert [r.meta for r in got] == [meta for _, meta, _ in records[:num_complete]], cut
        assert f"at byte offset {cut_at} ({num_complete} complete records" in reader.tail_note, cut
        with pytest.raises(TraceTruncatedError):
            open_trace(cut_path, strict=True)


def test_tail_note_names_the_last_record_the_offset_and_the_dangling_bytes(tmp_path):
    full = make_trace(tmp_path / "full.kvtrace", sample_records(3))
    _, end_offset, _ = record_offsets(full)
    clean, ragged = tmp_path / "clean.kvtrace", tmp_path / "ragged.kvtrace"
    clean.write_bytes(full.read_bytes()[:end_offset])
    ragged.write_bytes(full.read_bytes()[:end_offset + 7])

    assert open_trace(clean).tail_note == (
        f"{clean}: trace is cut after record 2 at byte offset {end_offset} (3 complete records): "
        f"the capture did not finish")
    assert open_trace(ragged).tail_note == (
        f"{ragged}: trace is cut after record 2 at byte offset {end_offset} (3 complete records; "
        f"7 bytes of an unfinished frame follow): the capture did not finish")
    with pytest.raises(TraceTruncatedError) as excinfo:
        open_trace(ragged, strict=True)
    assert str(excinfo.value) == open_trace(ragged).tail_note
    assert excinfo.value.offset == end_offset


def test_exception_in_the_with_block_keeps_the_partial_prefix_and_the_old_trace(tmp_path):
    path = make_trace(tmp_path / "a.kvtrace", sample_records(2))
    before = path.read_bytes()

    with pytest.raises(RuntimeError, match="capture failed"):
        with TraceWriter(path, {"engine": "refactored"}) as writer:
            writer.append("root", {"i": 0})
            writer.append("root", {"i": 1})
            raise RuntimeError("capture failed")

    assert path.read_bytes() == before
    reader = open_trace(writer.partial_path)
    assert (reader.header, reader.truncated) == ({"engine": "refactored"}, True)
    assert [r.meta for r in reader] == [{"i": 0}, {"i": 1}]
    with pytest.raises(ValueError, match="cannot close: the writer is aborted"):
        writer.close()


def test_a_killed_capture_leaves_a_readable_partial_prefix_and_the_old_trace(tmp_path):
    path = make_trace(tmp_path / "a.kvtrace", sample_records(2))
    before = path.read_bytes()
    partial = Path(f"{path}.partial")
    script = textwrap.dedent(f"""
        import numpy as np
        from harness.trace import TraceWriter
        with TraceWriter({str(path)!r}, {{"engine": "killed"}}) as writer:
            i = 0
            while True:
                writer.append("recurrent", {{"i": i}}, {{"latent": np.full((2, 4), i, np.float32)}})
                i += 1
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 20
        while not (partial.exists() and partial.stat().st_size > 4096):
            assert child.poll() is None and time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.005)
        delay = random.uniform(0.0, 0.05)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    assert path.read_bytes() == before
    reader = open_trace(partial)
    records = list(reader)
    assert reader.truncated and len(records) == reader.num_records > 0, delay
    assert [r.meta["i"] for r in records] == list(range(len(records))), delay
    assert all(r.arrays["latent"].tolist() == [[r.index] * 4] * 2 for r in records), delay


# ------------------------------------------------------------------ corruption
def test_every_flipped_byte_is_reported_and_names_its_frame(tmp_path):
    full = make_trace(tmp_path / "full.kvtrace", sample_records(4))
    data = full.read_bytes()
    offsets, end_offset, header_end = record_offsets(full)
    bad = tmp_path / "bad.kvtrace"

    for position in range(len(data)):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        bad.write_bytes(flipped)
        with pytest.raises(TraceError) as excinfo:
            with open_trace(bad) as reader:
                list(reader)
        error = excinfo.value
        if position < 8:
            assert isinstance(error, NotATraceError), position
        elif position < header_end:
            assert isinstance(error, TraceCorruptError), position
        elif position < end_offset:
            index = max(i for i, offset in enumerate(offsets) if offset <= position)
            assert isinstance(error, TraceCorruptError), position
            assert (error.index, error.offset) == (index, offsets[index]), position
            assert f"record {index} at offset {offsets[index]}: " in str(error), position
        else:
            assert isinstance(error, TraceCorruptError) and error.offset == end_offset, position
        assert "\n" not in str(error) and str(error).startswith(f"{bad}: "), position


def test_payload_checksum_error_is_one_line_naming_file_record_and_offset(tmp_path):
    full = make_trace(tmp_path / "a.kvtrace", sample_records(3))
    offsets, _, _ = record_offsets(full)
    data = bytearray(full.read_bytes())
    data[offsets[2] + 30] ^= 0xFF
    full.write_bytes(data)

    reader = open_trace(full)
    seen = []
    with pytest.raises(TraceCorruptError) as excinfo:
        for record in reader:
            seen.append(record.index)

    assert seen == [0, 1]
    assert str(excinfo.value) == (f"{full}: record 2 at offset {offsets[2]}: payload checksum "
                                  f"mismatch (file is corrupt)")


def test_the_documented_layout_reads_back(tmp_path):
    block = np.array([1.5, -0.0], "<f4").tobytes()
    path = spec_file(tmp_path / "spec.kvtrace", [spec_array_record("x", "<f4", [2], block)])

    reader = open_trace(path)
    (record,) = reader

    assert (reader.header, reader.footer) == (HEADER, {"num_records": 1})
    assert (record.kind, record.meta, bits(record.arrays["x"])) == ("root", {}, block)


@pytest.mark.parametrize("payload, message", [
    (spec_record(b'{"kind": "root", "meta": {'), "bad JSON in record metadata"),
    (spec_record(b'["root"]'), "record metadata is a JSON list, expected an object"),
    (spec_record(b'{"kind": "root", "meta": {}}'), "lacks a str 'kind', a dict 'meta' or a list 'arrays'"),
    (spec_array_record("x", "<c8", [1], bytes(8)), "array 'x' has dtype '<c8', expected one of <f2"),
    (spec_array_record("x", "|O", [1], bytes(8)), "array 'x' has dtype '|O'"),
    (spec_array_record("x", "<f4", [2, 2], bytes(16), nbytes=12),
     "array 'x' holds 12 bytes but dtype <f4 and shape [2, 2] need 16"),
    (spec_array_record("x", "<f4", [3], bytes(8)),
     "array 'x' holds 8 bytes but dtype <f4 and shape [3] need 12"),
    (spec_array_record("x", "<f4", [-1], bytes(8)), "array 'x' has shape [-1], expected a list"),
    (spec_array_record("x", "<f4", [2], bytes(8))[:-8] + bytes(16), "account for"),
])
def test_checksummed_bytes_the_format_forbids_are_corrupt(tmp_path, payload, message):
    good = spec_record(b'{"kind":"a","meta":{},"arrays":[]}')
    path = spec_file(tmp_path / "bad.kvtrace", [good, payload])
    offset = len(spec_preamble() + spec_frame(b"H", json.dumps(HEADER).encode()) + spec_frame(b"R", good))

    with pytest.raises(TraceCorruptError) as excinfo:
        list(iter_records(path))

    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(f"{path}: record 1 at offset {offset}: ")
    assert str(excinfo.value).endswith("(file is corrupt)")


@pytest.mark.parametrize("claimed, index, detail", [
    (1, 1, "the end-of-trace at offset {end} does not follow the last record"),
    (3, 2, "expected a record frame here"),
])
def test_an_end_of_trace_count_that_disagrees_with_the_records_is_corrupt(tmp_path, claimed, index,
                                                                          detail):
    payload = spec_record(b'{"kind":"a","meta":{},"arrays":[]}')
    path = spec_file(tmp_path / "count.kvtrace", [payload] * 2, num_records=claimed)
    (end,) = struct.unpack("<Q", path.read_bytes()[-16:-8])
    offset = end - len(spec_frame(b"R", payload)) * (2 - index)

    reader = open_trace(path)
    assert reader.num_records == claimed
    with pytest.raises(TraceCorruptError) as excinfo:
        list(reader)

    assert str(excinfo.value) == (f"{path}: record {index} at offset {offset}: "
                                  f"{detail.format(end=end)} (file is corrupt)")


# ------------------------------------------------------------------ versions and non-traces
def test_a_newer_major_version_is_refused_with_a_clear_message(tmp_path):
    path = spec_file(tmp_path / "v2.kvtrace", [], preamble=spec_preamble(2, 3))
    with pytest.raises(TraceVersionError) as excinfo:
        open_trace(path)
    assert str(excinfo.value) == (f"{path}: format version 2.3 is newer than this reader, "
                                  f"which reads 1.x")


def test_major_version_zero_is_refused_and_a_newer_minor_reads(tmp_path):
    old = spec_file(tmp_path / "v0.kvtrace", [], preamble=spec_preamble(0, 9))
    with pytest.raises(TraceVersionError, match="format version 0.9 is not supported by this reader"):
        open_trace(old)
    newer_minor = spec_file(tmp_path / "v1_7.kvtrace", [], preamble=spec_preamble(1, 7))
    assert open_trace(newer_minor).format_version == (1, 7)


class _Exploit:
    """Unpickling this creates a marker file: proof that a payload would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


def test_a_pickle_payload_is_refused_and_never_unpickled(tmp_path):
    payload = pickle.dumps(_Exploit(tmp_path / "proof"))
    pickle.loads(payload)
    assert (tmp_path / "proof").exists(), "the payload must be live for this test to mean anything"
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.kvtrace"
    path.write_bytes(pickle.dumps(_Exploit(marker)))

    with pytest.raises(NotATraceError, match="looks like a Python pickle, which is never unpickled"):
        open_trace(path)
    with pytest.raises(NotATraceError):
        list(iter_records(path))
    assert not marker.exists()


def test_random_bytes_are_not_a_trace(tmp_path):
    path = tmp_path / "noise.kvtrace"
    path.write_bytes(bytes(range(7, 107)))
    with pytest.raises(NotATraceError) as excinfo:
        open_trace(path)
    assert str(excinfo.value) == (f"{path}: not a kvtrace file: starts with 07 08 09 0a 0b 0c 0d 0e; "
                                  f"expected magic 89 4b 56 54 0d 0a 1a 0a")


@pytest.mark.parametrize("make, detail", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes), expected a kvtrace file"),
    (lambda p: p.mkdir(), "is a directory, expected a kvtrace file"),
    (lambda p: None, "no such file, expected a kvtrace file"),
])
def test_empty_directory_and_missing_paths_are_not_traces(tmp_path, make, detail):
    path = tmp_path / "x.kvtrace"
    make(path)
    with pytest.raises(NotATraceError) as excinfo:
        TraceReader(path)
    assert str(excinfo.value) == f"{path}: {detail}"


def test_trace_errors_keep_their_fields_across_a_process_boundary():
    error = TraceCorruptError("a.kvtrace", "payload checksum mismatch", "record", 12, 4096)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.index, copy.offset) == (
        TraceCorruptError, "a.kvtrace: record 12 at offset 4096: payload checksum mismatch", 12, 4096)


# ------------------------------------------------------------------ memory
def test_reading_20k_records_keeps_memory_flat(tmp_path):
    path = tmp_path / "long.kvtrace"
    with TraceWriter(path, HEADER) as writer:
        latent = np.zeros((2, 16), np.float32)
        for i in range(20_000):
            writer.append("recurrent", {"i": i}, {"latent": latent})

    tracemalloc.start()
    try:
        total = sum(record.meta["i"] for record in iter_records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == sum(range(20_000))
    assert peak < 2**20, f"peak {peak} bytes while reading 20k records"
