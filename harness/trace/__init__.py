"""The kvtrace container: a versioned, checksummed, streaming record file (no pickle).

See docs/trace-format.md for the byte layout, versioning, truncation and error semantics.
"""

from harness.trace.codec import ALLOWED_DTYPES, FORMAT_VERSION
from harness.trace.errors import (NotATraceError, TraceCorruptError, TraceError,
                                  TraceLimitError, TraceTruncatedError, TraceVersionError)
from harness.trace.format import Record, TraceReader, iter_records, open_trace
from harness.trace.writer import TraceWriter

__all__ = ["ALLOWED_DTYPES", "FORMAT_VERSION", "NotATraceError", "Record", "TraceCorruptError",
           "TraceError", "TraceLimitError", "TraceReader", "TraceTruncatedError",
           "TraceVersionError", "TraceWriter", "iter_records", "open_trace"]
