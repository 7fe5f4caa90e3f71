"""The polling chain's decisions, as pure functions of what a message carries, the batch row and the clock.

One chain polls a batch. The batch row holds chainToken: the token of the one message that may poll next.
Before that message calls Partner Center it moves the row on to its successor's token (an etag-guarded
write, or the create of the row), so that every other message, a copy of itself included, finds the chain
taken; a message that crashes after its poll therefore never leaves the chain looking free. Every message
reads the row first, except the holder in the normal case: its predecessor passed on the row's etag, and a
write guarded by it succeeds only if the row is exactly as the predecessor left it (naming this message).
When that write is refused, the message reads the row and resolves like any other:

| the message              | the batch row                               | decision                                  |
|--------------------------|---------------------------------------------|-------------------------------------------|
| carries the row's etag   | (not read)                                  | advance, guarded by that etag (resolve_held)|
| any                      | none                                        | advance: create the row, poll             |
| any                      | final                                       | drop                                      |
| holds chainToken         | pending                                     | advance: write the successor's token, poll|
| holds final:<its token>  | pending (it crashed while finalising)       | resume: poll, and finish                  |
| any other                | pending, next poll not overdue              | watch: come back when it would be         |
| any other                | pending, overdue by CHAIN_STALE_GRACE       | advance (take over), poll                 |

After the poll, plan_requeue gives the successor (and, when its delay is longer than the row says, a write
that moves nextPollAt later); plan_final gives the write that marks the row final:<token> (so only this
message finishes the batch), the devices to store, the failure chunks to send and the final row. The executor
(status_check.py) performs them, and on an etag conflict reads the row and calls resolve() again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .batch_row import BatchRow, BatchRowChange
from .device_rows import DeviceRows
from .failure_chunks import MAX_REASON_CHARS, BatchContext, FailureChunk, batch_outcome_chunk, failure_chunks
from .messages import MAX_RESULT_LENGTH, MAX_STATUS_LENGTH, ChainState, StatusRequest
from .models import ENDED_BADLY, BatchStatus, DeviceSelection, Outcome, UploadStatus
from .policy import Finalize, PollingPolicy, PollResult, Requeue, StatusReceived, scheduled_delay

FINAL_MARK = "final:"  # chainToken while the holder finalises: final:<its token>


@dataclass(frozen=True)
class Drop:
    reason: str


@dataclass(frozen=True)
class Watch:
    """Not this message's turn: come back as a watchdog when the expected poll would be overdue."""

    request: StatusRequest
    until: datetime
    delay: float


@dataclass(frozen=True)
class RowWrite:
    """A merge into the batch row, guarded by etag (None: create the row). lands_as is the chainToken the row holds
    once it is written, so a write whose answer was lost (the SDK's retry then sees 412 or 409) is recognised as
    this message's own: no other writer leaves that token in the row."""

    change: BatchRowChange
    etag: str | None
    lands_as: str

    @property
    def fields(self) -> dict[str, Any]:
        """The properties the write sets, by their names in the table."""
        return self.change.to_entity()


@dataclass(frozen=True)
class Advance:
    """This message polls now, once the write has moved the chain on to the successor token. request.state is the
    state the poll is decided with (a fresh one for a new batch or a takeover)."""

    request: StatusRequest
    write: RowWrite
    successor: str
    next_poll_at: datetime  # what the write says; a longer delay after the poll moves it later
    creates: bool = False
    takes_over: bool = False


@dataclass(frozen=True)
class Resume:
    """The row holds final:<this message's token>: it crashed while finalising, or a step of a large result handed
    on to it. Take the mark over with a fresh token (so that a copy of this message can no longer resume too),
    poll again and finish."""

    request: StatusRequest  # state.etag: the row's etag
    token: str  # the fresh token the row's final mark names once write is done
    write: RowWrite
    stored: int = 0  # devices of the final result already stored (the row's devicesStored)


Resolution = Drop | Watch | Advance | Resume


@dataclass(frozen=True)
class PlannedChunks:
    """The failure chunks of a final batch, made one at a time on each pass (the failed devices are read from
    the answer again), so that a batch whose devices all failed is never held as chunks all at once."""

    context: BatchContext
    failed: DeviceSelection | None
    batch_alert: str | None  # the reason for a batch_outcome chunk

    def __iter__(self) -> Iterator[FailureChunk]:
        if self.failed:
            yield from failure_chunks(self.context, self.failed)
        if self.batch_alert is not None:
            yield batch_outcome_chunk(self.context, self.batch_alert)


@dataclass(frozen=True)
class FinalPlan:
    outcome: Outcome
    finalized_at: datetime
    mark: RowWrite  # chainToken final:<token>: from here on only this message may finish the batch
    batch: BatchStatus | None  # the answer, when Partner Center listed any devices
    devices: DeviceRows | None  # the devices to store, with their keys
    chunks: PlannedChunks  # to the failure queue: device failures and the batch alert
    row: BatchRowChange  # the final batch row
    summary: str


def resolve_held(request: StatusRequest, now: datetime, policy: PollingPolicy, new_token: str) -> Advance | None:
    """The holder's move without reading the row: when the message carries the etag of its predecessor's last
    write, advance under that etag. None: read the row and resolve()."""
    state = request.state
    if state is None or state.watch or not state.etag:
        return None
    return _advance(request, now, policy, new_token, etag=state.etag)


def resolve(request: StatusRequest, row: BatchRow | None, now: datetime, stale_grace: float,
            policy: PollingPolicy, new_token: str) -> Resolution:
    """Who polls: the decision for one message, given the batch row as read (see the table above)."""
    state = request.state
    if row is None:
        first_seen = state.first_seen_at if state and not state.watch else now
        own = state.token if state and not state.watch else ""
        fresh = replace(request, state=ChainState(own, first_seen))
        return _advance(fresh, now, policy, new_token, etag=None, creates=True)
    if row.is_final:
        return Drop(f"batch already final ({row.outcome}); nothing to do")
    if state is not None and row.chain_token == FINAL_MARK + state.token:
        mark = FINAL_MARK + new_token
        return Resume(replace(request, state=replace(state, etag=row.etag)), new_token,
                      RowWrite(BatchRowChange(chain_token=mark, next_poll_at=now), row.etag, mark), row.devices_stored)
    if state is not None and not state.watch and row.chain_token == state.token:
        return _advance(request, now, policy, new_token, etag=row.etag)
    first_seen = row.first_seen_at or now
    overdue_at = (row.next_poll_at or row.last_polled_at or first_seen) + timedelta(seconds=stale_grace)
    if now < overdue_at:
        watchdog = ChainState(new_token, first_seen, watch=row.chain_token.removeprefix(FINAL_MARK) or "0")
        return Watch(replace(request, state=watchdog), overdue_at, (overdue_at - now).total_seconds())
    adopted = replace(request, correlation_id=row.correlation_id or request.correlation_id,
                      source=row.source or request.source,
                      state=ChainState(state.token if state else "", first_seen, poll_count=row.poll_count))
    return _advance(adopted, now, policy, new_token, etag=row.etag, takes_over=True)


def _advance(request: StatusRequest, now: datetime, policy: PollingPolicy, successor: str, etag: str | None,
             creates: bool = False, takes_over: bool = False) -> Advance:
    """Move the row on to the successor before polling. nextPollAt assumes an ordinary answer (the longest the
    jittered schedule can wait); a fault's longer delay is written after the poll."""
    state = request.state
    assert state is not None
    elapsed = (now - state.first_seen_at).total_seconds()
    next_poll_at = now + timedelta(seconds=scheduled_delay(elapsed, policy) * (1 + policy.jitter))
    change = BatchRowChange(chain_token=successor, poll_count=state.poll_count + 1, last_polled_at=now,
                            next_poll_at=next_poll_at, status=state.last_status or None,
                            last_result=state.last_result or None)
    if creates:
        change = new_row(request).then(change)
    return Advance(request, RowWrite(change, etag, successor), successor, next_poll_at, creates, takes_over)


def new_row(request: StatusRequest) -> BatchRowChange:
    assert request.state is not None
    return BatchRowChange(
        customer_id=request.customer_id,
        batch_tracking_id=request.batch_tracking_id,
        status=UploadStatus.UNKNOWN.value,
        outcome=Outcome.PENDING.value,
        device_count=0,
        failed_device_count=0,
        first_seen_at=request.state.first_seen_at,
        correlation_id=request.correlation_id or "",
        source=request.source or "",
    )


def plan_requeue(state: ChainState, successor: str, decision: Requeue, result: PollResult, now: datetime,
                 delay: int, row_etag: str | None) -> ChainState:
    """The successor that carries the chain on; it also carries this poll's answer to the row, and the row's etag
    after this message's last write."""
    status = result.batch.status if isinstance(result, StatusReceived) else None
    return ChainState(successor, state.first_seen_at, poll_count=state.poll_count + 1, errors=decision.errors,
                      etag=row_etag,
                      auth_failures=decision.auth_failures, too_large=decision.too_large,
                      last_status=status[:MAX_STATUS_LENGTH] if status else None,
                      last_result=decision.reason[:MAX_RESULT_LENGTH])


def extension(successor: str, next_poll_at: datetime, due: datetime, etag: str | None,
              slack: float) -> RowWrite | None:
    """The write that moves nextPollAt to when the successor is really due (a 429's Retry-After, an error backoff),
    when that is more than slack seconds later than the row says: a watchdog takes the chain over only once it
    is CHAIN_STALE_GRACE_SECONDS overdue, so a successor due within half of that needs no write."""
    if due <= next_poll_at + timedelta(seconds=slack):
        return None
    return RowWrite(BatchRowChange(next_poll_at=due), etag, successor)


def plan_final(request: StatusRequest, decision: Finalize, result: PollResult, now: datetime) -> FinalPlan:
    """Everything a final outcome writes and sends; the same input gives the same rows and chunks."""
    state = request.state
    assert state is not None
    batch = result.batch if isinstance(result, StatusReceived) else None
    failed = batch.failed_devices if batch else None
    in_progress = len(batch.in_progress_devices) if batch else 0
    context = BatchContext(
        request.customer_id, request.batch_tracking_id, decision.outcome, request.correlation_id, request.source,
        device_count=len(batch.devices) if batch else 0, failed_device_count=len(failed) if failed else 0,
        in_progress_device_count=in_progress, run_started_at=state.run_started_at,
    )
    chunks = PlannedChunks(context, failed, batch_alert_reason(decision, batch))
    row = BatchRowChange(outcome=decision.outcome.value, poll_count=state.poll_count + 1, last_polled_at=now,
                         finalized_at=now, chain_token="", last_result=decision.reason[:MAX_REASON_CHARS],
                         correlation_id=request.correlation_id or "", source=request.source or "")
    if batch is not None:
        row = replace(row, status=batch.status, device_count=context.device_count,
                      failed_device_count=context.failed_device_count, in_progress_device_count=in_progress,
                      started_time=batch.started_time, completed_time=batch.completed_time)
    # nextPollAt: now, so a watchdog waits CHAIN_STALE_GRACE_SECONDS from the start of the write, not from a due
    # time that may be long past (a backlog): the grace is the time a finalisation may take.
    mark = RowWrite(BatchRowChange(chain_token=FINAL_MARK + state.token, next_poll_at=now, devices_stored=0),
                    state.etag, FINAL_MARK + state.token)
    summary = (f"final: {decision.outcome.value} ({decision.reason}); {context.device_count} devices, "
               f"{context.failed_device_count} failed, {in_progress} still in progress")
    stored = batch if batch and batch.devices else None
    rows = DeviceRows(stored, request.batch_tracking_id) if stored else None
    return FinalPlan(decision.outcome, now, mark, stored, rows, chunks, row, summary)


def stored_so_far(request: StatusRequest, stored: int, now: datetime, hand_to: str = "") -> RowWrite:
    """The progress of a final result written in pages: stored devices are in their tables. nextPollAt: now, so
    that a watchdog leaves a finalisation that makes progress alone. hand_to: the token of the message that goes
    on in a new invocation; the row's final mark names it, so that it alone resumes (a stale copy of this
    message no longer matches)."""
    assert request.state is not None
    mark = FINAL_MARK + (hand_to or request.state.token)
    return RowWrite(BatchRowChange(chain_token=mark if hand_to else None, devices_stored=stored, next_poll_at=now),
                    request.state.etag, mark)


def batch_alert_reason(decision: Finalize, batch: BatchStatus | None) -> str | None:
    """Why the batch as a whole is alerted, or None when its device failures (if any) say it all."""
    if decision.outcome in ENDED_BADLY:
        in_progress = len(batch.in_progress_devices) if batch else 0
        still = f"; {in_progress} device(s) were still in progress" if in_progress else ""
        return f"{decision.reason}{still}"
    if decision.outcome == Outcome.COMPLETED_WITH_FAILURES and batch is not None and not batch.failed_devices:
        listed = "without listing devices" if not batch.devices else "but no listed device failed"
        return f"Partner Center reported the batch {batch.status} {listed}"
    return None
