"""notify_failures: one failure-queue chunk in, one alert out, sent once and never lost."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .alert_formats import code_counts, render
from .alert_log import AlertLog
from .config import Settings
from .log import ContextLogger, context_logger
from .poison import poison_queue_name, send_to_poison
from .storage import StorageClients, queue_delay
from .webhook import Delivered, Rejected, RetryLater, WebhookSender

ALERT_TYPES = ("device_failures", "batch_outcome")
DELIVERY_KEY = "_delivery"


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
    devices = document.get("devices")
    if not isinstance(devices, list) or not all(isinstance(device, dict) for device in devices):
        raise BadChunkError("failure chunk has no devices list")
    for name in ("chunk", "chunks"):
        if not isinstance(document.get(name), int):
            raise BadChunkError(f"failure chunk has no {name} number")
    return document


class FailureNotifier:
    def __init__(
        self,
        settings: Settings,
        clients: StorageClients,
        sender: WebhookSender | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.alert_log = AlertLog(clients, settings.alert_table)
        url = settings.alert_webhook_url
        self.sender = sender or (WebhookSender(url) if url else None)
        self.clock = clock

    def handle(self, body: bytes, message_id: str = "") -> None:
        try:
            chunk = parse_chunk(body)
        except BadChunkError as exc:
            self._poison(body.decode("utf-8", "replace"), str(exc))
            logging.getLogger("batchwatch.notify_failures").warning(
                "rejected a bad failure chunk: %s [messageId=%s]", exc, message_id)
            return
        delivery = chunk.pop(DELIVERY_KEY, None)
        attempt = int(delivery.get("attempt", 0)) if isinstance(delivery, dict) else 0
        log = context_logger("batchwatch.notify_failures", correlationId=chunk.get("correlationId"),
                             batchTrackingId=chunk["batchTrackingId"], alertId=chunk["alertId"])
        now = self.clock()
        claim = self.alert_log.claim(chunk["batchTrackingId"], chunk["alertId"], now)
        if claim.already_sent:
            log.info("alert already sent; duplicate chunk ignored")
            return
        if not claim.granted:
            log.info("another copy of this alert is being sent; looking again in %.0f s", claim.retry_in)
            self._requeue(chunk, attempt, claim.retry_in)
            return
        record: dict[str, Any] = {
            "type": chunk["type"], "outcome": chunk["outcome"], "customerId": chunk["customerId"],
            "chunk": chunk["chunk"], "chunks": chunk["chunks"], "deviceCount": len(chunk["devices"]),
            "format": self.settings.alert_webhook_format, "attempts": attempt + 1,
            "correlationId": chunk.get("correlationId") or "",
        }
        if self.sender is None:
            self._log_only(chunk, log)
            self.alert_log.record(chunk["batchTrackingId"], chunk["alertId"],
                                  {**record, "status": "sent", "sentAt": now, "webhookHost": "log"})
            return
        payload = render(chunk, self.settings.alert_webhook_format)
        result = self.sender.send(payload, chunk["alertId"])
        if isinstance(result, Delivered):
            self.alert_log.record(chunk["batchTrackingId"], chunk["alertId"], {
                **record, "status": "sent", "sentAt": self.clock(), "webhookHost": self.sender.host,
                "httpStatus": result.status_code, "payloadBytes": len(json.dumps(payload).encode()),
            })
            log.info("alert %s sent to %s (chunk %s of %s, %d devices)", chunk["outcome"], self.sender.host,
                     chunk["chunk"], chunk["chunks"], len(chunk["devices"]))
        elif isinstance(result, RetryLater):
            self._retry(chunk, attempt, result, record, log)
        elif isinstance(result, Rejected):
            self.alert_log.record(chunk["batchTrackingId"], chunk["alertId"],
                                  {**record, "status": "rejected", "lastError": result.reason})
            self._poison(json.dumps(chunk), result.reason)
            log.error("alert refused: %s; the chunk is in %s", result.reason,
                      poison_queue_name(self.settings.failure_queue))

    def _retry(self, chunk: dict[str, Any], attempt: int, result: RetryLater, record: dict[str, Any],
               log: ContextLogger) -> None:
        attempts = attempt + 1
        if attempts >= self.settings.alert_max_attempts:
            reason = f"webhook delivery gave up after {attempts} attempts: {result.reason}"
            self.alert_log.record(chunk["batchTrackingId"], chunk["alertId"],
                                  {**record, "status": "failed", "lastError": reason})
            self._poison(json.dumps(chunk), reason)
            log.error("%s; the chunk is in %s", reason, poison_queue_name(self.settings.failure_queue))
            return
        backoff = min(self.settings.alert_retry_max_delay,
                      self.settings.alert_retry_initial_delay * 2.0 ** min(attempt, 30))
        delay = max(backoff, result.retry_after or 0.0)
        self.alert_log.record(chunk["batchTrackingId"], chunk["alertId"],
                              {**record, "status": "retrying", "lastError": result.reason})
        self._requeue(chunk, attempts, delay)
        log.warning("%s; alert requeued, attempt %d of %d in %.0f s", result.reason, attempts + 1,
                    self.settings.alert_max_attempts, delay)

    def _requeue(self, chunk: dict[str, Any], attempt: int, delay: float) -> None:
        message = json.dumps({**chunk, DELIVERY_KEY: {"attempt": attempt}}, separators=(",", ":"))
        self.clients.send(self.settings.failure_queue, message, visibility_timeout=queue_delay(delay))

    def _poison(self, original: str, reason: str) -> None:
        send_to_poison(self.clients, self.settings.failure_queue, original, reason, self.clock())

    @staticmethod
    def _log_only(chunk: dict[str, Any], log: ContextLogger) -> None:
        by_code = ", ".join(f"{count.label}: {count.count}" for count in code_counts(chunk["devices"])) or "none"
        log.warning(
            "ALERT %s for customer %s, batch %s (chunk %s of %s): %d failed devices by code: %s "
            "(ALERT_WEBHOOK_URL is not set, so alerts only go to the log)",
            chunk["outcome"], chunk["customerId"], chunk["batchTrackingId"], chunk["chunk"], chunk["chunks"],
            len(chunk["devices"]), by_code,
        )
