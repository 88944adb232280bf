"""The spool's record format: self-checking frames, and a scan that survives damage.

One frame per spooled batch::

    magic b"EWSP" | payload length u32 | payload CRC32 u32 | CRC32 of the 12 bytes before
    payload = header length u32 | header (JSON) | the objects' bytes, one after the other

The frame header has its own CRC, so a damaged length is never trusted: :func:`scan` tells
a torn tail (a last frame cut short by a crash during its append, which was never
acknowledged) from damage, and after damage it looks for the next frame that checks out.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Final, NamedTuple

import msgspec

__all__ = [
    "FRAME_HEADER",
    "MAGIC",
    "MAX_PAYLOAD",
    "FrameError",
    "ScanItem",
    "SpoolEntry",
    "decode_payload",
    "encode_frame",
    "read_frame",
    "scan",
]

MAGIC: Final = b"EWSP"
FRAME_HEADER: Final = struct.Struct(">4sIII")
MAX_PAYLOAD: Final = 1 << 30
_U32: Final = struct.Struct(">I")


class SpoolEntry(NamedTuple):
    """One spooled batch of one (topic, partition): the objects it still owes the store."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    """Every Kafka record of the partition up to here is in the store or in the spool."""
    received_at: float
    """When the batch's first record was added (epoch s): the upload lag counts from here."""
    objects: tuple[tuple[str, bytes], ...]
    """(key, data) of each object, in the order they are uploaded."""


class _Header(msgspec.Struct, frozen=True, array_like=True):
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    received_at: float
    objects: list[tuple[str, int]]  # (key, size)


class FrameError(ValueError):
    """A frame that does not check out; ``reason`` is short and stable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_header_encoder = msgspec.json.Encoder()
_header_decoder = msgspec.json.Decoder(_Header)


def encode_frame(entry: SpoolEntry) -> bytes:
    header = _Header(
        entry.topic,
        entry.partition,
        entry.first_offset,
        entry.last_offset,
        entry.received_at,
        [(key, len(data)) for key, data in entry.objects],
    )
    head = _header_encoder.encode(header)
    payload = b"".join([_U32.pack(len(head)), head, *(data for _, data in entry.objects)])
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"spool entry of {len(payload)} bytes is above {MAX_PAYLOAD}")
    first = struct.pack(">4sII", MAGIC, len(payload), zlib.crc32(payload))
    return first + _U32.pack(zlib.crc32(first)) + payload


def _check_header(raw: bytes) -> int:
    """The payload length of a frame header that checks out; else :class:`FrameError`."""
    magic, length, _, header_crc = FRAME_HEADER.unpack(raw)
    if magic != MAGIC:
        raise FrameError("bad_magic")
    if zlib.crc32(raw[:12]) != header_crc:
        raise FrameError("frame_header_crc")
    if length > MAX_PAYLOAD:
        raise FrameError("frame_too_long")
    return int(length)


def decode_payload(raw_header: bytes, payload: bytes) -> SpoolEntry:
    """Check a frame's payload against its header and decode it; else :class:`FrameError`."""
    _, length, payload_crc, _ = FRAME_HEADER.unpack(raw_header)
    if len(payload) != length:
        raise FrameError("short_payload")
    if zlib.crc32(payload) != payload_crc:
        raise FrameError("payload_crc")
    try:
        (head_len,) = _U32.unpack_from(payload)
        header = _header_decoder.decode(payload[4 : 4 + head_len])
    except (struct.error, msgspec.DecodeError) as exc:
        raise FrameError("bad_entry_header") from exc
    objects = []
    at = 4 + head_len
    for key, size in header.objects:
        objects.append((key, payload[at : at + size]))
        at += size
    if at != len(payload):
        raise FrameError("entry_size_mismatch")
    return SpoolEntry(
        header.topic,
        header.partition,
        header.first_offset,
        header.last_offset,
        header.received_at,
        tuple(objects),
    )


def read_frame(data: bytes | memoryview, position: int) -> tuple[SpoolEntry, int]:
    """Decode the frame at ``position`` of ``data``; returns it and its size in bytes."""
    raw = bytes(data[position : position + FRAME_HEADER.size])
    if len(raw) < FRAME_HEADER.size:
        raise FrameError("short_frame_header")
    length = _check_header(raw)
    start = position + FRAME_HEADER.size
    entry = decode_payload(raw, bytes(data[start : start + length]))
    return entry, FRAME_HEADER.size + length


class ScanItem(NamedTuple):
    """A frame found by :func:`scan` (``entry`` set), or damage (``damage`` set)."""

    position: int
    size: int
    entry: SpoolEntry | None
    damage: str | None


def scan(data: bytes) -> Iterator[ScanItem]:
    """Every frame of a segment, in order, with damage reported and stepped over.

    A frame cut short at the very end (its header checks out but the file ends inside it,
    or the file ends inside a header) is a torn tail: reported as damage ``torn_tail``
    and ends the scan. Any other failure is reported once, then the scan resumes at the
    next position where a whole frame checks out.
    """
    position = 0
    while position < len(data):
        try:
            entry, size = read_frame(data, position)
        except FrameError as exc:
            if _is_torn_tail(data, position):
                yield ScanItem(position, len(data) - position, None, "torn_tail")
                return
            resume = _resync(data, position + 1)
            yield ScanItem(position, resume - position, None, exc.reason)
            position = resume
            continue
        yield ScanItem(position, size, entry, None)
        position += size


def _is_torn_tail(data: bytes, position: int) -> bool:
    rest = len(data) - position
    if rest < FRAME_HEADER.size:
        return MAGIC.startswith(data[position : position + 4]) or not any(data[position:])
    try:
        length = _check_header(data[position : position + FRAME_HEADER.size])
    except FrameError:
        return False
    return FRAME_HEADER.size + length > rest


def _resync(data: bytes, start: int) -> int:
    """Position of the next whole, valid frame at or after ``start`` (or the end)."""
    at = data.find(MAGIC, start)
    while at != -1:
        try:
            read_frame(data, at)
        except FrameError:
            at = data.find(MAGIC, at + 1)
            continue
        return at
    return len(data)
