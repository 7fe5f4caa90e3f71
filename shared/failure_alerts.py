"""notify_failures: one failure-queue chunk in, an alert out."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from .config import Settings
from .log import context_logger
from .poison import poison_envelopes, poison_queue_name
from .storage import NEVER_EXPIRES, StorageClients

ALERT_TYPES = ("device_failures", "batch_outcome")


class BadChunkError(ValueError):
    pass


def parse_chunk(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadChunkError(f"failure chunk is not UTF-8 JSON: {str(exc)[:200]}") from exc
    if not isinstance(document, dict):
        raise BadChunkError("failure chunk is not a JSON object")
    if document.get("type") not in ALERT_TYPES:
        raise BadChunkError(f"failure chunk type must be one of {', '.join(ALERT_TYPES)}")
    for name in ("alertId", "customerId", "batchTrackingId", "outcome"):
        if not isinstance(document.get(name), str) or not document[name]:
            raise BadChunkError(f"failure chunk has no {name}")
    if not isinstance(document.get("devices"), list):
        raise BadChunkError("failure chunk has no devices list")
    return document


class FailureNotifier:
    def __init__(self, settings: Settings, clients: StorageClients) -> None:
        self.settings = settings
        self.clients = clients

    def handle(self, body: bytes, message_id: str = "") -> None:
        try:
            chunk = parse_chunk(body)
        except BadChunkError as exc:
            queue = poison_queue_name(self.settings.failure_queue)
            for envelope in poison_envelopes(body.decode("utf-8", "replace"), str(exc), datetime.now(UTC)):
                self.clients.send(queue, envelope, time_to_live=NEVER_EXPIRES)
            logging.getLogger("batchwatch.notify_failures").warning(
                "rejected a bad failure chunk to %s: %s [messageId=%s]", queue, exc, message_id
            )
            return
        log = context_logger(
            "batchwatch.notify_failures",
            correlationId=chunk.get("correlationId"),
            batchTrackingId=chunk["batchTrackingId"],
            alertId=chunk["alertId"],
        )
        codes = Counter(str(device.get("errorCode") or device.get("status")) for device in chunk["devices"])
        by_code = ", ".join(f"{code}: {count}" for code, count in sorted(codes.items())) or "none"
        log.warning(
            "ALERT %s for customer %s, batch %s (chunk %s of %s): %d failed devices by code: %s",
            chunk["outcome"], chunk["customerId"], chunk["batchTrackingId"], chunk.get("chunk"),
            chunk.get("chunks"), len(chunk["devices"]), by_code,
        )
