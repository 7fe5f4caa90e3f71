"""Table Storage rows: the batch row, the device rows and the serial-number history."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from functools import partial
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from .batch_row import BatchRow, BatchRowChange
from .device_rows import DeviceRow
from .durations import DurationSummary
from .log import context_logger
from .models import DeviceStatus
from .storage import StorageClients
from .table_values import fit_entity, transaction_groups

log = context_logger("batchwatch.results_store")

TRACKING_INDEX_PARTITION = "~tracking"  # batch table rows that map a tracking id to its customer
THROTTLE_PARTITION = "~throttle"  # batch table rows that say until when Partner Center must not be called
BUDGET_ROW = "budget"  # the ~throttle row counting the calls granted in the current minute
DURATIONS_PARTITION = "~durations"  # batch table rows summarising how long batches took (shared/durations.py)
# Every conflict means another batch was added, so writers make progress; a short random pause spreads writers
# that finalise at once. The row is statistics: past the attempts the batch is left out (and logged).
DURATION_WRITE_ATTEMPTS = 10
DURATION_RETRY_PAUSE = 0.05  # seconds, at most, times the attempt
# A conflict means another process took calls meanwhile, so conflicts end when the budget does; this bound is
# only against a row that keeps changing for another reason.
BUDGET_CLAIM_ATTEMPTS = 100
HISTORY_WRITE_THREADS = 8
_RESERVED = frozenset({"PartitionKey", "RowKey", "Timestamp", "customerId", "batchTrackingId", "failed", "recordedAt"})


class RowChangedError(Exception):
    """The batch row's etag no longer matches: another message changed it."""


class ResultsStore:
    def __init__(self, clients: StorageClients, batch_table: str, device_table: str, history_table: str) -> None:
        self._clients = clients
        self._batch_table = batch_table
        self._device_table = device_table
        self._history_table = history_table

    # --- the batch row -------------------------------------------------------------------------
    def get_batch(self, customer_id: str, tracking_id: str) -> BatchRow | None:
        def read(client: Any) -> BatchRow | None:
            try:
                entity = client.get_entity(customer_id, tracking_id)
            except ResourceNotFoundError:
                return None
            return BatchRow.from_entity(entity, entity.metadata["etag"])

        return self._clients.with_table(self._batch_table, read)

    def write_tracking_index(self, customer_id: str, tracking_id: str) -> None:
        """A point-readable row (PartitionKey ~tracking, RowKey tracking id) naming the batch's customer."""
        entity = {"PartitionKey": TRACKING_INDEX_PARTITION, "RowKey": tracking_id, "customerId": customer_id}
        self._clients.with_table(self._batch_table, lambda client: client.upsert_entity(entity))

    def create_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange) -> str | None:
        """Create the row; None when it already exists."""
        entity = fit_entity({"PartitionKey": customer_id, "RowKey": tracking_id, **change.to_entity()})
        try:
            metadata = self._clients.with_table(self._batch_table, lambda client: client.create_entity(entity))
        except ResourceExistsError:
            return None
        return str(metadata["etag"])

    def update_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange, etag: str | None) -> str:
        """Merge the change; with an etag, only if the row is unchanged (else RowChangedError)."""
        entity = fit_entity({"PartitionKey": customer_id, "RowKey": tracking_id, **change.to_entity()})
        if etag is None:
            metadata = self._clients.with_table(self._batch_table, lambda client: client.upsert_entity(entity))
            return str(metadata["etag"])
        try:
            metadata = self._clients.with_table(
                self._batch_table,
                lambda client: client.update_entity(entity, etag=etag, match_condition=MatchConditions.IfNotModified),
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise RowChangedError(str(exc)) from exc
        return str(metadata["etag"])

    # --- the fleet's throttle state (shared/throttle.py) ------------------------------------------
    def get_throttle(self, scope: str) -> datetime | None:
        entity = self._clients.with_table(self._batch_table, partial(_get_row, key=(THROTTLE_PARTITION, scope)))
        until = entity.get("throttledUntil") if entity is not None else None
        return until if isinstance(until, datetime) else None

    def extend_throttle(self, scope: str, until: datetime) -> None:
        """Write until unless a later time is there; a concurrent writer wins only with a later time."""
        for _ in range(3):
            current = self._clients.with_table(self._batch_table, partial(_get_row, key=(THROTTLE_PARTITION, scope)))
            stored = current.get("throttledUntil") if current is not None else None
            if isinstance(stored, datetime) and stored >= until:
                return
            try:
                self._put_row(current, {"PartitionKey": THROTTLE_PARTITION, "RowKey": scope, "throttledUntil": until})
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another process wrote meanwhile: look again

    def claim_calls(self, window: datetime, wanted: int, budget: int) -> int:
        """Take up to wanted calls of the window's budget from the ~throttle/budget row, under its etag."""
        for _ in range(BUDGET_CLAIM_ATTEMPTS):
            current = self._clients.with_table(self._batch_table, partial(_get_row, key=(THROTTLE_PARTITION,
                                                                                          BUDGET_ROW)))
            stored_window = current.get("window") if current is not None else None
            if isinstance(stored_window, datetime) and stored_window > window:
                return 0  # another instance's clock is in the next minute already: never reset its count
            used = int(current.get("calls") or 0) if current is not None and stored_window == window else 0
            granted = min(wanted, budget - used)
            if granted <= 0:
                return 0
            try:
                self._put_row(current, {"PartitionKey": THROTTLE_PARTITION, "RowKey": BUDGET_ROW, "window": window,
                                        "calls": used + granted})
                return granted
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another process claimed meanwhile: look again
        raise RowChangedError(f"the call budget row changed {BUDGET_CLAIM_ATTEMPTS} times while claiming from it")

    # --- how long batches took (shared/learned_schedules.py) ----------------------------------
    def get_durations(self, scope: str) -> DurationSummary | None:
        entity = self._clients.with_table(self._batch_table, partial(_get_row, key=(DURATIONS_PARTITION, scope)))
        return DurationSummary.from_fields(entity) if entity is not None else None

    def add_duration(self, scope: str, seconds: float) -> None:
        for attempt in range(DURATION_WRITE_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, DURATION_RETRY_PAUSE * attempt))
            current = self._clients.with_table(self._batch_table, partial(_get_row, key=(DURATIONS_PARTITION, scope)))
            summary = (DurationSummary.from_fields(current) if current is not None else None) or DurationSummary()
            try:
                self._put_row(current, {"PartitionKey": DURATIONS_PARTITION, "RowKey": scope,
                                        **summary.add(seconds).to_fields()})
                return
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another batch was added meanwhile: add to that
        raise RowChangedError(f"the durations row changed {DURATION_WRITE_ATTEMPTS} times while adding to it")

    def _put_row(self, current: Any, entity: dict[str, Any]) -> None:
        """Create the batch-table row, or replace it as current read it; ResourceExistsError or
        ResourceModifiedError when another process wrote it meanwhile."""
        write = (partial(_create_row, entity=entity) if current is None
                 else partial(_replace_row_if_unchanged, entity=entity, etag=current.metadata["etag"]))
        self._clients.with_table(self._batch_table, write)

    # --- device rows and history ---------------------------------------------------------------
    def write_devices(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int:
        """Upsert these devices' rows in transactions of at most 100 (and 3 MiB); returns the transaction count."""
        entities = (device_entity(row.device, row.failed, customer_id, tracking_id, tracking_id, row.row_key,
                                  recorded_at) for row in rows)
        transactions = 0
        for group in transaction_groups(entities):
            operations: list[Any] = [("upsert", entity, {"mode": UpdateMode.REPLACE}) for entity in group]
            self._clients.with_table(self._device_table, partial(_submit, operations=operations))
            transactions += 1
        return transactions

    def write_history(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int:
        """One row per device under its serial's partition, so each device is its own request.

        Written by a few threads with a bounded number in flight, so a page never holds all its entities at once.
        """
        client = self._clients.with_table(self._history_table, lambda table_client: table_client)
        entities = (device_entity(row.device, row.failed, customer_id, tracking_id, row.history_partition,
                                  row.history_row_key, recorded_at) for row in rows)

        def write(entity: dict[str, Any]) -> None:
            client.upsert_entity(entity, mode=UpdateMode.REPLACE)

        return _bounded_map(write, entities, HISTORY_WRITE_THREADS)


def device_entity(
    device: DeviceStatus, failed: bool, customer_id: str, tracking_id: str, partition_key: str, row_key: str,
    recorded_at: datetime | None = None,
) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": partition_key,
        "RowKey": row_key,
        "customerId": customer_id,
        "batchTrackingId": tracking_id,
        "failed": failed,
        "status": device.status,
    }
    if recorded_at is not None:
        entity["recordedAt"] = recorded_at
    identity: tuple[tuple[str, str | None], ...] = (
        ("serialNumber", device.serial_number),
        ("productKey", device.product_key),
        ("deviceId", device.device_id),
        ("errorCode", device.error_code),
        ("errorDescription", device.error_description),
    )
    for name, text in identity:
        if text is not None:
            entity[name] = text
    extras = [name for name in device.extra if name not in _RESERVED and name not in entity]
    entity.update((name, device.extra[name]) for name in extras)
    return fit_entity(entity, foldable=extras)


def _bounded_map(work: Callable[[dict[str, Any]], None], items: Iterable[dict[str, Any]], threads: int) -> int:
    """Run work over items on a few threads, keeping at most 2 x threads items in flight; re-raises."""
    done = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: set[Future[None]] = set()
        for item in items:
            if len(pending) >= 2 * threads:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    done += 1
            pending.add(pool.submit(work, item))
        for future in pending:
            future.result()
            done += 1
    return done


def _submit(client: Any, operations: list[Any]) -> None:
    client.submit_transaction(operations)


def _get_row(client: Any, key: tuple[str, str]) -> Any:
    try:
        return client.get_entity(*key)
    except ResourceNotFoundError:
        return None


def _create_row(client: Any, entity: dict[str, Any]) -> Any:
    return client.create_entity(entity)


def _replace_row_if_unchanged(client: Any, entity: dict[str, Any], etag: str) -> Any:
    return client.update_entity(entity, etag=etag, match_condition=MatchConditions.IfNotModified)
