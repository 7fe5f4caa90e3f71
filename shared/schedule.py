"""A polling schedule learned from how long past batches took: dense where batches tend to finish, sparse where
they do not.

A schedule is the tuple of poll times (seconds since first seen) after the first poll at 0. It is chosen by a
dynamic program over the weighted durations of past batches that minimises the expected lag from a batch's
completion to the poll that sees it, plus a cost per call; the cost is the largest one whose mean lag on that
history is no worse than the elapsed-proportional rule's (policy.scheduled_delay), so the schedule makes
fewer calls at no worse mean lag. Gaps stay between the policy's initial and maximum delay. Past the last
time in the schedule (the history's longest batch), polling goes on with the elapsed-proportional rule.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .policy import PollingPolicy, scheduled_delay

COST_SEARCH_STEPS = 30
TARGET_SHARE = 0.9  # of the elapsed rule's mean lag on the history: a margin for batches unlike the history
GRID_STEP = 5.0  # seconds between candidate poll times at first
GRID_SHARE = 0.02  # later, the step is this share of the time since first seen
KERNEL_WIDTH = 0.25  # in log space: a duration d also counts as d * e^(+-0.25 z)
KERNEL = (-1.5, -0.75, 0.0, 0.75, 1.5)  # the z points, equally weighted
PRIOR_SHARE = 0.1
PRIOR_POINTS = 100
SHIFT_ROOM = 4.0


@dataclass(frozen=True)
class History:
    """Past durations in seconds with their weights (recent batches weigh more)."""

    durations: tuple[float, ...]
    weights: tuple[float, ...]

    @classmethod
    def recent(cls, durations_oldest_first: Sequence[float], decay: float = 0.99) -> History:
        """Each batch weighs decay times the one after it: the newest weighs 1."""
        count = len(durations_oldest_first)
        weights = tuple(decay ** (count - 1 - index) for index in range(count))
        return cls(tuple(float(duration) for duration in durations_oldest_first), weights)


@dataclass(frozen=True)
class Outcome:
    calls: float  # mean calls per batch, the first poll included
    mean_lag: float
    p95_lag: float


def learn_schedule(history: History, policy: PollingPolicy) -> tuple[float, ...]:
    """The poll times for this history (empty when it holds no usable duration)."""
    smoothed = smooth(history)
    if not smoothed.durations:
        return ()
    judged = history  # the schedule is drawn on the smoothed history and judged on what really happened
    target = TARGET_SHARE * evaluate(lambda elapsed: scheduled_delay(elapsed, policy), judged).mean_lag
    points = sorted(zip(smoothed.durations, smoothed.weights, strict=True))
    candidates = _candidates(points[-1][0], policy)
    low, high = 0.0, 4.0 * max(points[-1][0], 1.0)  # cost per call, in seconds of expected lag
    best = _optimal(points, candidates, policy, low)
    for _ in range(COST_SEARCH_STEPS):
        middle = (low + high) / 2
        schedule = _optimal(points, candidates, policy, middle)
        if evaluate(following(schedule, policy), judged).mean_lag <= target:
            best, low = schedule, middle
        else:
            high = middle
    return best


def smooth(history: History) -> History:
    """Each past duration spread over a few nearby durations (a log-normal kernel), so that the schedule does
    not poll exactly at the durations it happened to see: a few hundred batches are a sample, not the law."""
    durations: list[float] = []
    weights: list[float] = []
    for duration, weight in zip(history.durations, history.weights, strict=True):
        if not (math.isfinite(duration) and duration > 0 and weight > 0):
            continue
        for spread in KERNEL:
            durations.append(duration * math.exp(KERNEL_WIDTH * spread))
            weights.append(weight / len(KERNEL))
    if not durations or PRIOR_SHARE <= 0:
        return History(tuple(durations), tuple(weights))
    # A share of the weight spread evenly (in log time) up to SHIFT_ROOM times the longest duration: batches may
    # yet take longer than any seen, so no stretch of time is left with the widest gaps.
    low, high = math.log(min(durations)), math.log(SHIFT_ROOM * max(durations))
    prior_weight = PRIOR_SHARE * sum(weights) / PRIOR_POINTS
    for index in range(PRIOR_POINTS):
        durations.append(math.exp(low + (high - low) * (index + 0.5) / PRIOR_POINTS))
        weights.append(prior_weight)
    return History(tuple(durations), tuple(weights))


def following(schedule: tuple[float, ...], policy: PollingPolicy) -> Callable[[float], float]:
    """The delay after a poll at elapsed: to the schedule's next time, or past its end the elapsed rule."""
    learned = replace(policy, learned=schedule)
    return lambda elapsed: scheduled_delay(elapsed, learned)


def evaluate(delay_after: Callable[[float], float], history: History) -> Outcome:
    """Calls and lag of a schedule over these durations, as if every poll came exactly when planned."""
    total = sum(history.weights)
    if not total:
        return Outcome(0.0, 0.0, 0.0)
    results = []
    for duration, weight in zip(history.durations, history.weights, strict=True):
        elapsed, calls = 0.0, 1
        while elapsed < duration:
            elapsed += delay_after(elapsed)
            calls += 1
        results.append((elapsed - duration, calls, weight))
    results.sort()
    cumulative, p95 = 0.0, results[-1][0]
    for lag, _, weight in results:
        cumulative += weight
        if cumulative >= 0.95 * total:
            p95 = lag
            break
    return Outcome(sum(c * w for _, c, w in results) / total, sum(lag * w for lag, _, w in results) / total, p95)


def _candidates(horizon: float, policy: PollingPolicy) -> list[float]:
    """Where a poll may go: every GRID_STEP seconds at first, then a step that grows with the time (GRID_SHARE
    of it), never wider than the maximum delay, up to the longest duration."""
    times: list[float] = []
    time = 0.0
    while time < horizon:
        time += min(policy.max_delay, max(GRID_STEP, GRID_SHARE * time))
        times.append(min(time, horizon))
    return times


def _optimal(points: list[tuple[float, float]], candidates: list[float], policy: PollingPolicy,
             cost: float) -> tuple[float, ...]:
    """Poll times minimising expected lag + cost x calls, by dynamic programming from the last candidate back.

    best[i] is the weighted cost still to come after a poll at times[i] that found the batch not final:
    the cost of each later call weighs by the mass still running, and the lag of every batch that
    completes between two polls counts once."""
    times = [0.0, *candidates]
    durations = [d for d, _ in points]
    mass, weighted = [0.0], [0.0]  # prefix sums of w and w*d over durations in ascending order
    for duration, weight in points:
        mass.append(mass[-1] + weight)
        weighted.append(weighted[-1] + weight * duration)
    done = [bisect.bisect_right(durations, time) for time in times]  # durations <= time
    running = [mass[-1] - mass[index] for index in done]
    count = len(times)
    smallest = min(policy.initial_delay, policy.max_delay)
    best = [0.0] * count
    step = [count] * count
    for i in range(count - 2, -1, -1):
        if running[i] <= 0:
            continue
        choice, value = count, math.inf
        widest = min(policy.max_delay, policy.learned_stretch * scheduled_delay(times[i], replace(policy, learned=())))
        for j in range(i + 1, count):
            gap = times[j] - times[i]
            if gap > widest + 1e-9:
                break
            if gap < smallest - 1e-9 and j < count - 1:
                continue  # closer than the smallest delay; only the schedule's last time may be
            caught_mass = mass[done[j]] - mass[done[i]]
            lag = times[j] * caught_mass - (weighted[done[j]] - weighted[done[i]])
            total = cost * running[i] + lag + best[j]
            if total < value:
                choice, value = j, total
        best[i], step[i] = value, choice
    schedule = []
    index = step[0]
    while index < count:
        schedule.append(times[index])
        index = step[index]
    return tuple(schedule)
