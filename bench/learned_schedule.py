"""Figure 8: the schedule learned from past durations against today's elapsed rule and the peers' fixed
intervals, in virtual time with the policy code itself: trained on a summary of 200 batches, tested on other
batches of the same family, and on batches that take 4 times longer (a shift).

Every delay is the function's own: decide() with the policy's ±10% jitter (fixed seeds), in whole seconds as the
queue takes it; the deadline is lifted so that no batch of a day or more times out. The shift is run two ways.
Frozen: the schedule learned before the shift, never updated (the worst case, as if no batch finished after it).
As deployed: the batches arrive one a minute and poll through LearnedSchedules itself, whose summary gains each
batch as it is finalised and which each poll reads as a process would, so the shift detector and the relearning
are the ones that run in the function.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shared.config import PollingSettings, default_of
from shared.durations import DurationSummary, summarise
from shared.learned_schedules import ALL, LearnedSchedules
from shared.models import BatchStatus
from shared.policy import PollingPolicy, Requeue, StatusReceived, decide
from shared.schedule import History, Outcome, evaluate, learn_schedule
from shared.storage import queue_delay

Family = Callable[[random.Random], float]
FAMILIES: dict[str, Family] = {
    "log-normal, median 8 min, sigma 1": lambda rng: min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0),
    "bimodal: 90% in 2-5 min, 10% in 2-6 h": lambda rng: (rng.uniform(120, 300) if rng.random() < 0.9
                                                         else rng.uniform(7_200, 21_600)),
    "heavy tail: Pareto, 2 min x alpha 1.5": lambda rng: min(120 * rng.paretovariate(1.5), 86_400.0),
}
PEERS = {"fixed 5 s": 5.0, "fixed 15 s": 15.0, "fixed 30 s": 30.0}
TRAINING = 200
SHIFT = 4.0
# How much one training sample decides, and how much a longer history helps: SAMPLES samples at each length, from a
# few dozen batches to a busy deployment's history (the summary keeps about the newest 1,000).
HISTORIES = (50, 100, 200, 400, 1000, 5000)
SAMPLES = 20
ARRIVAL_SECONDS = 60.0  # as deployed: one batch a minute
MIN_BATCHES = default_of(PollingSettings, "learn_min_batches")  # as deployed (at most TRAINING: learned at once)
CUSTOMER = "bench-customer"
PROCESSING = StatusReceived(BatchStatus("bench", "processing", None, None, ()))
NO_DEADLINE = 10.0**9


def learned_schedule(batches: int, deployed: PollingPolicy) -> dict[str, Any]:
    policy = replace(deployed, deadline=NO_DEADLINE)
    families = {}
    for index, (name, family) in enumerate(FAMILIES.items()):
        trainer, rng = random.Random(1000 + index), random.Random(2000 + index)
        training = summarise([family(trainer) for _ in range(TRAINING)])
        test = History.recent([family(rng) for _ in range(batches)], decay=1.0)
        shifted = [SHIFT * duration for duration in test.durations]
        schedule = learn_schedule(training, policy)
        rules: dict[str, tuple[float, ...]] = {"today (elapsed rule)": (), "learned": schedule}
        figures = {rule: _figure(evaluate(polled(times, policy), test)) for rule, times in rules.items()}
        figures |= {peer: _figure(_fixed(interval, test)) for peer, interval in PEERS.items()}
        today_shifted = evaluate(polled((), policy), History.recent(shifted, decay=1.0))
        frozen_shifted = evaluate(polled(schedule, policy), History.recent(shifted, decay=1.0))
        deployed_shifted = as_deployed(training, shifted, policy)
        today, learned = figures["today (elapsed rule)"], figures["learned"]
        goals = _goals(today, learned)
        families[name] = {
            "schedule_points": len(schedule),
            "policies": figures,
            "shift": {"today": _figure(today_shifted), "learned, frozen": _figure(frozen_shifted),
                      "learned, as deployed": _figure(deployed_shifted)},
            "goals_met": {
                **goals,
                "shift_calls_at_most_1.3": deployed_shifted.calls <= 1.3 * today_shifted.calls,
                "shift_mean_lag_at_most_1.3": deployed_shifted.mean_lag <= 1.3 * today_shifted.mean_lag,
            },
            "frozen_shift_ratios": {"calls": round(frozen_shifted.calls / today_shifted.calls, 2),
                                    "mean_lag": round(frozen_shifted.mean_lag / today_shifted.mean_lag, 2)},
            "by_history": _by_history(index, family, test, today, policy),
        }
    return {"batches": batches, "training": TRAINING, "shift": SHIFT, "arrival_s": ARRIVAL_SECONDS,
            "families": families}


def polled(schedule: tuple[float, ...], policy: PollingPolicy, seed: int = 7) -> Callable[[float], float]:
    """The delay check_batch_status gives after a poll at elapsed that found the batch processing."""
    with_schedule, rng = replace(policy, learned=schedule), random.Random(seed)
    return lambda elapsed: _delay(decide(PROCESSING, elapsed, 0, 0, with_schedule, rng))


def _delay(decision: object) -> float:
    assert isinstance(decision, Requeue)
    return queue_delay(decision.delay)


def as_deployed(history: DurationSummary, durations: list[float], policy: PollingPolicy) -> Outcome:
    """The batches, one every ARRIVAL_SECONDS, each polled with the schedule LearnedSchedules gives at that poll,
    and each added to the summaries when a poll finds it final (as check_batch_status does)."""
    store = _Summaries({CUSTOMER: history, ALL: history})
    clock = [0.0]
    schedules = LearnedSchedules(store, MIN_BATCHES, monotonic=lambda: clock[0])
    rng = random.Random(7)
    polls = [(index * ARRIVAL_SECONDS, index, 0.0) for index in range(len(durations))]
    heapq.heapify(polls)
    calls, lags = [0] * len(durations), [0.0] * len(durations)
    while polls:
        clock[0], index, elapsed = heapq.heappop(polls)
        calls[index] += 1
        if elapsed >= durations[index]:
            lags[index] = elapsed - durations[index]
            schedules.record(CUSTOMER, durations[index])
            continue
        delay = _delay(decide(PROCESSING, elapsed, 0, 0, schedules.policy_for(CUSTOMER, policy), rng))
        heapq.heappush(polls, (clock[0] + delay, index, elapsed + delay))
    ordered = sorted(lags)
    return Outcome(sum(calls) / len(calls), sum(lags) / len(lags), ordered[int(0.95 * len(ordered))])


class _Summaries:
    """The ~durations rows, in memory."""

    def __init__(self, rows: dict[str, DurationSummary]) -> None:
        self.rows = rows

    def get_durations(self, scope: str) -> DurationSummary | None:
        return self.rows.get(scope)

    def add_duration(self, scope: str, seconds: float) -> None:
        self.rows[scope] = self.rows.get(scope, DurationSummary()).add(seconds)


def _goals(today: dict[str, float], learned: dict[str, float]) -> dict[str, bool]:
    return {
        "calls_at_most_0.6_of_today": learned["calls_per_batch"] <= 0.6 * today["calls_per_batch"],
        "mean_lag_no_worse": learned["mean_lag_s"] <= today["mean_lag_s"],
        "p95_lag_no_worse": learned["p95_lag_s"] <= today["p95_lag_s"],
    }


def _by_history(index: int, family: Family, test: History, today: dict[str, float],
                policy: PollingPolicy) -> list[dict[str, Any]]:
    """The same test with schedules learned from SAMPLES training samples at each history length: the spread of
    the ratios to today, their means, and on how many samples each goal is met. Sample s of every length is the
    start of one stream of batches, so a longer history extends a shorter one; sample 0 of TRAINING is the
    figure's own."""
    rows = []
    for batches in HISTORIES:
        ratios, met = [], {goal: 0 for goal in _goals(today, today)}
        for sample in range(SAMPLES):
            trainer = random.Random(1000 + index + 100 * sample)
            schedule = learn_schedule(summarise([family(trainer) for _ in range(batches)]), policy)
            learned = _figure(evaluate(polled(schedule, policy), test))
            ratios.append({key: learned[key] / today[key] for key in today})
            for goal, ok in _goals(today, learned).items():
                met[goal] += ok
        spread = {key: [round(min(r[key] for r in ratios), 3), round(max(r[key] for r in ratios), 3)]
                  for key in today}
        means = {key: round(sum(r[key] for r in ratios) / len(ratios), 3) for key in today}
        rows.append({"batches": batches, "samples": SAMPLES, "ratio_ranges": spread, "ratio_means": means,
                     "goals_met_on": met})
    return rows


def _fixed(interval: float, history: History) -> Outcome:
    """A poll every interval seconds, in closed form (a loop would take 17,000 steps for a day at 5 s)."""
    calls = [1 + math.ceil(duration / interval) for duration in history.durations]
    lags = sorted((count - 1) * interval - duration for count, duration in zip(calls, history.durations, strict=True))
    return Outcome(sum(calls) / len(calls), sum(lags) / len(lags), lags[int(0.95 * len(lags))])


def _figure(outcome: Outcome) -> dict[str, float]:
    return {"calls_per_batch": round(outcome.calls, 2), "mean_lag_s": round(outcome.mean_lag, 1),
            "p95_lag_s": round(outcome.p95_lag, 1)}
