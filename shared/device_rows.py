"""The devices of a final result as rows: each device with its keys in both tables, computed once over the whole
batch, so that the result can be written a page at a time, across invocations, and a page written twice is the
same rows.

DeviceUploadStatus: PartitionKey the tracking id, RowKey the device's identity (a repeat of the same identity in
one upload gets a ~n suffix). DeviceUploadHistory: PartitionKey the serial number (else the product key, else
the device id), RowKey the tracking id (~n for a repeat of that partition within the batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .device_keys import device_row_keys, history_partition_key
from .models import BatchStatus, DeviceStatus

PAGE_DEVICES = 1000  # devices written between two records of progress: 10 transactions and 1,000 history rows


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: DeviceStatus
    failed: bool
    row_key: str  # in DeviceUploadStatus, under the tracking id
    history_partition: str  # in DeviceUploadHistory
    history_row_key: str


def device_rows(batch: BatchStatus, tracking_id: str) -> tuple[DeviceRow, ...]:
    repeats: dict[str, int] = {}
    rows = []
    for device, row_key in zip(batch.devices, device_row_keys(batch.devices), strict=True):
        partition = history_partition_key(device)
        count = repeats[partition] = repeats.get(partition, 0) + 1
        rows.append(DeviceRow(device, batch.is_failed(device), row_key, partition,
                              tracking_id if count == 1 else f"{tracking_id}~{count}"))
    return tuple(rows)


def pages(rows: Sequence[DeviceRow], start: int = 0,
          size: int = PAGE_DEVICES) -> Iterator[tuple[int, Sequence[DeviceRow]]]:
    """(end, page) from row start on: after the page is written, end rows are stored."""
    for first in range(start, len(rows), size):
        page = rows[first:first + size]
        yield first + len(page), page
