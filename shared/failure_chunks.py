"""The failure-queue message (a "failure chunk"): what check_batch_status sends and notify_failures reads.

A final batch with failed devices becomes one or more device_failures chunks, each fitting a queue
message; a batch that ended badly also gets one batch_outcome chunk. FailureChunk is the one typed
shape of that message on both sides: to_json() writes it, from_json() checks everything it reads.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from .ids import InvalidIdError, normalize_guid
from .models import DeviceStatus, Outcome

# A queue message holds 64 KiB. The SDK sends the text inside XML, so the budget is measured on the
# XML-escaped UTF-8 bytes and keeps a margin.
MESSAGE_BUDGET_BYTES = 60 * 1024
# One device field in a chunk, measured as the chunk measures it (JSON with \u escapes, then XML). Six
# fields at this size stay far inside one message whatever characters they hold.
FIELD_BUDGET_BYTES = 2048
DEVICE_FIELDS = ("serialNumber", "productKey", "deviceId", "status", "errorCode", "errorDescription")
DAILY_DIGEST = "daily_digest"
CHUNK_TYPES = ("device_failures", "batch_outcome", DAILY_DIGEST)
MAX_DIGEST_ENTRIES = 50  # per list or map in a digest
DELIVERY_KEY = "_delivery"  # notify_failures' own retry count, added when it requeues a chunk
MAX_REASON_CHARS = 1024
MAX_SOURCE_CHARS = 256
MAX_COUNT = 10**9
_ALERT_NAMESPACE = uuid.UUID("5b0f3c3e-7f0e-4d0a-9f39-0c1d6d3b9a11")


class BadChunkError(ValueError):
    """A failure-queue message that can never be sent as an alert; the reason goes into the poison envelope."""


@dataclass(frozen=True)
class BatchContext:
    """What every chunk of one final batch says about the batch.

    run_started_at identifies the run: a batch is run again when it is resubmitted, and each run's alerts
    are sent (the alert ids differ), while a redelivery within one run produces the same ids.
    """

    customer_id: str
    batch_tracking_id: str
    outcome: Outcome
    correlation_id: str | None
    source: str | None
    device_count: int = 0
    failed_device_count: int = 0
    in_progress_device_count: int = 0
    run_started_at: str = ""


@dataclass(frozen=True)
class FailureChunk:
    type: str
    alert_id: str
    customer_id: str
    batch_tracking_id: str
    outcome: str
    chunk: int
    chunks: int
    devices: tuple[dict[str, Any], ...] = ()
    device_count: int = 0
    failed_device_count: int = 0
    in_progress_device_count: int = 0
    correlation_id: str | None = None
    source: str | None = None
    reason: str | None = None
    digest: dict[str, Any] | None = None  # a daily_digest's figures (see shared/digest.py)
    delivery_attempt: int = field(default=0, compare=False)  # how often notify_failures has tried to send it

    def document(self) -> dict[str, Any]:
        """The chunk as the JSON object on the queue (without the delivery count)."""
        document: dict[str, Any] = {
            "type": self.type,
            "alertId": self.alert_id,
            "customerId": self.customer_id,
            "batchTrackingId": self.batch_tracking_id,
            "outcome": self.outcome,
            "chunk": self.chunk,
            "chunks": self.chunks,
            "deviceCount": self.device_count,
            "failedDeviceCount": self.failed_device_count,
            "inProgressDeviceCount": self.in_progress_device_count,
        }
        if self.correlation_id:
            document["correlationId"] = self.correlation_id
        if self.source:
            document["source"] = self.source
        if self.reason is not None:
            document["reason"] = self.reason
        if self.digest is not None:
            document["digest"] = self.digest
        document["devices"] = list(self.devices)
        return document

    def to_json(self) -> str:
        document = self.document()
        if self.delivery_attempt:
            document[DELIVERY_KEY] = {"attempt": self.delivery_attempt}
        return json.dumps(document, ensure_ascii=True, separators=(",", ":"))

    def next_delivery(self) -> FailureChunk:
        return replace(self, delivery_attempt=self.delivery_attempt + 1)

    @classmethod
    def from_json(cls, body: bytes | str) -> FailureChunk:
        """Parse and check a failure-queue message; BadChunkError says what is wrong with it."""
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            document = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadChunkError(f"failure chunk is not UTF-8 JSON: {str(exc)[:200]}") from exc
        if not isinstance(document, dict):
            raise BadChunkError("failure chunk is not a JSON object")
        if document.get("type") not in CHUNK_TYPES:
            raise BadChunkError(f"failure chunk type must be one of {', '.join(CHUNK_TYPES)}")
        # The ids become AlertLog keys, a request header and log fields: only GUIDs, as check_batch_status writes.
        alert, customer, tracking = (_guid(document, name) for name in ("alertId", "customerId", "batchTrackingId"))
        outcome = _text(document, "outcome", 64, required=True) or ""
        chunk, chunks = _count(document, "chunk", minimum=1), _count(document, "chunks", minimum=1)
        if chunk > chunks:
            raise BadChunkError(f"failure chunk says it is part {chunk} of {chunks}")
        return cls(
            type=document["type"],
            alert_id=alert,
            customer_id=customer,
            batch_tracking_id=tracking,
            outcome=outcome,
            chunk=chunk,
            chunks=chunks,
            devices=_devices(document.get("devices")),
            device_count=_count(document, "deviceCount"),
            failed_device_count=_count(document, "failedDeviceCount"),
            in_progress_device_count=_count(document, "inProgressDeviceCount"),
            correlation_id=_guid(document, "correlationId") if document.get("correlationId") is not None else None,
            source=_text(document, "source", MAX_SOURCE_CHARS),
            reason=_text(document, "reason", MAX_REASON_CHARS * 2),
            digest=_digest(document.get("digest")) if document["type"] == DAILY_DIGEST else None,
            delivery_attempt=_delivery_attempt(document.get(DELIVERY_KEY)),
        )


def encoded_size(text: str) -> int:
    return len(xml_escape(text).encode("utf-8", "surrogatepass"))


def fitting_prefix(text: str, budget: int) -> int:
    """The length of the longest prefix whose JSON string encoding fits the budget (at least 1)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if encoded_size(json.dumps(text[:middle])) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def device_entry(device: DeviceStatus) -> dict[str, Any]:
    """One failed device as a chunk lists it; a field over FIELD_BUDGET_BYTES is cut and flagged."""
    values = (device.serial_number, device.product_key, device.device_id, device.status, device.error_code,
              device.error_description)
    entry: dict[str, Any] = dict(zip(DEVICE_FIELDS, values, strict=True))
    truncated = False
    for name, value in entry.items():
        if isinstance(value, str) and encoded_size(json.dumps(value)) > FIELD_BUDGET_BYTES:
            entry[name] = value[: fitting_prefix(value, FIELD_BUDGET_BYTES)]
            truncated = True
    if truncated:
        entry["truncated"] = True  # the full values are in DeviceUploadStatus
    return entry


def failure_chunks(context: BatchContext, devices: Iterable[DeviceStatus]) -> Iterator[FailureChunk]:
    """The device_failures chunks for a final batch, deterministic for the same input and run. devices is read
    twice (a tuple, or a DeviceSelection that parses them again): once to count the chunks, once to make them,
    so that one chunk at a time is held."""
    total = sum(1 for _ in _groups(context, devices))
    for index, group in enumerate(_groups(context, devices), start=1):
        yield _chunk(context, "device_failures", alert_id(context, "device_failures", index, total, group), index,
                     total, tuple(group))


def _groups(context: BatchContext, devices: Iterable[DeviceStatus]) -> Iterator[list[dict[str, Any]]]:
    """The devices' entries, grouped so that each group's chunk fits a queue message."""
    current: list[dict[str, Any]] = []
    template = _chunk(context, "device_failures", "0" * 36, 999_999, 999_999, ())
    overhead = encoded_size(template.to_json())
    size = overhead
    for device in devices:
        entry = device_entry(device)
        entry_size = encoded_size(json.dumps(entry, ensure_ascii=True, separators=(",", ":"))) + 1
        if current and size + entry_size > MESSAGE_BUDGET_BYTES:
            yield current
            current, size = [], overhead
        current.append(entry)
        size += entry_size
    if current:
        yield current


def batch_outcome_chunk(context: BatchContext, reason: str) -> FailureChunk:
    """The alert for a batch that ended badly (timed_out, not_found, access_denied, or errors without devices)."""
    cut = reason[:MAX_REASON_CHARS]
    return replace(_chunk(context, "batch_outcome", alert_id(context, "batch_outcome", 1, 1, []), 1, 1, ()),
                   reason=cut)


def alert_id(context: BatchContext, kind: str, index: int, total: int, entries: list[dict[str, Any]]) -> str:
    """Stable across redeliveries and duplicate messages within one run; new for each run of the batch."""
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode("ascii"))
    name = f"{kind}/{context.batch_tracking_id}/{context.outcome}/{index}/{total}/{digest.hexdigest()}"
    if context.run_started_at:
        name += f"/run:{context.run_started_at}"
    return str(uuid.uuid5(_ALERT_NAMESPACE, name))


def _chunk(context: BatchContext, kind: str, alert: str, index: int, total: int,
           devices: tuple[dict[str, Any], ...]) -> FailureChunk:
    return FailureChunk(
        type=kind, alert_id=alert, customer_id=context.customer_id, batch_tracking_id=context.batch_tracking_id,
        outcome=str(context.outcome), chunk=index, chunks=total, devices=devices,
        device_count=context.device_count, failed_device_count=context.failed_device_count,
        in_progress_device_count=context.in_progress_device_count, correlation_id=context.correlation_id,
        source=context.source,
    )


def digest_alert_id(day: date) -> str:
    """One alert id per day: every digest of that day is the same alert, sent once."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{DAILY_DIGEST}/{day.isoformat()}"))


def _digest(value: Any) -> dict[str, Any]:
    """A digest's figures, rebuilt from what the message holds, each checked."""
    if not isinstance(value, dict):
        raise BadChunkError("daily_digest chunk has no digest object")
    try:
        day = date.fromisoformat(str(value.get("day")))
    except ValueError as exc:
        raise BadChunkError("daily_digest chunk's digest.day is not a date") from exc
    pending = value.get("pendingOverThreshold")
    if not isinstance(pending, dict) or not isinstance(value.get("empty"), bool):
        raise BadChunkError("daily_digest chunk's digest lacks pendingOverThreshold or empty")
    hours = pending.get("thresholdHours")
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 <= hours <= 10_000:
        raise BadChunkError("daily_digest chunk's digest.pendingOverThreshold.thresholdHours is not a number")
    return {
        "day": day.isoformat(),
        "empty": value["empty"],
        "finalizedByOutcome": _tally(value, "finalizedByOutcome"),
        "failedDevicesByErrorCode": _tally(value, "failedDevicesByErrorCode"),
        "errorCodesNotListed": _count(value, "errorCodesNotListed"),
        "topCustomers": [{"customerId": _guid(entry, "customerId"), "failedDevices": _count(entry, "failedDevices"),
                          "batches": _count(entry, "batches")} for entry in _entries(value, "topCustomers")],
        "pendingOverThreshold": {"count": _count(pending, "count"), "thresholdHours": hours, "oldest": [
            {"customerId": _guid(entry, "customerId"), "batchTrackingId": _guid(entry, "batchTrackingId"),
             "firstSeenAt": _text(entry, "firstSeenAt", 64) or ""} for entry in _entries(pending, "oldest")]},
        "poisonMessages": _tally(value, "poisonMessages"),
    }


def _tally(document: Mapping[str, Any], name: str) -> dict[str, int]:
    value = document.get(name)
    if not isinstance(value, dict) or len(value) > MAX_DIGEST_ENTRIES:
        raise BadChunkError(f"daily_digest chunk's {name} is not an object of at most {MAX_DIGEST_ENTRIES} counts")
    for key in value:
        if len(key) > 200:
            raise BadChunkError(f"daily_digest chunk's {name} has a name longer than 200 characters")
    return {key: _count(value, key) for key in value}


def _entries(document: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = document.get(name)
    if (not isinstance(value, list) or len(value) > MAX_DIGEST_ENTRIES
            or not all(isinstance(entry, dict) for entry in value)):
        raise BadChunkError(f"daily_digest chunk's {name} is not a list of at most {MAX_DIGEST_ENTRIES} objects")
    return value


def _reject_constant(name: str) -> Any:
    raise BadChunkError(f"failure chunk holds the non-JSON number {name}")


def _text(document: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise BadChunkError(f"failure chunk has no {name} string")
    if len(value) > limit:
        raise BadChunkError(f"failure chunk's {name} is longer than {limit} characters")
    return value


def _guid(document: Mapping[str, Any], name: str) -> str:
    try:
        return normalize_guid(document.get(name), f"failure chunk's {name}")
    except InvalidIdError as exc:
        raise BadChunkError(str(exc) if document.get(name) is not None else f"failure chunk has no {name}") from exc


def _count(document: Mapping[str, Any], name: str, minimum: int = 0) -> int:
    value = document.get(name, 0 if minimum == 0 else None)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_COUNT:
        raise BadChunkError(f"failure chunk's {name} must be a whole number from {minimum} to {MAX_COUNT}")
    return value


def _delivery_attempt(value: Any) -> int:
    if value is None:
        return 0
    if not isinstance(value, dict):
        raise BadChunkError(f"failure chunk's {DELIVERY_KEY} is not an object")
    attempt = value.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt <= 1_000_000:
        raise BadChunkError(f"failure chunk's {DELIVERY_KEY}.attempt must be a whole number from 0 to 1000000")
    return attempt


def _devices(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not all(isinstance(device, dict) for device in value):
        raise BadChunkError("failure chunk has no devices list")
    devices = []
    for index, device in enumerate(value):
        entry: dict[str, Any] = {}
        for name in DEVICE_FIELDS:
            field_value = device.get(name)
            if field_value is not None and not isinstance(field_value, str):
                raise BadChunkError(f"failure chunk's devices[{index}].{name} is not a string")
            entry[name] = field_value
        if device.get("truncated") is True:
            entry["truncated"] = True
        devices.append(entry)
    return tuple(devices)
