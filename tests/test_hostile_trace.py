"""Hostile traces: every size a file declares is refused before it is read or allocated.

Each file is built the way an attacker would: with VALID checksums (CRC32 and XXH64 are
integrity checks, not authentication), so only the limits stand between it and the machine.
Each refusal is one line, takes well under a second, and allocates a few MiB at most.
"""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import xxhash

from harness.limits import DEFAULT_LIMITS, LimitError, Limits, config_from_header
from harness.trace import (NotATraceError, TraceCorruptError, TraceError, TraceLimitError,
                           TraceReader, TraceWriter, codec)
from unizero.config import ConfigError, WorldModelConfig

_MiB = 2**20
_GiB = 2**30
# A refusal takes milliseconds (docs/security.md); the bound leaves room for tracemalloc and a
# loaded two-core CI machine while still failing any reader that reads or inflates the bomb.
MAX_SECONDS = 1.0
MAX_PEAK_BYTES = 16 * _MiB


# ------------------------------------------------------------------ the attacker's tools
def frame(kind: bytes, stored: bytes, *, flags: int = 0, raw_len: int | None = None) -> bytes:
    """A frame head with valid CRC32 and XXH64 over ``stored``, then ``stored``."""
    raw_len = len(stored) if raw_len is None else raw_len
    body = struct.pack("<cBHIIQ", kind, flags, 0, len(stored), raw_len, xxhash.xxh64_intdigest(stored))
    return body + struct.pack("<I", zlib.crc32(body)) + stored


def preamble() -> bytes:
    body = codec.MAGIC + struct.pack("<HH", *codec.FORMAT_VERSION)
    return body + struct.pack("<I", zlib.crc32(body))


def header_frame(header: dict) -> bytes:
    return frame(codec.HEADER, json.dumps(header).encode())


def finish(path: Path, parts: list[bytes], num_records: int) -> Path:
    """Write ``parts`` then a valid end-of-trace and trailer."""
    body = b"".join(parts)
    end = frame(codec.END, json.dumps({"num_records": num_records}).encode())
    path.write_bytes(body + end + struct.pack("<Q8s", len(body), codec.END_MAGIC))
    return path


def record_payload(descs: list[dict], blocks: bytes = b"") -> bytes:
    text = json.dumps({"kind": "root", "meta": {}, "arrays": descs}).encode()
    head = struct.pack("<I", len(text)) + text
    return head + bytes(-len(head) % 8) + blocks


def zeros_deflate(prefix: bytes, num_mib: int) -> bytes:
    """A real raw DEFLATE stream of ``prefix`` then ``num_mib`` MiB of zeros, built from one
    compressed MiB repeated (a full flush makes each copy independent): ~1 KiB per MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    one_mib = packer.compress(bytes(_MiB)) + packer.flush(zlib.Z_FULL_FLUSH)
    return start + one_mib * num_mib + b"\x03\x00"  # an empty final fixed-Huffman block


def refuse(path: Path, error: type[Exception], *, limits: Limits = DEFAULT_LIMITS) -> str:
    """Open and read ``path``; assert it is refused fast, at flat memory, in one line."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error) as excinfo:
            with TraceReader(path, limits=limits) as reader:
                for _ in reader:
                    pass
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(excinfo.value)
    assert seconds < MAX_SECONDS, f"refusing took {seconds:.3f} s"
    assert peak < MAX_PEAK_BYTES, f"refusing allocated {peak} bytes at peak"
    assert "\n" not in message and message.startswith(str(path))
    return message


# ------------------------------------------------------------------ frame and payload sizes
def test_a_record_frame_declaring_more_than_the_cap_is_refused_before_it_is_read(tmp_path):
    # A sparse file: a record frame that really holds 600 MiB of zeros (checksummed), costing
    # no disk. v0.1 read all 600 MiB to verify the checksum; the head alone now refuses it.
    size = 600 * _MiB
    stored_hash = xxhash.xxh64()
    chunk = bytes(8 * _MiB)
    for _ in range(size // len(chunk)):
        stored_hash.update(chunk)
    assert size % len(chunk) == 0
    body = struct.pack("<cBHIIQ", codec.RECORD, 0, 0, size, size, stored_hash.intdigest())
    head = body + struct.pack("<I", zlib.crc32(body))
    path = tmp_path / "big.kvtrace"
    start = preamble() + header_frame({"schema": 1})
    with open(path, "wb") as handle:
        handle.write(start + head)
        handle.seek(len(start) + len(head) + size)
        end = frame(codec.END, b'{"num_records":1}')
        handle.write(end + struct.pack("<Q8s", len(start) + len(head) + size, codec.END_MAGIC))
    message = refuse(path, TraceLimitError)
    assert f"record 0 at offset {len(start)}: the frame declares {size} payload bytes, over the " \
           f"limit max_frame_bytes = {512 * _MiB}" in message


def test_a_small_compressed_record_inflating_to_a_gib_is_refused_before_inflating(tmp_path):
    descs = [{"name": "bomb", "dtype": "<f4", "shape": [_GiB // 4], "nbytes": _GiB}]
    prefix = record_payload(descs)
    stored = zeros_deflate(prefix, 1024)
    assert len(stored) < 2 * _MiB  # the whole bomb is about 1 MiB on disk
    assert zlib.decompressobj(-15).decompress(stored, len(prefix)) == prefix  # a real stream
    raw_len = len(prefix) + _GiB
    path = finish(tmp_path / "bomb.kvtrace",
                  [preamble(), header_frame({"schema": 1}),
                   frame(codec.RECORD, stored, flags=codec.FLAG_DEFLATE, raw_len=raw_len)], 1)
    message = refuse(path, TraceLimitError)
    assert f"declares {raw_len} payload bytes, over the limit max_frame_bytes" in message


def test_a_raised_frame_limit_reads_a_record_the_default_refuses(tmp_path):
    array = np.arange(300_000, dtype=np.float32)
    path = tmp_path / "ok.kvtrace"
    with TraceWriter(path, {"schema": 1}) as writer:
        writer.append("weights", {}, {"w": array})
    refuse(path, TraceLimitError, limits=DEFAULT_LIMITS.replace(max_frame_bytes=_MiB))
    with TraceReader(path, limits=DEFAULT_LIMITS.replace(max_frame_bytes=2 * _MiB)) as reader:
        (record,) = list(reader)
    assert np.array_equal(record.arrays["w"], array)


def test_an_inflation_claim_beyond_what_deflate_can_reach_is_corrupt(tmp_path):
    stored = zlib.compress(b"x" * 64)[2:-4]
    path = finish(tmp_path / "ratio.kvtrace",
                  [preamble(), header_frame({"schema": 1}),
                   frame(codec.RECORD, stored, flags=codec.FLAG_DEFLATE, raw_len=10 * _MiB)], 1)
    message = refuse(path, TraceCorruptError)
    assert "DEFLATE payload declares 10485760 bytes, more than DEFLATE can expand to" in message


def test_a_header_frame_over_its_cap_is_refused(tmp_path):
    header = {"schema": 1, "notes": "x" * (5 * _MiB)}
    path = finish(tmp_path / "header.kvtrace", [preamble(), header_frame(header)], 0)
    message = refuse(path, TraceLimitError)
    assert "header at offset 16: the frame declares" in message
    assert "over the limit max_header_bytes = 4194304" in message


# ------------------------------------------------------------------ array descriptors
@pytest.mark.parametrize("descs, blocks, detail", [
    ([{"name": "a", "dtype": "<f4", "shape": [1] * 17, "nbytes": 4}], bytes(8),
     "array 'a' has shape '17-d', expected a list of at most 16 ints"),
    ([{"name": "a", "dtype": "<f4", "shape": [2**40, 2**40], "nbytes": 8}], bytes(8),
     "array 'a' has shape [1099511627776, 1099511627776], expected a list of at most 16 ints "
     "in [0, 2147483648]"),
    ([{"name": "a", "dtype": "<f4", "shape": [2**20], "nbytes": 4 * 2**20}], bytes(8),
     "array 'a' needs bytes"),
    ([{"name": "a", "dtype": "<f4", "shape": [4], "nbytes": 8}], bytes(16),
     "array 'a' holds 8 bytes but dtype <f4 and shape [4] need 16"),
    ([{"name": "a", "dtype": "|O", "shape": [1], "nbytes": 8}], bytes(8),
     "array 'a' has dtype '|O', expected one of"),
    ([{"name": f"a{i}", "dtype": "|u1", "shape": [0], "nbytes": 0} for i in range(4097)], b"",
     "record declares 4097 arrays, over the limit max_arrays_per_record = 4096"),
])
def test_array_descriptors_are_bounded_and_consistent_before_any_array_exists(tmp_path, descs,
                                                                               blocks, detail):
    payload = record_payload(descs, blocks)
    path = finish(tmp_path / "arrays.kvtrace",
                  [preamble(), header_frame({"schema": 1}), frame(codec.RECORD, payload)], 1)
    message = refuse(path, TraceCorruptError)
    assert detail in message


# ------------------------------------------------------------------ header configs
def write_header_trace(path: Path, config: dict) -> Path:
    with TraceWriter(path, {"schema": 1, "config": config}):
        pass
    return path


@pytest.mark.parametrize("fields, detail", [
    ({"embed_dim": 4096, "num_layers": 16, "num_heads": 8},
     "header.config.embed_dim: 4096 is over the limit max_embed_dim = 2048"),
    ({"embed_dim": 2048, "num_layers": 48, "num_heads": 8},
     "header.config: the model's estimated parameter count: "),
    ({"max_tokens": 10**12},
     "header.config.max_tokens: expected a positive integer <= 2147483647, got 1000000000000"),
    ({"max_tokens": 10**6},
     "header.config.max_tokens: 1000000 is over the limit max_tokens = 8192"),
    ({"env_num": 10**6}, "header.config.env_num: 1000000 is over the limit max_env_num = 1024"),
    ({"recur_pool_size_override": 10**8},
     "header.config.recur_pool_size: 100000000 is over the limit max_pool_slots = 1000000"),
    ({"num_layers": 40, "max_tokens": 8192, "context_length": 8192, "embed_dim": 512},
     "header.config: the estimated bytes of one KV pool slot: 1342177280 is over the limit "
     "max_kv_slot_bytes = 67108864"),
    ({"env_num": 1024, "game_segment_length": 100_000},
     "header.config: the KV pools' estimated bytes: "),
    ({"weight_seed": 2**63}, "header.config.weight_seed: expected an integer in [0, 2**63 - 1]"),
    ({"init_std": float("nan")}, "header.config.init_std: expected a finite positive float"),
    ({"zero_init_heads": "yes"}, "header.config.zero_init_heads: expected true or false"),
])
def test_a_header_config_beyond_the_limits_is_refused_before_any_model_is_built(tmp_path, fields,
                                                                                 detail):
    path = write_header_trace(tmp_path / "model.kvtrace", fields)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with TraceReader(path) as reader, pytest.raises(ConfigError) as excinfo:
            config_from_header(reader.header, str(path))
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < MAX_SECONDS and peak < MAX_PEAK_BYTES
    assert str(excinfo.value).startswith(f"{path}: header.config")
    assert detail in str(excinfo.value)


def test_an_atari_size_config_passes_the_default_limits(tmp_path):
    atari = dict(obs_dim=12288, action_space_size=18, embed_dim=768, num_layers=12, num_heads=8,
                 context_length=200, max_tokens=400, env_num=8, num_simulations=50,
                 game_segment_length=400, encoder_hidden=1024, support_size=300)
    path = write_header_trace(tmp_path / "atari.kvtrace", atari)
    with TraceReader(path) as reader:
        config = config_from_header(reader.header, str(path))
    assert config == WorldModelConfig(**atari)


def test_the_recorded_cache_manager_class_is_provenance_and_never_imported(tmp_path):
    marker = tmp_path / "ran"
    module = tmp_path / "evil_cache_manager.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\nclass Manager: pass\n")
    path = write_header_trace(tmp_path / "evil.kvtrace",
                              {"cache_manager_class": "evil_cache_manager:Manager"})
    with TraceReader(path) as reader:
        config = config_from_header(reader.header, str(path))
    assert config.cache_manager_class == "evil_cache_manager:Manager"
    assert not marker.exists()


def test_a_limit_error_names_how_to_raise_it():
    with pytest.raises(LimitError) as excinfo:
        DEFAULT_LIMITS.check("max_env_num", 2000, "s.toml: [env].env_num")
    assert str(excinfo.value) == ("s.toml: [env].env_num: 2000 is over the limit max_env_num = 1024 "
                                  "(raise it with --limit max_env_num=2000 if the input is trusted)")


# ------------------------------------------------------------------ what is not a file
def test_a_fifo_given_as_a_trace_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.kvtrace"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(NotATraceError) as excinfo:
        TraceReader(fifo)
    assert time.perf_counter() - start < MAX_SECONDS
    assert str(excinfo.value) == f"{fifo}: is a FIFO (named pipe), expected a kvtrace file"


def test_a_symlink_loop_and_a_device_are_not_traces(tmp_path):
    loop = tmp_path / "loop.kvtrace"
    loop.symlink_to(loop)
    with pytest.raises(NotATraceError, match="cannot read the kvtrace file"):
        TraceReader(loop)
    with pytest.raises(NotATraceError, match="is a character device, expected a kvtrace file"):
        TraceReader("/dev/zero")
    assert issubclass(NotATraceError, TraceError)


def test_an_end_of_trace_frame_declaring_a_large_footer_is_corrupt(tmp_path):
    body = preamble() + header_frame({"schema": 1})
    end = frame(codec.END, b'{"num_records":0}' + b" " * 8192)
    path = tmp_path / "footer.kvtrace"
    path.write_bytes(body + end + struct.pack("<Q8s", len(body), codec.END_MAGIC))
    message = refuse(path, TraceCorruptError)
    assert "end-of-trace" in message and "expected at most 4096" in message
