"""Operator commands: list and re-drive poison messages, and start polling again for ended batches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..batch_row import BatchRowChange
from ..config import StorageNames
from ..messages import ChainState, StatusRequest
from ..models import Outcome
from ..poison import poison_queue_name, read_envelope
from ..results_store import ResultsStore, RowChangedError
from ..storage import StorageClients
from .queries import AuditQueries, Row

RESUBMITTABLE = ("timed_out", "not_found", "access_denied", "response_too_large")
RECEIVE_LEASE_SECONDS = 60


@dataclass
class PoisonEntry:
    message: Any
    envelope: dict[str, Any] | None  # None: moved by the host after maxDequeueCount, the original as it was

    @property
    def row(self) -> Row:
        envelope = self.envelope or {}
        return {
            "messageId": self.message.id,
            "insertedOn": self.message.inserted_on,
            "reason": envelope.get("reason") or "moved by the Functions host after maxDequeueCount failures",
            "rejectedAt": envelope.get("rejectedAt"),
            "rejectionId": envelope.get("rejectionId"),
            "part": envelope.get("part"),
            "parts": envelope.get("parts"),
            "original": envelope["original"] if self.envelope else self.message.content,
        }


@dataclass
class Replay:
    message_ids: list[str]
    original: str
    reason: str
    sent: bool = False
    missing_parts: list[int] = field(default_factory=list)


class PoisonQueues:
    def __init__(self, names: StorageNames, clients: StorageClients) -> None:
        self.names = names
        self.clients = clients

    def source_queue(self, kind: str) -> str:
        return self.names.status_queue if kind == "status" else self.names.failure_queue

    def listing(self, kind: str, limit: int | None = None) -> list[Row]:
        """The poison messages, newest first; with limit, only the first limit the queue hands out (roughly the
        oldest), so that a huge queue is read in bounded time. Reading them hides them briefly; they are shown
        again at once."""
        entries = self._receive_all(kind, limit)
        self._release(kind, entries)
        return sorted((entry.row for entry in entries), key=lambda row: row["insertedOn"], reverse=True)

    def count(self, kind: str) -> int:
        """The queue's approximate message count, as the service reports it."""
        queue = self.clients.queue(poison_queue_name(self.source_queue(kind)))
        try:
            return int(queue.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:  # nothing was ever poisoned
            return 0

    def replay(self, kind: str, message_id: str | None, dry_run: bool) -> list[Replay]:
        """Send originals back to their queue; delete a poison message only after its send succeeded."""
        entries = self._receive_all(kind)
        groups: dict[str, list[PoisonEntry]] = {}
        for entry in entries:
            key = (entry.envelope or {}).get("rejectionId") or entry.message.id
            groups.setdefault(key, []).append(entry)
        if message_id is not None:
            groups = {key: group for key, group in groups.items()
                      if any(entry.message.id == message_id for entry in group)}
        chosen = {id(entry) for group in groups.values() for entry in group}
        self._release(kind, [entry for entry in entries if id(entry) not in chosen])
        queue = self.clients.queue(poison_queue_name(self.source_queue(kind)))
        replays = []
        for group in groups.values():
            ordered = sorted(group, key=lambda entry: (entry.envelope or {}).get("part") or 1)
            rows = [entry.row for entry in ordered]
            replay = Replay([row["messageId"] for row in rows], "".join(row["original"] for row in rows),
                            rows[0]["reason"])
            expected = rows[0]["parts"] or 1
            replay.missing_parts = sorted(set(range(1, expected + 1)) - {row["part"] or 1 for row in rows})
            if dry_run or replay.missing_parts:
                self._release(kind, group)
            else:
                self.clients.send(self.source_queue(kind), replay.original)
                replay.sent = True
                for entry in group:
                    queue.delete_message(entry.message)
            replays.append(replay)
        return replays

    def _receive_all(self, kind: str, limit: int | None = None) -> list[PoisonEntry]:
        queue = self.clients.queue(poison_queue_name(self.source_queue(kind)))
        entries: list[PoisonEntry] = []
        try:
            while limit is None or len(entries) < limit:
                wanted = 32 if limit is None else min(32, limit - len(entries))
                batch = list(queue.receive_messages(messages_per_page=wanted, max_messages=wanted,
                                                    visibility_timeout=RECEIVE_LEASE_SECONDS))
                if not batch:
                    break
                entries.extend(PoisonEntry(message, read_envelope(message.content)) for message in batch)
        except Exception as exc:
            if getattr(exc, "error_code", None) == "QueueNotFound":
                return []
            raise
        return entries

    def _release(self, kind: str, entries: list[PoisonEntry]) -> None:
        queue = self.clients.queue(poison_queue_name(self.source_queue(kind)))
        for entry in entries:
            queue.update_message(entry.message, visibility_timeout=0)


def resubmit(queries: AuditQueries, store: ResultsStore, clients: StorageClients, names: StorageNames,
             batches: list[Row], now: datetime, dry_run: bool) -> list[Row]:
    """Start polling again for batches that ended without a result; the row is updated, never duplicated."""
    done = []
    for row in batches:
        outcome = str(row.get("outcome"))
        if outcome not in RESUBMITTABLE:
            continue
        customer_id, tracking_id = str(row["PartitionKey"]), str(row["RowKey"])
        if dry_run:
            done.append(row)
            continue
        fresh = queries.batch(tracking_id, customer_id)
        if fresh is None or fresh.get("outcome") != outcome:
            continue  # changed meanwhile
        token = uuid.uuid4().hex
        change = BatchRowChange(
            outcome=Outcome.PENDING.value,
            previous_outcome=outcome,
            chain_token=token,
            first_seen_at=now,
            original_first_seen_at=fresh.get("originalFirstSeenAt") or fresh.get("firstSeenAt"),
            next_poll_at=now,
            resubmitted_at=now,
            resubmit_count=int(fresh.get("resubmitCount") or 0) + 1,
        )
        try:
            etag = store.update_batch(customer_id, tracking_id, change, fresh["_etag"])
        except RowChangedError:
            continue
        state = ChainState(token, now, poll_count=int(fresh.get("pollCount") or 0), etag=etag)
        request = StatusRequest(customer_id, tracking_id, str(fresh.get("correlationId") or "") or None,
                                str(fresh.get("source") or "") or None, state)
        clients.send(names.status_queue, request.to_message())
        done.append({**fresh, **change.to_entity()})
    return done


