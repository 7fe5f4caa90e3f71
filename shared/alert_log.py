"""AlertLog: one row per alertId, so an alert is sent once.

    status  sending -> sent        the normal path
            sending -> retrying    the webhook asked to be tried later; the chunk was requeued
            sending -> rejected    the webhook refused it; the chunk went to the poison queue

A copy of a chunk that finds 'sent' does nothing. One that finds a fresh 'sending' claim (another
copy is sending right now) waits and looks again. A 'sending' claim older than CLAIM_SECONDS
belonged to an invocation that crashed, and may be taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from .storage import StorageClients

CLAIM_SECONDS = 120


@dataclass(frozen=True)
class Claim:
    granted: bool
    already_sent: bool = False
    retry_in: float = 0.0


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
                    self._clients.with_table(self._table, partial(_create, entity=fields))
                    return Claim(True)
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
                self._clients.with_table(self._table, partial(_replace_if_unchanged, entity=fields,
                                                              etag=row.metadata["etag"]))
                return Claim(True)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        return Claim(False, retry_in=CLAIM_SECONDS)

    def record(self, tracking_id: str, alert_id: str, fields: dict[str, Any]) -> None:
        entity = {"PartitionKey": tracking_id, "RowKey": alert_id, **fields}
        self._clients.with_table(self._table, lambda client: client.upsert_entity(entity))

    def _get(self, tracking_id: str, alert_id: str) -> Any:
        def read(client: Any) -> Any:
            try:
                return client.get_entity(tracking_id, alert_id)
            except ResourceNotFoundError:
                return None

        return self._clients.with_table(self._table, read)


def _create(client: Any, entity: dict[str, Any]) -> None:
    client.create_entity(entity)


def _replace_if_unchanged(client: Any, entity: dict[str, Any], etag: str) -> None:
    client.update_entity(entity, etag=etag, match_condition=MatchConditions.IfNotModified)
