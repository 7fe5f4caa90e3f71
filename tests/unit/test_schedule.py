"""The schedule learned from past durations: fewer calls where batches do not finish, the elapsed rule past
the history, and nothing odd from empty or tiny histories."""

from __future__ import annotations

import math
import random

import pytest

from shared.policy import PollingPolicy, scheduled_delay
from shared.schedule import History, evaluate, following, learn_schedule

POLICY = PollingPolicy()


def _lognormal(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0) for _ in range(count)]


@pytest.mark.parametrize("durations", [[], [float("nan")], [-5.0], [float("inf")]])
def test_no_usable_history_learns_nothing_and_the_elapsed_rule_stands(durations: list[float]) -> None:
    assert learn_schedule(History.recent(durations), POLICY) == ()


@pytest.mark.parametrize("durations", [[300.0], [45.0, 50.0], [3600.0] * 3])
def test_a_tiny_history_gives_a_schedule_within_the_delays_and_the_elapsed_rule_after_it(
        durations: list[float]) -> None:
    schedule = learn_schedule(History.recent(durations), POLICY)
    assert schedule and list(schedule) == sorted(schedule)
    gaps = [later - earlier for earlier, later in zip((0.0, *schedule), schedule, strict=False)]
    assert all(gap <= POLICY.max_delay + 1e-6 for gap in gaps)
    delay = following(schedule, POLICY)
    for elapsed in (schedule[-1], schedule[-1] + 1, 10 * schedule[-1]):
        assert delay(elapsed) == scheduled_delay(elapsed, POLICY)  # past the history: today's rule


def test_a_learned_delay_stays_between_the_initial_and_the_maximum_delay() -> None:
    learned = PollingPolicy(learned=(31.0, 40.0, 2000.0))
    assert scheduled_delay(0.0, learned) == 31.0
    assert scheduled_delay(31.0, learned) == POLICY.initial_delay  # 9 s to the next time: the smallest delay
    assert scheduled_delay(40.0, learned) == POLICY.max_delay  # 1,960 s to the next time: the largest delay


def test_recent_batches_weigh_more() -> None:
    history = History.recent([100.0, 200.0, 300.0], decay=0.5)
    assert history.weights == (0.25, 0.5, 1.0)


def test_on_batches_like_its_history_it_makes_far_fewer_calls_at_a_similar_lag() -> None:
    schedule = learn_schedule(History.recent(_lognormal(1, 200), decay=1.0), POLICY)
    test = History.recent(_lognormal(2, 2000), decay=1.0)
    today = evaluate(lambda elapsed: scheduled_delay(elapsed, POLICY), test)
    learned = evaluate(following(schedule, POLICY), test)
    assert learned.calls < 0.7 * today.calls
    assert learned.p95_lag < today.p95_lag and learned.mean_lag < 1.2 * today.mean_lag


def test_when_batches_take_four_times_longer_it_falls_back_without_making_more_calls() -> None:
    schedule = learn_schedule(History.recent(_lognormal(1, 200), decay=1.0), POLICY)
    shifted = History.recent([4 * duration for duration in _lognormal(2, 1000)], decay=1.0)
    today = evaluate(lambda elapsed: scheduled_delay(elapsed, POLICY), shifted)
    learned = evaluate(following(schedule, POLICY), shifted)
    assert learned.calls <= 1.3 * today.calls and learned.mean_lag <= 1.3 * today.mean_lag
