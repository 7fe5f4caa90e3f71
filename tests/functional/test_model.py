"""A model-based proof of the polling chain and the alerts, on the fakes: hypothesis drives many batches through
both functions with duplicate and redelivered messages, crashes (an exception, or the process killed) before and
after every storage write and send, lost write answers, clock jumps, 429s and 5xx, and checks after every step
and at the end that nothing is lost, nothing is polled twice, and every failure reaches the webhook.

BATCHWATCH_PROOF_EXAMPLES (default 1000) sets the number of examples; `make prove` runs 20,000.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared.models import ENDED_BADLY, Outcome
from shared.policy import Denied, NotFound, StatusReceived, TooLarge, final_outcome
from tests.functional.host import FAILURE_QUEUE, STATUS_QUEUE, App
from tests.functional.scripts import denied, devices, finishes, never_final, unknown

CUSTOMER = "47021739-3426-40bf-9601-61b4b6d7c793"
DEADLINE = 7200.0
SMALLEST_GAP = 27.0  # POLL_INITIAL_DELAY_SECONDS (30) less the 10% jitter
MAX_BATCHES = 4
MAX_FAULTS = 3  # fewer than maxDequeueCount: no message can be poisoned by the host for faults alone
KINDS = ("completed", "completed_with_failures", "errors_without_devices", "timed_out", "not_found",
         "access_denied", "response_too_large")
CRASH_POINTS = (
    "before:index", "before:create", "after:create", "before:row", "after:row", "before:claim-final",
    "after:claim-final", "before:devices", "before:history", "before:final", "after:final",
    f"before:send:{STATUS_QUEUE}", f"after:send:{STATUS_QUEUE}", f"before:send:{FAILURE_QUEUE}",
    f"after:send:{FAILURE_QUEUE}", "before:claim", "before:webhook", "after:webhook", "before:alert-sent",
    "before:alert-retrying",
)
LOST_ANSWERS = ("after:create", "after:row", "after:claim-final", "after:final")
# A crash at one of these leaves the final mark but not the final row: the retry polls again, and a batch past
# its deadline may have finished meanwhile, so the earlier try's batch alert can come with a later outcome.
FINALISING = ("after:claim-final", "before:devices", "before:history", f"before:send:{FAILURE_QUEUE}",
              f"after:send:{FAILURE_QUEUE}", "before:final")
ANSWER_FAULTS = st.lists(st.sampled_from(["429", "503", "timeout"]), max_size=3)


@dataclass
class Expected:
    kind: str
    failing: tuple[str, ...]


class PollingChainModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.app = App.build(POLL_DEADLINE_SECONDS=str(int(DEADLINE)), NOT_FOUND_GRACE_SECONDS="900")
        self.expected: dict[str, Expected] = {}
        self.faults_planned = 0

    # --- what happens ------------------------------------------------------------------------------------
    @initialize(batches=st.lists(st.tuples(st.sampled_from(KINDS), ANSWER_FAULTS, st.integers(1, 90),
                                           st.integers(1, 3)), min_size=1, max_size=MAX_BATCHES - 1),
                faults=st.lists(st.tuples(st.sampled_from(CRASH_POINTS + LOST_ANSWERS),
                                          st.sampled_from(["exception", "kill", "lost"])), max_size=MAX_FAULTS))
    def start(self, batches: list[tuple[str, list[str], int, int]], faults: list[tuple[str, str]]) -> None:
        for kind, answer_faults, minutes, copies in batches:
            self.upload(kind, answer_faults, minutes, copies)
        for point, kind in faults:
            self.app.faults.plan(point, "exception" if kind == "lost" and point not in LOST_ANSWERS else kind)
        self.faults_planned = len(faults)

    @precondition(lambda self: len(self.expected) < MAX_BATCHES)
    @rule(kind=st.sampled_from(KINDS), faults=ANSWER_FAULTS, minutes=st.integers(1, 90), copies=st.integers(1, 3))
    def upload(self, kind: str, faults: list[str], minutes: int, copies: int) -> None:
        tracking = str(uuid.uuid4())
        serials = [f"{tracking[:8]}-{index}" for index in range(3)]
        failing = tuple(serials[:2]) if kind == "completed_with_failures" else ()
        after = timedelta(minutes=minutes)
        self.app.partner_center.scripts[tracking] = {
            "completed": finishes(self.app.clock(), after, devices(serials), faults=faults),
            "completed_with_failures": finishes(self.app.clock(), after, devices(serials, failing), faults=faults),
            "errors_without_devices": finishes(self.app.clock(), after, (), "finished_with_errors", faults),
            "timed_out": never_final(faults),
            "not_found": unknown(faults),
            "access_denied": denied(faults),
            "response_too_large": never_final(["too-large"] * 3),
        }[kind]
        self.expected[tracking] = Expected(kind, failing)
        message = json.dumps({"customerId": CUSTOMER, "batchTrackingId": tracking})
        for _ in range(copies):  # the upstream job sent it more than once
            self.app.queues.put(STATUS_QUEUE, message)

    @rule(queue=st.sampled_from([STATUS_QUEUE, FAILURE_QUEUE]))
    def deliver(self, queue: str) -> None:
        self.app.host.deliver(queue)

    @rule(seconds=st.sampled_from([1, 29, 61, 300, 601, 901, 3600, 86_400]))
    def time_passes(self, seconds: int) -> None:
        self.app.clock.advance(seconds)

    @precondition(lambda self: self.faults_planned < MAX_FAULTS)
    @rule(point=st.sampled_from(CRASH_POINTS), killed=st.booleans())
    def crash_at(self, point: str, killed: bool) -> None:
        self.app.faults.plan(point, "kill" if killed else "exception")
        self.faults_planned += 1

    @precondition(lambda self: self.faults_planned < MAX_FAULTS)
    @rule(point=st.sampled_from(LOST_ANSWERS))
    def lose_the_answer_of(self, point: str) -> None:
        self.app.faults.plan(point, "lost")
        self.faults_planned += 1

    @precondition(lambda self: self.faults_planned < MAX_FAULTS)
    @rule()
    def the_host_dies_before_it_deletes_the_next_message(self) -> None:
        """At-least-once delivery: the function ran to the end, the message comes back after its lease."""
        self.app.host.deletes_to_lose += 1
        self.faults_planned += 1

    # --- what must always hold ---------------------------------------------------------------------------
    @invariant()
    def polls_of_one_batch_are_never_closer_than_the_policy_allows(self) -> None:
        for tracking, calls in self.app.partner_center.calls.items():
            row = self.app.store.rows.get((CUSTOMER, tracking), {})
            first_seen: datetime | None = row.get("firstSeenAt")
            for earlier, later in itertools.pairwise(calls):
                at_deadline = first_seen is not None and later >= first_seen + timedelta(seconds=DEADLINE - 1)
                gap = (later - earlier).total_seconds()
                assert gap >= SMALLEST_GAP or at_deadline, f"batch {tracking} polled {gap:.0f} s apart"

    @invariant()
    def a_batch_becomes_final_at_most_once(self) -> None:
        for key, outcomes in self.app.store.finals.items():
            assert len(outcomes) <= 1, f"batch {key[1]} finalised {outcomes}"

    @invariant()
    def nothing_is_moved_to_poison_by_the_host(self) -> None:
        assert self.app.host.poisoned_by_host == []

    def teardown(self) -> None:
        self.app.run_until_idle(horizon=timedelta(days=10))  # faults still planned fire on the way
        event(f"batches: {len(self.expected)}")
        event(f"faults injected: {len(self.app.faults.injected)}")
        for point, kind in self.app.faults.injected:
            event(f"fault: {kind} at {point}")
        self._every_batch_final_with_its_outcome()
        self._every_failure_alerted_and_at_most_once_outside_the_window()
        for queue in (STATUS_QUEUE, FAILURE_QUEUE):
            assert self.app.queues.contents(queue) == [], f"{queue} still holds messages"
        for queue in (STATUS_QUEUE + "-poison", FAILURE_QUEUE + "-poison"):
            assert self.app.queues.contents(queue) == [], f"unexpected poison in {queue}"

    def _every_batch_final_with_its_outcome(self) -> None:
        for tracking in self.expected:
            outcome = self.app.store.outcome(CUSTOMER, tracking)
            implied = self._implied_outcomes(tracking)
            assert outcome in implied, f"batch {tracking} ended {outcome}, its answers imply {implied}"
            assert self.app.store.finals[(CUSTOMER, tracking)] == [outcome]

    def _implied_outcomes(self, tracking: str) -> set[str]:
        """What Partner Center's last answer implies. Past the deadline a batch whose last answer was not
        final, nor a 404, ends timed_out, even one that was being denied or sent oversized answers."""
        calls = self.app.partner_center.calls[tracking]
        last = self.app.partner_center.scripts[tracking](calls[-1], len(calls) - 1)
        if isinstance(last, StatusReceived) and last.batch.is_final:
            return {final_outcome(last.batch).value}
        if isinstance(last, NotFound):
            return {"not_found"}
        if isinstance(last, Denied):
            return {"access_denied", "timed_out"}
        if isinstance(last, TooLarge):
            return {"response_too_large", "timed_out"}
        return {"timed_out"}

    def _every_failure_alerted_and_at_most_once_outside_the_window(self) -> None:
        delivered = self.app.webhook.delivered
        alerted = {(alert["batchTrackingId"], device["serialNumber"]) for alert in delivered
                   for device in alert["devices"]}
        for tracking in self.expected:
            calls = self.app.partner_center.calls[tracking]
            last = self.app.partner_center.scripts[tracking](calls[-1], len(calls) - 1)
            failed = last.batch.failed_devices if isinstance(last, StatusReceived) else ()
            assert {(tracking, device.serial_number) for device in failed} <= alerted, f"batch {tracking}"
            batch_alerts = [alert for alert in delivered
                            if alert["batchTrackingId"] == tracking and alert["type"] == "batch_outcome"]
            outcome = self.app.store.outcome(CUSTOMER, tracking)
            needs_alert = Outcome(outcome) in ENDED_BADLY or (
                outcome == "completed_with_failures" and not failed)
            if needs_alert:
                assert batch_alerts, f"batch {tracking} ended {outcome} without a batch alert"
            elif batch_alerts:  # sent by a try that crashed while finalising; the retry polled a later answer
                assert any(point in FINALISING for point, _ in self.app.faults.injected), tracking
        window = sum(1 for point, _ in self.app.faults.injected if point in ("after:webhook", "before:alert-sent"))
        repeats = sum(count - 1 for count in Counter(alert["alertId"] for alert in delivered).values())
        assert repeats <= window, f"{repeats} alerts sent twice, {window} crashes between send and record"


EXAMPLES = int(os.environ.get("BATCHWATCH_PROOF_EXAMPLES", "1000"))
PollingChainModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_polling_chain_model = PollingChainModel.TestCase
