"""check_batch_status: one status message in, the next step out (requeue, final rows, or poison).

Who may poll a batch: the batch row holds chainToken, the token of the one message it expects
next. A message whose token matches polls, writes the row with its etag (so a concurrent copy
loses) and requeues a successor carrying a new token. Any other message for a pending batch (a
redelivery, the same tracking id sent twice) becomes a watchdog: it sleeps until the expected
poll is overdue (nextPollAt + CHAIN_STALE_GRACE_SECONDS); if the row has not been written by then
it takes the chain over (etag-guarded, so only one watchdog wins), otherwise it sleeps again. It
ends when the batch is final. So at most one chain polls, and a chain whose message was lost (a
crash between the row write and the send, or storage losing writes) is restarted instead of
stalling the batch.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import Settings
from .failure_chunks import BatchContext, batch_outcome_chunk, failure_chunks
from .log import ContextLogger, context_logger
from .messages import BadMessageError, ChainState, StatusRequest, parse_status_request
from .models import Outcome
from .partner_center import PartnerCenterClient
from .poison import send_to_poison
from .policy import Finalize, PollResult, Requeue, StatusReceived, decide
from .results_store import BatchRow, ResultsStore, RowChangedError, batch_times
from .storage import StorageClients, queue_delay


@dataclass
class StatusCheck:
    settings: Settings
    clients: StorageClients
    store: ResultsStore
    partner_center: PartnerCenterClient
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    rng: random.Random = field(default_factory=random.Random)

    def handle(self, body: bytes, message_id: str = "", dequeue_count: int = 1) -> None:
        try:
            request = parse_status_request(body)
        except BadMessageError as exc:
            self.reject(body, str(exc), message_id)
            return
        log = context_logger(
            "batchwatch.check_batch_status",
            correlationId=request.correlation_id,
            batchTrackingId=request.batch_tracking_id,
            messageId=message_id,
        )
        if dequeue_count > 1:
            log.info("message delivered %d times", dequeue_count)
        _Run(self, request, log).start()

    def reject(self, body: bytes, reason: str, message_id: str = "") -> None:
        queue = send_to_poison(self.clients, self.settings.status_queue, body.decode("utf-8", "replace"), reason,
                               self.clock())
        context_logger("batchwatch.check_batch_status").warning(
            "rejected a bad message to %s: %s [messageId=%s]", queue, reason, message_id
        )


class _Run:
    """The handling of one message."""

    def __init__(self, check: StatusCheck, request: StatusRequest, log: ContextLogger) -> None:
        self.check = check
        self.settings = check.settings
        self.store = check.store
        self.request = request
        self.log = log
        self.now = check.clock()
        self.customer_id = request.customer_id
        self.tracking_id = request.batch_tracking_id

    def start(self) -> None:
        state = self.request.state
        if state is None or state.watch or not state.etag:
            self._resolve(self.store.get_batch(self.customer_id, self.tracking_id), state)
        else:
            self._poll(state)

    # --- who holds the chain ---------------------------------------------------------------------
    def _resolve(self, row: BatchRow | None, state: ChainState | None, attempts: int = 3) -> None:
        """Decide what a message that is not (or no longer) known to hold the chain does."""
        if attempts == 0:
            raise RuntimeError("the batch row kept changing while resolving who polls it")
        if row is None:
            self._claim_new(attempts)
            return
        if row.is_final:
            self.log.info("batch already final (%s); duplicate message dropped", row.outcome)
            return
        if state and not state.watch and state.token == row.chain_token:
            self._poll(replace(state, etag=row.etag))
            return
        overdue_at = self._overdue_at(row)
        if self.now < overdue_at:
            self._send_watchdog(row, overdue_at)
            return
        token = _new_token()
        try:
            etag = self.store.update_batch(self.customer_id, self.tracking_id, {"chainToken": token}, row.etag)
        except RowChangedError:
            self._resolve(self.store.get_batch(self.customer_id, self.tracking_id), state, attempts - 1)
            return
        self.log.warning("polling chain overdue since %s; this message takes it over", overdue_at.isoformat())
        first_seen = _as_utc(row.entity.get("firstSeenAt")) or self.now
        self._adopt_row_context(row)
        self._poll(ChainState(token, first_seen, attempt=int(row.entity.get("pollCount") or 0), etag=etag))

    def _claim_new(self, attempts: int) -> None:
        token = _new_token()
        correlation_id = self.request.correlation_id or str(uuid.uuid4())
        self.request = replace(self.request, correlation_id=correlation_id)
        self.log.extra = {**(self.log.extra or {}), "correlationId": correlation_id}
        fields: dict[str, Any] = {
            "customerId": self.customer_id,
            "batchTrackingId": self.tracking_id,
            "status": "unknown",
            "outcome": Outcome.PENDING.value,
            "pollCount": 0,
            "deviceCount": 0,
            "failedDeviceCount": 0,
            "firstSeenAt": self.now,
            "correlationId": correlation_id,
            "source": self.request.source or "",
            "chainToken": token,
            "nextPollAt": self.now,
        }
        self.store.write_tracking_index(self.customer_id, self.tracking_id)
        etag = self.store.create_batch(self.customer_id, self.tracking_id, fields)
        if etag is None:  # created meanwhile by another copy of this message
            self._resolve(self.store.get_batch(self.customer_id, self.tracking_id), None, attempts - 1)
            return
        self.log.info("tracking a new batch for customer %s", self.customer_id)
        self._poll(ChainState(token, self.now, etag=etag))

    def _send_watchdog(self, row: BatchRow, overdue_at: datetime) -> None:
        first_seen = _as_utc(row.entity.get("firstSeenAt")) or self.now
        watchdog = ChainState(_new_token(), first_seen, watch=row.chain_token)
        delay = (overdue_at - self.now).total_seconds()
        self._requeue(watchdog, delay)
        self.log.info("batch is already being polled; watching that chain until %s", overdue_at.isoformat())

    def _overdue_at(self, row: BatchRow) -> datetime:
        due = (
            _as_utc(row.entity.get("nextPollAt"))
            or _as_utc(row.entity.get("lastPolledAt"))
            or _as_utc(row.entity.get("firstSeenAt"))
            or self.now
        )
        return due + timedelta(seconds=self.settings.chain_stale_grace)

    def _adopt_row_context(self, row: BatchRow) -> None:
        correlation_id = str(row.entity.get("correlationId") or "") or self.request.correlation_id
        source = str(row.entity.get("source") or "") or self.request.source
        self.request = replace(self.request, correlation_id=correlation_id, source=source)
        self.log.extra = {**(self.log.extra or {}), "correlationId": correlation_id}

    # --- polling ----------------------------------------------------------------------------------
    def _poll(self, state: ChainState) -> None:
        correlation_id = self.request.correlation_id or str(uuid.uuid4())
        self.request = replace(self.request, correlation_id=correlation_id)
        result = self.check.partner_center.get_batch_status(self.customer_id, self.tracking_id, correlation_id)
        elapsed = (self.now - state.first_seen_at).total_seconds()
        decision = decide(result, elapsed, state.errors, state.auth_failures, self.settings.policy, self.check.rng)
        if isinstance(decision, Requeue):
            self._continue(state, result, decision)
        else:
            self._finalize(state, result, decision)

    def _continue(self, state: ChainState, result: PollResult, decision: Requeue) -> None:
        delay = queue_delay(decision.delay)
        successor = ChainState(
            token=_new_token(),
            first_seen_at=state.first_seen_at,
            attempt=state.attempt + 1,
            errors=decision.errors,
            auth_failures=decision.auth_failures,
        )
        fields: dict[str, Any] = {
            "pollCount": successor.attempt,
            "lastPolledAt": self.now,
            "nextPollAt": self.now + timedelta(seconds=delay),
            "chainToken": successor.token,
            "lastResult": decision.reason[:1024],
        }
        if isinstance(result, StatusReceived):
            fields["status"] = result.batch.status
            fields.update(batch_times(result.batch.started_time, result.batch.completed_time))
        try:
            etag = self.store.update_batch(self.customer_id, self.tracking_id, fields, state.etag)
        except RowChangedError:
            self._resolve(self.store.get_batch(self.customer_id, self.tracking_id), replace(state, etag=None))
            return
        self._requeue(replace(successor, etag=etag), delay)
        self.log.info("poll %d: %s; next poll in %d s", successor.attempt, decision.reason, delay)

    def _finalize(self, state: ChainState, result: PollResult, decision: Finalize) -> None:
        row = self.store.get_batch(self.customer_id, self.tracking_id)
        if row is not None and row.is_final:
            self.log.info("batch already final (%s); nothing to write", row.outcome)
            return
        context = BatchContext(
            self.customer_id, self.tracking_id, decision.outcome, self.request.correlation_id, self.request.source
        )
        fields: dict[str, Any] = {
            "outcome": decision.outcome.value,
            "pollCount": state.attempt + 1,
            "lastPolledAt": self.now,
            "finalizedAt": self.now,
            "chainToken": "",
            "lastResult": decision.reason[:1024],
            "correlationId": self.request.correlation_id or "",
            "source": self.request.source or "",
        }
        if isinstance(result, StatusReceived):
            batch = result.batch
            failed = batch.failed_devices
            context = replace(context, device_count=len(batch.devices), failed_device_count=len(failed))
            device_transactions = self.store.write_devices(self.customer_id, self.tracking_id, batch.devices, self.now)
            history_requests = self.store.write_history(self.customer_id, self.tracking_id, batch.devices, self.now)
            messages = failure_chunks(context, failed) if failed else []
            fields.update(
                status=batch.status,
                deviceCount=len(batch.devices),
                failedDeviceCount=len(failed),
                **batch_times(batch.started_time, batch.completed_time),
            )
            self.log.info(
                "final: %s, %d devices (%d failed) in %d transactions, %d history writes, %d failure chunks",
                decision.outcome.value, len(batch.devices), len(failed), device_transactions,
                history_requests, len(messages),
            )
        else:
            # Only the chain's holder may end a batch without a result: claim that first.
            if row is None or row.chain_token != state.token:
                self._resolve(row, replace(state, etag=None))
                return
            try:
                self.store.update_batch(self.customer_id, self.tracking_id, {"chainToken": "final:" + state.token},
                                        row.etag)
            except RowChangedError:
                self._resolve(self.store.get_batch(self.customer_id, self.tracking_id), replace(state, etag=None))
                return
            messages = [batch_outcome_chunk(context, decision.reason)]
            self.log.warning("final: %s (%s)", decision.outcome.value, decision.reason)
        for message in messages:
            self.check.clients.send(self.settings.failure_queue, message.to_json())
        self.store.update_batch(self.customer_id, self.tracking_id, fields, None)

    def _requeue(self, state: ChainState, delay: float) -> None:
        message = self.request.with_state(state).to_message()
        self.check.clients.send(self.settings.status_queue, message, visibility_timeout=queue_delay(delay))


def _new_token() -> str:
    return uuid.uuid4().hex


def _as_utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
