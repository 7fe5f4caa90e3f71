"""Typed Partner Center batch status (BatchUploadDetails / DeviceUploadDetails) and outcomes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Protocol


class UploadStatus(StrEnum):
    """DeviceUploadStatusType, the same enum for a batch and for each device."""

    UNKNOWN = "unknown"
    QUEUED = "queued"
    PROCESSING = "processing"
    FINISHED = "finished"
    FINISHED_WITH_ERRORS = "finished_with_errors"


FINAL_STATUSES = frozenset({UploadStatus.FINISHED.value, UploadStatus.FINISHED_WITH_ERRORS.value})
IN_PROGRESS_STATUSES = frozenset({UploadStatus.QUEUED.value, UploadStatus.PROCESSING.value, UploadStatus.UNKNOWN.value})


class Outcome(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"
    TIMED_OUT = "timed_out"
    NOT_FOUND = "not_found"
    ACCESS_DENIED = "access_denied"
    RESPONSE_TOO_LARGE = "response_too_large"


ENDED_BADLY = frozenset({Outcome.TIMED_OUT, Outcome.NOT_FOUND, Outcome.ACCESS_DENIED, Outcome.RESPONSE_TOO_LARGE})


@dataclass(frozen=True)
class DeviceStatus:
    serial_number: str | None
    product_key: str | None
    device_id: str | None
    status: str
    error_code: str | None
    error_description: str | None
    # Other scalar fields Partner Center returned, kept under their JSON names.
    extra: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """In a final batch, a device has failed unless it finished with an empty error code."""
        return not (self.status == UploadStatus.FINISHED and not self.error_code)

    @property
    def in_progress(self) -> bool:
        """Still queued or processing, with no error yet: in a batch that is not final, not (yet) a failure."""
        return self.status in IN_PROGRESS_STATUSES and not self.error_code


class DeviceList(Protocol):
    """A batch's devices: a tuple, or the parser's StreamedDevices, which reads them from the answer again on
    each pass (so the code never holds a large batch's devices all at once)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[DeviceStatus]: ...


class DeviceSelection:
    """The devices of a batch that pass a test: iterated from the batch's devices on each pass, counted once."""

    def __init__(self, devices: DeviceList, test: Callable[[DeviceStatus], bool]) -> None:
        self._devices = devices
        self._test = test

    def __iter__(self) -> Iterator[DeviceStatus]:
        return (device for device in self._devices if self._test(device))

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    @cached_property
    def _count(self) -> int:
        return sum(1 for _ in self)


@dataclass(frozen=True)
class BatchStatus:
    batch_tracking_id: str | None
    status: str
    started_time: datetime | None
    completed_time: datetime | None
    devices: DeviceList

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def is_failed(self, device: DeviceStatus) -> bool:
        """A final batch: the contract's rule. A batch that is not final (it timed out): only devices that
        ended with an error; one still queued or processing is not a failed device."""
        return device.failed and (self.is_final or not device.in_progress)

    @cached_property
    def failed_devices(self) -> DeviceSelection:
        return DeviceSelection(self.devices, self.is_failed)

    @cached_property
    def in_progress_devices(self) -> DeviceSelection:
        return DeviceSelection((), bool) if self.is_final else DeviceSelection(self.devices, _in_progress)


def _in_progress(device: DeviceStatus) -> bool:
    return device.in_progress
