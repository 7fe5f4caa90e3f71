"""notify_failures: one failure chunk in, one alert out, sent once and never lost."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .alert_formats import code_counts, render
from .alert_log import FAILED, REJECTED, RETRYING, SENT, AlertAttempt, Claim
from .alert_routes import route_for
from .config import AlertSettings
from .failure_chunks import BadChunkError, FailureChunk
from .log import ContextLogger, context_logger
from .poison import poison_queue_name, send_to_poison
from .ports import AlertRecords, Queues, Webhook
from .storage import queue_delay
from .telemetry import ALERTS
from .webhook import Delivered, Rejected, RetryLater, WebhookSender

# A receiver's Retry-After is honoured up to a day; past that the chunk still comes back daily.
MAX_HONOURED_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True)
class _Sending:
    """One claimed attempt to send a chunk: every AlertLog write after the claim is conditional on its etag."""

    chunk: FailureChunk
    claim: Claim
    log: ContextLogger
    alert_format: str

    def attempt(self, status: str, **details: Any) -> AlertAttempt:
        chunk, alert_format = self.chunk, self.alert_format
        return AlertAttempt(status, chunk.type, chunk.outcome, chunk.customer_id, chunk.chunk, chunk.chunks,
                            len(chunk.devices), alert_format, chunk.delivery_attempt + 1, chunk.correlation_id or "",
                            **details)


class FailureNotifier:
    def __init__(
        self,
        settings: AlertSettings,
        queues: Queues,
        alert_log: AlertRecords,
        sender: Webhook | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        route_sender: Callable[[str], Webhook] = WebhookSender,
    ) -> None:
        """sender None: ALERT_WEBHOOK_URL is not set, and alerts no route takes go to the log only. route_sender:
        the sender for an ALERT_ROUTES webhook URL (one per URL)."""
        self.settings = settings
        self.queues = queues
        self.alert_log = alert_log
        self.sender = sender
        self.clock = clock
        self._route_sender = route_sender
        self._route_senders: dict[str, Webhook] = {}
        for route in settings.alert_routes:
            if route.problem:
                context_logger("batchwatch.notify_failures").error(
                    "ALERT_ROUTES: %s cannot be used: %s; the alerts it matches wait until it is fixed",
                    route.describe(), route.problem)

    def handle(self, body: bytes, message_id: str = "", dequeue_count: int = 1) -> None:
        try:
            chunk = FailureChunk.from_json(body)
        except BadChunkError as exc:
            self._poison(body.decode("utf-8", "replace"), str(exc))
            context_logger("batchwatch.notify_failures").warning(
                "rejected a bad failure chunk: %s [messageId=%s]", exc, message_id)
            return
        log = context_logger("batchwatch.notify_failures", correlationId=chunk.correlation_id,
                             batchTrackingId=chunk.batch_tracking_id, customerId=chunk.customer_id,
                             alertId=chunk.alert_id, messageId=message_id)
        route = route_for(self.settings.alert_routes, chunk.customer_id, chunk.source)
        if route is not None and route.problem:
            log.error("alert waits: %s cannot be used: %s; trying again in %.0f s", route.describe(), route.problem,
                      self.settings.route_wait)
            self._requeue(chunk, self.settings.route_wait)
            return
        sender = self._sender_for(route.url) if route is not None and route.url else self.sender
        alert_format = route.alert_format if route is not None else self.settings.alert_webhook_format
        claim = self.alert_log.claim(chunk.batch_tracking_id, chunk.alert_id, self.clock())
        if claim.already_sent:
            log.info("alert already sent; duplicate chunk ignored")
            return
        if not claim.granted:
            log.info("another copy of this alert is being sent; looking again in %.0f s", claim.retry_in)
            self._requeue(chunk, claim.retry_in)
            return
        sending = _Sending(chunk, claim, log, alert_format)
        if sender is None:
            self._log_only(chunk, log)
            self._record(sending, SENT, sent_at=self.clock(), webhook_host="log")
            return
        payload = render(chunk.document(), alert_format)
        result = sender.send(payload, chunk.alert_id)
        if isinstance(result, Delivered):
            self._record(sending, SENT, sent_at=self.clock(), webhook_host=sender.host,
                         http_status=result.status_code, payload_bytes=len(json.dumps(payload).encode()))
            log.info("alert %s sent to %s (chunk %s of %s, %d devices)", chunk.outcome, sender.host,
                     chunk.chunk, chunk.chunks, len(chunk.devices))
        elif isinstance(result, RetryLater):
            self._retry(sending, result)
        elif isinstance(result, Rejected):
            if not self._record(sending, REJECTED, last_error=result.reason):
                return  # another copy holds the claim now and will finish this alert
            self._poison(chunk.to_json(), result.reason)
            log.error("alert refused: %s; the chunk is in %s", result.reason,
                      poison_queue_name(self.settings.failure_queue))

    def _retry(self, sending: _Sending, result: RetryLater) -> None:
        chunk, log = sending.chunk, sending.log
        attempts = chunk.delivery_attempt + 1
        if attempts >= self.settings.alert_max_attempts:
            reason = f"webhook delivery gave up after {attempts} attempts: {result.reason}"
            if not self._record(sending, FAILED, last_error=reason):
                return  # another copy holds the claim now and will finish this alert
            self._poison(chunk.to_json(), reason)
            log.error("%s; the chunk is in %s", reason, poison_queue_name(self.settings.failure_queue))
            return
        backoff = min(self.settings.alert_retry_max_delay,
                      self.settings.alert_retry_initial_delay * 2.0 ** min(chunk.delivery_attempt, 30))
        delay = max(backoff, min(result.retry_after or 0.0, MAX_HONOURED_RETRY_AFTER_SECONDS))
        if not self._record(sending, RETRYING, last_error=result.reason):
            return  # another copy holds the claim now and will finish this alert
        self._requeue(chunk.next_delivery(), delay)
        log.warning("%s; alert requeued, attempt %d of %d in %.0f s", result.reason, attempts + 1,
                    self.settings.alert_max_attempts, delay)

    def _record(self, sending: _Sending, status: str, **details: Any) -> bool:
        """Write the outcome of this attempt, unless another copy took the claim over meanwhile."""
        ALERTS.add(1, {"result": {RETRYING: "retried"}.get(status, status)})
        chunk = sending.chunk
        written = self.alert_log.record(chunk.batch_tracking_id, chunk.alert_id,
                                        sending.attempt(status, **details),
                                        sending.claim.etag)
        if not written:
            sending.log.warning("the AlertLog claim was taken over by another copy; status %s not written", status)
        return written

    def _sender_for(self, url: str) -> Webhook:
        if url not in self._route_senders:
            self._route_senders[url] = self._route_sender(url)
        return self._route_senders[url]

    def _requeue(self, chunk: FailureChunk, delay: float) -> None:
        self.queues.send(self.settings.failure_queue, chunk.to_json(), visibility_timeout=queue_delay(delay))

    def _poison(self, original: str, reason: str) -> None:
        send_to_poison(self.queues, self.settings.failure_queue, original, reason, self.clock())

    @staticmethod
    def _log_only(chunk: FailureChunk, log: ContextLogger) -> None:
        if chunk.digest is not None:
            log.warning("DIGEST %s (ALERT_WEBHOOK_URL is not set, so alerts only go to the log)",
                        render(chunk.document(), "generic"))
            return
        devices = list(chunk.devices)
        by_code = ", ".join(f"{count.label}: {count.count}" for count in code_counts(devices)) or "none"
        log.warning(
            "ALERT %s for customer %s, batch %s (chunk %s of %s): %d failed devices by code: %s%s "
            "(ALERT_WEBHOOK_URL is not set, so alerts only go to the log)",
            chunk.outcome, chunk.customer_id, chunk.batch_tracking_id, chunk.chunk, chunk.chunks, len(devices),
            by_code, f"; reason: {chunk.reason}" if chunk.reason else "",
        )
