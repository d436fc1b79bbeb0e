"""The one exception hierarchy a trace reader raises; every message is a single line.

A message names the file, then the frame (``record 12 at offset 4096``) where there is one,
then what was wrong and what was expected. The CLI maps any :class:`TraceError` to exit code 2.
"""

from __future__ import annotations

from harness.errors import UserError

__all__ = ["TraceError", "NotATraceError", "TraceVersionError", "TraceCorruptError",
           "TraceTruncatedError", "TraceLimitError"]


class TraceError(UserError):
    """A trace file that cannot be read as asked; ``str(err)`` is one readable line.

    Attributes:
        path: the file as the caller named it.
        detail: what was wrong, without the location prefix.
        frame: ``"header"``, ``"record"`` or ``"end-of-trace"``, or None for file-level errors.
        index: the record index for a record frame, else None.
        offset: the byte offset of the frame (or of the cut), else None.
    """

    def __init__(self, path: str, detail: str, frame: str | None = None,
                 index: int | None = None, offset: int | None = None) -> None:
        self.path = str(path)
        self.detail = detail
        self.frame = frame
        self.index = index
        self.offset = offset
        super().__init__(_one_line(f"{self.path}: {_location(frame, index, offset)}{detail}"))

    def __reduce__(self):
        return type(self), (self.path, self.detail, self.frame, self.index, self.offset)


class NotATraceError(TraceError):
    """Missing, empty, a directory, or not starting with the kvtrace magic (never deserialised)."""


class TraceVersionError(TraceError):
    """A format major version this reader does not read (newer, or older than 1)."""


class TraceCorruptError(TraceError):
    """Bytes that fail a checksum, or checksummed bytes the format does not allow."""


class TraceTruncatedError(TraceError):
    """The file ends before its end-of-trace: always raised when even the header is cut,
    and for a cut after the header only when the reader is strict."""


class TraceLimitError(TraceError):
    """A frame, header or array that declares more than the reader's limits allow; refused
    before its bytes are read or anything is allocated (see harness/limits.py)."""


def _location(frame: str | None, index: int | None, offset: int | None) -> str:
    if frame is None:
        return ""
    name = f"{frame} {index}" if index is not None else frame
    return f"{name} at offset {offset}: " if offset is not None else f"{name}: "


def _one_line(message: str) -> str:
    return " ".join(message.splitlines())
