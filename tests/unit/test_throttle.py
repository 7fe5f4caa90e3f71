"""The fleet's throttle gate: a 429 in one process holds every process's polls until Retry-After, read from one
small row at most every few seconds, never lowered, and never in the way when storage fails."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from shared.policy import PollingPolicy, Requeue, Throttled, decide
from shared.throttle import LONGEST_WAIT_SECONDS, PARTNER_SCOPE, REFRESH_SECONDS, CallBudget, ThrottleGate
from tests.functional.fakes import FakeThrottleRows

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Store(FakeThrottleRows):
    """The ~throttle rows, counting the reads and failing them while broken."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.broken = False

    def get_throttle(self, scope: str) -> datetime | None:
        self._read()
        return super().get_throttle(scope)

    def claim_calls(self, window: datetime, wanted: int, budget: int) -> int:
        self._read()
        return super().claim_calls(window, wanted, budget)

    def _read(self) -> None:
        self.reads += 1
        if self.broken:
            raise OSError("storage is down")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_poll_in_the_normal_case_reads_nothing_beyond_one_read_per_refresh() -> None:
    store, clock = Store(), Clock()
    gate = ThrottleGate(store, clock)
    assert [gate.wait(NOW) for _ in range(100)] == [0.0] * 100
    assert store.reads == 1
    clock.now += REFRESH_SECONDS
    gate.wait(NOW)
    assert store.reads == 2


def test_a_429_in_one_process_holds_the_others_once_they_look_again() -> None:
    store, clock = Store(), Clock()
    here, there = ThrottleGate(store, clock), ThrottleGate(store, clock)
    assert there.wait(NOW) == 0.0
    here.record(NOW, 60)
    assert here.wait(NOW + timedelta(seconds=10)) == 50.0  # at once in the process that got the 429
    assert store.throttles[PARTNER_SCOPE] == NOW + timedelta(seconds=60)
    assert there.wait(NOW + timedelta(seconds=1)) == 0.0  # the other still uses what it read ...
    clock.now += REFRESH_SECONDS
    assert there.wait(NOW + timedelta(seconds=5)) == 55.0  # ... until it reads again
    assert there.wait(NOW + timedelta(seconds=61)) == 0.0


def test_a_shorter_retry_after_never_shortens_the_wait_and_none_waits_the_default() -> None:
    store, clock = Store(), Clock()
    gate = ThrottleGate(store, clock)
    gate.record(NOW, 120)
    gate.record(NOW, 10)
    assert store.throttles[PARTNER_SCOPE] == NOW + timedelta(seconds=120)
    other = Store()
    ThrottleGate(other, clock).record(NOW, None)
    assert other.throttles[PARTNER_SCOPE] == NOW + timedelta(seconds=30)


def test_one_wait_is_at_most_the_longest_and_a_broken_store_never_blocks(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = Store(), Clock()
    store.throttles[PARTNER_SCOPE] = NOW + timedelta(days=1)  # a clock that jumped back, or a Retry-After of a day
    assert ThrottleGate(store, clock).wait(NOW) == LONGEST_WAIT_SECONDS
    broken = Store()
    broken.broken = True
    with caplog.at_level(logging.WARNING):
        assert ThrottleGate(broken, clock).wait(NOW) == 0.0
    assert "could not read the fleet's throttle state" in caplog.text


def test_waiting_with_the_fleet_is_not_an_error_of_the_batch() -> None:
    import random

    policy = PollingPolicy(jitter=0.0)
    shared = decide(Throttled(200.0, shared=True), 600.0, errors=2, auth_failures=0, policy=policy,
                    rng=random.Random(1))
    own = decide(Throttled(200.0), 600.0, errors=2, auth_failures=0, policy=policy, rng=random.Random(1))
    assert isinstance(shared, Requeue) and shared.errors == 2 and shared.delay >= 200.0
    assert isinstance(own, Requeue) and own.errors == 3


def test_not_shared_the_gate_neither_holds_nor_tells_the_fleet() -> None:
    store = Store()
    gate = ThrottleGate(store, Clock(), shared=False)
    store.throttles[PARTNER_SCOPE] = NOW + timedelta(seconds=60)
    gate.record(NOW, 120.0)
    assert gate.wait(NOW) == 0.0 and store.reads == 0
    assert store.throttles[PARTNER_SCOPE] == NOW + timedelta(seconds=60)


def test_the_fleet_never_makes_more_calls_in_a_minute_than_the_budget() -> None:
    store = Store()
    processes = [CallBudget(store, 60) for _ in range(3)]
    granted = sum(1 for second in range(60) for process in processes
                  if process.take(NOW + timedelta(seconds=second)) == 0.0)
    assert granted == 60 and sum(store.budget_calls.values()) == 60
    wait = processes[0].take(NOW + timedelta(seconds=59, milliseconds=500))
    assert wait == pytest.approx(0.5)
    assert processes[1].take(NOW + timedelta(minutes=1)) == 0.0  # a new minute, a new budget


def test_calls_are_claimed_in_blocks_so_most_polls_cost_no_storage_request() -> None:
    store = Store()
    budget = CallBudget(store, 600)  # blocks of 30
    assert all(budget.take(NOW + timedelta(seconds=i)) == 0.0 for i in range(30))
    assert store.reads == 1
    budget.take(NOW + timedelta(seconds=31))
    assert store.reads == 2


def test_once_the_minute_is_spent_a_process_stops_asking_until_the_next(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    store.budget_calls[NOW] = 10
    budget = CallBudget(store, 10)
    assert budget.take(NOW) == 60.0 and budget.take(NOW + timedelta(seconds=30)) == 30.0
    assert store.reads == 1
    store.broken = True  # a storage failure grants the call: the budget never stops polling
    with caplog.at_level(logging.WARNING):
        assert budget.take(NOW + timedelta(minutes=1)) == 0.0
    assert "calling anyway" in caplog.text
