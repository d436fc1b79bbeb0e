"""Reading the harness's TOML and JSON inputs (scenarios, waivers, gate criteria, tolerances,
rollout record, reports) and decoding them against a schema, with one-line errors.

One mechanism for every input: :func:`read_toml` / :func:`read_json` turn the file into plain
data (a regular file only, size-capped, strict UTF-8, no NaN in JSON), and :func:`convert`
checks that data against a typed schema (a ``msgspec.Struct``; the typed results use the same
library). Every failure, including the OSError subtypes, UnicodeDecodeError, RecursionError and
OverflowError a hostile file can provoke, becomes the caller's user-error class with a message
naming the file, the field and what was expected.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from typing import Any, TypeVar

import msgspec

from harness.fileio import read_input_bytes
from harness.limits import DEFAULT_LIMITS

__all__ = ["read_toml", "read_json", "convert", "load_toml", "load_json", "field_error"]

T = TypeVar("T")
PathLike = str | os.PathLike[str]


def _text(path: PathLike, error: type[Exception], what: str, max_bytes: int | None) -> str:
    limit = DEFAULT_LIMITS.max_input_file_bytes if max_bytes is None else max_bytes
    data = read_input_bytes(path, what, limit, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{os.fspath(path)}: not valid UTF-8 at byte {exc.start} "
                    f"(the {what} must be UTF-8 text)") from None


def read_toml(path: PathLike, error: type[Exception], what: str, *,
              max_bytes: int | None = None) -> dict[str, Any]:
    """Parse ``path`` as TOML; any problem raises ``error`` in one line naming the file.

    Args:
        error: the caller's user-error class (maps to exit code 2).
        what: how the message names the file, e.g. ``"waiver file"``.
        max_bytes: the size cap (default: ``Limits.max_input_file_bytes``).
    """
    text = _text(path, error, what, max_bytes)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{os.fspath(path)}: not valid TOML ({exc})") from None
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:
        raise error(f"{os.fspath(path)}: the {what} cannot be read as TOML "
                    f"({_reason(exc)})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:32]} does not fit a finite float")
    return value


def read_json(path: PathLike, error: type[Exception], what: str, *,
              max_bytes: int | None = None) -> Any:
    """Parse ``path`` as strict JSON (``NaN``, ``Infinity`` and floats that overflow to it are
    refused); one-line errors."""
    text = _text(path, error, what, max_bytes)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise error(f"{os.fspath(path)}: not valid JSON (line {exc.lineno}, column "
                    f"{exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:
        raise error(f"{os.fspath(path)}: the {what} cannot be read as JSON "
                    f"({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "too large to hold in memory"
    return " ".join(str(exc).split()) or type(exc).__name__


def field_error(exc: msgspec.ValidationError, where: str) -> str:
    """One line ``WHERE: FIELD: expected ...`` from a msgspec validation error."""
    message = " ".join(str(exc).split())
    detail, sep, at = message.rpartition(" - at `")
    if not sep:
        return f"{where}: {message[:1].lower()}{message[1:]}"
    field = at.rstrip("`").removeprefix("$").removeprefix(".")
    if "` in `$" in at:  # a dict key: "key` in `$.phase"
        field = at.split("` in `$", 1)[1].rstrip("`").removeprefix(".") + " key"
    return f"{where}: {field or 'top level'}: {detail[:1].lower()}{detail[1:]}"


def convert(data: Any, schema: type[T], *, error: type[Exception], where: str) -> T:
    """Check plain ``data`` against ``schema`` (a msgspec Struct or type) strictly.

    Wrong types, missing or unknown keys, values out of range and NaN where the schema does
    not allow it raise ``error`` with :func:`field_error`'s one line.
    """
    try:
        return msgspec.convert(data, schema, strict=True)
    except msgspec.ValidationError as exc:
        raise error(field_error(exc, where)) from None
    except (RecursionError, OverflowError) as exc:
        raise error(f"{where}: {_reason(exc)}") from None


def load_toml(path: PathLike, schema: type[T], error: type[Exception], what: str, *,
              max_bytes: int | None = None) -> T:
    """:func:`read_toml` then :func:`convert`: the typed contents of a TOML input."""
    data = read_toml(path, error, what, max_bytes=max_bytes)
    return convert(data, schema, error=error, where=os.fspath(path))


def load_json(path: PathLike, schema: type[T], error: type[Exception], what: str, *,
              max_bytes: int | None = None) -> T:
    """:func:`read_json` then :func:`convert`: the typed contents of a JSON input."""
    data = read_json(path, error, what, max_bytes=max_bytes)
    return convert(data, schema, error=error, where=os.fspath(path))
