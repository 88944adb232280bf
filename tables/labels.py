"""Label control for the Prometheus metrics: closed value sets, folding and per-family caps.

Every label value that reaches an exposition comes from one of three places:

- a **closed set** taken from the event schema (method, status class, error class, breaker
  state); a value outside it is folded to a fixed marker (``_other``, ``none``, ``unexpected``);
- an **allow-list** given in the configuration (services): others fold into ``_other``;
- an **open set** (service, route, upstream, pipeline reasons) admitted first come, first
  served into a :class:`CappedFamily` until the family holds its cap; past it, the open
  labels of a new label set become ``_overflow`` and the observation lands in that family's
  overflow series. Room for every possible overflow series is reserved inside the cap, so a
  family never exports more than ``cap`` series whatever the input.

Neither ``_other`` nor ``_overflow`` can collide with a real value: a schema-valid service
starts with a letter or digit and a route starts with ``/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

from pipeline.schema import ERROR_CLASSES, Method

__all__ = [
    "BREAKER_STATE_VALUES",
    "ERROR_CLASS_LABELS",
    "METHOD_LABELS",
    "OTHER",
    "OVERFLOW",
    "STATUS_CLASSES",
    "STATUS_CLASS_BY_CODE",
    "CappedFamily",
    "Labels",
    "error_class_label",
    "method_label",
]

OVERFLOW: Final = "_overflow"
OTHER: Final = "_other"

METHOD_LABELS: Final[frozenset[str]] = frozenset(Method.__args__)  # type: ignore[attr-defined]
ERROR_CLASS_LABELS: Final[frozenset[str]] = ERROR_CLASSES
STATUS_CLASSES: Final[tuple[str, ...]] = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
# status_code -> status class for every code the schema allows; anything else is "none".
STATUS_CLASS_BY_CODE: Final[dict[int | None, str]] = {
    code: f"{code // 100}xx" for code in range(100, 600)
}
# Gauge encoding of egresswatch_breaker_state.
BREAKER_STATE_VALUES: Final[dict[str, float]] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def method_label(method: str) -> str:
    """The method itself if the schema knows it, else ``_other``."""
    return method if method in METHOD_LABELS else OTHER


def error_class_label(error_class: str) -> str:
    """The error class itself if the schema knows it, else ``unexpected``."""
    return error_class if error_class in ERROR_CLASS_LABELS else "unexpected"


Labels = tuple[str, ...]
T = TypeVar("T")


class CappedFamily(Generic[T]):
    """The series of one metric family: label tuple -> cell, at most ``cap`` of them.

    ``open_positions`` are the indexes of the open-set labels in a label tuple; on overflow
    they are replaced by ``_overflow`` and the closed-set labels are kept. ``reserve`` is the
    number of distinct overflow label tuples the family can ever need (the product of the
    sizes of its closed sets); regular series are admitted while fewer than
    ``cap - reserve`` exist. Not thread-safe: the owner serialises access.
    """

    __slots__ = (
        "_factory",
        "_open",
        "_room",
        "cap",
        "name",
        "regular",
        "series",
    )

    def __init__(
        self,
        name: str,
        cap: int,
        reserve: int,
        open_positions: tuple[int, ...],
        factory: Callable[[], T],
    ) -> None:
        if reserve < 1 or cap <= reserve:
            raise ValueError(f"{name}: cap {cap} must exceed the overflow reserve {reserve}")
        self.name = name
        self.cap = cap
        self.series: dict[Labels, T] = {}
        self.regular = 0
        self._room = cap - reserve
        self._open = open_positions
        self._factory = factory

    def cell(self, labels: Labels) -> T:
        """The cell for ``labels``: existing, newly admitted, or the overflow series'."""
        cell = self.series.get(labels)
        if cell is not None:
            return cell
        if self.regular < self._room and not self.is_overflow(labels):
            cell = self.series[labels] = self._factory()
            self.regular += 1
            return cell
        folded = self.overflow_labels(labels)
        cell = self.series.get(folded)
        if cell is None:
            cell = self.series[folded] = self._factory()
        return cell

    def is_overflow(self, labels: Labels) -> bool:
        return any(labels[i] == OVERFLOW for i in self._open)

    def overflow_labels(self, labels: Labels) -> Labels:
        return tuple(OVERFLOW if i in self._open else v for i, v in enumerate(labels))

    def __len__(self) -> int:
        return len(self.series)
