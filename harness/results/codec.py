"""JSON for the result records, by msgspec: typed, validated, one-line errors.

The records are frozen dataclasses; msgspec encodes them as they are and decodes into them,
checking every field's type and bounds (``Annotated[..., msgspec.Meta(...)]`` on the field).
Two things msgspec does not do for dataclasses are done here: unknown keys are refused (a typo
in a hand-edited report must not pass silently; a second, key-only pass with generated
``forbid_unknown_fields`` Structs), and a failure becomes one :class:`ReportError` line naming
the source, the field path and the value found, e.g.
``reports/x.json: $.traces[0].num_calls: expected int >= 0, got -1``.

JSON has no NaN: a non-finite float where one is allowed (the values at a tensor's worst
index) is kept in memory as :class:`NonFiniteFloat` and written as ``"NaN"``, ``"Infinity"``
or ``"-Infinity"``; everywhere else a float must be finite.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from typing import Any, Literal

import msgspec

from harness.errors import UserError

__all__ = ["ReportError", "NonFiniteFloat", "NonFiniteText", "mark_non_finite",
           "check_finite", "to_builtins", "from_builtins", "decode_json"]

NonFiniteText = Literal["NaN", "Infinity", "-Infinity"]
_TO_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_FROM_TEXT = {text: float(name) for name, text in _TO_TEXT.items()}
_MAX_SHOWN_CHARS = 80
_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class ReportError(UserError):
    """A report (or record) that is not what the schema says; the message is one line."""


class NonFiniteFloat(float):
    """A NaN or infinity that is written to JSON as text (strict JSON has no such number)."""

    __slots__ = ()


def mark_non_finite(value: Any) -> Any:
    """``value`` ready for JSON: non-finite floats (or their text) as :class:`NonFiniteFloat`."""
    if isinstance(value, str):
        if value not in _FROM_TEXT:
            raise ValueError(f"expected a number or one of {sorted(_FROM_TEXT)}, got {value!r}")
        return NonFiniteFloat(_FROM_TEXT[value])
    if isinstance(value, float) and not math.isfinite(value):
        return NonFiniteFloat(value)
    return value


def check_finite(record: str, name: str, value: float | None) -> None:
    """Raise ValueError unless ``value`` is None or a finite float (JSON cannot hold others)."""
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{record}.{name}: expected a finite number, got {value!r}")


def _enc_hook(value: Any) -> Any:
    if isinstance(value, NonFiniteFloat):
        return _TO_TEXT[repr(float(value))]
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to a report")


def to_builtins(record: Any) -> Any:
    """``record`` as JSON-native data (dicts, lists, str, int, float, bool, None)."""
    return msgspec.to_builtins(record, enc_hook=_enc_hook)


def decode_json(data: bytes | str, cls: type, source: str) -> Any:
    """Parse and validate JSON text as a ``cls`` record; :class:`ReportError` names ``source``."""
    try:
        record = msgspec.json.decode(data, type=cls, strict=True)
        msgspec.json.decode(data, type=_key_schema(cls, msgspec.Raw))
        return record
    except msgspec.ValidationError as exc:
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raw = _NOTHING
        raise _error(source, _describe(str(exc), raw)) from None
    except msgspec.DecodeError as exc:
        raise _error(source, f"not JSON ({exc})") from None


def from_builtins(raw: Any, cls: type, source: str) -> Any:
    """Validate JSON-native ``raw`` as a ``cls`` record.

    Raises:
        ReportError: one line: ``source``, the field path (``$.traces[0].num_calls``), what was
            expected and what was found.
    """
    try:
        record = msgspec.convert(raw, type=cls, strict=True)
        msgspec.convert(raw, type=_key_schema(cls, Any))
        return record
    except msgspec.ValidationError as exc:
        raise _error(source, _describe(str(exc), raw)) from None


def _error(source: str, text: str) -> ReportError:
    """One line, whatever the text from the report holds."""
    return ReportError(" ".join(f"{source}: {text}".split()))


def _describe(message: str, raw: Any) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` as ``$.a[0].b: expected int,
    got "5"`` (the value looked up in ``raw``)."""
    text, _, where = message.partition(" - at ")
    path = where.strip("`") or "$"
    text = text.replace("`", "")
    missing = re.fullmatch(r"Object (missing required|contains unknown) field (\S+)", text)
    if missing:
        what = "missing required field" if missing.group(1) == "missing required" else (
            "unknown field")
        return f"{path}.{missing.group(2)}: {what}"
    found = _value_at(raw, path)
    if found is not _NOTHING and text.startswith("Expected"):
        text = text.split(", got ")[0] + f", got {_shown(found)}"
    if text.startswith(("Expected", "Invalid")):  # msgspec's own wording, not a record's
        text = text[:1].lower() + text[1:]
    return f"{path}: {text}"


_NOTHING = object()


def _value_at(raw: Any, path: str) -> Any:
    """The value at a msgspec path in ``raw``; ``_NOTHING`` where the path cannot be followed."""
    value, position = raw, 1
    for step in _PATH_STEP.finditer(path, 1):
        if step.start() != position:
            return _NOTHING
        position = step.end()
        key, index = step.groups()
        try:
            value = value[key] if key is not None else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _NOTHING
    return value if position == len(path) else _NOTHING


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[:_MAX_SHOWN_CHARS - 1] + "…"
    return text


@functools.cache
def _key_schema(cls: type, leaf: Any) -> type:
    """A msgspec Struct that accepts exactly the keys of record ``cls`` (nested records too)
    and refuses others; values that are not records are typed ``leaf`` (``msgspec.Raw`` skips
    parsing them). msgspec ignores unknown keys when it decodes a dataclass; this refuses them."""
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = []
    for field in dataclasses.fields(cls):
        found = _record_in(hints[field.name])
        if found is None:
            fields.append((field.name, leaf, None))
            continue
        inner = _key_schema(found[0], leaf)
        fields.append((field.name, (list[inner] if found[1] else inner) | None, None))
    return msgspec.defstruct(f"{cls.__name__}Keys", fields, forbid_unknown_fields=True)


def _record_in(hint: Any) -> tuple[type, bool] | None:
    """``(record class, many)`` for ``R``, ``R | None`` and ``tuple[R, ...]``; else None."""
    if dataclasses.is_dataclass(hint):
        return hint, False
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner = _record_in(args[0])
        return None if inner is None else (inner[0], True)
    records = [arg for arg in args if dataclasses.is_dataclass(arg)]
    return (records[0], False) if len(records) == 1 else None
