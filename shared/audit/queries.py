"""Read the result tables with point reads and partition queries; never a string-built filter.

- batch: point read of BatchUploadStatus ~tracking/<id> for the customer (unless given), point read of
  <customer>/<id>, then a DeviceUploadStatus partition query (PartitionKey = <id>).
- batches: BatchUploadStatus partition query (PartitionKey = <customer>) with time and outcome filters.
- device: DeviceUploadHistory partition query (PartitionKey = sn~<serial> or pk~<product key>).
- summary --customer: a partition query, then DeviceUploadStatus partition queries of the failed batches.
- summary and report without --customer, pending, and the daily digest's finalized and pending batches: a
  filtered query over BatchUploadStatus (one row per batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ..config import StorageNames
from ..device_keys import product_key_partition_key, serial_partition_key
from ..results_store import TRACKING_INDEX_PARTITION
from ..storage import StorageClients

Row = dict[str, Any]


class AuditQueries:
    def __init__(self, names: StorageNames, clients: StorageClients) -> None:
        self.names = names
        self.clients = clients

    def batch(self, tracking_id: str, customer_id: str | None = None) -> Row | None:
        batches = self.clients.table(self.names.batch_table)
        if customer_id is None:
            index = _point_read(batches, TRACKING_INDEX_PARTITION, tracking_id)
            if index is None:
                return None
            customer_id = str(index["customerId"])
        return _point_read(batches, customer_id, tracking_id)

    def devices(self, tracking_id: str, failed_only: bool = False) -> Iterator[Row]:
        query = "PartitionKey eq @tid and failed eq true" if failed_only else "PartitionKey eq @tid"
        yield from query_rows(self.clients.table(self.names.device_table), query, tid=tracking_id)

    def batches(self, customer_id: str, since: datetime | None = None, until: datetime | None = None,
                outcome: str | None = None) -> Iterator[Row]:
        query, parameters = _filters("PartitionKey eq @customer", since, until, outcome)
        yield from query_rows(self.clients.table(self.names.batch_table), query, customer=customer_id, **parameters)

    def device_history(self, serial_number: str | None = None, product_key: str | None = None) -> list[Row]:
        """Every batch this device was in, newest first (a partition holds one device's history)."""
        if serial_number:
            partition = serial_partition_key(serial_number)
        else:
            partition = product_key_partition_key(product_key or "")
        rows = list(query_rows(self.clients.table(self.names.history_table), "PartitionKey eq @pk", pk=partition))
        return sorted(rows, key=lambda row: row.get("recordedAt") or row.get("_timestamp") or "", reverse=True)

    def all_batches(self, since: datetime | None = None, until: datetime | None = None,
                    outcome: str | None = None) -> Iterator[Row]:
        # Customer ids are GUIDs; batchwatch's own rows (~tracking, ~throttle, ~durations) sort after them.
        query, parameters = _filters("PartitionKey lt @own", since, until, outcome)
        yield from query_rows(self.clients.table(self.names.batch_table), query, own="~", **parameters)

    def finalized(self, since: datetime, until: datetime) -> Iterator[Row]:
        """Batches finalised in [since, until): a filtered query, one row per batch. A resubmitted batch keeps the
        finalizedAt of its earlier run while it is pending again: it is not counted."""
        query = "PartitionKey lt @own and finalizedAt ge @since and finalizedAt lt @until and outcome ne @pending"
        yield from query_rows(self.clients.table(self.names.batch_table), query, own="~", since=since, until=until,
                              pending="pending")

    def pending(self) -> list[Row]:
        rows = list(self.all_batches(outcome="pending"))
        return sorted(rows, key=lambda row: row.get("firstSeenAt") or datetime.max)

    def in_period(self, customer_id: str | None, since: datetime | None, until: datetime | None) -> Iterator[Row]:
        """One customer's batches first seen in the period (a partition query), or every customer's."""
        return self.batches(customer_id, since, until) if customer_id else self.all_batches(since, until)

    def summary(self, customer_id: str | None = None, since: datetime | None = None,
                until: datetime | None = None) -> Summary:
        summary = Summary()
        for batch in self.in_period(customer_id, since, until):
            summary.batches += 1
            summary.outcomes[str(batch.get("outcome"))] += 1
            if batch.get("failedDeviceCount"):
                for device in self.devices(str(batch["RowKey"]), failed_only=True):
                    code = f"{device.get('errorCode')} {device.get('errorDescription') or ''}".strip()
                    summary.error_codes[code] += 1
                    summary.failed_serials[str(device.get("serialNumber") or device.get("productKey") or "?")] += 1
        return summary


@dataclass
class Summary:
    batches: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    failed_serials: Counter[str] = field(default_factory=Counter)


def _filters(base: str, since: datetime | None, until: datetime | None,
             outcome: str | None) -> tuple[str, dict[str, Any]]:
    # azure-data-tables substitutes @name tokens only when they stand alone between spaces
    clauses: list[str] = [base]
    parameters: dict[str, Any] = {}
    if since is not None:
        clauses.append("firstSeenAt ge @since")
        parameters["since"] = since
    if until is not None:
        clauses.append("firstSeenAt lt @until")
        parameters["until"] = until
    if outcome is not None:
        clauses.append("outcome eq @outcome")
        parameters["outcome"] = outcome
    return " and ".join(clauses), parameters


def query_rows(table: Any, query: str, **parameters: Any) -> Iterator[Row]:
    """Pages through continuation tokens as the SDK's iterator asks for them; a missing table is empty."""
    try:
        for entity in table.query_entities(query, parameters=parameters):
            yield _plain(entity)
    except ResourceNotFoundError:
        return


def _point_read(table: Any, partition_key: str, row_key: str) -> Row | None:
    try:
        return _plain(table.get_entity(partition_key, row_key))
    except ResourceNotFoundError:
        return None


def _plain(entity: Any) -> Row:
    row = dict(entity)
    metadata = getattr(entity, "metadata", {})
    if metadata.get("timestamp") is not None:
        row["_timestamp"] = metadata["timestamp"]
    if metadata.get("etag"):
        row["_etag"] = metadata["etag"]
    return row
