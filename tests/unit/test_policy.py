import random

import pytest

from shared.models import BatchStatus, DeviceStatus, Outcome
from shared.policy import (
    Denied,
    Finalize,
    NotFound,
    PollingPolicy,
    Requeue,
    StatusReceived,
    Throttled,
    TooLarge,
    Transient,
    decide,
)

POLICY = PollingPolicy(initial_delay=30, max_delay=600, deadline=172_800, not_found_grace=900, jitter=0.1)
NO_JITTER = PollingPolicy(jitter=0.0)


def _batch(status: str, *device_results: tuple[str, str | None]) -> StatusReceived:
    devices = tuple(DeviceStatus(f"SN{i}", None, None, s, code, None) for i, (s, code) in enumerate(device_results))
    return StatusReceived(BatchStatus("t", status, None, None, devices))


def _decide(result, elapsed=0.0, errors=0, auth=0, policy=NO_JITTER):  # type: ignore[no-untyped-def]
    return decide(result, elapsed, errors, auth, policy, random.Random(1))


def test_finished_batch_with_a_failed_device_is_completed_with_failures() -> None:
    decision = _decide(_batch("finished", ("finished", None), ("finished_with_errors", "808")))
    assert decision == Finalize(Outcome.COMPLETED_WITH_FAILURES, "batch status finished")


def test_finished_batch_without_failed_devices_is_completed() -> None:
    assert _decide(_batch("finished", ("finished", ""))).outcome == Outcome.COMPLETED  # type: ignore[union-attr]
    assert _decide(_batch("finished")).outcome == Outcome.COMPLETED  # type: ignore[union-attr]


def test_finished_with_errors_is_never_completed_even_without_a_failed_device() -> None:
    for devices in ((), (("finished", ""),)):
        decision = _decide(_batch("finished_with_errors", *devices))
        assert decision.outcome == Outcome.COMPLETED_WITH_FAILURES  # type: ignore[union-attr]


def test_answers_over_the_size_cap_end_the_batch_after_the_limit_in_a_row() -> None:
    first = _decide(TooLarge("answer too large"))
    assert isinstance(first, Requeue) and first.too_large == 1 and first.errors == 1
    assert isinstance(decide(TooLarge("x"), 0, 1, 0, NO_JITTER, random.Random(1), too_large=1), Requeue)
    final = decide(TooLarge("answer too large"), 0, 2, 0, NO_JITTER, random.Random(1), too_large=2)
    assert final == Finalize(Outcome.RESPONSE_TOO_LARGE, "answer too large on 3 polls in a row")
    assert _decide(_batch("processing")).too_large == 0  # type: ignore[union-attr]  # a normal answer resets it


@pytest.mark.parametrize("status", ["queued", "processing", "unknown", "in-progress"])
def test_non_final_status_requeues(status: str) -> None:
    assert isinstance(_decide(_batch(status)), Requeue)


@pytest.mark.parametrize(("elapsed", "delay"), [(0, 30), (100, 30), (1000, 180), (3000, 540), (100_000, 600)])
def test_delay_grows_with_time_waited_up_to_the_cap(elapsed: float, delay: float) -> None:
    assert _decide(_batch("processing"), elapsed=elapsed).delay == pytest.approx(delay)  # type: ignore[union-attr]


def test_jitter_stays_within_ten_percent_and_varies() -> None:
    rng = random.Random(7)
    delays = {decide(_batch("queued"), 0, 0, 0, POLICY, rng).delay for _ in range(200)}  # type: ignore[union-attr]
    assert min(delays) >= 27 and max(delays) <= 33 and len(delays) > 50


def test_throttled_waits_at_least_retry_after_even_past_the_cap() -> None:
    assert _decide(Throttled(57)).delay >= 57  # type: ignore[union-attr]
    rng = random.Random(3)
    assert all(decide(Throttled(900), 0, 0, 0, POLICY, rng).delay >= 900 for _ in range(50))  # type: ignore[union-attr]


def test_transient_errors_back_off_exponentially() -> None:
    delays = [_decide(Transient("HTTP 503"), errors=n).delay for n in range(6)]  # type: ignore[union-attr]
    assert delays == [30, 60, 120, 240, 480, 600]
    assert _decide(Transient("HTTP 503"), errors=2).errors == 3  # type: ignore[union-attr]


def test_success_resets_the_error_count() -> None:
    decision = _decide(_batch("processing"), errors=4, auth=2)
    assert isinstance(decision, Requeue) and decision.errors == 0 and decision.auth_failures == 0


def test_not_found_is_normal_within_the_grace_and_final_after_it() -> None:
    assert isinstance(_decide(NotFound(), elapsed=899), Requeue)
    assert _decide(NotFound(), elapsed=900).outcome == Outcome.NOT_FOUND  # type: ignore[union-attr]


def test_persistent_access_denial_is_final() -> None:
    first = _decide(Denied(403), auth=0)
    assert isinstance(first, Requeue) and first.auth_failures == 1
    assert isinstance(_decide(Denied(401), auth=1), Requeue)
    assert _decide(Denied(401), auth=2).outcome == Outcome.ACCESS_DENIED  # type: ignore[union-attr]


def test_deadline_ends_polling_and_the_last_poll_lands_on_it() -> None:
    assert _decide(_batch("processing"), elapsed=172_800).outcome == Outcome.TIMED_OUT  # type: ignore[union-attr]
    assert _decide(_batch("processing"), elapsed=172_790).delay == 10  # type: ignore[union-attr]
    assert _decide(Throttled(600), elapsed=172_700).delay == 100  # type: ignore[union-attr]


def test_a_final_result_wins_over_the_deadline() -> None:
    assert _decide(_batch("finished"), elapsed=10**7).outcome == Outcome.COMPLETED  # type: ignore[union-attr]
