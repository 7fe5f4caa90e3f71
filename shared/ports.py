"""The outside systems the two functions talk to, one Protocol each.

The Azure implementations are StorageClients (queues), ResultsStore (batch and device tables), AlertLog
(its table), PartnerCenterClient and WebhookSender. tests/functional/fakes.py has an in-memory fake of each
that honours etags, visibility delays, time-to-live and dequeue counts, so the handlers run in a fast
functional tier with an injected clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from .alert_log import AlertAttempt, Claim
from .batch_row import BatchRow, BatchRowChange
from .device_rows import DeviceRow
from .learned_schedules import DurationStore
from .policy import PollResult
from .throttle import ThrottleStore
from .webhook import DeliveryResult


class Queues(Protocol):
    def send(self, queue_name: str, content: str, visibility_timeout: int | None = None,
             time_to_live: int | None = -1) -> Any:
        """Send a message (time_to_live -1: never expires; None: the service default)."""
        ...


class BatchStore(Protocol):
    """BatchUploadStatus: the batch row, read and written under its etag."""

    def get_batch(self, customer_id: str, tracking_id: str) -> BatchRow | None: ...

    def write_tracking_index(self, customer_id: str, tracking_id: str) -> None: ...

    def create_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange) -> str | None:
        """The new row's etag; None when the row exists already."""
        ...

    def update_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange, etag: str | None) -> str:
        """Merge the change; with an etag only if the row is unchanged (else RowChangedError). The new etag."""
        ...


class DeviceStore(Protocol):
    """DeviceUploadStatus and DeviceUploadHistory: one row per device, idempotent upserts."""

    def write_devices(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int: ...

    def write_history(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int: ...


class ResultsStorage(BatchStore, DeviceStore, ThrottleStore, DurationStore, Protocol):
    """What check_batch_status writes to Table Storage."""


class AlertRecords(Protocol):
    """AlertLog: one row per alert, claimed before it is sent."""

    def claim(self, tracking_id: str, alert_id: str, now: datetime) -> Claim: ...

    def record(self, tracking_id: str, alert_id: str, attempt: AlertAttempt, claim_etag: str) -> bool: ...


class PartnerCenter(Protocol):
    def get_batch_status(self, customer_id: str, batch_tracking_id: str, correlation_id: str) -> PollResult: ...


class Webhook(Protocol):
    @property
    def host(self) -> str:
        """Where alerts go, safe to log and store (the URL itself is a secret)."""
        ...

    def send(self, payload: dict[str, Any], alert_id: str) -> DeliveryResult: ...
