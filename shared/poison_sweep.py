"""sweep_poison: what the Functions host moved to a poison queue itself goes into a never-expiring envelope.

batchwatch poisons its own failures in envelopes that never expire (shared/invocation.py), but a last
delivery that the process does not survive (killed, or past functionTimeout) is moved by the host, as it
was, with the service's default time-to-live of 7 days. Every few minutes this sweep wraps each such
message in an envelope with the reason and deletes the original, so nothing in a poison queue expires.
A sweep that stops between the two leaves the original to be wrapped again: an envelope may then appear
twice, never none.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from .config import QUEUES_ONLY, ConfigError, StorageNames, load_storage_names
from .invocation import max_dequeue_count
from .log import context_logger
from .poison import poison_queue_name, read_envelope, send_to_poison
from .storage import StorageClients

HOST_MOVED_REASON = (
    "moved to {queue} by the Functions host at {inserted} after maxDequeueCount ({limit}) deliveries: the last "
    "one did not finish (the process was killed, or ran past functionTimeout) or failed before batchwatch could "
    "record why; the exceptions are in Application Insights (requests where success is false, at that time)"
)
# batchwatch's own envelopes are hidden while a sweep reads past them, so that it reaches every message the host
# moved however many envelopes have piled up; they are shown again at the end (or when the lease runs out).
LEASE_SECONDS = 300

log = context_logger("batchwatch.sweep_poison")


def sweep(clients: StorageClients, names: StorageNames, now: datetime) -> dict[str, int]:
    """Wrap what the host moved into both poison queues; how many messages were wrapped, per poison queue."""
    wrapped: dict[str, int] = {}
    for source in (names.status_queue, names.failure_queue):
        poison = poison_queue_name(source)
        try:
            wrapped[poison] = _sweep_queue(clients, source, poison, now)
        except ResourceNotFoundError:
            wrapped[poison] = 0  # no poison queue yet: nothing was ever poisoned
    return wrapped


def _sweep_queue(clients: StorageClients, source: str, poison: str, now: datetime) -> int:
    queue = clients.queue(poison)
    wrapped = 0
    held: list[Any] = []  # batchwatch's own envelopes, hidden while the sweep looks past them
    try:
        while True:
            batch: list[Any] = list(queue.receive_messages(messages_per_page=32, max_messages=32,
                                                           visibility_timeout=LEASE_SECONDS))
            if not batch:
                break
            for message in batch:
                if read_envelope(message.content) is not None:
                    held.append(message)
                    continue
                moved_at = message.inserted_on or now
                reason = HOST_MOVED_REASON.format(queue=poison, inserted=moved_at.isoformat(timespec="seconds"),
                                                  limit=max_dequeue_count())
                send_to_poison(clients, source, message.content, reason, moved_at)
                queue.delete_message(message)
                wrapped += 1
    finally:
        for message in held:  # shown again at once, for `poison list`
            try:
                queue.update_message(message, visibility_timeout=0)
            except (ResourceNotFoundError, HttpResponseError):
                pass  # its lease ran out and someone else holds it now: it shows again by itself
    return wrapped


def run() -> None:
    """The timer's invocation: the storage settings alone, and a log line when anything was wrapped."""
    from .app import storage_clients

    try:
        names = load_storage_names(os.environ, QUEUES_ONLY)
    except ConfigError as exc:
        log.error("the poison sweep cannot run: %s", exc)
        return
    wrapped = sweep(storage_clients(), names, datetime.now(UTC))
    for poison, count in wrapped.items():
        if count:
            log.warning("wrapped %d message(s) the Functions host had moved to %s in never-expiring envelopes",
                        count, poison)
