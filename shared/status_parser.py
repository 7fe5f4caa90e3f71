"""Parse a BatchUploadDetails JSON body into BatchStatus, tolerating what Partner Center may send.

The body is read as a stream (ijson): one pass checks its shape, reads the batch's own fields and counts the
devices; the devices themselves are parsed again from the body on each pass over BatchStatus.devices, so that
a batch of any size costs memory for one device at a time, not for the whole list.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

import ijson

from .models import BatchStatus, DeviceStatus

_KNOWN_DEVICE_FIELDS = {
    "serialNumber",
    "productKey",
    "deviceId",
    "status",
    "errorCode",
    "errorDescription",
    "attributes",
}
_BATCH_FIELDS = ("batchTrackingId", "status", "startedTime", "completedTime")
_DEVICES = "devicesStatus"
_DEVICE_PATH = _DEVICES + ".item"  # ijson's name for an element of the devicesStatus list
_JSON_TYPES = {"start_array": "list", "string": "str", "number": "number", "boolean": "bool", "null": "null"}
_CONTAINER = object()  # a batch field that holds an object or a list
# ijson's fastest backend (C, yajl) misreads string escapes of surrogates that do not pair ("\\ud800" becomes
# "?", "\\udc00" an error), and mishandles an integer longer than Python converts (4,300 digits): its error
# left the interpreter in a state that crashed the process on a later parse. ijson's pure-Python backend
# handles both as json.loads does (the escape read exactly, the integer a clean error), so an answer with an
# unpaired surrogate escape or a run of 1,000 digits is read with it (slower; Partner Center sends neither).
_FAST, _EXACT = ijson, ijson.get_backend("python")
# Numbers: ijson reads a fraction or an exponent as a Decimal (1e400 included, which a float cannot hold); a
# device's are turned into floats as json.loads turns them (1e400 is inf). NaN and Infinity are not JSON.
_UNPAIRED_SURROGATE = re.compile(  # an unpaired high surrogate escape, or a low one alone
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F]")
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{1000}")
_SCAN_OVERLAP = 1000
MAX_DEPTH = 64  # objects and lists inside each other: BatchUploadDetails needs 4
_SCAN_BYTES = 64 * 1024


class MalformedStatusError(ValueError):
    """The body is not a BatchUploadDetails object."""


class StreamedDevices:
    """The devicesStatus list of an answer, parsed from the body again on each pass (each pass reads the body
    from its own position, so two passes may run side by side)."""

    def __init__(self, content: IO[bytes], count: int, backend: Any = _FAST) -> None:
        self._content = content
        self._count = count
        self._backend = backend

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[DeviceStatus]:
        items = self._backend.items(_Reader(self._content), _DEVICE_PATH)
        for index, item in enumerate(items):
            yield _parse_device(item, index)


class _Reader:
    """A read position of its own in a shared file."""

    def __init__(self, content: IO[bytes]) -> None:
        self._content = content
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        self._content.seek(self._offset)
        data = self._content.read(size)
        self._offset += len(data)
        return data


def parse_batch_status(body: bytes | str | IO[bytes]) -> BatchStatus:
    content: IO[bytes] = io.BytesIO(body.encode("utf-8") if isinstance(body, str) else body) \
        if isinstance(body, (bytes, str)) else body
    backend = _EXACT if _needs_exact_parser(content) else _FAST
    try:
        fields, count = _scan(_Reader(content), backend)
    except MalformedStatusError:
        raise
    except (ijson.JSONError, ValueError) as exc:  # ValueError: invalid UTF-8, an integer Python cannot hold
        raise MalformedStatusError(f"status body is not JSON: {_first_line(exc)}") from exc
    status = fields.get("status")
    if not isinstance(status, str) or not status.strip():
        raise MalformedStatusError("status body has no 'status' string")
    tracking = fields.get("batchTrackingId")
    return BatchStatus(
        batch_tracking_id=tracking.lower() if isinstance(tracking, str) else None,
        status=status.strip().lower(),
        started_time=parse_time(fields.get("startedTime")),
        completed_time=parse_time(fields.get("completedTime")),
        devices=StreamedDevices(content, count, backend) if count else (),
    )


def _scan(reader: _Reader, backend: Any) -> tuple[dict[str, Any], int]:
    """The batch's own fields (the last of a repeated name, as json.loads keeps it) and the number of devices,
    checking the shape: an object, devicesStatus a list of objects (or null or absent)."""
    events = backend.basic_parse(reader)
    event, _ = next(events)
    if event != "start_map":
        raise MalformedStatusError(f"status body is a JSON {_JSON_TYPES.get(event, event)}, not an object")
    fields: dict[str, Any] = {}
    depth, key, count, lists = 1, "", 0, 0
    for event, value in events:
        closes = event in ("end_map", "end_array")
        if depth == 1:
            if event == "map_key":
                key = value
                if key == _DEVICE_PATH:  # it would read as an element of devicesStatus
                    raise MalformedStatusError(f"status body has a field named {_DEVICE_PATH!r}")
                continue
            if key == _DEVICES and not closes:
                lists += 1
                if lists > 1:
                    raise MalformedStatusError("'devicesStatus' appears more than once")
                if event not in ("start_array", "null"):
                    raise MalformedStatusError("'devicesStatus' is not a list")
            elif key in _BATCH_FIELDS and not closes:
                fields[key] = _CONTAINER if event in ("start_map", "start_array") else value
        elif depth == 2 and key == _DEVICES and not closes:  # an element of devicesStatus
            if event != "start_map":
                raise MalformedStatusError(f"devicesStatus[{count}] is not an object")
            count += 1
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise MalformedStatusError(f"status body nests objects and lists over {MAX_DEPTH} deep")
        elif closes:
            depth -= 1
    return fields, count


def _needs_exact_parser(content: IO[bytes]) -> bool:
    reader, tail = _Reader(content), b""
    while piece := reader.read(_SCAN_BYTES):
        text = tail + piece
        if (b"\\u" in text and _UNPAIRED_SURROGATE.search(text)) or _LONG_DIGIT_RUN.search(text):
            return True
        tail = piece[-_SCAN_OVERLAP:]
    return False


def _first_line(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).splitlines()[0] if str(text).strip() else type(exc).__name__


# Edm.DateTime holds 1601-01-01 to 9999-12-31 (UTC). .NET writes a DateTime that was never set as
# 0001-01-01T00:00:00; such a time, or any other outside the range, is treated as absent.
EARLIEST_STORABLE = datetime(1601, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 time; Partner Center omits the zone ("2017-07-25T10:00:00"), which means UTC.

    None when absent, unparseable, or outside what Table Storage stores.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # .NET writes 7 fractional digits; Python's parser takes at most 6.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[: min(digits, 6)] + rest[digits:]
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        in_utc = parsed.astimezone(UTC)  # OverflowError at the edges, e.g. 0001-01-01T00:00:00+01:00
    except (ValueError, OverflowError):
        return None
    return in_utc if in_utc >= EARLIEST_STORABLE else None


def _parse_device(item: Any, index: int) -> DeviceStatus:
    if not isinstance(item, dict):
        raise MalformedStatusError(f"devicesStatus[{index}] is not an object")
    item = {name: float(value) if isinstance(value, Decimal) else value for name, value in item.items()}
    status = item.get("status")
    extra = {
        name: value
        for name, value in item.items()
        if name not in _KNOWN_DEVICE_FIELDS
        and isinstance(value, (str, int, float, bool))
        and name.isidentifier()
    }
    return DeviceStatus(
        serial_number=_text(item.get("serialNumber")),
        product_key=_text(item.get("productKey")),
        device_id=_text(item.get("deviceId")),
        status=status.strip().lower() if isinstance(status, str) else "unknown",
        error_code=_text(item.get("errorCode")),
        error_description=_text(item.get("errorDescription")),
        extra=extra,
    )


def _text(value: Any) -> str | None:
    """Strings stay as they are; numbers (the swagger types some codes as int) become strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=float)  # ijson reads a fraction as a Decimal
