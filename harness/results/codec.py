"""JSON for the result records, by msgspec: typed, validated, one-line errors.

The records are frozen dataclasses; msgspec encodes them as they are and decodes into them,
checking every field's type and bounds (``Annotated[..., msgspec.Meta(...)]`` on the field).
Two things msgspec does not do for dataclasses are done here: unknown keys are refused (a typo
in a hand-edited report must not pass silently), and a failure becomes one :class:`ReportError`
line naming the source, the field path and the value found, e.g.
``reports/x.json: $.traces[0].num_calls: expected int >= 0, got "5"``.

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
from typing import Any, Literal, Mapping

import msgspec

__all__ = ["ReportError", "NonFiniteFloat", "NonFiniteText", "mark_non_finite",
           "check_finite", "to_builtins", "from_builtins", "decode_json", "encode_json"]

NonFiniteText = Literal["NaN", "Infinity", "-Infinity"]
_TO_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_FROM_TEXT = {text: float(name) for name, text in _TO_TEXT.items()}
_MAX_SHOWN_CHARS = 80
_PATH_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class ReportError(ValueError):
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


def encode_json(record: Any) -> bytes:
    """``record`` as compact strict JSON."""
    return msgspec.json.encode(record, enc_hook=_enc_hook)


def decode_json(data: bytes | str, cls: type, source: str) -> Any:
    """Parse and validate JSON text as a ``cls`` record; :class:`ReportError` names ``source``."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ReportError(f"{source}: not JSON ({exc})") from None
    return from_builtins(raw, cls, source)


def from_builtins(raw: Any, cls: type, source: str) -> Any:
    """Validate JSON-native ``raw`` as a ``cls`` record.

    Raises:
        ReportError: one line: ``source``, the field path (``$.traces[0].num_calls``), what was
            expected and what was found.
    """
    if not isinstance(raw, Mapping):
        raise ReportError(f"{source}: $: expected an object, got {_shown(raw)}")
    unknown = _first_unknown_key(raw, cls, "$")
    if unknown is not None:
        path, record = unknown
        raise ReportError(f"{source}: {path}: unknown field for {record.__name__}")
    try:
        return msgspec.convert(raw, type=cls, strict=True)
    except msgspec.ValidationError as exc:
        raise ReportError(f"{source}: {_describe(str(exc), raw)}") from None


def _describe(message: str, raw: Any) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.a[0].b``` as ``$.a[0].b: expected int,
    got "5"`` (the value looked up in ``raw``)."""
    text, _, where = message.partition(" - at ")
    path = where.strip("`") or "$"
    text = text.replace("`", "")
    missing = re.fullmatch(r"Object missing required field (\S+)", text)
    if missing:
        return f"{path}.{missing.group(1)}: missing required field"
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


def _first_unknown_key(raw: Mapping[str, Any], cls: type, path: str) -> tuple[str, type] | None:
    """The path of the first key that no field of ``cls`` (or of a nested record) names."""
    names, nested = _record_fields(cls)
    for key, value in raw.items():
        if key not in names:
            return f"{path}.{key}", cls
        child = nested.get(key)
        if child is None or value is None:
            continue
        child_cls, many = child
        if not many and isinstance(value, Mapping):
            found = _first_unknown_key(value, child_cls, f"{path}.{key}")
        elif many and isinstance(value, list):
            found = next((hit for index, item in enumerate(value) if isinstance(item, Mapping)
                          for hit in [_first_unknown_key(item, child_cls,
                                                         f"{path}.{key}[{index}]")]
                          if hit is not None), None)
        else:
            found = None  # msgspec reports the wrong shape with its path
        if found is not None:
            return found
    return None


@functools.cache
def _record_fields(cls: type) -> tuple[frozenset[str], dict[str, tuple[type, bool]]]:
    """The field names of dataclass ``cls`` and, for fields holding records, ``(record class,
    holds a sequence)``."""
    hints = typing.get_type_hints(cls)
    nested: dict[str, tuple[type, bool]] = {}
    for field in dataclasses.fields(cls):
        found = _record_in(hints[field.name])
        if found is not None:
            nested[field.name] = found
    return frozenset(field.name for field in dataclasses.fields(cls)), nested


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
