"""Forged evidence: reports whose digests do not match, absent traces, broken shard sets."""

from __future__ import annotations

import os
import time

import pytest

from harness.fileio import file_digest
from harness.results import ShardInfo
from harness.evidence import (EvidenceError, check_shard_set,
                              shard_set_id, verify_trace_digests)


def make_traces(tmp_path, count=2):
    paths = []
    for index in range(count):
        path = tmp_path / f"t{index}.kvtrace"
        path.write_bytes(bytes([index]) * 100)
        paths.append(path)
    return paths


def test_a_report_with_matching_digests_verifies(tmp_path):
    paths = make_traces(tmp_path)
    check = verify_trace_digests("r.json", [(str(p), file_digest(p)) for p in paths])
    assert (check.num_verified, check.absent) == (2, ())


def test_a_hand_written_report_of_zero_digests_is_refused(tmp_path):
    (trace, _) = make_traces(tmp_path)
    with pytest.raises(EvidenceError) as excinfo:
        verify_trace_digests("r.json", [(str(trace), "sha256:" + "0" * 64)])
    assert str(excinfo.value) == (f"r.json: trace {trace}: the report records digest "
                                  f"'sha256:{'0' * 64}' but the file's is {file_digest(trace)!r}")


def test_a_report_whose_traces_are_absent_is_insufficient_unless_allowed(tmp_path):
    traces = [("gone/a.kvtrace", "sha256:" + "0" * 64), ("gone/b.kvtrace", None)]
    with pytest.raises(EvidenceError, match="none of its 2 traces is present"):
        verify_trace_digests("r.json", traces, base=tmp_path)
    check = verify_trace_digests("r.json", traces, base=tmp_path, allow_absent=True)
    assert check == type(check)(0, ("gone/a.kvtrace", "gone/b.kvtrace"))
    with pytest.raises(EvidenceError, match="names no trace"):
        verify_trace_digests("r.json", [], allow_absent=True)


def test_a_fifo_named_as_a_trace_is_refused_without_hashing(tmp_path):
    fifo = tmp_path / "t.kvtrace"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(EvidenceError, match="is a FIFO"):
        verify_trace_digests("r.json", [(str(fifo), "sha256:00")])
    assert time.perf_counter() - start < 2.0


def labels(count, indices, set_id=None):
    set_id = set_id or shard_set_id(["a", "b", "c"])
    return [(f"shard{k}.json", ShardInfo(k - 1, count, set_id)) for k in indices]


def test_a_complete_shard_set_passes_and_an_unsharded_report_stands_alone():
    check_shard_set(labels(3, [2, 1, 3]))
    check_shard_set([("run.json", None)])


@pytest.mark.parametrize("shards, fragment", [
    (labels(2, [1]), "shard1.json: an incomplete shard set: missing 2/2"),
    (labels(2, [1, 1, 2]), "shard1.json: shard 1/2 also comes from shard1.json"),
    (labels(2, [1]) + labels(2, [2], set_id="sha256:other"), "a mixed set"),
    (labels(2, [1]) + labels(3, [2]), "a mixed set"),
    (labels(2, [1, 2]) + [("plain.json", None)], "plain.json: records no shard K/N"),
    ([("a.json", None), ("b.json", None)], "b.json: several unsharded reports"),
])
def test_an_incomplete_or_mixed_shard_set_is_refused(shards, fragment):
    with pytest.raises(EvidenceError) as excinfo:
        check_shard_set(shards)
    assert fragment in str(excinfo.value)


def test_shard_labels_are_bounded_and_the_set_id_ignores_order():
    with pytest.raises(ValueError, match="expected 0 <= index < count"):
        ShardInfo(3, 2, "x")
    assert shard_set_id(["b", "a"]) == shard_set_id(["a", "b"]) != shard_set_id(["a"])


def test_checking_20k_shards_is_linear():
    shards = labels(20_000, range(1, 20_001))
    start = time.perf_counter()
    check_shard_set(shards)
    assert time.perf_counter() - start < 5.0  # ~0.07 s; a quadratic check takes minutes
