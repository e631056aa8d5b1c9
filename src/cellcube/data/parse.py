"""The low-level parsing every reader shares: file bytes, JSON objects, text fields.

A problem with one record is a :class:`BadRecord`: it carries the record's location (``where``,
``"<file>:<line>"``), a short ``reason`` (the category counted in skip mode) and the one-line
``message`` shown to the user, so callers never parse a location back out of a message. A problem
with a whole file (it cannot be read, it is not UTF-8 where that is needed) is a
:class:`~cellcube.errors.DataError` straight away.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cellcube.errors import DataError

__all__ = [
    "MISSING",
    "BadRecord",
    "DuplicateKeyError",
    "one_line",
    "optional_number",
    "optional_text",
    "parse_json_object",
    "read_bytes",
    "read_text",
    "text_field",
    "type_name",
]

_UTF8_BOM = b"\xef\xbb\xbf"

MISSING: Any = object()
"""Stands for an absent field in :func:`text_field` (distinct from a JSON ``null``)."""


class BadRecord(Exception):
    """One malformed record: where it is, why (a category for counts) and the full message.

    Args:
        where: the record's location, ``"<file>:<line>"``.
        reason: the category counted in skip mode, e.g. ``"missing field"``.
        detail: what is wrong, e.g. ``"missing field 'answer'"``; the message is
            ``"<where>: <detail>"``.
    """

    def __init__(self, where: str, reason: str, detail: str) -> None:
        self.where = where
        self.reason = reason
        self.message = f"{where}: {detail}"
        super().__init__(self.message)


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key; ``key`` is the repeated key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def one_line(text: str) -> str:
    """``text`` collapsed onto one line (error messages must be a single line)."""
    return " ".join(text.split())


def type_name(value: object) -> str:
    """The JSON-ish name of ``value``'s type for error messages (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path`` without a leading UTF-8 BOM; any OS problem is a DataError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw


def read_text(path: Path) -> str:
    """``path`` decoded as UTF-8 (BOM ignored); invalid UTF-8 is a DataError naming the line."""
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: invalid UTF-8 at line {line}") from None


def _unique_object(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` object hook: a repeated key is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in items:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def parse_json_object(where: str, line: str) -> dict[str, Any]:
    """One line of JSON Lines as a dict; anything else (bad JSON, a repeated key, a list, a
    number) raises :class:`BadRecord` at ``where``."""
    try:
        record = json.loads(line, object_pairs_hook=_unique_object)
    except DuplicateKeyError as exc:
        raise BadRecord(
            where, "duplicate key", f"duplicate key {exc.key!r} in one record"
        ) from None
    except json.JSONDecodeError as exc:
        raise BadRecord(where, "invalid JSON", f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise BadRecord(where, "invalid JSON", "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise BadRecord(where, "invalid JSON", f"not valid JSON ({one_line(str(exc))})") from None
    if not isinstance(record, dict):
        raise BadRecord(where, "not an object", f"expected a JSON object, got {type_name(record)}")
    return record


def text_field(where: str, value: object, name: str) -> str:
    """``value`` (field ``name`` of the record at ``where``) stripped; :data:`MISSING`, a
    non-string, an empty text or a lone surrogate raises :class:`BadRecord` naming the field."""
    if value is MISSING:
        raise BadRecord(where, "missing field", f"missing field '{name}'")
    if not isinstance(value, str):
        raise BadRecord(
            where, "wrong type", f"field '{name}' must be a string, got {type_name(value)}"
        )
    text = value.strip()
    if not text:
        raise BadRecord(where, "empty field", f"field '{name}' is empty")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape such as "\ud800"
        raise BadRecord(
            where, "invalid unicode", f"field '{name}' is not valid Unicode (unpaired surrogate)"
        ) from None
    return text


def optional_text(where: str, record: dict[str, Any], name: str) -> str | None:
    """An optional metadata field: absent, null or blank is None; another type is BadRecord."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text_field(where, value, name)


def optional_number(where: str, record: dict[str, Any], name: str) -> float | None:
    """An optional numeric field (e.g. ``quality``): absent, null or blank is None; a finite
    number, or a text that reads as one (a CSV cell), is a float; anything else is BadRecord."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = math.nan
    if not math.isfinite(number):
        raise BadRecord(
            where, "wrong type", f"field '{name}' must be a finite number, got {value!r:.40}"
        )
    return number
