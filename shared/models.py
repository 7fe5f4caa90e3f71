"""Typed Partner Center batch status (BatchUploadDetails / DeviceUploadDetails) and outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


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


@dataclass(frozen=True)
class BatchStatus:
    batch_tracking_id: str | None
    status: str
    started_time: datetime | None
    completed_time: datetime | None
    devices: tuple[DeviceStatus, ...]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def is_failed(self, device: DeviceStatus) -> bool:
        """A final batch: the contract's rule. A batch that is not final (it timed out): only devices that
        ended with an error; one still queued or processing is not a failed device."""
        return device.failed and (self.is_final or not device.in_progress)

    @property
    def failed_devices(self) -> tuple[DeviceStatus, ...]:
        return tuple(device for device in self.devices if self.is_failed(device))

    @property
    def in_progress_devices(self) -> tuple[DeviceStatus, ...]:
        return () if self.is_final else tuple(device for device in self.devices if device.in_progress)
