"""Split a batch's failed devices into failure-queue messages that each fit a queue message."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from .models import DeviceStatus, Outcome

# A queue message holds 64 KiB. The SDK sends the text inside XML, so the budget is measured on the
# XML-escaped UTF-8 bytes and keeps a margin.
MESSAGE_BUDGET_BYTES = 60 * 1024
MAX_FIELD_CHARS = 1024
_ALERT_NAMESPACE = uuid.UUID("5b0f3c3e-7f0e-4d0a-9f39-0c1d6d3b9a11")


@dataclass(frozen=True)
class BatchContext:
    customer_id: str
    batch_tracking_id: str
    outcome: Outcome
    correlation_id: str | None
    source: str | None
    device_count: int = 0
    failed_device_count: int = 0


def encoded_size(text: str) -> int:
    return len(xml_escape(text).encode("utf-8", "surrogatepass"))


def device_entry(device: DeviceStatus) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "serialNumber": device.serial_number,
        "productKey": device.product_key,
        "deviceId": device.device_id,
        "status": device.status,
        "errorCode": device.error_code,
        "errorDescription": device.error_description,
    }
    truncated = False
    for name, value in entry.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            entry[name] = value[:MAX_FIELD_CHARS]
            truncated = True
    if truncated:
        entry["truncated"] = True  # the full values are in DeviceUploadStatus
    return entry


def failure_chunks(context: BatchContext, devices: tuple[DeviceStatus, ...]) -> list[str]:
    """The failure-queue messages for a final batch, deterministic for the same input."""
    entries = [device_entry(device) for device in devices]
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    overhead = encoded_size(_render(context, [], 999, 999, "0" * 36))
    size = overhead
    for entry in entries:
        entry_size = encoded_size(json.dumps(entry, ensure_ascii=True)) + 1
        if current and size + entry_size > MESSAGE_BUDGET_BYTES:
            groups.append(current)
            current, size = [], overhead
        current.append(entry)
        size += entry_size
    if current:
        groups.append(current)
    total = len(groups)
    return [
        _render(context, group, index, total, alert_id(context, "device_failures", index, total, group))
        for index, group in enumerate(groups, start=1)
    ]


def batch_outcome_message(context: BatchContext, reason: str) -> str:
    """The alert for a batch that ended without a result (timed_out, not_found, access_denied)."""
    document = _document(context, "batch_outcome", alert_id(context, "batch_outcome", 1, 1, []), 1, 1)
    document["reason"] = reason[:1024]
    document["devices"] = []
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def alert_id(context: BatchContext, kind: str, index: int, total: int, entries: list[dict[str, Any]]) -> str:
    """Stable across redeliveries and duplicate submissions of the same final result."""
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode("ascii"))
    name = f"{kind}/{context.batch_tracking_id}/{context.outcome}/{index}/{total}/{digest.hexdigest()}"
    return str(uuid.uuid5(_ALERT_NAMESPACE, name))


def _document(context: BatchContext, kind: str, alert: str, index: int, total: int) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": kind,
        "alertId": alert,
        "customerId": context.customer_id,
        "batchTrackingId": context.batch_tracking_id,
        "outcome": str(context.outcome),
        "chunk": index,
        "chunks": total,
        "deviceCount": context.device_count,
        "failedDeviceCount": context.failed_device_count,
    }
    if context.correlation_id:
        document["correlationId"] = context.correlation_id
    if context.source:
        document["source"] = context.source
    return document


def _render(context: BatchContext, entries: list[dict[str, Any]], index: int, total: int, alert: str) -> str:
    document = _document(context, "device_failures", alert, index, total)
    document["devices"] = entries
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))
