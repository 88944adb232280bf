"""Dead-letter records: what was rejected, why, and exactly where it came from.

A dead letter keeps the original bytes (base64, binary-safe), so nothing rejected is lost:
it can be inspected, fixed and replayed. ``index`` is the event's position inside its batch
record, or ``-1`` when the whole record was rejected.
"""

from __future__ import annotations

import base64
from typing import Final

import msgspec

__all__ = ["DEAD_LETTER_VERSION", "DeadLetter", "decode_dead_letter", "encode_dead_letter"]

DEAD_LETTER_VERSION: Final = 1
_MAX_DETAIL: Final = 500


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    dead_letter_version: int = DEAD_LETTER_VERSION
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    index: int  # position in the batch record; -1: the whole record
    rejected_at: float
    original_b64: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def encode_dead_letter(
    *,
    reason: str,
    detail: str,
    original: bytes,
    topic: str,
    partition: int,
    offset: int,
    index: int,
    rejected_at: float,
) -> bytes:
    return _encoder.encode(
        DeadLetter(
            reason=reason,
            detail=detail[:_MAX_DETAIL],
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            index=index,
            rejected_at=rejected_at,
            original_b64=base64.b64encode(original).decode("ascii"),
        )
    )


def decode_dead_letter(data: bytes) -> tuple[DeadLetter, bytes]:
    """The record and its original bytes."""
    letter = _decoder.decode(data)
    return letter, base64.b64decode(letter.original_b64)
