"""Which schedule a poll follows: the customer's, else every customer's, else the elapsed rule; read at most every
REFRESH_SECONDS per process, and never a reason for a poll to fail."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from shared.durations import DurationSummary, summarise
from shared.learned_schedules import ALL, FIT_EVIDENCE, REFRESH_SECONDS, RELEARN_AFTER, LearnedSchedules
from shared.policy import PollingPolicy
from shared.schedule import learn_schedule

POLICY = PollingPolicy()


class Summaries:
    def __init__(self, rows: dict[str, DurationSummary] | None = None, broken: bool = False) -> None:
        self.rows = rows or {}
        self.broken = broken
        self.reads: list[str] = []

    def get_durations(self, scope: str) -> DurationSummary | None:
        self.reads.append(scope)
        if self.broken:
            raise ConnectionError("storage is down")
        return self.rows.get(scope)

    def add_duration(self, scope: str, seconds: float) -> None:
        if self.broken:
            raise ConnectionError("storage is down")
        self.rows[scope] = self.rows.get(scope, DurationSummary()).add(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _shuffled(durations: range) -> list[float]:
    """In a random order: in ascending order each batch is longer than the history before it, which is a shift."""
    ordered = [float(duration) for duration in durations]
    random.Random(5).shuffle(ordered)
    return ordered


SHORT = summarise(_shuffled(range(200, 300)))  # 100 batches of 200-300 s
LONG = summarise(_shuffled(range(2000, 3000, 10)))


def test_with_too_few_batches_anywhere_the_elapsed_rule_stands() -> None:
    schedules = LearnedSchedules(Summaries({"c": summarise([300.0] * 49), ALL: summarise([300.0] * 49)}), 50)
    assert schedules.policy_for("c", POLICY) == POLICY


def test_a_customer_with_enough_batches_gets_its_own_schedule_and_others_get_everyone_s() -> None:
    store = Summaries({"big": SHORT, "small": summarise(_shuffled(range(2000, 3000, 100))), ALL: LONG})
    schedules = LearnedSchedules(store, 50)
    assert schedules.policy_for("big", POLICY).learned == learn_schedule(SHORT, POLICY)
    assert schedules.policy_for("small", POLICY).learned == learn_schedule(LONG, POLICY)
    assert schedules.policy_for("new", POLICY).learned == learn_schedule(LONG, POLICY)


def test_a_shifted_customer_goes_back_to_the_elapsed_rule(caplog: pytest.LogCaptureFixture) -> None:
    shifted = SHORT
    for _ in range(30):
        shifted = shifted.add(2000.0)
    assert shifted.shifted
    with caplog.at_level(logging.INFO, logger="batchwatch.poll_schedule"):
        policy = LearnedSchedules(Summaries({"c": shifted, ALL: LONG}), 50).policy_for("c", POLICY)
    assert policy.learned == ()
    assert "no longer look like the history" in caplog.text


def test_a_customer_whose_own_batches_are_unlike_everyone_s_is_polled_by_the_elapsed_rule_until_they_look_alike(
        caplog: pytest.LogCaptureFixture) -> None:
    slow = summarise([5000.0] * FIT_EVIDENCE)  # twice as long as any batch in everyone's history
    store, clock = Summaries({"slow": slow, "few": summarise([5000.0] * (FIT_EVIDENCE - 1)), ALL: LONG}), Clock()
    schedules = LearnedSchedules(store, 50, monotonic=clock)
    with caplog.at_level(logging.INFO, logger="batchwatch.poll_schedule"):
        assert schedules.policy_for("slow", POLICY).learned == schedules.policy_for("slow", POLICY).learned == ()
        assert schedules.policy_for("few", POLICY).learned == learn_schedule(LONG, POLICY)  # too few to tell
        for duration in _shuffled(range(2000, 3000, 34)):  # 30 batches like everyone's
            schedules.record("slow", duration)
        clock.now += REFRESH_SECONDS
        assert schedules.policy_for("slow", POLICY).learned == learn_schedule(store.rows[ALL], POLICY)
    assert ("poll schedule for customer slow: the elapsed rule (its 10 batches do not look like every customer's: "
            "their mean position in that history is 1.00)") in caplog.text
    assert "poll schedule for customer slow: every customer's (its batches look like theirs again)" in caplog.text
    assert caplog.text.count("do not look like every customer's") == 1  # once, and not for the one with too few


def test_the_customer_s_batches_are_compared_with_everyone_s_as_last_read_even_when_not_relearned() -> None:
    store, clock = Summaries({"c": summarise([5000.0] * (FIT_EVIDENCE - 1)), ALL: LONG}), Clock()
    schedules = LearnedSchedules(store, 50, monotonic=clock)
    assert schedules.policy_for("c", POLICY).learned == learn_schedule(LONG, POLICY)  # too few of its own to tell
    store.rows["c"] = store.rows["c"].add(5000.0)  # one more (fewer than RELEARN_AFTER): now enough to tell
    clock.now += REFRESH_SECONDS
    assert schedules.policy_for("c", POLICY).learned == ()


def test_the_summaries_are_read_once_per_refresh_and_relearned_only_after_enough_new_batches() -> None:
    store, clock = Summaries({"c": SHORT}), Clock()
    schedules = LearnedSchedules(store, 50, monotonic=clock)
    first = schedules.policy_for("c", POLICY).learned
    for _ in range(20):
        schedules.policy_for("c", POLICY)
    assert store.reads == ["c"]
    for _ in range(RELEARN_AFTER - 1):
        schedules.record("c", 290.0)
    clock.now += REFRESH_SECONDS
    assert schedules.policy_for("c", POLICY).learned == first and store.reads == ["c", "c"]
    schedules.record("c", 290.0)
    clock.now += REFRESH_SECONDS
    assert schedules.policy_for("c", POLICY).learned == learn_schedule(store.rows["c"], POLICY) != first


def test_finalised_batches_are_added_to_the_customer_and_to_everyone() -> None:
    store = Summaries()
    schedules = LearnedSchedules(store, 50)
    schedules.record("c", 120.0)
    schedules.record("d", -3.0)  # completed before it was first seen: final at the first poll whatever the schedule
    assert store.rows["c"].batches == 1 and store.rows[ALL].batches == 1 and "d" not in store.rows


def test_storage_faults_never_stop_a_poll_and_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = Summaries({"c": SHORT}), Clock()
    schedules = LearnedSchedules(store, 50, monotonic=clock)
    learned = schedules.policy_for("c", POLICY).learned
    store.broken = True
    clock.now += REFRESH_SECONDS
    with caplog.at_level(logging.WARNING, logger="batchwatch.poll_schedule"):
        assert schedules.policy_for("c", POLICY).learned == learned  # what was learned stays
        assert LearnedSchedules(store, 50).policy_for("c", POLICY) == POLICY  # nothing learned: the elapsed rule
        schedules.record("c", 100.0)
    assert "could not read or learn from the customer c summary" in caplog.text
    assert "could not add a batch's duration to the customer c summary" in caplog.text


def test_a_summary_that_cannot_be_learned_from_leaves_the_elapsed_rule(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    def broken(summary: DurationSummary, policy: PollingPolicy) -> tuple[float, ...]:
        raise ValueError("a bug")

    monkeypatch.setattr("shared.learned_schedules.learn_schedule", broken)
    with caplog.at_level(logging.WARNING, logger="batchwatch.poll_schedule"):
        assert LearnedSchedules(Summaries({"c": SHORT}), 50).policy_for("c", POLICY) == POLICY
    assert "could not read or learn from the customer c summary of durations: ValueError: a bug" in caplog.text


def test_while_one_poll_reads_the_summary_the_others_go_on_with_what_was_learned() -> None:
    clock = Clock()
    store = Summaries({"c": SHORT})
    schedules = LearnedSchedules(store, 50, monotonic=clock)
    learned = schedules.policy_for("c", POLICY).learned
    clock.now += REFRESH_SECONDS
    during: list[tuple[float, ...]] = []
    reading = store.get_durations

    def slow_read(scope: str) -> DurationSummary | None:
        other = threading.Thread(target=lambda: during.append(schedules.policy_for("c", POLICY).learned))
        other.start()  # another poll, while this one reads
        other.join(timeout=5)
        assert not other.is_alive(), "another poll waited for this read"
        return reading(scope)

    store.get_durations = slow_read  # type: ignore[method-assign]
    assert schedules.policy_for("c", POLICY).learned == learned
    assert during == [learned] and store.reads == ["c", "c"]  # not blocked, and no second read of its own


def test_at_a_cold_start_one_poll_reads_and_the_others_use_the_elapsed_rule_meanwhile() -> None:
    store = Summaries({"c": SHORT})
    schedules = LearnedSchedules(store, 50)
    entered, release, others = threading.Event(), threading.Event(), []
    reading = store.get_durations

    def held_read(scope: str) -> DurationSummary | None:
        entered.set()
        release.wait(timeout=5)
        return reading(scope)

    store.get_durations = held_read  # type: ignore[method-assign]
    first = threading.Thread(target=lambda: others.append(("first", schedules.policy_for("c", POLICY).learned)))
    first.start()
    assert entered.wait(timeout=5)
    for _ in range(7):
        others.append(("other", schedules.policy_for("c", POLICY).learned))
    release.set()
    first.join(timeout=5)
    assert store.reads == ["c"]
    assert [learned for who, learned in others if who == "other"] == [()] * 7
    assert dict(others)["first"] == learn_schedule(SHORT, POLICY)


def test_poll_schedule_elapsed_reads_nothing() -> None:
    store = Summaries({"c": SHORT})
    assert LearnedSchedules(store, 50, enabled=False).policy_for("c", POLICY) == POLICY
    assert store.reads == []
