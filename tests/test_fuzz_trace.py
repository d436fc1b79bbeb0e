"""Property-based fuzzing of the trace reader, on a fixed small budget (CI runs it).

Whatever bytes a file holds, reading it either yields records or raises a :class:`TraceError`
with a one-line message; nothing else escapes, nothing hangs, and no frame is read past the
limits. Mutations are applied to real traces, and crafted frames carry valid checksums so the
fuzzer reaches the decoders behind them.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.limits import DEFAULT_LIMITS
from harness.trace import TraceError, TraceReader, TraceWriter, codec

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SMALL_LIMITS = DEFAULT_LIMITS.replace(max_frame_bytes=1 << 16, max_header_bytes=1 << 12,
                                      max_arrays_per_record=8, max_array_ndim=4)


def valid_trace(path: Path) -> bytes:
    with TraceWriter(path, {"schema": 1, "config": {"env_num": 2}}) as writer:
        for index in range(4):
            writer.append("recurrent", {"i": index, "events": [{"op": "store"}]},
                          {"latent": np.full((2, 3), index, np.float32),
                           "actions": np.arange(index, dtype=np.int64)})
    return path.read_bytes()


def read_all(path: Path) -> int:
    """Read every record; return the count, or raise a one-line TraceError."""
    try:
        with TraceReader(path, limits=SMALL_LIMITS) as reader:
            return sum(1 for _ in reader)
    except TraceError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return -1


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 64)),
)


@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_any_mutation_of_a_real_trace_reads_or_fails_as_a_trace_error(tmp_path, mutations):
    path = tmp_path / "t.kvtrace"
    data = bytearray(valid_trace(path))
    for op, position, value in mutations:
        at = position % (len(data) + 1)
        if op == "flip" and at < len(data):
            data[at] ^= value
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "delete":
            del data[at:at + value]
    path.write_bytes(bytes(data))
    assert read_all(path) in (-1, 0, 1, 2, 3, 4)


def checksummed(kind: bytes, flags: int, stored: bytes, raw_len: int) -> bytes:
    body = struct.pack("<cBHIIQ", kind, flags, 0, len(stored), raw_len,
                       xxhash.xxh64_intdigest(stored))
    return body + struct.pack("<I", zlib.crc32(body)) + stored


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12)
descriptor = st.fixed_dictionaries({
    "name": st.one_of(st.text(max_size=4), st.integers()),
    "dtype": st.sampled_from(["<f4", "<i8", "|u1", "|b1", ">f4", "|O", "<c8", 5]),
    "shape": st.one_of(st.lists(st.integers(-2, 2**33), max_size=6), json_values),
    "nbytes": st.one_of(st.integers(-8, 2**34), json_values)})


@FUZZ
@given(kind=st.sampled_from([b"H", b"R", b"E", b"X"]), flags=st.integers(0, 3),
       meta=json_values, descs=st.lists(descriptor, max_size=3),
       blocks=st.binary(max_size=64), declared=st.integers(0, 2**32 - 1),
       deflate=st.booleans())
def test_crafted_frames_with_valid_checksums_fail_only_as_trace_errors(tmp_path, kind, flags, meta,
                                                                       descs, blocks, declared,
                                                                       deflate):
    text = json.dumps({"kind": "root", "meta": meta, "arrays": descs}).encode()
    payload = struct.pack("<I", len(text)) + text + bytes(-(4 + len(text)) % 8) + blocks
    stored = zlib.compressobj(6, zlib.DEFLATED, -15).compress(payload) if deflate else payload
    raw_len = declared if deflate else len(stored)
    header = checksummed(b"H", 0, b'{"schema":1}', 12)
    body = codec.encode_preamble() + header + checksummed(kind, flags, stored, raw_len)
    end = checksummed(b"E", 0, b'{"num_records":1}', 17)
    path = tmp_path / "c.kvtrace"
    path.write_bytes(body + end + struct.pack("<Q8s", len(body), codec.END_MAGIC))
    assert read_all(path) in (-1, 1)


@FUZZ
@given(header=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_any_json_header_round_trips_or_is_refused_by_the_writer(tmp_path, header):
    path = tmp_path / "h.kvtrace"
    path.unlink(missing_ok=True)
    try:
        with TraceWriter(path, header):
            pass
    except (TypeError, ValueError):
        assert not path.exists()
        return
    with TraceReader(path) as reader:
        assert json.dumps(reader.header, sort_keys=True) == json.dumps(
            json.loads(json.dumps(header)), sort_keys=True)
