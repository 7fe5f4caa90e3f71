"""The polling chain's decisions, as pure functions of what a message carries, the batch row and the clock.

One chain polls a batch. The batch row holds chainToken, the token of the message it expects next:

| the message            | the row                                   | decision                           |
|------------------------|-------------------------------------------|------------------------------------|
| any                    | none                                      | Claim: create the row, poll        |
| any                    | final                                     | Drop                               |
| holds chainToken       | pending                                   | Poll                               |
| holds final:<its token>| pending (its holder crashed finalising)   | Poll (and finalise again)          |
| any other              | pending, next poll not overdue            | Watch: come back when it would be  |
| any other              | pending, overdue by CHAIN_STALE_GRACE     | TakeOver: new token, then poll     |

After the poll, plan_requeue gives the row write and the successor message; plan_final gives the
write that marks the row final:<token> (so only this chain finishes it), the devices to store, the
failure chunks to send, and the final row. The executor (status_check.py) performs them, and on an
etag conflict reads the row and calls resolve() again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .failure_chunks import MAX_REASON_CHARS, BatchContext, FailureChunk, batch_outcome_chunk, failure_chunks
from .messages import ChainState, StatusRequest
from .models import ENDED_BADLY, BatchStatus, Outcome, UploadStatus
from .policy import Finalize, PollResult, Requeue, StatusReceived
from .results_store import BatchRow

FINAL_MARK = "final:"  # chainToken while the holder finalises: final:<its token>
# While the holder finalises, the row says its next step is due this much later, so no watchdog takes the
# batch over during a long write (the host's functionTimeout).
FINALISE_ALLOWANCE = timedelta(minutes=10)


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
class Claim:
    """No row yet: create it (fails if another copy created it first) and poll."""

    request: StatusRequest
    fields: dict[str, Any]


@dataclass(frozen=True)
class TakeOver:
    """The chain is overdue: write a new token over the row's (etag-guarded) and poll."""

    request: StatusRequest
    fields: dict[str, Any]
    etag: str


@dataclass(frozen=True)
class Poll:
    """This message holds the chain: poll. request.state.etag is the row's etag as this message knows it."""

    request: StatusRequest


Resolution = Drop | Watch | Claim | TakeOver | Poll


@dataclass(frozen=True)
class RowWrite:
    """A merge into the batch row, guarded by etag; lands_as is the chainToken the row holds once it is written,
    so a write whose response was lost (the SDK's retry then sees 412) is recognised as this chain's own."""

    fields: dict[str, Any]
    etag: str | None
    lands_as: str


@dataclass(frozen=True)
class FinalPlan:
    claim: RowWrite  # chainToken final:<token>: from here on only this chain may finish the batch
    batch: BatchStatus | None  # the devices to store, when Partner Center listed any
    chunks: tuple[FailureChunk, ...]  # to the failure queue: device failures and the batch alert
    row: dict[str, Any]  # the final batch row
    summary: str


def resolve(request: StatusRequest, row: BatchRow | None, now: datetime, stale_grace: float,
            new_token: str) -> Resolution:
    """Who polls: the decision for a message that is not known to hold the chain (see the table above)."""
    state = request.state
    if row is None:
        first_seen = state.first_seen_at if state and not state.watch else now
        held = replace(request, state=ChainState(new_token, first_seen))
        return Claim(held, new_row_fields(held, now))
    if row.is_final:
        return Drop(f"batch already final ({row.outcome}); nothing to do")
    if state is not None and not state.watch and row.chain_token in (state.token, FINAL_MARK + state.token):
        return Poll(replace(request, state=replace(state, etag=row.etag)))
    first_seen = row.first_seen_at or now
    overdue_at = (row.next_poll_at or row.last_polled_at or first_seen) + timedelta(seconds=stale_grace)
    if now < overdue_at:
        watchdog = ChainState(new_token, first_seen, watch=row.chain_token.removeprefix(FINAL_MARK) or "0")
        return Watch(replace(request, state=watchdog), overdue_at, (overdue_at - now).total_seconds())
    adopted = replace(request, correlation_id=row.correlation_id or request.correlation_id,
                      source=row.source or request.source,
                      state=ChainState(new_token, first_seen, attempt=row.poll_count))
    return TakeOver(adopted, {"chainToken": new_token}, row.etag)


def new_row_fields(request: StatusRequest, now: datetime) -> dict[str, Any]:
    assert request.state is not None
    return {
        "customerId": request.customer_id,
        "batchTrackingId": request.batch_tracking_id,
        "status": UploadStatus.UNKNOWN.value,
        "outcome": Outcome.PENDING.value,
        "pollCount": 0,
        "deviceCount": 0,
        "failedDeviceCount": 0,
        "firstSeenAt": request.state.first_seen_at,
        "correlationId": request.correlation_id or "",
        "source": request.source or "",
        "chainToken": request.state.token,
        "nextPollAt": now,
    }


def plan_requeue(state: ChainState, decision: Requeue, result: PollResult, now: datetime, delay: int,
                 new_token: str) -> tuple[RowWrite, ChainState]:
    """The row write after a poll that is not final, and the successor that carries the chain on."""
    successor = ChainState(new_token, state.first_seen_at, attempt=state.attempt + 1, errors=decision.errors,
                           auth_failures=decision.auth_failures, too_large=decision.too_large)
    fields: dict[str, Any] = {
        "pollCount": successor.attempt,
        "lastPolledAt": now,
        "nextPollAt": now + timedelta(seconds=delay),
        "chainToken": successor.token,
        "lastResult": decision.reason[:MAX_REASON_CHARS],
    }
    if isinstance(result, StatusReceived):
        fields["status"] = result.batch.status
        fields.update(batch_times(result.batch))
    return RowWrite(fields, state.etag, successor.token), successor


def plan_final(request: StatusRequest, decision: Finalize, result: PollResult, now: datetime) -> FinalPlan:
    """Everything a final outcome writes and sends; the same input gives the same rows and chunks."""
    state = request.state
    assert state is not None
    batch = result.batch if isinstance(result, StatusReceived) else None
    failed = batch.failed_devices if batch else ()
    in_progress = batch.in_progress_devices if batch else ()
    context = BatchContext(
        request.customer_id, request.batch_tracking_id, decision.outcome, request.correlation_id, request.source,
        device_count=len(batch.devices) if batch else 0, failed_device_count=len(failed),
        in_progress_device_count=len(in_progress), run_started_at=state.run_started_at,
    )
    chunks = failure_chunks(context, failed) if failed else []
    alert_reason = batch_alert_reason(decision, batch)
    if alert_reason is not None:
        chunks.append(batch_outcome_chunk(context, alert_reason))
    row: dict[str, Any] = {
        "outcome": decision.outcome.value,
        "pollCount": state.attempt + 1,
        "lastPolledAt": now,
        "finalizedAt": now,
        "chainToken": "",
        "lastResult": decision.reason[:MAX_REASON_CHARS],
        "correlationId": request.correlation_id or "",
        "source": request.source or "",
    }
    if batch is not None:
        row.update(status=batch.status, deviceCount=len(batch.devices), failedDeviceCount=len(failed),
                   inProgressDeviceCount=len(in_progress), **batch_times(batch))
    claim = RowWrite({"chainToken": FINAL_MARK + state.token, "lastPolledAt": now,
                      "nextPollAt": now + FINALISE_ALLOWANCE}, state.etag, FINAL_MARK + state.token)
    summary = (f"final: {decision.outcome.value} ({decision.reason}); {context.device_count} devices, "
               f"{len(failed)} failed, {len(in_progress)} still in progress; {len(chunks)} failure chunks")
    return FinalPlan(claim, batch if batch and batch.devices else None, tuple(chunks), row, summary)


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


def batch_times(batch: BatchStatus) -> dict[str, Any]:
    times: dict[str, Any] = {}
    if batch.started_time:
        times["startedTime"] = batch.started_time
    if batch.completed_time:
        times["completedTime"] = batch.completed_time
    return times
