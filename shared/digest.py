"""send_digest: one summary a day for ops, sent through the failure queue like any alert.

The timer builds the digest of the UTC day before it runs and puts it on the failure queue as a
daily_digest chunk. notify_failures then sends it as it sends every alert: claimed in AlertLog under an
alert id that names the day (so a timer that fires twice, or two instances, send it once), retried with
backoff, routed by ALERT_ROUTES (its source is DIGEST_SOURCE), and poisoned with a reason if the webhook
refuses it.

Reads, once a day: batch rows finalised that day and pending rows first seen before the threshold (filtered
queries over BatchUploadStatus, one row per batch), the failed devices of that day's batches (a
DeviceUploadStatus partition query per batch with failures), and the poison queues' message counts.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import sleep as wait
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from .failure_chunks import DAILY_DIGEST, FailureChunk, digest_alert_id
from .models import Outcome
from .remediation import remediation_for

DIGEST_SOURCE = "batchwatch-digest"  # the source an ALERT_ROUTES route names to take the digest
NO_CUSTOMER = "00000000-0000-0000-0000-000000000000"  # a digest is about every customer
TOP_CODES = 20
TOP_CUSTOMERS = 10
OLDEST_PENDING = 10
EMPTY_DAY_CHOICES = ("say", "skip")
MAX_LABEL_CHARS = 120  # an error code's label in the digest (the message holds 20 of them)
READ_RETRY_SECONDS = (15.0, 60.0, 240.0)  # a timer is not retried by the host: the digest's reads are, here

log = logging.getLogger("batchwatch.send_digest")


@dataclass(frozen=True)
class DigestSettings:
    pending_hours: float = 24.0  # DIGEST_PENDING_HOURS: a batch pending longer is listed
    empty_day: str = "say"  # DIGEST_EMPTY_DAY: say (one line) or skip (nothing sent)


class DigestSource(Protocol):
    """What the digest reads."""

    def finalized(self, since: datetime, until: datetime) -> Iterable[Mapping[str, Any]]: ...

    def failed_devices(self, tracking_id: str) -> Iterable[Mapping[str, Any]]: ...

    def pending_since(self, before: datetime) -> Iterable[Mapping[str, Any]]: ...

    def poison_counts(self) -> Mapping[str, int]: ...


def digest_day(now: datetime) -> date:
    """The day a digest sent at now covers: the UTC day before."""
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def summarise(day: date, source: DigestSource, now: datetime, settings: DigestSettings) -> dict[str, Any]:
    """The digest's figures (the daily_digest chunk's digest object)."""
    since = datetime.combine(day, time(), UTC)
    outcomes: Counter[str] = Counter()
    failed_by_customer: Counter[str] = Counter()
    batches_by_customer: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for batch in source.finalized(since, since + timedelta(days=1)):
        customer = str(batch.get("PartitionKey"))
        outcomes[str(batch.get("outcome"))] += 1
        batches_by_customer[customer] += 1
        if batch.get("failedDeviceCount"):
            failed_by_customer[customer] += int(batch.get("failedDeviceCount") or 0)
            for device in source.failed_devices(str(batch.get("RowKey"))):
                label = remediation_for(device.get("errorCode"), device.get("errorDescription")).label
                codes[label[:MAX_LABEL_CHARS]] += 1  # an unknown code is labelled with its stored description
    threshold = now - timedelta(hours=settings.pending_hours)
    pending = sorted(source.pending_since(threshold), key=lambda row: str(row.get("firstSeenAt")))
    poison = dict(source.poison_counts())
    return {
        "day": day.isoformat(),
        "empty": not outcomes and not pending and not any(poison.values()),
        "finalizedByOutcome": {outcome.value: outcomes[outcome.value] for outcome in Outcome
                               if outcomes[outcome.value]},
        "failedDevicesByErrorCode": dict(codes.most_common(TOP_CODES)),
        "errorCodesNotListed": max(0, len(codes) - TOP_CODES),
        "topCustomers": [{"customerId": customer, "failedDevices": count, "batches": batches_by_customer[customer]}
                         for customer, count in failed_by_customer.most_common(TOP_CUSTOMERS)],
        "pendingOverThreshold": {"count": len(pending), "thresholdHours": settings.pending_hours, "oldest": [
            {"customerId": str(row.get("PartitionKey")), "batchTrackingId": str(row.get("RowKey")),
             "firstSeenAt": _iso(row.get("firstSeenAt"))} for row in pending[:OLDEST_PENDING]]},
        "poisonMessages": poison,
    }


def digest_chunk(day: date, figures: dict[str, Any]) -> FailureChunk:
    return FailureChunk(type=DAILY_DIGEST, alert_id=digest_alert_id(day), customer_id=NO_CUSTOMER,
                        batch_tracking_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"batchwatch:digest:{day}")),
                        outcome="digest", chunk=1, chunks=1, source=DIGEST_SOURCE, digest=figures)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def run(now: datetime | None = None, sleep: Callable[[float], None] = wait) -> None:
    """The timer's work: the digest of yesterday onto the failure queue (or nothing, for a skipped empty day)."""
    from .app import storage_clients
    from .audit.queries import AuditQueries
    from .config import ALERT_NAMES, POLLING_NAMES, load_digest_settings, load_storage_names

    now = now or datetime.now(UTC)
    names = load_storage_names(os.environ, POLLING_NAMES | ALERT_NAMES)
    settings = load_digest_settings(os.environ)
    clients = storage_clients()
    source = TableDigestSource(AuditQueries(names, clients))
    send(digest_day(now), source, lambda text: clients.send(names.failure_queue, text), now, settings, sleep)


def send(day: date, source: DigestSource, enqueue: Callable[[str], None], now: datetime, settings: DigestSettings,
         sleep: Callable[[float], None]) -> FailureChunk | None:
    """Summarise the day and queue its digest, trying again after a storage fault (READ_RETRY_SECONDS)."""
    for pause in (*READ_RETRY_SECONDS, None):
        try:
            figures = summarise(day, source, now, settings)
            if figures["empty"] and settings.empty_day == "skip":
                log.info("digest for %s: nothing happened, and DIGEST_EMPTY_DAY=skip", day)
                return None
            chunk = digest_chunk(day, figures)
            enqueue(chunk.to_json())
            log.info("digest for %s queued for notify_failures (alert %s)", day, chunk.alert_id)
            return chunk
        except AzureError as exc:
            if pause is None:
                raise
            log.warning("digest for %s: storage fault (%s); trying again in %.0f s", day, type(exc).__name__, pause)
            sleep(pause)
    return None


class TableDigestSource:
    """DigestSource over the tables and the poison queues."""

    def __init__(self, queries: Any) -> None:
        self.queries = queries

    def finalized(self, since: datetime, until: datetime) -> Iterable[Mapping[str, Any]]:
        return self.queries.finalized(since, until)

    def failed_devices(self, tracking_id: str) -> Iterable[Mapping[str, Any]]:
        return self.queries.devices(tracking_id, failed_only=True)

    def pending_since(self, before: datetime) -> Iterable[Mapping[str, Any]]:
        return self.queries.all_batches(until=before, outcome="pending")  # first seen before then

    def poison_counts(self) -> Mapping[str, int]:
        from .audit.operator import PoisonQueues
        from .poison import poison_queue_name

        poison = PoisonQueues(self.queries.names, self.queries.clients)
        return {poison_queue_name(poison.source_queue(kind)): poison.count(kind) for kind in ("status", "failures")}
