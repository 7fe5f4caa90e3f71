"""AlertLog: one row per alertId, so an alert is sent once.

    status  sending -> sent        the normal path
            sending -> retrying    the webhook asked to be tried later; the chunk was requeued
            sending -> rejected    the webhook refused it; the chunk went to the poison queue

A copy of a chunk that finds 'sent' does nothing. One that finds a fresh 'sending' claim (another
copy is sending right now) waits and looks again. A 'sending' claim older than CLAIM_SECONDS
belonged to an invocation that crashed, and may be taken over. Every write after the claim is
conditional on the claim's etag, so a copy whose claim was taken over never overwrites the row
(a stale 'retrying' cannot replace 'sent'); the webhook POST's total deadline (webhook.py) keeps
a live sender well inside its claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from .storage import StorageClients
from .table_values import set_columns

CLAIM_SECONDS = 120
CLAIM_ATTEMPTS = 3
SENDING, SENT, RETRYING, REJECTED, FAILED = "sending", "sent", "retrying", "rejected", "failed"


@dataclass(frozen=True)
class Claim:
    granted: bool
    already_sent: bool = False
    retry_in: float = 0.0
    etag: str = ""  # of the row as this claim wrote it


@dataclass(frozen=True)
class AlertRecord:
    """An AlertLog row as read: what claim_decision needs."""

    etag: str
    status: str
    claimed_at: datetime | None

    @classmethod
    def from_entity(cls, entity: Any) -> AlertRecord:
        claimed_at = entity.get("claimedAt")
        return cls(str(entity.metadata["etag"]), str(entity.get("status") or ""),
                   claimed_at if isinstance(claimed_at, datetime) else None)


def claim_decision(record: AlertRecord | None, now: datetime) -> Claim | None:
    """What a copy of a chunk does about the alert's row: None means "write a claim" (create the row, or take
    it over under its etag); a Claim that is not granted means the alert was sent, or is being sent now."""
    if record is None:
        return None
    if record.status == SENT:
        return Claim(False, already_sent=True)
    if record.status == SENDING and record.claimed_at is not None:
        age = (now - record.claimed_at).total_seconds()
        if age < CLAIM_SECONDS:
            return Claim(False, retry_in=CLAIM_SECONDS - age)
    return None


def claim_fields(now: datetime) -> dict[str, Any]:
    return {"status": SENDING, "claimedAt": now}


@dataclass(frozen=True)
class AlertAttempt:
    """What the AlertLog row says of one claimed attempt to send an alert, written under the claim's etag."""

    status: str  # sent, retrying, rejected or failed
    type: str  # the chunk's: device_failures or batch_outcome
    outcome: str
    customer_id: str
    chunk: int
    chunks: int
    device_count: int
    format: str
    attempts: int
    correlation_id: str
    sent_at: datetime | None = None
    webhook_host: str | None = None
    http_status: int | None = None
    payload_bytes: int | None = None
    last_error: str | None = None

    def to_entity(self) -> dict[str, Any]:
        return set_columns(self)


class AlertLog:
    def __init__(self, clients: StorageClients, table: str) -> None:
        self._clients = clients
        self._table = table

    def claim(self, tracking_id: str, alert_id: str, now: datetime) -> Claim:
        entity = {"PartitionKey": tracking_id, "RowKey": alert_id, **claim_fields(now)}
        for _ in range(CLAIM_ATTEMPTS):
            record = self._get(tracking_id, alert_id)
            decided = claim_decision(record, now)
            if decided is not None:
                return decided
            try:
                write = (partial(_create, entity=entity) if record is None
                         else partial(_merge_if_unchanged, entity=entity, etag=record.etag))
                metadata = self._clients.with_table(self._table, write)
                return Claim(True, etag=str(metadata["etag"]))
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                continue  # another copy claimed it meanwhile: look again
        return Claim(False, retry_in=CLAIM_SECONDS)

    def record(self, tracking_id: str, alert_id: str, attempt: AlertAttempt, claim_etag: str) -> bool:
        """Merge the attempt into the row this claim holds; False when another copy has claimed it since."""
        entity = {"PartitionKey": tracking_id, "RowKey": alert_id, **attempt.to_entity()}
        try:
            self._clients.with_table(self._table, partial(_merge_if_unchanged, entity=entity, etag=claim_etag))
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def _get(self, tracking_id: str, alert_id: str) -> AlertRecord | None:
        def read(client: Any) -> AlertRecord | None:
            try:
                return AlertRecord.from_entity(client.get_entity(tracking_id, alert_id))
            except ResourceNotFoundError:
                return None

        return self._clients.with_table(self._table, read)


def _create(client: Any, entity: dict[str, Any]) -> Any:
    return client.create_entity(entity)


def _merge_if_unchanged(client: Any, entity: dict[str, Any], etag: str) -> Any:
    return client.update_entity(entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified)
