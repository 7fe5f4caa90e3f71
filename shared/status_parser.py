"""Parse a BatchUploadDetails JSON body into BatchStatus, tolerating what Partner Center may send."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

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


class MalformedStatusError(ValueError):
    """The body is not a BatchUploadDetails object."""


def parse_batch_status(body: bytes | str) -> BatchStatus:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedStatusError(f"status body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MalformedStatusError(f"status body is a JSON {type(document).__name__}, not an object")
    status = document.get("status")
    if not isinstance(status, str) or not status.strip():
        raise MalformedStatusError("status body has no 'status' string")
    devices_raw = document.get("devicesStatus")
    if devices_raw is None:
        devices_raw = []
    if not isinstance(devices_raw, list):
        raise MalformedStatusError("'devicesStatus' is not a list")
    tracking = document.get("batchTrackingId")
    return BatchStatus(
        batch_tracking_id=tracking.lower() if isinstance(tracking, str) else None,
        status=status.strip().lower(),
        started_time=parse_time(document.get("startedTime")),
        completed_time=parse_time(document.get("completedTime")),
        devices=tuple(_parse_device(item, index) for index, item in enumerate(devices_raw)),
    )


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
    return json.dumps(value, ensure_ascii=False)
