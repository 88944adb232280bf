"""Typed access to a parsed TOML document, with errors that name the file and the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ProfileError", "TomlReader"]


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the field."""


class TomlReader:
    """Typed access to one TOML table, with errors naming the file and the field."""

    def __init__(self, raw: Mapping[str, Any], where: str, path: str = "") -> None:
        self.raw = raw
        self.where = where
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}{key}"

    def _fail(self, key: str, message: str) -> ProfileError:
        return ProfileError(f"{self.where}: {self._name(key)}: {message}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is _REQUIRED:
            raise self._fail(key, "missing")
        return default

    def number(self, key: str, default: Any = None, *, minimum: float | None = None) -> float:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"must be a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self._fail(key, f"must be >= {minimum}, got {value}")
        return float(value)

    def integer(self, key: str, default: Any = None, *, minimum: int | None = None) -> int:
        value = self._get(key, _REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self._fail(key, f"must be >= {minimum}, got {value}")
        return value

    def string(self, key: str, default: Any = None) -> str:
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, str):
            raise self._fail(key, f"must be a string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if key in self.raw else None

    def strings(self, key: str) -> list[str]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, f"must be a list of strings, got {value!r}")
        return value

    def table(self, key: str) -> TomlReader:
        value = self._get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "must be a table")
        return TomlReader(value, self.where, f"{self._name(key)}.")

    def tables(self, key: str) -> list[TomlReader]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(key, "must be a list of tables")
        return [TomlReader(v, self.where, f"{self._name(key)}[{i}].") for i, v in enumerate(value)]


_REQUIRED: Final = object()
