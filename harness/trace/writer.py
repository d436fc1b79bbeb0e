"""Writing trace files: :class:`TraceWriter` appends records to ``<path>.partial`` and renames it.

A capture flushes each record and renames the file to ``<path>`` only on a clean close, so an
existing trace is never replaced by a failed capture, and a capture killed at any moment leaves a
readable prefix. The byte layout lives in :mod:`harness.trace.codec`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from harness.fileio import check_output_path
from harness.trace import codec

__all__ = ["TraceWriter"]


class TraceWriter:
    """Writes ``<path>.partial`` record by record and renames it to ``path`` on a clean close.

    Use as a context manager: a clean exit finishes the file (end-of-trace + rename); an
    exception leaves the ``.partial`` file as a readable prefix and ``path`` untouched. A stale
    ``.partial`` from an earlier failed capture is overwritten.

    Args:
        path: the finished trace's path; its directory must exist.
        header: JSON-able dict describing the capture (stored as given).
        compress_level: zlib level 1-9 for payloads that shrink, 0 to store all raw.
        inputs: the files the capture reads (its scenario): ``path`` may not replace one.

    Raises:
        OutputFileError: ``path`` is a directory, lies under something that is not a
            directory, or is one of ``inputs``; checked before any file is created.
    """

    def __init__(self, path: str | os.PathLike[str], header: Mapping[str, Any], *,
                 compress_level: int = 6, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        if type(compress_level) is not int or not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level: expected an int in [0, 9], got {compress_level!r}")
        header_frame = codec.encode_frame(codec.HEADER, codec.encode_json(header, "header"),
                                          compress_level)
        check_output_path(path, "trace", inputs=inputs)
        self.path = os.fspath(path)
        self.partial_path = self.path + ".partial"
        self.num_records = 0
        self._packer = codec.RecordPacker(compress_level)
        self._offset = 0
        self._state = "open"
        self._file = open(self.partial_path, "wb")
        self._write(codec.encode_preamble())
        self._write(header_frame)

    def append(self, kind: str, meta: Mapping[str, Any] | None = None,
               arrays: Mapping[str, np.ndarray] | None = None) -> int:
        """Write one record and flush it; return its index.

        Raises:
            TypeError, ValueError: ``kind``, ``meta`` or ``arrays`` would not round-trip
                (nothing is written then).
        """
        self._require_open("append")
        raw = codec.encode_record(kind, {} if meta is None else meta, {} if arrays is None else arrays)
        self._write(self._packer.frame(raw))
        self.num_records += 1
        return self.num_records - 1

    def close(self) -> None:
        """Write the end-of-trace, fsync, and atomically rename onto ``path``. Idempotent."""
        if self._state == "closed":
            return
        self._require_open("close")
        end_offset = self._offset
        footer = codec.encode_json({"num_records": self.num_records}, "footer")
        self._write(codec.encode_frame(codec.END, footer, 0))
        self._write(codec.encode_trailer(end_offset))
        try:
            os.fsync(self._file.fileno())
        except BaseException:
            self.abort()
            raise
        self._file.close()
        self._state = "closed"
        os.replace(self.partial_path, self.path)

    def abort(self) -> None:
        """Stop without finishing: ``.partial`` stays a readable prefix, ``path`` is untouched."""
        if self._state == "open":
            self._file.close()
            self._state = "aborted"

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _require_open(self, action: str) -> None:
        if self._state != "open":
            raise ValueError(f"{self.path}: cannot {action}: the writer is {self._state}")

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
            self._file.flush()
        except BaseException:
            self.abort()
            raise
        self._offset += len(data)
