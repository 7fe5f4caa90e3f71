"""Figure 8: the schedule learned from past durations against today's elapsed rule and the peers' fixed
intervals, in virtual time with the policy code itself: trained on 200 batches, tested on other batches of the
same family, and on batches that take 4 times longer (a shift)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from shared.policy import PollingPolicy, scheduled_delay
from shared.schedule import History, Outcome, evaluate, following, learn_schedule

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


def learned_schedule(batches: int, policy: PollingPolicy) -> dict[str, Any]:
    families = {}
    for index, (name, family) in enumerate(FAMILIES.items()):
        trainer, rng = random.Random(1000 + index), random.Random(2000 + index)
        training = History.recent([family(trainer) for _ in range(TRAINING)], decay=1.0)
        test = History.recent([family(rng) for _ in range(batches)], decay=1.0)
        shifted = History.recent([SHIFT * duration for duration in test.durations], decay=1.0)
        schedule = learn_schedule(training, policy)
        rules: dict[str, Callable[[float], float]] = {
            "today (elapsed rule)": lambda elapsed: scheduled_delay(elapsed, policy),
            "learned": following(schedule, policy),
        }
        figures = {rule: _figure(evaluate(delay, test)) for rule, delay in rules.items()}
        figures |= {peer: _figure(_fixed(interval, test)) for peer, interval in PEERS.items()}
        today_shifted = evaluate(rules["today (elapsed rule)"], shifted)
        learned_shifted = evaluate(rules["learned"], shifted)
        today, learned = figures["today (elapsed rule)"], figures["learned"]
        families[name] = {
            "schedule_points": len(schedule),
            "policies": figures,
            "shift": {"today": _figure(today_shifted), "learned": _figure(learned_shifted)},
            "goals_met": {
                "calls_at_most_0.6_of_today": learned["calls_per_batch"] <= 0.6 * today["calls_per_batch"],
                "mean_lag_no_worse": learned["mean_lag_s"] <= today["mean_lag_s"],
                "p95_lag_no_worse": learned["p95_lag_s"] <= today["p95_lag_s"],
                "shift_calls_at_most_1.3": learned_shifted.calls <= 1.3 * today_shifted.calls,
                "shift_mean_lag_at_most_1.3": learned_shifted.mean_lag <= 1.3 * today_shifted.mean_lag,
            },
        }
    return {"batches": batches, "training": TRAINING, "shift": SHIFT, "families": families}


def _fixed(interval: float, history: History) -> Outcome:
    """A poll every interval seconds, in closed form (a loop would take 17,000 steps for a day at 5 s)."""
    calls = [1 + math.ceil(duration / interval) for duration in history.durations]
    lags = sorted((count - 1) * interval - duration for count, duration in zip(calls, history.durations, strict=True))
    return Outcome(sum(calls) / len(calls), sum(lags) / len(lags), lags[int(0.95 * len(lags))])


def _figure(outcome: Outcome) -> dict[str, float]:
    return {"calls_per_batch": round(outcome.calls, 2), "mean_lag_s": round(outcome.mean_lag, 1),
            "p95_lag_s": round(outcome.p95_lag, 1)}
