"""The bounded, durable local spool: where batches wait while the store is away.

Contract:

- :meth:`Spool.append` writes one batch as one frame (``sinks._frames``: a CRC32 over the
  frame header and one over the record) at the end of the active segment file, then
  ``fsync``\\ s it. Only when it returns is the batch durable, and its Kafka offsets may be
  committed. It raises :class:`~sinks.errors.SpoolFull` when the frame would take the spool
  past ``max_bytes`` (the sum of its segment files), and ``SpoolError`` when the disk fails;
  a failed append is never acknowledged.
- :meth:`Spool.head` gives the oldest waiting entry, read back from disk and checked again;
  :meth:`Spool.pop` drops it once its objects are in the store. A segment whose entries are
  all popped is deleted. Replay is oldest first; an entry replayed twice (crash between the
  upload and the pop) overwrites the same keys with the same bytes.
- Damage never loops: a segment with a frame that fails its checks is marked corrupt and
  counted once in :attr:`Spool.quarantined_segments` (and logged); its frames that still
  check out are replayed, the damaged ones are counted in :attr:`Spool.lost_frames`, and the
  file is then moved to ``quarantine/`` (with a ``.reason`` note) instead of being deleted.
  A torn tail (the last frame of a segment cut short by a crash during its append, never
  acknowledged) is skipped and counted in :attr:`Spool.torn_tails`.
- A new process never appends to an old segment; it opens a new one.

Thread-safe: the writer calls it from worker threads (``asyncio.to_thread``), off the loop.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

from pipeline.logs import log_fields
from sinks._frames import FrameError, SpoolEntry, encode_frame, read_frame, scan
from sinks._fsync import fsync_dir
from sinks.errors import SpoolError, SpoolFull

__all__ = ["Spool", "SpoolEntry"]

_log = logging.getLogger("egresswatch.sinks.spool")
_SEGMENT_RE: Final = re.compile(r"seg-(\d{16})\.spool")


@dataclass
class _Slot:
    position: int
    size: int
    topic: str
    partition: int
    last_offset: int
    received_at: float


@dataclass
class _Segment:
    path: Path
    size: int
    slots: deque[_Slot] = field(default_factory=deque)
    corrupt: str | None = None


def _slot(position: int, size: int, entry: SpoolEntry) -> _Slot:
    return _Slot(position, size, entry.topic, entry.partition, entry.last_offset, entry.received_at)


class Spool:
    """Append-only segment files under ``directory``, at most ``max_bytes`` in all."""

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int,
        segment_bytes: int = 8 * 2**20,
        fsync: bool = True,
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be > 0")
        self.directory = Path(directory)
        self.quarantine_dir = self.directory / "quarantine"
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock = threading.Lock()
        self._segments: deque[_Segment] = deque()
        self._active: _Segment | None = None
        self._append_file: BinaryIO | None = None
        self.quarantined_segments = 0
        self.lost_frames = 0
        self.torn_tails = 0
        self._next_seq = 0
        self._used = 0
        self._pending = 0
        self._oldest: float | None = None
        with self._lock:
            self._load()
            self._refresh()

    # -- figures: plain reads, never blocked by an append's fsync in another thread -------

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def fill_ratio(self) -> float:
        return self._used / self.max_bytes

    @property
    def pending_entries(self) -> int:
        return self._pending

    def oldest_received_at(self) -> float | None:
        return self._oldest

    def durable_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the highest ``last_offset`` of a waiting entry."""
        offsets: dict[tuple[str, int], int] = {}
        with self._lock:
            for segment in self._segments:
                for slot in segment.slots:
                    tp = (slot.topic, slot.partition)
                    offsets[tp] = max(offsets.get(tp, -1), slot.last_offset)
        return offsets

    # -- append --------------------------------------------------------------------------

    def append(self, entry: SpoolEntry) -> None:
        """Write ``entry`` durably (fsync) or raise; see the module docstring."""
        frame = encode_frame(entry)
        with self._lock:
            free = self.max_bytes - self._used
            if len(frame) > free:
                raise SpoolFull(len(frame), free)
            active = self._active
            if active is None or (active.size and active.size + len(frame) > self.segment_bytes):
                active = self._roll()
            file = self._append_file
            assert file is not None
            try:
                file.write(frame)
                file.flush()
                if self._fsync:
                    os.fsync(file.fileno())
            except OSError as exc:
                # The tail of this segment is now a torn frame: never append after it.
                active.size = os.stat(active.path).st_size if active.path.exists() else 0
                self._seal()
                self._refresh()
                raise SpoolError(f"spool append failed: {exc}") from exc
            active.slots.append(_slot(active.size, len(frame), entry))
            active.size += len(frame)
            self._refresh()

    # -- replay --------------------------------------------------------------------------

    def head(self) -> SpoolEntry | None:
        """The oldest waiting entry, checked again as it is read (None: the spool is empty)."""
        with self._lock:
            while self._segments:
                segment = self._segments[0]
                if not segment.slots:
                    if segment is self._active:
                        return None
                    self._retire(segment)
                    continue
                slot = segment.slots[0]
                try:
                    with open(segment.path, "rb") as file:
                        file.seek(slot.position)
                        data = file.read(slot.size)
                    entry, _ = read_frame(data, 0)
                except (OSError, FrameError) as exc:
                    reason = exc.reason if isinstance(exc, FrameError) else f"unreadable: {exc}"
                    segment.slots.popleft()
                    self.lost_frames += 1
                    self._mark_corrupt(segment, reason)
                    self._refresh()
                    continue
                self._refresh()
                return entry
            self._refresh()
            return None

    def pop(self) -> None:
        """Drop the entry :meth:`head` returned: its objects are in the store."""
        with self._lock:
            if not self._segments or not self._segments[0].slots:
                raise SpoolError("pop() without an entry from head()")
            segment = self._segments[0]
            segment.slots.popleft()
            if not segment.slots:
                self._retire(segment)
            self._refresh()

    def close(self) -> None:
        with self._lock:
            self._seal()

    # -- internals (lock held) -------------------------------------------------------------

    def _refresh(self) -> None:
        self._used = sum(segment.size for segment in self._segments)
        self._pending = sum(len(segment.slots) for segment in self._segments)
        times = [slot.received_at for seg in self._segments for slot in seg.slots]
        self._oldest = min(times, default=None)

    def _load(self) -> None:
        names = sorted(p.name for p in self.directory.iterdir() if _SEGMENT_RE.fullmatch(p.name))
        for name in names:
            path = self.directory / name
            self._next_seq = max(self._next_seq, int(name[4:20]) + 1)
            data = path.read_bytes()
            segment = _Segment(path, len(data))
            for item in scan(data):
                if item.entry is not None:
                    segment.slots.append(_slot(item.position, item.size, item.entry))
                elif item.damage == "torn_tail":
                    self.torn_tails += 1
                else:
                    self.lost_frames += 1
                    self._mark_corrupt(segment, f"{item.damage} at byte {item.position}")
            self._segments.append(segment)
            if not segment.slots:
                self._retire(segment)

    def _roll(self) -> _Segment:
        self._seal()
        path = self.directory / f"seg-{self._next_seq:016d}.spool"
        self._next_seq += 1
        self._append_file = open(path, "xb")  # noqa: SIM115 (kept open for appends)
        fsync_dir(self.directory)
        segment = _Segment(path, 0)
        self._segments.append(segment)
        self._active = segment
        return segment

    def _seal(self) -> None:
        if self._append_file is not None:
            self._append_file.close()
        self._append_file = None
        self._active = None

    def _mark_corrupt(self, segment: _Segment, reason: str) -> None:
        if segment is self._active:
            self._seal()
        if segment.corrupt is None:
            segment.corrupt = reason
            self.quarantined_segments += 1
            _log.warning(
                "spool segment damaged: its valid frames are replayed, then it is quarantined",
                extra=log_fields(segment=segment.path.name, reason=reason),
            )

    def _retire(self, segment: _Segment) -> None:
        """A segment with nothing left to replay: deleted, or quarantined if it was damaged."""
        if segment is self._active:
            self._seal()
        self._segments.remove(segment)
        try:
            if segment.corrupt is None:
                segment.path.unlink(missing_ok=True)
            else:
                target = self.quarantine_dir / segment.path.name
                os.replace(segment.path, target)
                target.with_suffix(".reason").write_text(segment.corrupt + "\n")
                fsync_dir(self.quarantine_dir)
            fsync_dir(self.directory)
        except OSError as exc:
            _log.error(
                "could not retire a spool segment",
                extra=log_fields(segment=segment.path.name, error=str(exc)),
            )
