"""The figures of `python -m shared.audit report`, from batch rows and the failed devices of those batches.

Reads as the other audit commands do: with a customer, a partition query of BatchUploadStatus; without one,
a filtered query over it (one row per batch); then a DeviceUploadStatus partition query for each batch with
failures. report_html.py draws the figures.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

from ..models import Outcome
from ..remediation import remediation_for

Row = Mapping[str, Any]
# Time from first seen to final, in these buckets (upper bounds in seconds; the last is open).
DURATION_BUCKETS = ((300, "under 5 min"), (900, "5-15 min"), (1800, "15-30 min"), (3600, "30-60 min"),
                    (7200, "1-2 h"), (21600, "2-6 h"), (86400, "6-24 h"), (float("inf"), "over 24 h"))
NEEDS_ATTENTION = ("pending", "timed_out", "not_found", "access_denied", "response_too_large")
OUTCOME_ORDER = [outcome.value for outcome in Outcome]


@dataclass(frozen=True)
class CodeFigure:
    label: str  # "808 ZtdDeviceAssignedToOtherTenant"
    count: int
    remediation: str


@dataclass(frozen=True)
class CustomerFigure:
    customer_id: str
    batches: int
    failed_batches: int
    failed_devices: int


@dataclass(frozen=True)
class RepeatedSerial:
    serial: str
    batches: tuple[str, ...]  # tracking ids
    codes: tuple[str, ...]


@dataclass
class Report:
    since: datetime | None
    until: datetime | None
    customer: str | None
    bucket: str  # day or week
    generated_at: datetime
    batches: int = 0
    outcomes_by_bucket: dict[str, Counter[str]] = field(default_factory=dict)  # bucket start -> outcome counts
    codes: list[CodeFigure] = field(default_factory=list)
    customers: list[CustomerFigure] = field(default_factory=list)
    durations: list[tuple[str, int]] = field(default_factory=list)  # (bucket label, batches)
    duration_median_s: float | None = None
    duration_p95_s: float | None = None
    attention: list[Row] = field(default_factory=list)  # batch rows still pending or ended badly
    repeated_serials: list[RepeatedSerial] = field(default_factory=list)


class Progress:
    """A line on stderr, rewritten at most once a second, when a person watches (stderr is a terminal) a read
    that has taken longer than LONG_READ_SECONDS."""

    LONG_READ_SECONDS = 2.0

    def __init__(self, err: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic) -> None:
        self.err = err
        self.clock = clock
        self.shown = err.isatty()
        self.started = clock()
        self.last = 0.0

    def update(self, batches: int, devices: int) -> None:
        now = self.clock()
        if self.shown and now - self.started >= self.LONG_READ_SECONDS and now - self.last >= 1:
            self.last = now
            self.err.write(f"\rread {batches} batches, {devices} failed devices")
            self.err.flush()

    def done(self) -> None:
        if self.shown and self.last:
            self.err.write("\n")


def build_report(batches: Iterable[Row], failed_devices: Any, *, since: datetime | None, until: datetime | None,
                 customer: str | None, bucket: str, now: datetime, progress: Progress | None = None) -> Report:
    """failed_devices(tracking_id) -> the failed device rows of that batch."""
    report = Report(since, until, customer, bucket, now)
    codes: Counter[str] = Counter()
    remediation: dict[str, str] = {}
    per_customer: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    serial_batches: dict[str, dict[str, str]] = defaultdict(dict)  # serial -> tracking id -> code
    durations: list[float] = []
    devices_read = 0
    for batch in batches:
        report.batches += 1
        outcome = str(batch.get("outcome") or "pending")
        first_seen = batch.get("firstSeenAt")
        if isinstance(first_seen, datetime):
            report.outcomes_by_bucket.setdefault(_bucket_start(first_seen, bucket), Counter())[outcome] += 1
        finalized = batch.get("finalizedAt")
        # A resubmitted batch pending again keeps the finalizedAt of its earlier run: no duration yet.
        if (outcome != "pending" and isinstance(first_seen, datetime) and isinstance(finalized, datetime)
                and finalized >= first_seen):
            durations.append((finalized - first_seen).total_seconds())
        if outcome in NEEDS_ATTENTION:
            report.attention.append(batch)
        figures = per_customer[str(batch.get("PartitionKey"))]
        figures[0] += 1
        if batch.get("failedDeviceCount"):
            figures[1] += 1
            tracking = str(batch.get("RowKey"))
            for device in failed_devices(tracking):
                devices_read += 1
                entry = remediation_for(device.get("errorCode"), device.get("errorDescription"))
                codes[entry.label] += 1
                remediation.setdefault(entry.label, entry.action)
                figures[2] += 1
                serial = device.get("serialNumber") or device.get("productKey")
                if serial:
                    serial_batches[str(serial)][tracking] = entry.label
                if progress is not None:
                    progress.update(report.batches, devices_read)
        if progress is not None:
            progress.update(report.batches, devices_read)
    if progress is not None:
        progress.done()
    report.codes = [CodeFigure(label, count, remediation[label]) for label, count in codes.most_common()]
    report.customers = sorted((CustomerFigure(customer_id, *figures) for customer_id, figures in per_customer.items()),
                              key=lambda figure: (-figure.failed_devices, -figure.batches, figure.customer_id))
    report.durations = _histogram(durations)
    if durations:
        report.duration_median_s = statistics.median(durations)
        report.duration_p95_s = _percentile(durations, 0.95)
    report.attention.sort(key=lambda row: str(row.get("firstSeenAt")))
    report.repeated_serials = sorted(
        (RepeatedSerial(serial, tuple(sorted(by_batch)), tuple(sorted(set(by_batch.values()))))
         for serial, by_batch in serial_batches.items() if len(by_batch) > 1),
        key=lambda repeated: (-len(repeated.batches), repeated.serial))
    return report


def outcome_columns(report: Report) -> list[str]:
    seen = {outcome for counts in report.outcomes_by_bucket.values() for outcome in counts}
    return [outcome for outcome in OUTCOME_ORDER if outcome in seen] + sorted(seen - set(OUTCOME_ORDER))


def _bucket_start(moment: datetime, bucket: str) -> str:
    day = moment.date()
    return (day - timedelta(days=day.weekday())).isoformat() if bucket == "week" else day.isoformat()


def _histogram(durations: list[float]) -> list[tuple[str, int]]:
    counts = [0] * len(DURATION_BUCKETS)
    for seconds in durations:
        counts[next(index for index, (bound, _) in enumerate(DURATION_BUCKETS) if seconds < bound)] += 1
    return [(label, count) for (_, label), count in zip(DURATION_BUCKETS, counts, strict=True)]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
