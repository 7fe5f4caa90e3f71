"""Figure 9b: fleet throttling at 10,000 batches in virtual time.

The same code decides as in the app: policy.decide, throttle.ThrottleGate (one per instance, reading a shared
store on a virtual monotonic clock every REFRESH_SECONDS) and throttle.CallBudget. What is simulated is the
clock, the queue (each poll is delivered to one of the instances at random when its delay has passed) and
Partner Center: batches finish at their drawn durations, and a fixed-window rate limit per partner answers 429
with a Retry-After to the end of the window, as the simulator does.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.models import BatchStatus
from shared.policy import PollingPolicy, PollResult, Requeue, StatusReceived, Throttled, decide
from shared.throttle import CallBudget, ThrottleGate, budget_spread, resume_spread
from tests.functional.fakes import FakeThrottleRows

EPOCH = datetime(2026, 11, 24, tzinfo=UTC)
PROCESSING = StatusReceived(BatchStatus("t", "processing", None, None, ()))
FINISHED = StatusReceived(BatchStatus("t", "finished", None, None, ()))


@dataclass
class RateLimitedPartnerCenter:
    limit: int
    window: float
    counts: dict[int, int] = field(default_factory=dict)

    def retry_after(self, now: float) -> float | None:
        """None: the call is answered; else the 429's Retry-After, to the end of the window (at least 1 s)."""
        index = int(now // self.window)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.counts[index] <= self.limit:
            return None
        return max(1.0, math.ceil((index + 1) * self.window - now))


def virtual_fleet(durations: list[float], policy: PollingPolicy, *, shared: bool, budget: int, limit: int,
                  window: float, instances: int = 3, seed: int = 5) -> dict[str, Any]:
    """Every batch dropped at time 0, polled until final; calls, 429s and the lag after each batch finished."""
    rng = random.Random(seed)
    now = 0.0
    rows = FakeThrottleRows()  # the ~throttle rows, with the real store's rules
    gates = [ThrottleGate(rows, lambda: now, shared=shared) for _ in range(instances)]
    budgets = [CallBudget(rows, budget) if budget else None for _ in range(instances)]
    partner_center = RateLimitedPartnerCenter(limit, window)
    errors = [0] * len(durations)
    lags: list[float] = []
    calls = throttled = 0
    due = [(0.0, batch) for batch in range(len(durations))]
    heapq.heapify(due)
    while due:
        now, batch = heapq.heappop(due)
        instance = rng.randrange(instances)
        moment = EPOCH + timedelta(seconds=now)
        result: PollResult
        wait = gates[instance].wait(moment)
        spent = budgets[instance]
        if wait > 0:
            result = Throttled(wait + rng.uniform(0, resume_spread(wait)), shared=True)
        elif spent is not None and (wait := spent.take(moment)) > 0:
            result = Throttled(wait + rng.uniform(0, budget_spread()), shared=True)
        else:
            calls += 1
            retry_after = partner_center.retry_after(now)
            if retry_after is not None:
                throttled += 1
                gates[instance].record(moment, retry_after)
                result = Throttled(retry_after)
            elif now >= durations[batch]:
                lags.append(now - durations[batch])
                continue
            else:
                result = PROCESSING
        decision = decide(result, now, errors[batch], 0, policy, rng)
        assert isinstance(decision, Requeue), decision
        errors[batch] = decision.errors
        heapq.heappush(due, (now + max(1.0, round(decision.delay)), batch))
    return _figures(len(durations), calls, throttled, lags)


def _figures(batches: int, calls: int, throttled: int, lags: list[float]) -> dict[str, Any]:
    lags.sort()
    return {
        "batches": batches,
        "calls": calls,
        "calls_per_batch": round(calls / batches, 2),
        "share_429": round(throttled / calls, 4),
        "lag_median_s": round(statistics.median(lags), 1),
        "lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 1),
    }


def fleet_virtual(batches: int, policy: PollingPolicy, limit: int = 1500, window: float = 60.0) -> dict[str, Any]:
    """Coordination off, the shared 429 alone, and the shared 429 with a call budget of 90% of the limit."""
    rng = random.Random(20261124)
    durations = [min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0) for _ in range(batches)]
    budget = int(limit * 0.9 * 60 / window)
    modes = {
        "off": virtual_fleet(durations, policy, shared=False, budget=0, limit=limit, window=window),
        "shared 429": virtual_fleet(durations, policy, shared=True, budget=0, limit=limit, window=window),
        f"shared 429 + budget {budget}/min": virtual_fleet(durations, policy, shared=True, budget=budget,
                                                           limit=limit, window=window),
    }
    return {"batches": batches, "instances": 3, "rate_limit": f"{limit} per {window:g} s", "modes": modes,
            **goals(modes)}


def goals(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goal for each coordinated mode against off: 429s at most 2% of calls, no more calls, no worse
    p95 lag."""
    off = modes["off"]
    return {"goals_met": {
        name: {"share_429_at_most_2_percent": figure["share_429"] <= 0.02,
               "calls_at_most_off": figure["calls"] <= off["calls"],
               "p95_lag_at_most_off": figure["lag_p95_s"] <= off["lag_p95_s"]}
        for name, figure in modes.items() if name != "off"}}
