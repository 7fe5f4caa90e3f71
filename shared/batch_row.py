"""The batch row (BatchUploadStatus) as a type: BatchRow as read, BatchRowChange as written.

A field's property name in the table is its name in camelCase (first_seen_at is firstSeenAt, table_values.column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, get_type_hints

from .models import Outcome
from .table_values import column, set_columns


@dataclass(frozen=True)
class BatchRow:
    """The batch row as read, with the fields the polling chain decides on."""

    etag: str
    outcome: str = Outcome.PENDING.value
    status: str = "unknown"
    chain_token: str = ""
    first_seen_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_polled_at: datetime | None = None
    poll_count: int = 0
    correlation_id: str = ""
    source: str = ""
    devices_stored: int = 0  # while a final result is written: how many of its devices are stored

    @property
    def is_final(self) -> bool:
        return self.outcome != Outcome.PENDING.value

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any], etag: str) -> BatchRow:
        """Whatever the row holds (a field missing, or of another type, reads as its default)."""
        values: dict[str, Any] = {}
        for name, kind in get_type_hints(cls).items():
            value = entity.get(column(name))
            if name == "etag":
                continue
            if kind == datetime | None:
                values[name] = _utc(value)
            elif kind is int:
                values[name] = value if isinstance(value, int) and not isinstance(value, bool) else 0
            elif value:
                values[name] = str(value)
        return cls(etag=etag, **values)


@dataclass(frozen=True)
class BatchRowChange:
    """A merge into the batch row: the fields that are set are written, the others left as they are."""

    customer_id: str | None = None
    batch_tracking_id: str | None = None
    status: str | None = None
    outcome: str | None = None
    chain_token: str | None = None
    poll_count: int | None = None
    device_count: int | None = None
    failed_device_count: int | None = None
    in_progress_device_count: int | None = None
    devices_stored: int | None = None
    first_seen_at: datetime | None = None
    last_polled_at: datetime | None = None
    next_poll_at: datetime | None = None
    finalized_at: datetime | None = None
    started_time: datetime | None = None  # Partner Center's own times, when it sent them
    completed_time: datetime | None = None
    last_result: str | None = None
    correlation_id: str | None = None
    source: str | None = None
    # Written by `audit resubmit` when it starts a new run of a batch that ended without a result.
    previous_outcome: str | None = None
    original_first_seen_at: datetime | None = None
    resubmitted_at: datetime | None = None
    resubmit_count: int | None = None

    def to_entity(self) -> dict[str, Any]:
        return set_columns(self)

    def then(self, later: BatchRowChange) -> BatchRowChange:
        """This change with later's set fields written over it."""
        return replace(self, **{f.name: getattr(later, f.name) for f in fields(later)
                                if getattr(later, f.name) is not None})


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
