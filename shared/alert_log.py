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

CLAIM_SECONDS = 120


@dataclass(frozen=True)
class Claim:
    granted: bool
    already_sent: bool = False
    retry_in: float = 0.0
    etag: str = ""  # of the row as this claim wrote it


class AlertLog:
    def __init__(self, clients: StorageClients, table: str) -> None:
        self._clients = clients
        self._table = table

    def claim(self, tracking_id: str, alert_id: str, now: datetime) -> Claim:
        for _ in range(3):
            row = self._get(tracking_id, alert_id)
            fields = {"PartitionKey": tracking_id, "RowKey": alert_id, "status": "sending", "claimedAt": now}
            if row is None:
                try:
                    metadata = self._clients.with_table(self._table, partial(_create, entity=fields))
                    return Claim(True, etag=str(metadata["etag"]))
                except ResourceExistsError:
                    continue
            if row.get("status") == "sent":
                return Claim(False, already_sent=True)
            claimed_at = row.get("claimedAt")
            if row.get("status") == "sending" and isinstance(claimed_at, datetime):
                age = (now - claimed_at).total_seconds()
                if age < CLAIM_SECONDS:
                    return Claim(False, retry_in=CLAIM_SECONDS - age)
            try:
                metadata = self._clients.with_table(self._table, partial(_merge_if_unchanged, entity=fields,
                                                                         etag=row.metadata["etag"]))
                return Claim(True, etag=str(metadata["etag"]))
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        return Claim(False, retry_in=CLAIM_SECONDS)

    def record(self, tracking_id: str, alert_id: str, fields: dict[str, Any], claim_etag: str) -> bool:
        """Merge fields into the row this claim holds; False when another copy has claimed it since."""
        entity = {"PartitionKey": tracking_id, "RowKey": alert_id, **fields}
        try:
            self._clients.with_table(self._table, partial(_merge_if_unchanged, entity=entity, etag=claim_etag))
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def _get(self, tracking_id: str, alert_id: str) -> Any:
        def read(client: Any) -> Any:
            try:
                return client.get_entity(tracking_id, alert_id)
            except ResourceNotFoundError:
                return None

        return self._clients.with_table(self._table, read)


def _create(client: Any, entity: dict[str, Any]) -> Any:
    return client.create_entity(entity)


def _merge_if_unchanged(client: Any, entity: dict[str, Any], etag: str) -> Any:
    return client.update_entity(entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified)
