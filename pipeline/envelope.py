"""Batch envelope v1: many probe events packed into one Kafka record.

Why: Faust costs ~250 us of CPU per Kafka *record* before an agent sees it, so one event
per record caps a worker near 4,000 events/s. Packing N events per record shares that
cost N ways. The envelope is versioned separately from the events it carries.

Decoding is two-level on purpose: the envelope is decoded with its events left as raw
JSON, then each event is validated on its own, so one bad event never costs the valid
events of the same record (they keep their index for dead-letter reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from pipeline.schema import InvalidEvent, ProbeEvent, SchemaError, decode_event

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_EVENTS_PER_ENVELOPE",
    "BatchEnvelope",
    "DecodedBatch",
    "InvalidEnvelope",
    "decode_batch",
    "encode_batch",
    "encode_batch_of",
]

ENVELOPE_VERSION: Final = 1
MAX_EVENTS_PER_ENVELOPE: Final = 10_000


class BatchEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The Kafka record value. ``events`` hold schema-v1 events as raw JSON objects."""

    envelope_version: Literal[1] = 1
    producer: Annotated[str, msgspec.Meta(max_length=256)]  # "<service>@<host>:<pid>"
    seq: Annotated[int, msgspec.Meta(ge=0)]  # per-producer sequence, for gap detection
    sent_at: float  # Unix epoch seconds when the batch was built
    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_EVENTS_PER_ENVELOPE)]


class InvalidEnvelope(SchemaError):
    """The whole record is unusable (undecodable, wrong envelope version, too many events)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DecodedBatch(msgspec.Struct, frozen=True):
    """Result of :func:`decode_batch`: the valid events and the rejected ones with reasons."""

    producer: str
    seq: int
    sent_at: float
    valid: list[ProbeEvent]
    invalid: list[tuple[int, bytes, InvalidEvent]]  # (index in batch, original bytes, why)
    valid_raw: list[bytes] = []
    """The bytes each valid event arrived as, index for index with ``valid``: the sink
    stores them as they are instead of encoding the event again."""


_envelope_decoder = msgspec.json.Decoder(BatchEnvelope)
_encoder = msgspec.json.Encoder()


def encode_batch(producer: str, seq: int, sent_at: float, events: list[bytes]) -> bytes:
    """Pack already-encoded events (as produced by ``encode_event``) into one record value."""
    envelope = BatchEnvelope(
        producer=producer, seq=seq, sent_at=sent_at, events=[msgspec.Raw(e) for e in events]
    )
    return _encoder.encode(envelope)


class _StructBatch(msgspec.Struct, frozen=True, gc=False):
    """:class:`BatchEnvelope`'s fields in its order, with the events still as structs: one
    ``encode`` call writes the envelope and all its events (a test checks the bytes)."""

    envelope_version: int
    producer: str
    seq: int
    sent_at: float
    events: Sequence[Any]


assert _StructBatch.__struct_fields__ == BatchEnvelope.__struct_fields__, "keep in step"


def encode_batch_of(producer: str, seq: int, sent_at: float, events: Sequence[Any]) -> bytes:
    """:func:`encode_batch` of events not yet encoded: structs that encode as schema-v1 events
    (a ``ProbeEvent``, or the probe's positional twin of it), in one encoder call."""
    return _encoder.encode(_StructBatch(ENVELOPE_VERSION, producer, seq, sent_at, events))


def decode_batch(data: bytes) -> DecodedBatch:
    """Decode one record value. Raises :class:`InvalidEnvelope` only if the record is whole-bad."""
    try:
        envelope = _envelope_decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = (
            "unsupported_envelope_version"
            if "envelope_version" in str(exc)
            else ("invalid_envelope")
        )
        raise InvalidEnvelope(reason, str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidEnvelope("malformed_record", str(exc)) from exc
    valid: list[ProbeEvent] = []
    valid_raw: list[bytes] = []
    invalid: list[tuple[int, bytes, InvalidEvent]] = []
    for index, raw in enumerate(envelope.events):
        raw_bytes = bytes(raw)
        try:
            valid.append(decode_event(raw_bytes))
        except InvalidEvent as exc:
            invalid.append((index, raw_bytes, exc))
        else:
            valid_raw.append(raw_bytes)
    return DecodedBatch(
        envelope.producer, envelope.seq, envelope.sent_at, valid, invalid, valid_raw
    )
