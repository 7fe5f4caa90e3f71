"""Both functions on the in-memory fakes under the Functions host's rules, with an injected clock: fast."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest

from shared.config import PollingSettings, default_of
from shared.durations import DurationSummary, bin_of, summarise
from shared.learned_schedules import ALL
from shared.models import BatchStatus
from shared.policy import PollingPolicy, StatusReceived
from shared.schedule import learn_schedule
from shared.webhook import RetryLater
from tests.functional.fakes import NEVER
from tests.functional.host import FAILURE_QUEUE, STATUS_QUEUE, App
from tests.functional.scripts import denied, devices, finishes, never_final, unknown

CUSTOMER = "47021739-3426-40bf-9601-61b4b6d7c793"


def _batch(app: App, script_for: object, *, copies: int = 1) -> str:
    tracking = str(uuid.uuid4())
    app.partner_center.scripts[tracking] = script_for  # type: ignore[assignment]
    for _ in range(copies):
        app.queues.put(STATUS_QUEUE, json.dumps({"customerId": CUSTOMER, "batchTrackingId": tracking}))
    return tracking


def _gaps(app: App, tracking: str) -> list[float]:
    calls = app.partner_center.calls[tracking]
    return [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(calls)]


def test_a_batch_is_polled_until_final_with_the_policys_delays() -> None:
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=20), devices(["A", "B"])))
    app.run_until_idle()

    row = app.store.rows[(CUSTOMER, tracking)]
    assert row["outcome"] == "completed" and row["pollCount"] == len(app.partner_center.calls[tracking])
    assert min(_gaps(app, tracking)) >= 27  # the initial delay of 30 s, less 10% jitter
    assert {row["serialNumber"] for row in app.store.devices[tracking].values()} == {"A", "B"}
    assert app.webhook.delivered == []
    assert app.store.finals[(CUSTOMER, tracking)] == ["completed"]


def test_failed_devices_reach_the_webhook_once_and_are_recorded_as_sent() -> None:
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=2), devices(["A", "B", "C"], failing=["B"])))
    app.run_until_idle()

    [alert] = app.webhook.delivered
    assert alert["type"] == "device_failures" and [d["serialNumber"] for d in alert["devices"]] == ["B"]
    assert [row["status"] for row in app.alert_log.rows.values()] == ["sent"]
    assert app.store.outcome(CUSTOMER, tracking) == "completed_with_failures"


def test_the_same_tracking_id_sent_three_times_is_polled_by_one_chain() -> None:
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(hours=1), devices(["A"])), copies=3)
    app.run_until_idle()

    assert app.store.rows[(CUSTOMER, tracking)]["pollCount"] == len(app.partner_center.calls[tracking])
    assert min(_gaps(app, tracking)) >= 27 and app.store.finals[(CUSTOMER, tracking)] == ["completed"]
    assert app.queues.contents(STATUS_QUEUE) == []


@pytest.mark.parametrize(("script", "outcome"), [
    (never_final(), "timed_out"), (unknown(), "not_found"), (denied(["503"]), "access_denied")])
def test_a_batch_that_ends_badly_raises_one_batch_alert(script: object, outcome: str) -> None:
    app = App.build(POLL_DEADLINE_SECONDS="7200")
    tracking = _batch(app, script)
    app.run_until_idle()

    assert app.store.outcome(CUSTOMER, tracking) == outcome
    [alert] = app.webhook.delivered
    assert alert["type"] == "batch_outcome" and alert["outcome"] == outcome and alert["reason"]


def test_a_successor_lost_in_a_crash_after_the_row_write_is_replaced_by_taking_the_chain_over() -> None:
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=30), devices(["A"])))
    app.faults.plan(f"before:send:{STATUS_QUEUE}", "kill")  # the first successor never leaves
    app.run_until_idle()

    assert app.store.outcome(CUSTOMER, tracking) == "completed"
    assert app.faults.injected == [(f"before:send:{STATUS_QUEUE}", "kill")]
    gaps = _gaps(app, tracking)
    assert gaps[0] >= 900  # the message came back after its lease, watched, and took the chain over when overdue


def test_a_merge_whose_answer_was_lost_carries_the_chain_on_without_delay() -> None:
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=10), devices(["A"])))
    app.faults.plan("after:row", "lost")
    app.run_until_idle()

    assert app.faults.injected == [("after:row", "lost")]
    assert max(_gaps(app, tracking)) < 300  # no watchdog wait of CHAIN_STALE_GRACE_SECONDS (900 s)
    assert app.store.outcome(CUSTOMER, tracking) == "completed"


def test_a_crash_after_the_webhook_answered_sends_the_alert_again_in_the_one_documented_window() -> None:
    app = App.build()
    _batch(app, finishes(app.clock(), timedelta(minutes=1), devices(["A", "B"], failing=["A"])))
    app.faults.plan("after:webhook", "kill")
    app.run_until_idle()

    first, second = app.webhook.delivered
    assert first["alertId"] == second["alertId"]  # sent, crashed before AlertLog said so: sent again
    assert [row["status"] for row in app.alert_log.rows.values()] == ["sent"]


def test_a_webhook_that_keeps_failing_ends_in_poison_with_the_reason() -> None:
    app = App.build(ALERT_MAX_ATTEMPTS="3")
    _batch(app, finishes(app.clock(), timedelta(minutes=1), devices(["A"], failing=["A"])))
    app.webhook.answers = [RetryLater("webhook answered 503")] * 3
    app.run_until_idle()

    [envelope] = app.queues.contents(FAILURE_QUEUE + "-poison")
    assert "gave up after 3 attempts: webhook answered 503" in json.loads(envelope)["reason"]
    assert app.webhook.delivered == [] and app.queues.contents(FAILURE_QUEUE) == []


def test_messages_batchwatch_sends_never_expire_even_when_the_clock_jumps_a_month() -> None:
    app = App.build(ALERT_MAX_ATTEMPTS="3")
    _batch(app, finishes(app.clock(), timedelta(minutes=1), devices(["A"], failing=["A"])))
    app.host.deliver(STATUS_QUEUE)  # polls once, requeues
    assert all(message.expires_at == NEVER for message in app.queues.queues[STATUS_QUEUE])
    app.clock.advance(31 * 24 * 3600)
    app.run_until_idle()
    assert len(app.webhook.delivered) == 1


def test_a_429_for_one_batch_holds_every_process_s_polls_until_retry_after() -> None:
    """Two processes (two apps) on one storage account: after one is told to back off, neither calls."""
    from shared.status_check import StatusCheck
    from tests.functional.scripts import FAULTS

    app = App.build()
    other = StatusCheck(app.status_check.settings, app.queues, app.store, app.partner_center, clock=app.clock,
                        monotonic=lambda: app.clock().timestamp())
    throttled = _batch(app, finishes(app.clock(), timedelta(minutes=5), devices(["A"]), faults=["429"]))
    app.host.deliver(STATUS_QUEUE)  # process one: the 429 (Retry-After 45 s)
    assert len(app.partner_center.calls[throttled]) == 1 and FAULTS["429"].retry_after == 45.0
    app.clock.now += timedelta(seconds=10)
    waiting = _batch(app, finishes(app.clock(), timedelta(minutes=5), devices(["B"])))
    message = app.queues.receive(STATUS_QUEUE)
    assert message is not None
    other.handle(message.content.encode(), message.id, 1)  # process two: a new batch, while the partner waits
    app.queues.delete(STATUS_QUEUE, message, message.receipt)
    assert waiting not in app.partner_center.calls  # it did not call Partner Center
    app.run_until_idle()
    first_call = app.partner_center.calls[waiting][0]
    assert first_call >= app.partner_center.calls[throttled][0] + timedelta(seconds=45)
    assert app.store.rows[(CUSTOMER, waiting)]["outcome"] == "completed"


def test_with_a_call_budget_the_fleet_never_calls_more_in_a_minute_and_every_batch_completes() -> None:
    app = App.build(PARTNER_CENTER_MAX_CALLS_PER_MINUTE="3")
    batches = [_batch(app, finishes(app.clock(), timedelta(minutes=2), devices([f"D{i}"]))) for i in range(8)]
    app.run_until_idle()
    calls = [call for tracking in batches for call in app.partner_center.calls[tracking]]
    per_minute = Counter(call.replace(second=0, microsecond=0) for call in calls)
    assert max(per_minute.values()) <= 3 and len(per_minute) >= len(calls) / 3
    assert all(app.store.rows[(CUSTOMER, tracking)]["outcome"] == "completed" for tracking in batches)


def test_without_fleet_throttling_a_429_holds_only_its_own_batch() -> None:
    app = App.build(PARTNER_CENTER_FLEET_THROTTLE="false")
    throttled = _batch(app, finishes(app.clock(), timedelta(minutes=5), devices(["A"]), faults=["429"]))
    app.host.deliver(STATUS_QUEUE)  # the 429 (Retry-After 45 s)
    app.clock.now += timedelta(seconds=10)
    other = _batch(app, finishes(app.clock(), timedelta(minutes=5), devices(["B"])))
    app.host.deliver(STATUS_QUEUE)
    assert len(app.partner_center.calls[other]) == 1  # it called while the partner was throttled
    assert app.store.throttles == {}
    app.run_until_idle()
    assert app.store.rows[(CUSTOMER, throttled)]["outcome"] == "completed"


def _large_batch(app: App, count: int, after: timedelta = timedelta(minutes=1)) -> tuple[str, list[str]]:
    serials = [f"L{i:05}" for i in range(count)]
    failing = serials[::10]
    return _batch(app, finishes(app.clock(), after, devices(serials, failing))), failing


def _slow_writes(app: App, seconds_per_look: float) -> None:
    """Each look at the monotonic clock finds seconds_per_look more passed: storing a page takes that long."""
    looks = itertools.count()
    app.status_check.monotonic = lambda: next(looks) * seconds_per_look


@pytest.mark.parametrize("after", [timedelta(0), timedelta(minutes=1)], ids=["final at the first poll", "later"])
def test_a_large_result_is_stored_in_steps_across_invocations_and_each_device_once(after: timedelta) -> None:
    app = App.build(FINALIZE_STEP_SECONDS="60")
    tracking, failing = _large_batch(app, 5500, after)
    _slow_writes(app, 25)  # two pages of 1,000 devices per invocation
    app.run_until_idle()
    row = app.store.rows[(CUSTOMER, tracking)]
    assert row["outcome"] == "completed_with_failures" and row["devicesStored"] == 5500
    assert len(app.store.devices[tracking]) == 5500 and set(app.store.device_writes.values()) == {1}
    assert len([key for key in app.store.history if key[1] == tracking]) == 5500
    start = app.partner_center.calls[tracking][0]
    finals = [call for call in app.partner_center.calls[tracking] if call >= start + after]
    assert len(finals) >= 2  # the final answer, read again by each invocation that went on
    assert app.queues.queues.get(STATUS_QUEUE + "-poison", []) == []
    alerted = [device["serialNumber"] for alert in app.webhook.delivered for device in alert["devices"]]
    assert sorted(alerted) == failing


def test_a_crash_while_storing_resumes_from_the_recorded_progress() -> None:
    app = App.build()
    tracking, failing = _large_batch(app, 5500)
    for _ in range(3):
        app.faults.plan("before:devices", "pass")
    app.faults.plan("before:devices", "kill")  # the process dies before the 4th page
    app.run_until_idle()
    row = app.store.rows[(CUSTOMER, tracking)]
    assert row["outcome"] == "completed_with_failures"
    assert ("before:devices", "kill") in app.faults.injected
    assert len(app.store.devices[tracking]) == 5500 and set(app.store.device_writes.values()) == {1}
    alerted = {device["serialNumber"] for alert in app.webhook.delivered for device in alert["devices"]}
    assert alerted == set(failing)


def test_a_fault_while_the_final_answer_is_read_again_keeps_what_is_stored_even_past_the_deadline() -> None:
    """A large result stored in steps: the next step's read gets 503s after the deadline has passed. The batch
    still ends completed_with_failures with every failed device alerted, and no device is written twice."""
    from shared.policy import Transient

    app = App.build(FINALIZE_STEP_SECONDS="60", POLL_DEADLINE_SECONDS="120")
    serials = [f"L{i:05}" for i in range(5500)]
    final = finishes(app.clock(), timedelta(0), devices(serials, serials[::10]))

    def script(now: object, call: int) -> object:
        return Transient("HTTP 503") if call in (1, 2, 3) else final(now, call)  # type: ignore[arg-type]

    tracking = _batch(app, script)
    _slow_writes(app, 25)
    app.host.deliver(STATUS_QUEUE)  # final at once; the first pages, then a new message goes on
    app.clock.advance(600)  # past the deadline
    app.run_until_idle()
    row = app.store.rows[(CUSTOMER, tracking)]
    assert row["outcome"] == "completed_with_failures" and row["devicesStored"] == 5500
    assert set(app.store.device_writes.values()) == {1} and len(app.store.devices[tracking]) == 5500
    alerted = sorted(device["serialNumber"] for alert in app.webhook.delivered for device in alert["devices"])
    assert alerted == serials[::10]


def test_two_copies_of_the_message_that_goes_on_store_the_rest_once() -> None:
    app = App.build(FINALIZE_STEP_SECONDS="60")
    tracking, _ = _large_batch(app, 5500, timedelta(0))
    _slow_writes(app, 25)
    app.host.deliver(STATUS_QUEUE)
    [handed_on] = app.queues.queues[STATUS_QUEUE]
    app.queues.put(STATUS_QUEUE, handed_on.content)  # the send's answer was lost and the SDK sent it again
    app.run_until_idle()
    assert app.store.rows[(CUSTOMER, tracking)]["outcome"] == "completed_with_failures"
    assert set(app.store.device_writes.values()) == {1}
    assert len(app.webhook.delivered) == 2 and len(app.queues.queues.get(FAILURE_QUEUE, [])) == 0


HISTORY = default_of(PollingSettings, "learn_min_batches")  # past batches of the customer: just enough to learn from


def _twenty_minute_history(count: int) -> DurationSummary:
    rng = random.Random(11)
    return summarise([rng.uniform(1100, 1300) for _ in range(count)])


@pytest.mark.parametrize("schedule", ["learned", "elapsed"])
def test_a_customer_s_history_sets_the_poll_schedule_and_each_final_batch_joins_it(schedule: str) -> None:
    """Batches that take about 20 minutes: the learned schedule waits through the first 18 and then polls densely;
    the elapsed rule polls all along. Either way the finalised batch is added to the summaries."""
    app = App.build(POLL_SCHEDULE=schedule)
    app.store.durations[CUSTOMER] = _twenty_minute_history(HISTORY)
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=20), devices(["A"])))
    app.run_until_idle()

    calls = len(app.partner_center.calls[tracking])
    assert app.store.outcome(CUSTOMER, tracking) == "completed"
    if schedule == "learned":
        assert calls <= 7 and min(_gaps(app, tracking)) >= 27
        learned = learn_schedule(_twenty_minute_history(HISTORY), PollingPolicy())
        first_gap = _gaps(app, tracking)[0]
        assert abs(first_gap - min(600.0, learned[0])) <= 0.1 * min(600.0, learned[0]) + 1  # jitter: 10%
    else:
        assert calls >= 14
    assert app.store.durations[CUSTOMER].batches == HISTORY + 1 and app.store.durations[ALL].batches == 1
    # How long it took by Partner Center's completedTime (20 minutes), not by the poll that saw it final.
    assert app.store.durations[ALL].weights[bin_of(1200.0)] == 1.0


@pytest.mark.parametrize("completed_time", [True, False])
def test_a_batch_without_devices_joins_the_history_by_its_completed_time_or_else_the_final_poll(
        completed_time: bool) -> None:
    app = App.build()
    first_seen = app.clock()
    completed = first_seen + timedelta(minutes=20)

    def answer(now: datetime, call: int) -> StatusReceived:
        if now < completed:
            return StatusReceived(BatchStatus(None, "processing", None, None, ()))
        return StatusReceived(BatchStatus(None, "finished", None, completed if completed_time else None, ()))

    tracking = _batch(app, answer)
    app.run_until_idle()
    waited = (app.partner_center.calls[tracking][-1] - first_seen).total_seconds()
    assert bin_of(waited) != bin_of(1200.0)
    assert app.store.durations[ALL].weights[bin_of(1200.0 if completed_time else waited)] == 1.0


def test_a_batch_that_ends_badly_does_not_join_the_history() -> None:
    app = App.build(POLL_DEADLINE_SECONDS="7200")
    _batch(app, never_final())
    app.run_until_idle()
    assert app.store.durations == {}


@pytest.mark.parametrize("fault", ["lost", "kill"])
def test_a_final_write_that_did_not_land_at_its_first_try_never_adds_the_batch_twice(fault: str) -> None:
    """The answer of the final write lost (the SDK's retry got 412), or the process killed right after it: the
    batch is final, and it is left out of the history rather than risk adding it twice."""
    app = App.build()
    tracking = _batch(app, finishes(app.clock(), timedelta(minutes=10), devices(["A"])))
    app.faults.plan("after:final", fault)
    app.run_until_idle()

    assert app.faults.injected == [("after:final", fault)]
    assert app.store.finals[(CUSTOMER, tracking)] == ["completed"]
    assert app.store.durations == {}
