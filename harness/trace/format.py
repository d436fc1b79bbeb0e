"""Reading trace files: :class:`TraceReader` checks a file's header and end on open and yields
its records one frame at a time (:mod:`harness.trace.writer` writes them).

A reader yields the complete records of a file whose capture was killed and then reports where
it was cut. Every size a frame declares is bounded before it is read. Nothing here ever
unpickles; the byte layout lives in :mod:`harness.trace.codec`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn

import numpy as np

from harness.fileio import open_input
from harness.limits import DEFAULT_LIMITS, Limits
from harness.trace import codec
from harness.trace.errors import (NotATraceError, TraceCorruptError, TraceLimitError,
                                  TraceTruncatedError, TraceVersionError)

__all__ = ["Record", "TraceReader", "open_trace", "iter_records"]

_MAX_FOOTER_BYTES = 4096  # the end-of-trace holds {"num_records": n}
_HINTS = ((b"\x80", "a Python pickle, which is never unpickled"),
          (b"PK\x03\x04", "a zip archive (an .npz or torch.save file?)"),
          (b"\x93NUMPY", "a NumPy .npy file"),
          (b"\x1f\x8b", "a gzip file"))


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back.

    Attributes:
        index: 0-based position among the file's records.
        offset: byte offset of the record's frame in the file.
        kind: what the recorder called it (``root``, ``recurrent``, ...).
        meta: the JSON metadata, exactly as appended (tuples read back as lists).
        arrays: name -> little-endian array with the appended dtype, shape and bits.
    """

    index: int
    offset: int
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class _Cut:
    """Where a file without a complete end-of-trace stops holding whole frames."""

    offset: int
    num_records: int
    num_dangling: int


class TraceReader:
    """Reads a trace lazily: the header and end are checked on open, records on iteration.

    Iterating yields :class:`Record` objects one frame at a time (memory stays flat) and may
    be repeated. Payload checksums are verified as each record is read, so a corrupt record
    raises :class:`TraceCorruptError` after the records before it were yielded.

    Every frame's declared sizes are checked against ``limits`` as its head is read, before
    its payload is read or inflated, and every array descriptor before the array is built, so
    a hostile file is refused at flat memory (:class:`TraceLimitError`).

    Args:
        path: the trace file (a ``.partial`` file of a killed capture reads too); it must be a
            regular file: a FIFO or device is refused without being opened.
        strict: raise :class:`TraceTruncatedError` on open if the end-of-trace is missing.
        limits: the bounds on frame and array sizes (default: :data:`DEFAULT_LIMITS`).

    Attributes:
        header: the dict the writer was given.
        format_version: ``(major, minor)`` from the preamble.
        footer: the end-of-trace dict (``{"num_records": n}``), None when truncated.
        num_records: the records the file holds; when truncated, the whole ones before the cut.
        truncated: True when the file ends before its end-of-trace.
        tail_note: a one-line account of the cut when truncated, else None.

    Raises:
        TraceError: a subclass naming the file, frame and offset (see docs/trace-format.md).
    """

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = False,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = os.fspath(path)
        self.limits = limits
        self._file = _open_file(self.path)
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            self.format_version = self._read_preamble()
            self.header, self._data_start = self._read_header()
            found = self._end_from_trailer() or self._scan()
        except BaseException:
            self._file.close()
            raise
        self._cut = found if isinstance(found, _Cut) else None
        self.footer = None if self._cut else found[0]
        self._end_offset = None if self._cut else found[1]
        self.num_records = self._cut.num_records if self._cut else self.footer["num_records"]
        self.truncated = self._cut is not None
        self.tail_note = f"{self.path}: {self._describe_cut()}" if self._cut else None
        if strict and self._cut:
            self._file.close()
            raise TraceTruncatedError(self.path, self._describe_cut(), offset=self._cut.offset)

    def __iter__(self) -> Iterator[Record]:
        if self._file.closed:
            raise ValueError(f"{self.path}: cannot read records: the reader is closed")
        offset, unpacker = self._data_start, codec.RecordUnpacker()
        for index in range(self.num_records):
            head = self._head(offset, index)
            if head is None or head.kind != codec.RECORD or (
                    self._end_offset is not None and offset + head.size > self._end_offset):
                self._corrupt("expected a record frame here", "record", index, offset)
            payload = self._payload(head, offset, "record", index, unpacker.payload)
            try:
                kind, meta, arrays = codec.decode_record(
                    payload, max_arrays=self.limits.max_arrays_per_record,
                    max_ndim=self.limits.max_array_ndim)
            except codec.PayloadError as exc:
                self._corrupt(str(exc), "record", index, offset)
            yield Record(index, offset, kind, meta, arrays)
            offset += head.size
        if self._end_offset is not None and offset != self._end_offset:
            self._corrupt(f"the end-of-trace at offset {self._end_offset} does not follow the "
                          f"last record", "record", self.num_records, offset)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ open-time checks
    def _read_preamble(self) -> tuple[int, int]:
        data = self._read(0, codec.PREAMBLE.size)
        if not data:
            raise NotATraceError(self.path, "empty file (0 bytes), expected a kvtrace file")
        if not codec.MAGIC.startswith(data[:len(codec.MAGIC)]):
            raise NotATraceError(self.path, _not_magic(data))
        if len(data) < codec.PREAMBLE.size:
            raise TraceTruncatedError(self.path, f"the file ends after {len(data)} of the "
                                      f"{codec.PREAMBLE.size} preamble bytes: the capture did not finish")
        try:
            major, minor = codec.parse_preamble(data)
        except codec.PayloadError as exc:
            self._corrupt(str(exc))
        if major != codec.FORMAT_VERSION[0]:
            newer = "newer than" if major > codec.FORMAT_VERSION[0] else "not supported by"
            raise TraceVersionError(self.path, f"format version {major}.{minor} is {newer} this "
                                    f"reader, which reads {codec.FORMAT_VERSION[0]}.x")
        return major, minor

    def _read_header(self) -> tuple[dict[str, Any], int]:
        offset = codec.PREAMBLE.size
        head = self._head(offset, None, frame="header")
        if head is None or offset + head.size > self._size:
            raise TraceTruncatedError(self.path, "the file ends inside it: the capture did not "
                                      "get past the header", "header", None, offset)
        if head.kind != codec.HEADER:
            self._corrupt(f"frame kind {head.kind!r}, expected the header b'H'", "header", None, offset)
        payload = self._payload(head, offset, "header", None)
        try:
            return codec.decode_json(payload, "header"), offset + head.size
        except codec.PayloadError as exc:
            self._corrupt(str(exc), "header", None, offset)

    def _end_from_trailer(self) -> tuple[dict[str, Any], int] | None:
        """The fast path for a finished file: the trailer points at the end-of-trace frame."""
        if self._size < self._data_start + codec.FRAME_HEAD.size + codec.TRAILER.size:
            return None
        end_offset, magic = codec.TRAILER.unpack(self._read(self._size - codec.TRAILER.size,
                                                            codec.TRAILER.size))
        if magic != codec.END_MAGIC or not self._data_start <= end_offset < self._size:
            return None
        try:
            return self._read_end(end_offset, None), end_offset
        except TraceCorruptError:
            return None  # the scan finds what is really wrong, or where the file is cut

    def _scan(self) -> tuple[dict[str, Any], int] | _Cut:
        """Walk frame heads from the first record to the end-of-trace or the cut."""
        offset, index = self._data_start, 0
        while True:
            head = self._head(offset, index)
            if head is None or offset + head.size > self._size:
                return _Cut(offset, index, self._size - offset)
            if head.kind == codec.END:
                if self._size - offset - head.size < codec.TRAILER.size:
                    return _Cut(offset, index, self._size - offset)
                return self._read_end(offset, index), offset
            if head.kind != codec.RECORD:
                self._corrupt(f"frame kind {head.kind!r}, expected a record b'R' or the "
                              f"end-of-trace b'E'", "record", index, offset)
            offset, index = offset + head.size, index + 1

    def _read_end(self, offset: int, num_records: int | None) -> dict[str, Any]:
        """Verify the end-of-trace frame at ``offset`` and the trailer after it."""
        head = self._head(offset, None, frame="end-of-trace")
        if head is None or head.kind != codec.END:
            self._corrupt("expected the end-of-trace frame b'E'", "end-of-trace", None, offset)
        trailer_at = offset + head.size
        if self._size - trailer_at != codec.TRAILER.size:
            self._corrupt(f"{self._size - trailer_at} bytes follow it, expected the "
                          f"{codec.TRAILER.size}-byte trailer", "end-of-trace", None, offset)
        payload = self._payload(head, offset, "end-of-trace", None)
        try:
            footer = codec.decode_json(payload, "end-of-trace")
        except codec.PayloadError as exc:
            self._corrupt(str(exc), "end-of-trace", None, offset)
        count = footer.get("num_records")
        if type(count) is not int or count < 0 or num_records not in (None, count):
            expected = "an int >= 0" if num_records is None else num_records
            self._corrupt(f"num_records is {count!r}, expected {expected}", "end-of-trace", None, offset)
        pointer, magic = codec.TRAILER.unpack(self._read(trailer_at, codec.TRAILER.size))
        if magic != codec.END_MAGIC or pointer != offset:
            self._corrupt(f"the trailer holds ({pointer}, {magic!r}), expected ({offset}, "
                          f"{codec.END_MAGIC!r})", "end-of-trace", None, offset)
        return footer

    # ------------------------------------------------------------------ frame access
    def _head(self, offset: int, index: int | None, frame: str = "record") -> codec.FrameHead | None:
        """The verified frame head at ``offset``, or None if the file ends inside it."""
        data = self._read(offset, codec.FRAME_HEAD.size)
        if len(data) < codec.FRAME_HEAD.size:
            return None
        try:
            head = codec.parse_head(data)
        except codec.PayloadError as exc:
            self._corrupt(str(exc), frame, index, offset)
        self._check_size(head, index, offset)
        return head

    def _check_size(self, head: codec.FrameHead, index: int | None, offset: int) -> None:
        """Refuse a frame whose declared sizes exceed the limits, before reading its payload."""
        declared = max(head.stored_len, head.raw_len)
        if head.kind == codec.END:
            if declared > _MAX_FOOTER_BYTES:
                self._corrupt(f"the end-of-trace declares {declared} bytes, expected at most "
                              f"{_MAX_FOOTER_BYTES}", "end-of-trace", None, offset)
            return
        name = "max_header_bytes" if head.kind == codec.HEADER else "max_frame_bytes"
        bound = getattr(self.limits, name)
        if declared > bound:
            frame, index = ("header", None) if head.kind == codec.HEADER else ("record", index)
            raise TraceLimitError(self.path, f"the frame declares {declared} payload bytes, over "
                                  f"the limit {name} = {bound} (raise it with --limit "
                                  f"{name}={declared} if the trace is trusted)",
                                  frame, index, offset)

    def _payload(self, head: codec.FrameHead, offset: int, frame: str, index: int | None,
                 unpack: Callable[[codec.FrameHead, bytes], bytes] = codec.unpack_payload) -> bytes:
        stored = self._read(offset + codec.FRAME_HEAD.size, head.stored_len)
        if len(stored) != head.stored_len:
            raise TraceTruncatedError(self.path, "the file ends inside this frame (it changed "
                                      "after it was opened)", frame, index, offset)
        try:
            return unpack(head, stored)
        except codec.PayloadError as exc:
            self._corrupt(str(exc), frame, index, offset)

    def _read(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(max(0, min(size, self._size - offset)))

    def _corrupt(self, detail: str, frame: str | None = None, index: int | None = None,
                 offset: int | None = None) -> NoReturn:
        raise TraceCorruptError(self.path, f"{detail} (file is corrupt)", frame, index, offset)

    def _describe_cut(self) -> str:
        cut = self._cut
        after = f"record {cut.num_records - 1}" if cut.num_records else "the header"
        dangling = (f"; {cut.num_dangling} bytes of an unfinished frame follow"
                    if cut.num_dangling else "")
        return (f"trace is cut after {after} at byte offset {cut.offset} "
                f"({cut.num_records} complete records{dangling}): the capture did not finish")


def open_trace(path: str | os.PathLike[str], *, strict: bool = False,
               limits: Limits = DEFAULT_LIMITS) -> TraceReader:
    """Open a trace for reading; see :class:`TraceReader`."""
    return TraceReader(path, strict=strict, limits=limits)


def iter_records(path: str | os.PathLike[str], *, strict: bool = False,
                 limits: Limits = DEFAULT_LIMITS) -> Iterator[Record]:
    """Yield every record of ``path`` and close it; a cut tail ends the iteration quietly
    unless ``strict``."""
    with TraceReader(path, strict=strict, limits=limits) as reader:
        yield from reader


class _OpenError(Exception):
    """What :func:`open_input` raises here; re-raised as a :class:`NotATraceError`."""


def _open_file(path: str) -> BinaryIO:
    try:
        return open_input(path, "kvtrace file", error=_OpenError)
    except _OpenError as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise NotATraceError(path, detail.replace("no such kvtrace file",
                                                  "no such file, expected a kvtrace file")) from None


def _not_magic(data: bytes) -> str:
    start = data[:len(codec.MAGIC)]
    guess = next((f", looks like {what}" for prefix, what in _HINTS if start.startswith(prefix)), "")
    return (f"not a kvtrace file: starts with {start.hex(' ')}{guess}; expected magic "
            f"{codec.MAGIC.hex(' ')}")
