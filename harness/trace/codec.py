"""The bytes of a trace: preamble, frames, trailer, and the JSON + raw-array record payload.

Pure functions with no file handles. Decoding problems raise :class:`PayloadError` with a
detail only; the reader adds the file, frame and offset. Writer-side misuse raises
TypeError/ValueError naming the offending value. See docs/trace-format.md for the layout.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

__all__ = ["MAGIC", "END_MAGIC", "FORMAT_VERSION", "PREAMBLE", "FRAME_HEAD", "TRAILER",
           "HEADER", "RECORD", "END", "FLAG_DEFLATE", "FLAG_STREAM", "ALLOWED_DTYPES", "PayloadError",
           "FrameHead", "RecordPacker", "RecordUnpacker", "encode_preamble", "parse_preamble",
           "encode_frame", "parse_head",
           "unpack_payload", "encode_trailer", "encode_json", "plain_json", "decode_json",
           "encode_record", "decode_record"]

MAGIC = b"\x89KVT\r\n\x1a\n"
END_MAGIC = b"\x89KVTEND\n"
FORMAT_VERSION = (1, 0)

PREAMBLE = struct.Struct("<8sHHI")        # magic, major, minor, crc32(first 12 bytes)
_HEAD_BODY = struct.Struct("<cBHIIQ")     # kind, flags, reserved, stored_len, raw_len, xxh64
FRAME_HEAD = struct.Struct("<cBHIIQI")    # _HEAD_BODY + crc32(_HEAD_BODY bytes)
TRAILER = struct.Struct("<Q8s")           # offset of the end-of-trace frame, END_MAGIC
_JSON_LEN = struct.Struct("<I")

HEADER, RECORD, END = b"H", b"R", b"E"
FLAG_DEFLATE = 0x01   # this frame's payload is a complete raw DEFLATE stream
FLAG_STREAM = 0x02    # this record's payload continues the file's record DEFLATE stream
_SYNC_TAIL = b"\x00\x00\xff\xff"  # ends every sync flush; implied, not stored
_MAX_RAW_LEN = 2**31  # far below u32, so even a payload DEFLATE expands still fits the head
_ALIGN = 8
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_MAX_NDIM = 64
# DEFLATE cannot expand more than 1032:1 (a 258-byte match per 2-bit code); the slack covers
# the implied sync-flush tail and block headers of tiny payloads.
_MAX_INFLATE_RATIO, _INFLATE_SLACK = 1032, 1024

# name -> the little-endian dtype stored on disk; the file names dtypes by their ``.str``.
_CANONICAL = {name: np.dtype(name).newbyteorder("<") for name in (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint64", "bool")}
ALLOWED_DTYPES = tuple(dtype.str for dtype in _CANONICAL.values())
_BY_STR = {dtype.str: dtype for dtype in _CANONICAL.values()}
_ITEMSIZE = {dtype.str: dtype.itemsize for dtype in _CANONICAL.values()}
_TO_DISK = {variant: (dtype, dtype.str) for dtype in _CANONICAL.values()
            for variant in (dtype, dtype.newbyteorder(">"))}


class PayloadError(ValueError):
    """Checksummed or decoded bytes the format does not allow; the message is the detail only."""


@dataclass(frozen=True, slots=True)
class FrameHead:
    """The 24-byte head of one frame, checksum already verified."""

    kind: bytes
    flags: int
    stored_len: int
    raw_len: int
    checksum: int

    @property
    def size(self) -> int:
        """Bytes of the whole frame: head plus stored payload."""
        return FRAME_HEAD.size + self.stored_len


# ------------------------------------------------------------------ preamble, frames, trailer
def encode_preamble() -> bytes:
    body = PREAMBLE.pack(MAGIC, *FORMAT_VERSION, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def parse_preamble(data: bytes) -> tuple[int, int]:
    """Return ``(major, minor)`` of a full 16-byte preamble whose magic already matched."""
    magic, major, minor, crc = PREAMBLE.unpack(data)
    assert magic == MAGIC, f"parse_preamble called on magic {magic!r}"
    if zlib.crc32(data[:-4]) != crc:
        raise PayloadError("preamble checksum mismatch")
    return major, minor


def encode_frame(kind: bytes, raw: bytes, level: int) -> bytes:
    """Frame ``raw`` on its own; DEFLATE it at ``level`` (0 = never) when that makes it smaller."""
    _check_raw_len(raw)
    if level and len(raw) > 32:
        packer = zlib.compressobj(level, zlib.DEFLATED, -15)
        packed = packer.compress(raw) + packer.flush()
        if len(packed) < len(raw):
            return _frame(kind, FLAG_DEFLATE, packed, len(raw))
    return _frame(kind, 0, raw, len(raw))


class RecordPacker:
    """Frames record payloads, DEFLATE-ing them as one stream that is sync-flushed at the end
    of every frame: records share one window (their JSON repeats) yet a file cut after any
    frame still inflates. ``level`` 0 stores records raw."""

    def __init__(self, level: int) -> None:
        self._packer = zlib.compressobj(level, zlib.DEFLATED, -15) if level else None

    def frame(self, raw: bytes) -> bytes:
        _check_raw_len(raw)  # before the stream sees it: a refused record must leave no trace
        if self._packer is None:
            return _frame(RECORD, 0, raw, len(raw))
        packed = self._packer.compress(raw) + self._packer.flush(zlib.Z_SYNC_FLUSH)
        assert packed.endswith(_SYNC_TAIL), f"a sync flush ended in {packed[-4:]!r}, not {_SYNC_TAIL!r}"
        return _frame(RECORD, FLAG_STREAM, packed[:-len(_SYNC_TAIL)], len(raw))


class RecordUnpacker:
    """Inverse of :class:`RecordPacker`: feed it the record frames in file order."""

    def __init__(self) -> None:
        self._unpacker = zlib.decompressobj(-15)

    def payload(self, head: FrameHead, stored: bytes) -> bytes:
        """Verify ``stored`` against ``head`` and return the raw payload."""
        if not head.flags & FLAG_STREAM:
            return unpack_payload(head, stored)
        _verify(head, stored)
        return _inflate(self._unpacker, stored + _SYNC_TAIL, head.raw_len, stream=True)


def _check_raw_len(raw: bytes) -> None:
    if len(raw) > _MAX_RAW_LEN:
        raise ValueError(f"a frame payload of {len(raw)} bytes exceeds the {_MAX_RAW_LEN}-byte limit")


def _frame(kind: bytes, flags: int, stored: bytes, raw_len: int) -> bytes:
    body = _HEAD_BODY.pack(kind, flags, 0, len(stored), raw_len, xxhash.xxh64_intdigest(stored))
    return b"".join((body, struct.pack("<I", zlib.crc32(body)), stored))


def parse_head(data: bytes) -> FrameHead:
    """Decode and verify a 24-byte frame head."""
    kind, flags, reserved, stored_len, raw_len, checksum, crc = FRAME_HEAD.unpack(data)
    if zlib.crc32(data[:_HEAD_BODY.size]) != crc:
        raise PayloadError("frame header checksum mismatch")
    if kind not in (HEADER, RECORD, END):
        raise PayloadError(f"unknown frame kind {kind!r}, expected b'H', b'R' or b'E'")
    allowed = (0, FLAG_DEFLATE, FLAG_STREAM) if kind == RECORD else (0, FLAG_DEFLATE)
    if flags not in allowed or reserved:
        raise PayloadError(f"frame flags {flags:#04x} and reserved {reserved:#06x}, expected flags "
                           f"in {[hex(f) for f in allowed]} and reserved 0")
    if not flags and stored_len != raw_len:
        raise PayloadError(f"uncompressed frame stores {stored_len} bytes but declares {raw_len}")
    if raw_len > _MAX_INFLATE_RATIO * stored_len + _INFLATE_SLACK:
        raise PayloadError(f"a {stored_len}-byte DEFLATE payload declares {raw_len} bytes, more "
                           f"than DEFLATE can expand to ({_MAX_INFLATE_RATIO}:1)")
    return FrameHead(kind, flags, stored_len, raw_len, checksum)


def unpack_payload(head: FrameHead, stored: bytes) -> bytes:
    """Verify a standalone (not stream-compressed) frame's ``stored`` bytes; return the raw payload."""
    assert not head.flags & FLAG_STREAM, "a stream-compressed frame needs a RecordUnpacker"
    _verify(head, stored)
    if not head.flags & FLAG_DEFLATE:
        return stored
    return _inflate(zlib.decompressobj(-15), stored, head.raw_len, stream=False)


def _verify(head: FrameHead, stored: bytes) -> None:
    if xxhash.xxh64_intdigest(stored) != head.checksum:
        raise PayloadError("payload checksum mismatch")


def _inflate(unpacker: Any, stored: bytes, raw_len: int, stream: bool) -> bytes:
    try:
        raw = unpacker.decompress(stored, raw_len + 1)  # bounded: a crafted bomb cannot inflate
    except zlib.error as exc:
        raise PayloadError(f"compressed payload does not inflate ({exc})") from None
    ended = not unpacker.unconsumed_tail and (stream or (unpacker.eof and not unpacker.unused_data))
    if len(raw) != raw_len or not ended:
        raise PayloadError(f"compressed payload does not inflate to its declared {raw_len} bytes")
    return raw


def encode_trailer(end_offset: int) -> bytes:
    return TRAILER.pack(end_offset, END_MAGIC)


# ------------------------------------------------------------------ JSON
def encode_json(doc: Mapping[str, Any], what: str) -> bytes:
    """Validate ``doc`` with :func:`plain_json` and return its compact ASCII JSON text."""
    return _dump(plain_json(doc, what))


def plain_json(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return ``doc`` as plain JSON data that round-trips exactly through the file.

    Raises TypeError/ValueError naming the path (``meta['keys'][3]``) of a value JSON would
    not round-trip: non-str keys, ints outside int64/uint64, or types other than None, bool,
    int, float, str, list/tuple and dict. NumPy bool/int/float scalars become Python scalars.
    """
    if not isinstance(doc, Mapping):
        raise TypeError(f"{what}: expected a dict, got {type(doc).__name__}")
    try:
        return _plain(doc)
    except _NotPlain as bad:
        raise bad.error(what + "".join(reversed(bad.path))) from None


def _dump(plain: dict[str, Any]) -> bytes:
    return json.dumps(plain, separators=(",", ":"), allow_nan=True).encode("ascii")


def decode_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"bad JSON in {what} ({exc})") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"{what} is a JSON {type(doc).__name__}, expected an object")
    return doc


class _NotPlain(Exception):
    """Raised inside :func:`_plain`; each container on the way out prepends its key."""

    def __init__(self, error_type: type[Exception], reason: str) -> None:
        self.error_type, self.reason, self.path = error_type, reason, []

    def error(self, where: str) -> Exception:
        return self.error_type(f"{where}: {self.reason}")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _NotPlain(ValueError, f"int {value} is outside [-2**63, 2**64-1]")
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotPlain(TypeError, f"key {key!r} is a {type(key).__name__}, expected str")
            try:
                out[key] = _plain(item)
            except _NotPlain as bad:
                bad.path.append(f"[{key!r}]")
                raise
        return out
    if isinstance(value, (list, tuple)):
        out_list = []
        for index, item in enumerate(value):
            try:
                out_list.append(_plain(item))
            except _NotPlain as bad:
                bad.path.append(f"[{index}]")
                raise
        return out_list
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _plain(value.item())
    raise _NotPlain(TypeError, f"{type(value).__name__} is not JSON data; expected None, bool, "
                               f"int, float, str, list or dict")


# ------------------------------------------------------------------ record payload
def encode_record(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """``u32 json_len | JSON | pad | array bytes | pad | ...``, every block padded to 8 bytes."""
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind: expected a non-empty str, got {kind!r}")
    if not isinstance(arrays, Mapping):
        raise TypeError(f"arrays: expected a dict of numpy arrays, got {type(arrays).__name__}")
    descs, blocks = [], []
    for name, array in arrays.items():
        data, dtype_str = _array_bytes(name, array)
        descs.append({"name": name, "dtype": dtype_str,
                      "shape": list(array.shape), "nbytes": len(data)})
        blocks.append(data)
    text = _dump({"kind": kind, "meta": plain_json(meta, "meta"), "arrays": descs})
    parts = [_JSON_LEN.pack(len(text)), text, _pad(_JSON_LEN.size + len(text))]
    for data in blocks:
        parts += (data, _pad(len(data)))
    return b"".join(parts)


def decode_record(payload: bytes, *, max_arrays: int = 2**16, max_ndim: int = _MAX_NDIM
                  ) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode_record`; arrays are writable views of one copy of the payload.

    Every array descriptor is checked (at most ``max_arrays`` of them, each of at most
    ``max_ndim`` dimensions, its byte size consistent with its dtype and shape and inside the
    payload) before the copy that backs the arrays is made.
    """
    if len(payload) < _JSON_LEN.size:
        raise PayloadError(f"record payload is {len(payload)} bytes, expected at least 4")
    (json_len,) = _JSON_LEN.unpack_from(payload)
    json_end = _JSON_LEN.size + json_len
    if json_end > len(payload):
        raise PayloadError(f"record JSON claims {json_len} bytes but the payload holds {len(payload)}")
    doc = decode_json(payload[_JSON_LEN.size:json_end], "record metadata")
    kind, meta, descs = doc.get("kind"), doc.get("meta"), doc.get("arrays")
    if not isinstance(kind, str) or not kind or not isinstance(meta, dict) or not isinstance(descs, list):
        raise PayloadError("record metadata lacks a str 'kind', a dict 'meta' or a list 'arrays'")
    if len(descs) > max_arrays:
        raise PayloadError(f"record declares {len(descs)} arrays, over the limit "
                           f"max_arrays_per_record = {max_arrays}")
    pos, layout, names = _aligned(json_end), [], set()
    for desc in descs:
        name, dtype, shape, nbytes = _array_desc(desc, min(max_ndim, _MAX_NDIM))
        if name in names:
            raise PayloadError(f"array {name!r} appears twice")
        names.add(name)
        if pos + nbytes > len(payload):
            raise PayloadError(f"array {name!r} needs bytes {pos}..{pos + nbytes} of a "
                               f"{len(payload)}-byte payload")
        layout.append((name, dtype, shape, nbytes, pos))
        pos = _aligned(pos + nbytes)
    if pos != len(payload):
        raise PayloadError(f"record payload holds {len(payload)} bytes but its JSON and arrays "
                           f"account for {pos}")
    buffer = bytearray(payload)
    arrays = {name: np.frombuffer(buffer, dtype=dtype, count=nbytes // dtype.itemsize,
                                  offset=start).reshape(shape)
              for name, dtype, shape, nbytes, start in layout}
    return kind, meta, arrays


def _array_bytes(name: Any, array: Any) -> tuple[bytes, str]:
    if not isinstance(name, str) or not name:
        raise TypeError(f"arrays: names must be non-empty str, got {name!r}")
    if type(array) is not np.ndarray:
        raise TypeError(f"arrays[{name!r}]: expected a plain numpy.ndarray, got "
                        f"{type(array).__module__}.{type(array).__qualname__}")
    on_disk = _TO_DISK.get(array.dtype)
    if on_disk is None:
        raise TypeError(f"arrays[{name!r}]: dtype {array.dtype} is not allowed; expected one of "
                        f"{', '.join(_CANONICAL)}")
    return array.astype(on_disk[0], copy=False).tobytes(order="C"), on_disk[1]


def _array_desc(desc: Any, max_ndim: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    if not isinstance(desc, dict):
        raise PayloadError(f"array descriptor is a JSON {type(desc).__name__}, expected an object")
    name, dtype_str = desc.get("name"), desc.get("dtype")
    shape, nbytes = desc.get("shape"), desc.get("nbytes")
    if not isinstance(name, str):
        raise PayloadError(f"array descriptor has name {name!r}, expected a str")
    dtype = _BY_STR.get(dtype_str) if isinstance(dtype_str, str) else None
    if dtype is None:
        raise PayloadError(f"array {name!r} has dtype {dtype_str!r}, expected one of "
                           f"{', '.join(ALLOWED_DTYPES)}")
    if type(shape) is not list or len(shape) > max_ndim or not all(
            [type(n) is int and 0 <= n <= _MAX_RAW_LEN for n in shape]):
        shown = shape if type(shape) is not list or len(shape) <= max_ndim else f"{len(shape)}-d"
        raise PayloadError(f"array {name!r} has shape {shown!r}, expected a list of at most "
                           f"{max_ndim} ints in [0, {_MAX_RAW_LEN}]")
    need = math.prod(shape) * _ITEMSIZE[dtype_str]
    if type(nbytes) is not int or nbytes != need:
        raise PayloadError(f"array {name!r} holds {nbytes!r} bytes but dtype {dtype.str} and "
                           f"shape {shape} need {need}")
    return name, dtype, tuple(shape), nbytes


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _pad(n: int) -> bytes:
    return bytes(_aligned(n) - n)
