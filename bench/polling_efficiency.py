"""Figure 7: polling efficiency in virtual time, the policy load_settings builds against the peers' fixed intervals."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from typing import Any

from shared.config import load_settings
from shared.models import BatchStatus
from shared.policy import PollingPolicy, StatusReceived, decide


def deployed_policy() -> PollingPolicy:
    """The defaults as deployed: the storage and Partner Center settings are only there to make them load."""
    return load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "PARTNER_CENTER_AUTH": "default"}).policy


def polling_efficiency(batches: int) -> dict[str, Any]:
    rng = random.Random(20261123)
    durations = [min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0) for _ in range(batches)]
    processing = StatusReceived(BatchStatus("t", "processing", None, None, ()))
    policy = deployed_policy()
    jitter = random.Random(7)

    def ours(duration: float) -> tuple[int, float]:
        elapsed, calls = 0.0, 1
        while elapsed < duration:
            decision = decide(processing, elapsed, 0, 0, policy, jitter)
            elapsed += decision.delay  # type: ignore[union-attr]
            calls += 1
        return calls, elapsed - duration

    def fixed(interval: float) -> Callable[[float], tuple[int, float]]:
        def poll(duration: float) -> tuple[int, float]:
            calls = 1 + math.ceil(duration / interval)
            return calls, (calls - 1) * interval - duration

        return poll

    schedules = {
        "batchwatch": ours,
        "fixed 5 s (Partner Center PowerShell)": fixed(5),
        "fixed 15 s (Import-AutopilotCSV)": fixed(15),
        "fixed 30 s (Get-WindowsAutopilotInfo)": fixed(30),
    }
    figures = {}
    for name, schedule in schedules.items():
        outcomes = [schedule(duration) for duration in durations]
        lags = sorted(lag for _, lag in outcomes)
        figures[name] = {
            "calls_per_batch": round(statistics.mean(calls for calls, _ in outcomes), 2),
            "mean_lag_s": round(statistics.mean(lags), 1),
            "p95_lag_s": round(lags[int(0.95 * len(lags))], 1),
            "mean_lag_share": round(
                statistics.mean(lag / d for (_, lag), d in zip(outcomes, durations, strict=True)), 3
            ),
        }
    ours_figures, fixed30 = figures["batchwatch"], figures["fixed 30 s (Get-WindowsAutopilotInfo)"]
    goals = {
        "calls_at_most_half_of_fixed_30s": ours_figures["calls_per_batch"] <= fixed30["calls_per_batch"] / 2,
        "mean_lag_at_most_10_percent": ours_figures["mean_lag_share"] <= 0.10,
        "p95_lag_at_most_300s": ours_figures["p95_lag_s"] <= 300,
    }
    return {"batches": batches, "policies": figures, "goals_met": goals}
