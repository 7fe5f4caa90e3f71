"""The polling chain's pure decisions: every branch of resolve(), and what a requeue and a final write and send."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.batch_row import BatchRow, BatchRowChange
from shared.chain import (
    FINAL_MARK,
    Advance,
    Drop,
    Resume,
    RowWrite,
    Watch,
    batch_alert_reason,
    extension,
    plan_final,
    plan_requeue,
    resolve,
    resolve_held,
)
from shared.messages import ChainState, StatusRequest
from shared.models import BatchStatus, DeviceStatus, Outcome
from shared.policy import Finalize, NotFound, PollingPolicy, Requeue, StatusReceived

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FIRST_SEEN = NOW - timedelta(minutes=30)
GRACE = 900.0
REQUEST = StatusRequest("47021739-3426-40bf-9601-61b4b6d7c793", "0127ed8e-ff72-4983-a3d8-e8d8bd378932",
                        "6f1b1a52-0000-4000-8000-000000000001", "job")


def _row(**fields: object) -> BatchRow:
    values: dict = {"etag": "row-etag", "chain_token": "aaaa", "first_seen_at": FIRST_SEEN,
                    "next_poll_at": NOW - timedelta(seconds=10), "poll_count": 4,
                    "correlation_id": "6f1b1a52-0000-4000-8000-00000000000f", "source": "first-job"}
    return BatchRow(**{**values, **fields})  # type: ignore[arg-type]


def _with(state: ChainState | None) -> StatusRequest:
    return StatusRequest(REQUEST.customer_id, REQUEST.batch_tracking_id, REQUEST.correlation_id, REQUEST.source,
                         state)


def _device(serial: str, status: str, code: str | None = None) -> DeviceStatus:
    return DeviceStatus(serial, None, None, status, code, None)


POLICY = PollingPolicy(initial_delay=30, max_delay=600, deadline=172_800, not_found_grace=900, jitter=0.1)


def _resolve(state: ChainState | None, row: BatchRow | None, token: str = "bbbb") -> object:
    return resolve(_with(state), row, NOW, GRACE, POLICY, token)


def test_a_first_message_creates_the_row_already_handed_to_its_successor() -> None:
    decision = _resolve(None, None)
    assert isinstance(decision, Advance) and decision.creates and decision.write.etag is None
    fields = decision.write.fields
    assert fields["chainToken"] == "bbbb" and decision.successor == "bbbb" and fields["outcome"] == "pending"
    assert fields["firstSeenAt"] == NOW and fields["pollCount"] == 1 and fields["lastPolledAt"] == NOW
    assert fields["correlationId"] == REQUEST.correlation_id
    assert fields["nextPollAt"] == NOW + timedelta(seconds=33) == decision.next_poll_at  # 30 s and 10% jitter


def test_a_chain_message_whose_row_vanished_creates_it_again_and_keeps_its_deadline() -> None:
    decision = _resolve(ChainState("aaaa", FIRST_SEEN, poll_count=3), None)
    assert isinstance(decision, Advance) and decision.creates
    assert decision.write.fields["firstSeenAt"] == FIRST_SEEN


@pytest.mark.parametrize("state", [None, ChainState("aaaa", FIRST_SEEN), ChainState("cccc", FIRST_SEEN, watch="a")])
def test_any_message_for_a_final_batch_is_dropped(state: ChainState | None) -> None:
    assert isinstance(_resolve(state, _row(outcome="completed", chain_token="")), Drop)


def test_the_holder_hands_the_row_to_its_successor_before_it_polls() -> None:
    state = ChainState("aaaa", FIRST_SEEN, poll_count=4, last_status="processing",
                       last_result="batch status processing")
    decision = _resolve(state, _row())
    assert isinstance(decision, Advance) and not decision.creates and not decision.takes_over
    assert decision.write.etag == "row-etag" and decision.write.lands_as == "bbbb"
    assert decision.write.fields == {
        "chainToken": "bbbb", "pollCount": 5, "lastPolledAt": NOW, "status": "processing",
        "lastResult": "batch status processing",
        "nextPollAt": NOW + timedelta(seconds=0.18 * 1800 * 1.1)}  # 18% of the 30 minutes waited, plus jitter


def test_a_message_that_crashed_while_finalising_resumes() -> None:
    decision = _resolve(ChainState("aaaa", FIRST_SEEN, etag="old"), _row(chain_token=FINAL_MARK + "aaaa"))
    assert isinstance(decision, Resume) and decision.request.state is not None
    assert decision.request.state.etag == "row-etag" and decision.token == "bbbb"
    # it takes the mark over with a fresh token first: a copy of the same message can then no longer resume
    assert decision.write == RowWrite(BatchRowChange(chain_token=FINAL_MARK + "bbbb", next_poll_at=NOW), "row-etag",
                                      FINAL_MARK + "bbbb")


@pytest.mark.parametrize("state", [
    None,  # the upstream message delivered again, or the same tracking id sent twice
    ChainState("dddd", FIRST_SEEN),  # a stale or copied chain message
    ChainState("eeee", FIRST_SEEN, watch="aaaa"),  # a watchdog whose chain is still on time
    ChainState("aaaa", FIRST_SEEN, watch="aaaa"),  # a watchdog holding the token it watches never polls
])
def test_any_other_message_watches_until_the_chain_would_be_overdue(state: ChainState | None) -> None:
    decision = _resolve(state, _row(), "ffff")
    assert isinstance(decision, Watch) and decision.request.state is not None
    assert decision.until == NOW - timedelta(seconds=10) + timedelta(seconds=GRACE)
    assert decision.delay == pytest.approx(GRACE - 10)
    assert decision.request.state.watch == "aaaa" and decision.request.state.first_seen_at == FIRST_SEEN


def test_a_watchdog_of_a_chain_that_is_finalising_keeps_a_plain_token() -> None:
    decision = _resolve(None, _row(chain_token=FINAL_MARK + "aaaa"), "ffff")
    assert isinstance(decision, Watch) and decision.request.state is not None
    assert decision.request.state.watch == "aaaa"


def test_an_overdue_chain_is_taken_over_with_the_rows_context() -> None:
    row = _row(next_poll_at=NOW - timedelta(seconds=GRACE + 1))
    decision = _resolve(ChainState("eeee", FIRST_SEEN, watch="aaaa"), row, "ffff")
    assert isinstance(decision, Advance) and decision.takes_over and decision.write.etag == "row-etag"
    assert decision.write.fields["chainToken"] == "ffff" and decision.write.fields["pollCount"] == 5
    assert decision.request.state == ChainState("eeee", FIRST_SEEN, poll_count=4)
    assert decision.request.correlation_id == row.correlation_id and decision.request.source == "first-job"


def test_overdue_is_measured_from_the_last_poll_then_first_seen_when_no_poll_is_planned() -> None:
    row = _row(next_poll_at=None, last_polled_at=NOW - timedelta(seconds=100))
    assert _resolve(None, row, "f").until == NOW + timedelta(seconds=GRACE - 100)  # type: ignore[attr-defined]
    row = _row(next_poll_at=None, last_polled_at=None)
    assert isinstance(_resolve(None, row, "f"), Advance)  # first seen 30 min ago: taken over


def test_the_holder_with_the_rows_etag_advances_without_reading_and_others_read() -> None:
    held = ChainState("aaaa", FIRST_SEEN, poll_count=4, etag="row-etag")
    decision = resolve_held(_with(held), NOW, POLICY, "bbbb")
    assert isinstance(decision, Advance) and decision.write.etag == "row-etag" and decision.write.lands_as == "bbbb"
    assert decision.write.fields["chainToken"] == "bbbb" and decision.write.fields["pollCount"] == 5
    for unread in (None, replace(held, etag=None), replace(held, watch="aaaa")):
        assert resolve_held(_with(unread), NOW, POLICY, "bbbb") is None  # no etag, or a watchdog: read the row


def test_a_requeue_carries_the_counts_and_this_polls_answer_to_the_successor() -> None:
    state = ChainState("aaaa", FIRST_SEEN, poll_count=4, etag="row-etag")
    batch = BatchStatus(None, "processing", FIRST_SEEN, None, ())
    successor = plan_requeue(state, "bbbb", Requeue(60, "batch status processing"), StatusReceived(batch), NOW, 60,
                             "etag-after-the-write")
    assert successor == ChainState("bbbb", FIRST_SEEN, poll_count=5, etag="etag-after-the-write",
                                   last_status="processing", last_result="batch status processing")
    counted = plan_requeue(state, "c", Requeue(60, "x", errors=2, auth_failures=1, too_large=1), NotFound(), NOW, 60,
                           None)
    assert (counted.errors, counted.auth_failures, counted.too_large) == (2, 1, 1) and counted.last_status is None


def test_a_delay_longer_than_the_row_says_is_written_before_the_successor_waits() -> None:
    planned = NOW + timedelta(seconds=33)
    assert extension("bbbb", planned, NOW + timedelta(seconds=30), "e", slack=450) is None
    assert extension("bbbb", planned, NOW + timedelta(seconds=33 + 450), "e", slack=450) is None  # within the grace
    write = extension("bbbb", planned, NOW + timedelta(seconds=3600), "e", slack=450)
    assert write == RowWrite(BatchRowChange(next_poll_at=NOW + timedelta(seconds=3600)), "e", "bbbb")


def _final(outcome: Outcome, result: object, reason: str = "why") -> object:
    request = _with(ChainState("aaaa", FIRST_SEEN, poll_count=7, etag="row-etag"))
    return plan_final(request, Finalize(outcome, reason), result, NOW)  # type: ignore[arg-type]


def test_a_final_marks_the_row_for_its_holder_first() -> None:
    plan = _final(Outcome.COMPLETED, StatusReceived(BatchStatus(None, "finished", None, None, ())))
    assert plan.mark.fields["chainToken"] == FINAL_MARK + "aaaa" and plan.mark.etag == "row-etag"  # type: ignore
    # a watchdog waits the stale grace from the start of the write, not from a due time long past
    assert plan.mark.fields["nextPollAt"] == NOW  # type: ignore[attr-defined]
    assert plan.row.chain_token == "" and plan.row.poll_count == 8 and list(plan.chunks) == []  # type: ignore


def test_a_completed_batch_with_failed_devices_sends_device_chunks_only() -> None:
    batch = BatchStatus(None, "finished", None, None, (_device("A", "finished"), _device("B", "finished", "808")))
    plan = _final(Outcome.COMPLETED_WITH_FAILURES, StatusReceived(batch))
    assert [chunk.type for chunk in plan.chunks] == ["device_failures"]  # type: ignore[attr-defined]
    assert plan.row.failed_device_count == 1 and plan.batch is batch  # type: ignore[attr-defined]


@pytest.mark.parametrize("outcome", [Outcome.TIMED_OUT, Outcome.NOT_FOUND, Outcome.ACCESS_DENIED,
                                     Outcome.RESPONSE_TOO_LARGE])
def test_every_batch_that_ends_badly_gets_a_batch_alert_whatever_the_last_answer(outcome: Outcome) -> None:
    for result in (NotFound(), StatusReceived(BatchStatus(None, "queued", None, None, ()))):
        plan = _final(outcome, result, "the reason")
        assert [(c.type, c.outcome, c.reason) for c in plan.chunks] == [  # type: ignore[attr-defined]
            ("batch_outcome", outcome.value, "the reason")]


def test_a_timed_out_batch_alerts_failed_devices_not_those_still_in_progress() -> None:
    batch = BatchStatus(None, "processing", None, None, (
        _device("SLOW", "processing"), _device("NEW", "queued"), _device("BAD", "finished_with_errors", "806"),
        _device("OK", "finished")))
    plan = _final(Outcome.TIMED_OUT, StatusReceived(batch), "not final 172800 s after first seen")
    device_chunk, batch_chunk = plan.chunks  # type: ignore[attr-defined]
    assert [d["serialNumber"] for d in device_chunk.devices] == ["BAD"]
    assert batch_chunk.in_progress_device_count == 2 and batch_chunk.failed_device_count == 1
    assert batch_chunk.reason == "not final 172800 s after first seen; 2 device(s) were still in progress"
    assert plan.row.in_progress_device_count == 2  # type: ignore[attr-defined]


def test_finished_with_errors_without_a_failed_device_is_alerted_as_a_batch() -> None:
    empty = BatchStatus(None, "finished_with_errors", None, None, ())
    fine = BatchStatus(None, "finished_with_errors", None, None, (_device("OK", "finished"),))
    finalize = Finalize(Outcome.COMPLETED_WITH_FAILURES, "batch status finished_with_errors")
    assert batch_alert_reason(finalize, empty) == (
        "Partner Center reported the batch finished_with_errors without listing devices")
    assert batch_alert_reason(finalize, fine) == (
        "Partner Center reported the batch finished_with_errors but no listed device failed")
    assert batch_alert_reason(Finalize(Outcome.COMPLETED, "x"), BatchStatus(None, "finished", None, None, ())) is None


def test_alert_ids_are_the_same_for_a_redelivery_and_new_for_a_resubmitted_run() -> None:
    result = NotFound()
    again = _final(Outcome.NOT_FOUND, result)
    first_ids = [chunk.alert_id for chunk in _final(Outcome.NOT_FOUND, result).chunks]  # type: ignore[attr-defined]
    assert first_ids == [chunk.alert_id for chunk in again.chunks]  # type: ignore[attr-defined]
    resubmitted = plan_final(_with(ChainState("zzzz", NOW, etag="e")), Finalize(Outcome.NOT_FOUND, "why"), result,
                             NOW + timedelta(hours=1))
    assert [chunk.alert_id for chunk in resubmitted.chunks] != first_ids
