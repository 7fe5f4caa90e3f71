"""check_batch_status: one status message in, the next step out (requeue, final rows, or poison).

The decisions are pure functions in chain.py (who polls) and policy.py (what a poll's answer means).
This module reads the batch row, asks them, and acts: it writes the row with the etag it read, sends
the successor or the failure chunks, and on an etag conflict reads the row and decides again, under
one retry budget per message.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum

from .chain import (
    Claim,
    Drop,
    FinalPlan,
    Poll,
    Resolution,
    RowWrite,
    Watch,
    plan_final,
    plan_requeue,
    resolve,
)
from .config import Settings
from .log import ContextLogger, context_logger
from .messages import BadMessageError, StatusRequest, parse_status_request
from .models import ENDED_BADLY, Outcome
from .partner_center import PartnerCenterClient
from .poison import send_to_poison
from .policy import Decision, PollResult, Requeue, decide
from .results_store import ResultsStore, RowChangedError
from .storage import StorageClients, queue_delay

ROW_CONFLICT_BUDGET = 3  # etag conflicts one message may meet before it gives up (and the host retries it)


class Step(Enum):
    DONE = "nothing more to do for this message"
    CONFLICT = "the row changed: read it and decide again"


class RowKeptChangingError(RuntimeError):
    """The batch row changed under this message ROW_CONFLICT_BUDGET times: left to the host to retry."""


@dataclass
class StatusCheck:
    settings: Settings
    clients: StorageClients
    store: ResultsStore
    partner_center: PartnerCenterClient
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)
    new_token: Callable[[], str] = lambda: uuid.uuid4().hex

    def handle(self, body: bytes, message_id: str = "", dequeue_count: int = 1) -> None:
        try:
            request = parse_status_request(body, self.clock())
        except BadMessageError as exc:
            self.reject(body, str(exc), message_id)
            return
        if not request.correlation_id:
            request = replace(request, correlation_id=str(uuid.uuid4()))
        log = self._logger(request, message_id)
        if dequeue_count > 1:
            log.info("message delivered %d times", dequeue_count)
        self._run(request, message_id, self.clock())

    def reject(self, body: bytes, reason: str, message_id: str = "") -> None:
        queue = send_to_poison(self.clients, self.settings.status_queue, body.decode("utf-8", "replace"), reason,
                               self.clock())
        context_logger("batchwatch.check_batch_status", messageId=message_id).warning(
            "rejected a bad message to %s: %s", queue, reason)

    # --- read, decide, act ---------------------------------------------------------------------------
    def _run(self, request: StatusRequest, message_id: str, now: datetime) -> None:
        state = request.state
        # The message the row expects carries the row's etag: it polls without reading the row first.
        resolution: Resolution | None = Poll(request) if state and not state.watch and state.etag else None
        result: PollResult | None = None
        for _ in range(ROW_CONFLICT_BUDGET + 1):
            if resolution is None:
                row = self.store.get_batch(request.customer_id, request.batch_tracking_id)
                resolution = resolve(request, row, now, self.settings.chain_stale_grace, self.new_token())
            held = self._hold(resolution, message_id)
            resolution = None
            if held is Step.DONE:
                return
            if held is Step.CONFLICT:
                continue
            log = self._logger(held, message_id)
            if result is None:
                result = self.partner_center.get_batch_status(held.customer_id, held.batch_tracking_id,
                                                              held.correlation_id or "")
                now = self.clock()  # a poll can take a while: decide and write with the time it ended
            if self._after_poll(held, result, decide_next(held, result, now, self.settings, self.rng), now, log):
                return
        raise RowKeptChangingError("the batch row kept changing while this message tried to hold its chain")

    def _hold(self, resolution: Resolution, message_id: str) -> StatusRequest | Step:
        """Act on who polls; returns the request that now holds the chain (its state has the row's etag)."""
        if isinstance(resolution, Poll):
            return resolution.request
        if isinstance(resolution, Drop):
            self._logger(None, message_id).info("%s", resolution.reason)
            return Step.DONE
        log = self._logger(resolution.request, message_id)
        if isinstance(resolution, Watch):
            self._send_status(resolution.request, resolution.delay)
            log.info("batch is already being polled; watching that chain until %s", resolution.until.isoformat())
            return Step.DONE
        request = resolution.request
        assert request.state is not None
        if isinstance(resolution, Claim):
            self.store.write_tracking_index(request.customer_id, request.batch_tracking_id)
            etag = self.store.create_batch(request.customer_id, request.batch_tracking_id, resolution.fields)
            if etag is None:  # the row exists: created by another copy, or by this create whose answer was lost
                row = self.store.get_batch(request.customer_id, request.batch_tracking_id)
                if row is None or row.chain_token != request.state.token:
                    return Step.CONFLICT
                etag = row.etag
            log.info("tracking a new batch for customer %s", request.customer_id)
        else:
            etag = self._write(request, RowWrite(resolution.fields, resolution.etag, resolution.fields["chainToken"]))
            if etag is None:
                return Step.CONFLICT
            log.warning("polling chain overdue; this message takes it over")
        return replace(request, state=replace(request.state, etag=etag))

    def _after_poll(self, request: StatusRequest, result: PollResult, decision: Decision, now: datetime,
                    log: ContextLogger) -> bool:
        """Requeue or finalise; False when the row changed under this message (decide again)."""
        assert request.state is not None
        if isinstance(decision, Requeue):
            delay = queue_delay(decision.delay)
            write, successor = plan_requeue(request.state, decision, result, now, delay, self.new_token())
            etag = self._write(request, write)
            if etag is None:
                return False
            self._send_status(replace(request, state=replace(successor, etag=etag)), delay)
            log.info("poll %d: %s; next poll in %d s", successor.attempt, decision.reason, delay)
            return True
        return self._finalize(request, plan_final(request, decision, result, now), log)

    def _finalize(self, request: StatusRequest, plan: FinalPlan, log: ContextLogger) -> bool:
        etag = self._write(request, plan.claim)
        if etag is None:
            return False  # another chain holds the batch now, or it is final already
        customer, tracking = request.customer_id, request.batch_tracking_id
        if plan.batch is not None:
            now = plan.row["finalizedAt"]
            transactions = self.store.write_devices(customer, tracking, plan.batch, now)
            history = self.store.write_history(customer, tracking, plan.batch, now)
            log.info("stored %d devices in %d transactions and %d history writes", len(plan.batch.devices),
                     transactions, history)
        for chunk in plan.chunks:
            self.clients.send(self.settings.failure_queue, chunk.to_json())
        if self._write(request, RowWrite(plan.row, etag, "")) is None:
            log.warning("the batch row changed while it was being finalised; the chain that holds it now "
                        "finishes it")
        (log.warning if Outcome(plan.row["outcome"]) in ENDED_BADLY else log.info)("%s", plan.summary)
        return True

    # --- storage ----------------------------------------------------------------------------------------
    def _write(self, request: StatusRequest, write: RowWrite) -> str | None:
        """Merge into the batch row if it is as this message read it. On a conflict, a row that already holds
        what was written means the write landed and only its response was lost: carry on with its etag."""
        customer, tracking = request.customer_id, request.batch_tracking_id
        try:
            return self.store.update_batch(customer, tracking, write.fields, write.etag)
        except RowChangedError:
            row = self.store.get_batch(customer, tracking)
            if row is not None and write.lands_as and row.chain_token == write.lands_as:
                self._logger(request, "").info("the row already holds this write (its response was lost)")
                return row.etag
            if row is not None and not write.lands_as and row.is_final:
                return row.etag
            return None

    def _send_status(self, request: StatusRequest, delay: float) -> None:
        self.clients.send(self.settings.status_queue, request.to_message(), visibility_timeout=queue_delay(delay))

    @staticmethod
    def _logger(request: StatusRequest | None, message_id: str) -> ContextLogger:
        if request is None:
            return context_logger("batchwatch.check_batch_status", messageId=message_id)
        return context_logger("batchwatch.check_batch_status", correlationId=request.correlation_id,
                              batchTrackingId=request.batch_tracking_id, messageId=message_id)


def decide_next(request: StatusRequest, result: PollResult, now: datetime, settings: Settings,
                rng: random.Random) -> Decision:
    state = request.state
    assert state is not None
    elapsed = (now - state.first_seen_at).total_seconds()
    return decide(result, elapsed, state.errors, state.auth_failures, settings.policy, rng, too_large=state.too_large)
