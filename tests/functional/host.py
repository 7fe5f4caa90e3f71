"""The Functions host's queue-trigger rules over the fake queues, and the app's two handlers wired to fakes."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from shared.config import load_settings
from shared.failure_alerts import FailureNotifier
from shared.status_check import StatusCheck
from tests.functional.fakes import (
    Crash,
    FakeAlertLog,
    FakeClock,
    FakePartnerCenter,
    FakeQueues,
    FakeResultsStore,
    FakeWebhook,
    Faults,
)

Handler = Callable[[bytes, str, int], None]
STATUS_QUEUE = "batch-status-requests"
FAILURE_QUEUE = "device-failures"


@dataclass
class FunctionsHost:
    """Receive, run, then delete; on a failure release after visibilityTimeout, or move to <queue>-poison at
    maxDequeueCount (the host's copy keeps the content as it was); a killed process leaves the message leased."""

    queues: FakeQueues
    handlers: dict[str, Handler]
    max_dequeue_count: int = 5
    visibility_timeout: float = 60.0
    poisoned_by_host: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    deletes_to_lose: int = 0  # the host dies after a function succeeded, before deleting its message

    def deliver(self, queue_name: str) -> bool:
        """Run the next visible message of the queue; False when none is visible."""
        message = self.queues.receive(queue_name)
        if message is None:
            return False
        receipt = message.receipt
        if message.dequeue_count > self.max_dequeue_count:
            self._to_poison(queue_name, message, receipt)
            return True
        try:
            self.handlers[queue_name](message.content.encode(), message.id, message.dequeue_count)
        except Crash as crash:
            if crash.killed:
                return True  # the lease runs out and the message comes back
            self._failed(queue_name, message, receipt, str(crash))
        except Exception as exc:  # a bug or an outage: the host's retry and poison rules
            self._failed(queue_name, message, receipt, f"{type(exc).__name__}: {exc}")
        else:
            if self.deletes_to_lose:
                self.deletes_to_lose -= 1  # the message comes back when its lease runs out
            else:
                self.queues.delete(queue_name, message, receipt)
        return True

    def _failed(self, queue_name: str, message: object, receipt: str, why: str) -> None:
        self.failures.append(why)
        if message.dequeue_count >= self.max_dequeue_count:  # type: ignore[attr-defined]
            self._to_poison(queue_name, message, receipt)
        else:
            self.queues.release(message, receipt, self.visibility_timeout)  # type: ignore[arg-type]

    def _to_poison(self, queue_name: str, message: object, receipt: str) -> None:
        content = message.content  # type: ignore[attr-defined]
        self.poisoned_by_host.append((queue_name, content))
        planned, self.queues.faults.planned = self.queues.faults.planned, {}  # the host's own send never fails
        try:
            self.queues.send(f"{queue_name}-poison", content, time_to_live=None)
        finally:
            self.queues.faults.planned = planned
        self.queues.delete(queue_name, message, receipt)  # type: ignore[arg-type]


SETTINGS = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "PARTNER_CENTER_AUTH": "simulator",
    "PARTNER_CENTER_BASE_URL": "http://127.0.0.1:1",
    "ALERT_WEBHOOK_URL": "https://webhook.test/hooks/x",
}


@dataclass
class App:
    """check_batch_status and notify_failures on the fakes, under the fake Functions host."""

    clock: FakeClock
    faults: Faults
    queues: FakeQueues
    store: FakeResultsStore
    alert_log: FakeAlertLog
    webhook: FakeWebhook
    partner_center: FakePartnerCenter
    status_check: StatusCheck
    notifier: FailureNotifier
    host: FunctionsHost
    route_webhooks: dict[str, FakeWebhook]  # by URL: the webhooks of ALERT_ROUTES

    @classmethod
    def build(cls, seed: int = 1, **settings: str) -> App:
        clock, faults = FakeClock(), Faults()
        queues, store = FakeQueues(clock, faults), FakeResultsStore(faults)
        alert_log, webhook, partner_center = FakeAlertLog(faults), FakeWebhook(faults), FakePartnerCenter(clock)
        config = load_settings({**SETTINGS, **settings})
        tokens = (f"{n:032x}" for n in range(1, 10**9))
        status_check = StatusCheck(config, queues, store, partner_center, clock=clock, rng=random.Random(seed),
                                   new_token=lambda: next(tokens), monotonic=lambda: clock().timestamp())
        route_webhooks: dict[str, FakeWebhook] = {}

        def route_webhook(url: str) -> FakeWebhook:
            return route_webhooks.setdefault(url, FakeWebhook(faults, urlsplit(url).hostname or "?"))

        notifier = FailureNotifier(config, queues, alert_log, webhook, clock=clock, route_sender=route_webhook)
        host = FunctionsHost(queues, {config.status_queue: status_check.handle, config.failure_queue:
                                      lambda body, message_id, _: notifier.handle(body, message_id)})
        return cls(clock, faults, queues, store, alert_log, webhook, partner_center, status_check, notifier, host,
                   route_webhooks)

    def restart_notifier(self, **settings: str) -> None:
        """notify_failures started again with these settings, as a fixed setting restarts the app on Azure."""
        config = load_settings({**SETTINGS, **settings})
        notifier = FailureNotifier(config, self.queues, self.alert_log, self.webhook, clock=self.clock,
                                   route_sender=self.notifier._route_sender)
        self.notifier = notifier
        self.host.handlers[config.failure_queue] = lambda body, message_id, _: notifier.handle(body, message_id)

    def run_until_idle(self, horizon: timedelta = timedelta(days=3), max_steps: int = 10_000) -> None:
        """Deliver every message as it becomes visible, moving the clock forward, until nothing is left (or the
        horizon passes: a message leased by a killed process comes back after 10 minutes)."""
        end = self.clock() + horizon
        for _ in range(max_steps):
            if any(self.host.deliver(queue) for queue in (STATUS_QUEUE, FAILURE_QUEUE)):
                continue
            upcoming = [time for queue in (STATUS_QUEUE, FAILURE_QUEUE)
                        if (time := self.queues.next_visible(queue)) is not None]
            if not upcoming or min(upcoming) > end:
                return
            self.clock.now = max(self.clock(), min(upcoming))
        raise AssertionError("the app did not become idle")
