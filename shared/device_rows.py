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
from itertools import islice, tee

from .device_keys import device_row_keys, history_partition_key
from .models import BatchStatus, DeviceStatus
from .occurrences import numbered, pages

PAGE_DEVICES = 1000  # devices written between two records of progress: 10 transactions and 1,000 history rows


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: DeviceStatus
    failed: bool
    row_key: str  # in DeviceUploadStatus, under the tracking id
    history_partition: str  # in DeviceUploadHistory
    history_row_key: str


class DeviceRows:
    """A final batch's devices as rows, computed from the first device on each pass (a repeat's key depends on
    the devices before it; the identities seen are counted on disk, see occurrences.py), so that only a page of
    rows is held at a time."""

    def __init__(self, batch: BatchStatus, tracking_id: str) -> None:
        self._batch = batch
        self._tracking_id = tracking_id

    def __len__(self) -> int:
        return len(self._batch.devices)

    def __iter__(self) -> Iterator[DeviceRow]:
        batch, tracking_id = self._batch, self._tracking_id
        devices, keyed, partitioned = tee(batch.devices, 3)  # one pass over the answer feeds all three
        partitions = numbered(history_partition_key(device) for device in partitioned)
        for device, row_key, (partition, count) in zip(devices, device_row_keys(keyed), partitions, strict=True):
            yield DeviceRow(device, batch.is_failed(device), row_key, partition,
                            tracking_id if count == 1 else f"{tracking_id}~{count}")

    def pages(self, start: int = 0, size: int = PAGE_DEVICES) -> Iterator[tuple[int, Sequence[DeviceRow]]]:
        """(end, page) from row start on: after the page is written, end rows are stored."""
        end = start
        for page in pages(islice(iter(self), start, None), size):
            end += len(page)
            yield end, page
