"""In-memory fakes of the outside systems (shared/ports.py), with an injected clock and fault points.

They honour what the handlers rely on: etags on every row write, a message's visibility delay,
time-to-live and dequeue count, and the Functions host's lease, release and poison rules. Every
operation passes through a Faults object first, so a test can crash the handler (an exception, or the
process killed) before or after any storage write or send, or lose the response of a write that
succeeded.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.alert_log import AlertAttempt, AlertRecord, Claim, claim_decision, claim_fields
from shared.batch_row import BatchRow, BatchRowChange
from shared.device_rows import DeviceRow
from shared.durations import DurationSummary
from shared.policy import PollResult
from shared.results_store import RowChangedError
from shared.webhook import Delivered, DeliveryResult

START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)  # the Functions host's dequeue lease
NEVER = datetime.max.replace(tzinfo=UTC)


class Crash(Exception):
    """A fault the test injected. killed: the process died (the message stays leased); else an exception."""

    def __init__(self, point: str, killed: bool) -> None:
        super().__init__(f"injected {'kill' if killed else 'exception'} at {point}")
        self.point = point
        self.killed = killed


class FakeClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Faults:
    """Where the next injected faults happen: a fault point is '<before|after>:<operation>'."""

    planned: dict[str, list[str]] = field(default_factory=dict)  # point -> kinds: "exception", "kill", "lost"
    seen: list[str] = field(default_factory=list)  # every point passed, in order
    injected: list[tuple[str, str]] = field(default_factory=list)

    def plan(self, point: str, kind: str) -> None:
        self.planned.setdefault(point, []).append(kind)

    def check(self, point: str) -> str | None:
        """Raise Crash when a crash is planned here; returns "lost" when the write's answer is to be lost."""
        self.seen.append(point)
        kinds = self.planned.get(point)
        if not kinds:
            return None
        kind = kinds.pop(0)
        self.injected.append((point, kind))
        if kind in ("exception", "kill"):
            raise Crash(point, killed=kind == "kill")
        return kind


@dataclass
class Message:
    id: str
    content: str
    inserted: datetime
    visible_at: datetime
    expires_at: datetime
    dequeue_count: int = 0
    receipt: str = ""


class FakeQueues:
    """Storage queues: visibility delays, time-to-live (-1: never), leases with pop receipts, dequeue counts."""

    def __init__(self, clock: FakeClock, faults: Faults) -> None:
        self.clock = clock
        self.faults = faults
        self.queues: dict[str, list[Message]] = {}
        self._ids = itertools.count(1)

    def send(self, queue_name: str, content: str, visibility_timeout: int | None = None,
             time_to_live: int | None = -1) -> Any:
        self.faults.check(f"before:send:{queue_name}")
        now = self.clock()
        ttl = timedelta(days=7) if time_to_live is None else None if time_to_live == -1 else timedelta(
            seconds=time_to_live)
        assert len(content.encode()) <= 64 * 1024, f"a message of {len(content.encode())} bytes"
        message = Message(f"m{next(self._ids)}", content, now, now + timedelta(seconds=visibility_timeout or 0),
                          now + ttl if ttl else NEVER)
        self.queues.setdefault(queue_name, []).append(message)
        self.faults.check(f"after:send:{queue_name}")
        return message

    def put(self, queue_name: str, content: str, visible_at: datetime | None = None,
            expires_at: datetime = NEVER) -> None:
        """A message from outside the app (an upload job, or the queue delivering one twice): never faulted.
        Upload jobs should send with a time-to-live of -1 (never; docs/upstream-jobs.md): the default is 7 days."""
        now = self.clock()
        message = Message(f"m{next(self._ids)}", content, now, visible_at or now, expires_at)
        self.queues.setdefault(queue_name, []).append(message)

    def receive(self, queue_name: str, lease: timedelta = LEASE) -> Message | None:
        """The earliest visible message, leased: its dequeue count goes up and a new receipt is issued."""
        now = self.clock()
        messages = self.queues.get(queue_name, [])
        messages[:] = [message for message in messages if message.expires_at > now]
        visible = [message for message in messages if message.visible_at <= now]
        if not visible:
            return None
        message = min(visible, key=lambda item: (item.visible_at, item.inserted))
        message.dequeue_count += 1
        message.visible_at = now + lease
        message.receipt = f"{message.id}/{message.dequeue_count}"
        return message

    def delete(self, queue_name: str, message: Message, receipt: str) -> None:
        if message.receipt == receipt:
            self.queues[queue_name].remove(message)

    def release(self, message: Message, receipt: str, delay: float) -> None:
        if message.receipt == receipt:
            message.visible_at = self.clock() + timedelta(seconds=delay)

    def next_visible(self, queue_name: str) -> datetime | None:
        times = [message.visible_at for message in self.queues.get(queue_name, [])]
        return min(times) if times else None

    def contents(self, queue_name: str) -> list[str]:
        return [message.content for message in self.queues.get(queue_name, [])]


class _Etags:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f'W/"{next(self._counter)}"'


class FakeThrottleRows:
    """The batch table's ~throttle rows (shared/throttle.py ThrottleStore), with the real store's rules."""

    def __init__(self) -> None:
        self.throttles: dict[str, datetime] = {}
        self.budget_calls: dict[datetime, int] = {}  # minute -> calls granted in it
        self.durations: dict[str, DurationSummary] = {}

    def get_throttle(self, scope: str) -> datetime | None:
        return self.throttles.get(scope)

    def extend_throttle(self, scope: str, until: datetime) -> None:
        if scope not in self.throttles or self.throttles[scope] < until:
            self.throttles[scope] = until

    def claim_calls(self, window: datetime, wanted: int, budget: int) -> int:
        if any(later > window for later in self.budget_calls):
            return 0
        used = self.budget_calls.get(window, 0)
        granted = max(0, min(wanted, budget - used))
        self.budget_calls[window] = used + granted
        return granted

    # the ~durations rows (shared/learned_schedules.py DurationStore)
    def get_durations(self, scope: str) -> DurationSummary | None:
        return self.durations.get(scope)

    def add_duration(self, scope: str, seconds: float) -> None:
        self.durations[scope] = self.durations.get(scope, DurationSummary()).add(seconds)


class FakeResultsStore(FakeThrottleRows):
    """The batch table (etag-checked merges), the device table and the history table."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.etags: dict[tuple[str, str], str] = {}
        self.index: dict[str, str] = {}
        self.devices: dict[str, dict[str, dict[str, Any]]] = {}  # tracking id -> RowKey -> row
        self.device_writes: Counter[tuple[str, str]] = Counter()  # (tracking id, RowKey) -> upserts
        self.history: dict[tuple[str, str], dict[str, Any]] = {}
        self.finals: dict[tuple[str, str], list[str]] = {}  # every write that turned a row final, by outcome
        self._etag = _Etags()

    def get_batch(self, customer_id: str, tracking_id: str) -> BatchRow | None:
        key = (customer_id, tracking_id)
        if key not in self.rows:
            return None
        return BatchRow.from_entity(self.rows[key], self.etags[key])

    def write_tracking_index(self, customer_id: str, tracking_id: str) -> None:
        self.faults.check("before:index")
        self.index[tracking_id] = customer_id

    def create_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange) -> str | None:
        key = (customer_id, tracking_id)
        fields = change.to_entity()
        self.faults.check("before:create")
        if key in self.rows:
            return None
        self.rows[key] = dict(fields)
        self.etags[key] = self._etag.next()
        if self.faults.check("after:create") == "lost":  # the SDK retried and got 409
            return None
        return self.etags[key]

    def update_batch(self, customer_id: str, tracking_id: str, change: BatchRowChange, etag: str | None) -> str:
        key = (customer_id, tracking_id)
        fields = change.to_entity()
        point = "final" if fields.get("chainToken") == "" else "claim-final" if str(
            fields.get("chainToken", "")).startswith("final:") else "row"
        self.faults.check(f"before:{point}")
        if etag is not None and self.etags.get(key) != etag:
            raise RowChangedError(f"etag {etag} is not {self.etags.get(key)}")
        row = self.rows.setdefault(key, {})
        was_final = row.get("outcome", "pending") != "pending"
        row.update(fields)
        self.etags[key] = self._etag.next()
        if not was_final and row.get("outcome", "pending") != "pending":
            self.finals.setdefault(key, []).append(row["outcome"])
        if self.faults.check(f"after:{point}") == "lost":  # the SDK retried the merge and got 412
            raise RowChangedError("the retried merge found its own write")
        return self.etags[key]

    def write_devices(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int:
        self.faults.check("before:devices")
        stored = self.devices.setdefault(tracking_id, {})
        for row in rows:
            stored[row.row_key] = {"serialNumber": row.device.serial_number, "status": row.device.status,
                                   "failed": row.failed, "errorCode": row.device.error_code}
            self.device_writes[(tracking_id, row.row_key)] += 1
        return len(rows)

    def write_history(self, customer_id: str, tracking_id: str, rows: Sequence[DeviceRow],
                      recorded_at: datetime) -> int:
        self.faults.check("before:history")
        for row in rows:
            self.history[(row.history_partition, row.history_row_key)] = {"failed": row.failed}
        return len(rows)

    def outcome(self, customer_id: str, tracking_id: str) -> str | None:
        row = self.rows.get((customer_id, tracking_id))
        return None if row is None else str(row.get("outcome"))


class FakeAlertLog:
    """AlertLog with the same claim rules as the real one (claim_decision) and etag-checked writes."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.etags: dict[tuple[str, str], str] = {}
        self._etag = _Etags()

    def claim(self, tracking_id: str, alert_id: str, now: datetime) -> Claim:
        key = (tracking_id, alert_id)
        row = self.rows.get(key)
        record = None if row is None else AlertRecord(self.etags[key], str(row.get("status")), row.get("claimedAt"))
        decided = claim_decision(record, now)
        if decided is not None:
            return decided
        self.faults.check("before:claim")
        self.rows[key] = {**(row or {}), **claim_fields(now)}
        self.etags[key] = self._etag.next()
        return Claim(True, etag=self.etags[key])

    def record(self, tracking_id: str, alert_id: str, attempt: AlertAttempt, claim_etag: str) -> bool:
        key = (tracking_id, alert_id)
        self.faults.check(f"before:alert-{attempt.status}")
        if self.etags.get(key) != claim_etag:
            return False
        self.rows[key].update(attempt.to_entity())
        self.etags[key] = self._etag.next()
        return True


class FakeWebhook:
    """Records every alert it accepted; answers can be scripted (a DeliveryResult each)."""

    def __init__(self, faults: Faults, host: str = "webhook.test") -> None:
        self.faults = faults
        self.host = host
        self.delivered: list[dict[str, Any]] = []
        self.answers: list[DeliveryResult] = []

    def send(self, payload: dict[str, Any], alert_id: str) -> DeliveryResult:
        self.faults.check("before:webhook")
        answer = self.answers.pop(0) if self.answers else Delivered(200)
        if isinstance(answer, Delivered):
            self.delivered.append(json.loads(json.dumps(payload)))
            self.faults.check("after:webhook")  # a crash here is the documented window: sent, not recorded
        return answer


class FakePartnerCenter:
    """Answers per batch from a script: a function of (the call's time, how many calls came before)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.scripts: dict[str, Callable[[datetime, int], PollResult]] = {}
        self.calls: dict[str, list[datetime]] = {}

    def get_batch_status(self, customer_id: str, batch_tracking_id: str, correlation_id: str) -> PollResult:
        calls = self.calls.setdefault(batch_tracking_id, [])
        calls.append(self.clock())
        return self.scripts[batch_tracking_id](self.clock(), len(calls) - 1)


class FakeDigestSource:
    """An in-memory DigestSource: the rows the digest's queries would return."""

    def __init__(self, faults: int = 0) -> None:
        self.faults = faults  # storage faults to raise before the first read succeeds
        self.batches: list[dict[str, Any]] = []
        self.devices: dict[str, list[dict[str, Any]]] = {}
        self.poison = {"batch-status-requests-poison": 0, "device-failures-poison": 0}

    def finalized(self, since: datetime, until: datetime) -> Iterable[Mapping[str, Any]]:
        if self.faults:
            from azure.core.exceptions import ServiceRequestError

            self.faults -= 1
            raise ServiceRequestError("storage unreachable")
        return [b for b in self.batches if b.get("finalizedAt") and since <= b["finalizedAt"] < until
                and b["outcome"] != "pending"]  # as the query: a resubmitted batch keeps its old finalizedAt

    def failed_devices(self, tracking_id: str) -> Iterable[Mapping[str, Any]]:
        return [d for d in self.devices.get(tracking_id, []) if d["failed"]]

    def pending_since(self, before: datetime) -> Iterable[Mapping[str, Any]]:
        return [b for b in self.batches if b["outcome"] == "pending" and b["firstSeenAt"] < before]

    def poison_counts(self) -> Mapping[str, int]:
        return self.poison
