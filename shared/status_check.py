"""check_batch_status: one status message in, the next step out (requeue, final rows, or poison).

The decisions are pure functions in chain.py (who polls) and policy.py (what a poll's answer means).
This module reads the batch row, asks them, and acts: it writes the row with the etag it read, sends
the successor or the failure chunks, and on an etag conflict reads the row and decides again, under
one retry budget per message.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

from .chain import (
    Drop,
    FinalPlan,
    Resolution,
    Resume,
    RowWrite,
    Watch,
    extension,
    plan_final,
    plan_requeue,
    resolve,
    resolve_held,
    stored_so_far,
)
from .config import PollingSettings
from .device_rows import DeviceRows
from .learned_schedules import LearnedSchedules
from .log import ContextLogger, context_logger
from .messages import BadMessageError, StatusRequest, parse_status_request
from .models import ENDED_BADLY, Outcome
from .poison import send_to_poison
from .policy import Decision, Finalize, PollResult, Requeue, StatusReceived, Throttled, decide
from .ports import PartnerCenter, Queues, ResultsStorage
from .results_store import RowChangedError
from .storage import queue_delay
from .telemetry import BATCHES_FINALIZED, COMPLETION_LAG, DEVICES_FAILED, POLLS
from .throttle import CallBudget, ThrottleGate, budget_spread, resume_spread

ROW_CONFLICT_BUDGET = 3  # etag conflicts one message may meet before it gives up (and the host retries it)


class Step(Enum):
    DONE = "nothing more to do for this message"
    CONFLICT = "the row changed: read it and decide again"


class RowKeptChangingError(RuntimeError):
    """The batch row changed under this message ROW_CONFLICT_BUDGET times: left to the host to retry."""


@dataclass(frozen=True)
class Held:
    """The chain as this message holds it: the request whose state decides the poll (its etag is the row's),
    the successor token the row already names, and when the row says the successor is due (None: not yet
    handed on). marked: the row holds final:<this message's token>."""

    request: StatusRequest
    successor: str
    next_poll_at: datetime | None
    marked: bool = False
    stored: int = 0  # marked: devices of the final result already stored


@dataclass
class StatusCheck:
    settings: PollingSettings
    queues: Queues
    store: ResultsStorage
    partner_center: PartnerCenter
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)
    new_token: Callable[[], str] = lambda: uuid.uuid4().hex
    monotonic: Callable[[], float] = time.monotonic  # how often the fleet's throttle row is read again
    throttle: ThrottleGate = field(init=False)  # the fleet's 429 state
    budget: CallBudget | None = field(init=False)  # the fleet's calls per minute, when there is a budget
    schedules: LearnedSchedules = field(init=False)  # the poll schedule learned from past batches, per customer

    def __post_init__(self) -> None:
        self.throttle = ThrottleGate(self.store, self.monotonic, shared=self.settings.fleet_throttle)
        self.schedules = LearnedSchedules(self.store, self.settings.learn_min_batches,
                                          enabled=self.settings.poll_schedule == "learned", monotonic=self.monotonic)
        self.budget = (CallBudget(self.store, self.settings.max_calls_per_minute)
                       if self.settings.max_calls_per_minute else None)

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
        queue = send_to_poison(self.queues, self.settings.status_queue, body.decode("utf-8", "replace"), reason,
                               self.clock())
        context_logger("batchwatch.check_batch_status", messageId=message_id).warning(
            "rejected a bad message to %s: %s", queue, reason)

    # --- read, decide, act ---------------------------------------------------------------------------
    def _run(self, request: StatusRequest, message_id: str, now: datetime) -> None:
        started = self.monotonic()
        result: PollResult | None = None
        settings = replace(self.settings, policy=self.schedules.policy_for(request.customer_id, self.settings.policy))
        for turn in range(ROW_CONFLICT_BUDGET + 1):
            resolution: Resolution | None = (resolve_held(request, now, settings.policy, self.new_token())
                                             if turn == 0 else None)
            if resolution is None:
                row = self.store.get_batch(request.customer_id, request.batch_tracking_id)
                resolution = resolve(request, row, now, settings.chain_stale_grace, settings.policy,
                                     self.new_token())
            held = self._hold(resolution, message_id)
            if held is Step.DONE:
                return
            if held is Step.CONFLICT:
                continue
            log = self._logger(held.request, message_id)
            if result is None:
                result, now = self._poll(held.request, now, log)
            decision = decide_next(held.request, result, now, settings, self.rng, finalising=held.marked)
            if self._after_poll(held, result, decision, now, log, started):
                return
        raise RowKeptChangingError("the batch row kept changing while this message tried to hold its chain")

    def _poll(self, request: StatusRequest, now: datetime, log: ContextLogger) -> tuple[PollResult, datetime]:
        """Call Partner Center, unless the partner is throttled: then wait with the fleet (and a 429 tells it). A
        batch at its deadline makes its last call anyway: its outcome depends on the answer."""
        assert request.state is not None
        at_deadline = (now - request.state.first_seen_at).total_seconds() >= self.settings.policy.deadline
        wait = 0.0 if at_deadline else self.throttle.wait(now)
        if wait > 0:
            wait += self.rng.uniform(0, resume_spread(wait))
            log.info("Partner Center is throttling the partner; waiting %.0f s with the rest of the fleet", wait)
            return Throttled(wait, shared=True), now
        wait = 0.0 if at_deadline or self.budget is None else self.budget.take(now)
        if wait > 0:
            wait += self.rng.uniform(0, budget_spread())
            log.info("this minute's Partner Center call budget is spent; waiting %.0f s", wait)
            return Throttled(wait, shared=True, why="the minute's call budget is spent"), now
        result = self.partner_center.get_batch_status(request.customer_id, request.batch_tracking_id,
                                                      request.correlation_id or "")
        POLLS.add(1)
        now = self.clock()  # a poll can take a while: decide and write with the time it ended
        if isinstance(result, Throttled):
            self.throttle.record(now, result.retry_after)
        return result, now

    def _hold(self, resolution: Resolution, message_id: str) -> Held | Step:
        """Act on who polls: the chain this message now holds, or DONE, or CONFLICT (read the row again)."""
        if isinstance(resolution, Drop):
            self._logger(None, message_id).info("%s", resolution.reason)
            return Step.DONE
        log = self._logger(resolution.request, message_id)
        if isinstance(resolution, Watch):
            self._send_status(resolution.request, resolution.delay)
            log.info("batch is already being polled; watching that chain until %s", resolution.until.isoformat())
            return Step.DONE
        if isinstance(resolution, Resume):
            etag = self._write(resolution.request, resolution.write)
            if etag is None:
                return Step.CONFLICT  # another copy of this message resumed first
            log.info("finishing the batch's final result (%d devices stored so far)", resolution.stored)
            assert resolution.request.state is not None
            state = replace(resolution.request.state, token=resolution.token, etag=etag)
            return Held(replace(resolution.request, state=state), resolution.token, None, marked=True,
                        stored=resolution.stored)
        request = resolution.request
        if resolution.creates:
            self.store.write_tracking_index(request.customer_id, request.batch_tracking_id)
            etag = self.store.create_batch(request.customer_id, request.batch_tracking_id, resolution.write.change)
            if etag is None:  # the row exists: created by another copy, or by this create whose answer was lost
                etag = self._landed(request, resolution.write)
            if etag is not None:
                log.info("tracking a new batch for customer %s", request.customer_id)
        else:
            etag = self._write(request, resolution.write)
            if etag is not None and resolution.takes_over:
                log.warning("polling chain overdue; this message takes it over")
        if etag is None:
            return Step.CONFLICT
        assert request.state is not None
        return Held(replace(request, state=replace(request.state, etag=etag)), resolution.successor,
                    resolution.next_poll_at)

    def _after_poll(self, held: Held, result: PollResult, decision: Decision, now: datetime,
                    log: ContextLogger, started: float) -> bool:
        """Requeue or finalise; False when the row changed under this message (decide again)."""
        state = held.request.state
        assert state is not None
        if isinstance(decision, Finalize):
            return self._finalize(held, plan_final(held.request, decision, result, now), log, started)
        delay = queue_delay(decision.delay)
        due = now + timedelta(seconds=delay)
        if held.marked:
            return self._retry_finalising(held, decision, due, delay, log)
        assert held.next_poll_at is not None
        write = extension(held.successor, held.next_poll_at, due, state.etag, slack=self.settings.chain_stale_grace / 2)
        etag = state.etag
        if write is not None:
            etag = self._write(held.request, write)
            if etag is None:
                return False
        successor = plan_requeue(state, held.successor, decision, result, now, delay, etag)
        self._send_status(replace(held.request, state=successor), delay)
        log.info("poll %d: %s; next poll in %d s", successor.poll_count, decision.reason, delay)
        return True

    def _retry_finalising(self, held: Held, decision: Requeue, due: datetime, delay: int,
                          log: ContextLogger) -> bool:
        """A batch being finalised whose answer, read again, is not the final one (a fault, a 429, the fleet's
        wait): keep the final mark and the devices stored, and try again after the delay, with this message's
        token (its next delivery resumes). nextPollAt moves to then, so that the watchdog waits."""
        request = held.request
        assert request.state is not None
        if self._write(request, stored_so_far(request, held.stored, due)) is None:
            return False
        state = replace(request.state, etag="", errors=decision.errors, auth_failures=decision.auth_failures,
                        too_large=decision.too_large)
        self._send_status(replace(request, state=state), delay)
        log.warning("finalising: %s; reading the final answer again in %d s", decision.reason, delay)
        return True

    def _finalize(self, held: Held, plan: FinalPlan, log: ContextLogger, started: float) -> bool:
        request = held.request
        etag = request.state.etag if request.state else None
        if not held.marked:
            etag = self._write(request, plan.mark)
            if etag is None:
                return False  # another chain holds the batch now, or it is final already
        assert request.state is not None
        request = replace(request, state=replace(request.state, etag=etag))
        if plan.devices is not None:
            stored = self._store_devices(request, plan.devices, plan.finalized_at, held.stored if held.marked else 0,
                                         log, started)
            if stored is None:
                return True  # a new invocation goes on, or another chain holds the batch now
            request = stored
        chunks = 0
        for chunk in plan.chunks:
            self.queues.send(self.settings.failure_queue, chunk.to_json())
            chunks += 1
        final = RowWrite(plan.row, request.state.etag if request.state else None, "")
        etag, first_try = self._write_at_first_try(request, final)
        if first_try:
            self._record_duration(request, plan)
        # Else final already (this write, whose answer was lost, or another chain's, which counts the batch), or
        # another chain holds it now. Either way this one does not add the batch to the history.
        elif etag is None:
            log.warning("the batch row changed while it was being finalised; the chain that holds it now "
                        "finishes it")
        report = log.warning if plan.outcome in ENDED_BADLY else log.info
        report("%s; %d failure chunks", plan.summary, chunks, extra={
            "outcome": plan.outcome.value, "deviceCount": plan.row.device_count or 0,
            "failedDeviceCount": plan.row.failed_device_count or 0})
        _count_final(plan)
        return True

    def _record_duration(self, request: StatusRequest, plan: FinalPlan) -> None:
        """A batch Partner Center completed adds how long it took, from first seen to its completedTime (or to
        the poll that saw it final, when the answer has none or one later than that poll), to the summaries the
        schedule is learned from. Only a final write that landed at its first try adds it, so a batch is added
        at most once."""
        if plan.outcome not in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_FAILURES) or request.state is None:
            return
        completed = plan.row.completed_time
        end = completed if completed is not None and completed <= plan.finalized_at else plan.finalized_at
        self.schedules.record(request.customer_id, (end - request.state.first_seen_at).total_seconds())

    def _store_devices(self, request: StatusRequest, devices: DeviceRows, finalized_at: datetime, stored: int,
                       log: ContextLogger, started: float) -> StatusRequest | None:
        """Write the device and history rows a page at a time from stored on, recording the progress in the row.
        Once the invocation (started then) has run FINALIZE_STEP_SECONDS, the rest is left to a new message,
        which resumes from the recorded progress. The request with the row's etag when all are stored."""
        assert request.state is not None
        customer, tracking = request.customer_id, request.batch_tracking_id
        transactions = history = 0
        for end, page in devices.pages(stored):
            if transactions and self.monotonic() - started >= self.settings.finalize_step_seconds:
                self._hand_on_finalising(request, stored, len(devices), log)
                return None
            transactions += self.store.write_devices(customer, tracking, page, finalized_at)
            history += self.store.write_history(customer, tracking, page, finalized_at)
            etag = self._write(request, stored_so_far(request, end, self.clock()))
            if etag is None:
                log.warning("the batch row changed while its devices were stored; the chain that holds it now "
                            "finishes it")
                return None
            stored = end
            request = replace(request, state=replace(request.state, etag=etag))
        log.info("stored %d devices (%d transactions, %d history writes in this invocation)", len(devices),
                 transactions, history)
        return request

    def _hand_on_finalising(self, request: StatusRequest, stored: int, total: int, log: ContextLogger) -> None:
        """Name a new message in the row's final mark and send it: it reads the row (it carries no etag), finds its
        own mark and resumes from the devices stored."""
        assert request.state is not None
        token = self.new_token()
        if self._write(request, stored_so_far(request, stored, self.clock(), hand_to=token)) is None:
            log.warning("the batch row changed while its devices were stored; the chain that holds it now "
                        "finishes it")
            return
        self._send_status(replace(request, state=replace(request.state, token=token, etag="")), 0)
        log.info("stored %d of %d devices; a new invocation stores the rest", stored, total)

    # --- storage ----------------------------------------------------------------------------------------
    def _write(self, request: StatusRequest, write: RowWrite) -> str | None:
        """Merge into the batch row if it is as this message read it; None on a conflict that is not its own."""
        return self._write_at_first_try(request, write)[0]

    def _write_at_first_try(self, request: StatusRequest, write: RowWrite) -> tuple[str | None, bool]:
        """As _write, and whether the merge itself succeeded (False: the row's etag had changed, whoever wrote)."""
        try:
            return self.store.update_batch(request.customer_id, request.batch_tracking_id, write.change,
                                           write.etag), True
        except RowChangedError:
            return self._landed(request, write), False

    def _landed(self, request: StatusRequest, write: RowWrite) -> str | None:
        """After a conflict: a row that already holds what was written means the write landed and only its answer
        was lost (the SDK retried it): carry on with the row's etag. A final write also lands on a final row."""
        row = self.store.get_batch(request.customer_id, request.batch_tracking_id)
        if row is not None and write.lands_as and row.chain_token == write.lands_as:
            self._logger(request, "").info("the row already holds this write (its answer was lost)")
            return row.etag
        if row is not None and not write.lands_as and row.is_final:
            return row.etag
        return None

    def _send_status(self, request: StatusRequest, delay: float) -> None:
        self.queues.send(self.settings.status_queue, request.to_message(), visibility_timeout=queue_delay(delay))

    @staticmethod
    def _logger(request: StatusRequest | None, message_id: str) -> ContextLogger:
        if request is None:
            return context_logger("batchwatch.check_batch_status", messageId=message_id)
        return context_logger("batchwatch.check_batch_status", correlationId=request.correlation_id,
                              batchTrackingId=request.batch_tracking_id, customerId=request.customer_id,
                              messageId=message_id)


def _count_final(plan: FinalPlan) -> None:
    BATCHES_FINALIZED.add(1, {"outcome": plan.outcome.value})
    if plan.batch is None:
        return
    for device in plan.batch.failed_devices:
        DEVICES_FAILED.add(1, {"error_code": device.error_code or "unknown"})
    if plan.batch.completed_time is not None:
        COMPLETION_LAG.record(max(0.0, (plan.finalized_at - plan.batch.completed_time).total_seconds()))


def decide_next(request: StatusRequest, result: PollResult, now: datetime, settings: PollingSettings,
                rng: random.Random, finalising: bool = False) -> Decision:
    """finalising: the batch was being finalised and its answer is read again. Then only an answer ends it at the
    deadline: a fault past the deadline must not turn a finished batch into timed_out and lose its failed
    devices (it is read again after the backoff)."""
    state = request.state
    assert state is not None
    elapsed = (now - state.first_seen_at).total_seconds()
    if finalising and not isinstance(result, StatusReceived):
        elapsed = min(elapsed, settings.policy.deadline - 1)
    return decide(result, elapsed, state.errors, state.auth_failures, settings.policy, rng, too_large=state.too_large)
