"""Figure 9a: fleet throttling on the real stack: Azurite, three host instances (local/fleet.py) and the
simulator in its own process with a per-partner rate limit. Batches are dropped at once with staggered
completion times, and the run is repeated with coordination off, with the shared 429, and with the shared 429
and a call budget, each on a fresh Azurite: Partner Center calls, 429s as a share of calls, and the lag from
each batch's completedTime to its final row."""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from local.azurite import PROJECT_ROOT
from local.fleet import Fleet

from .fleet_virtual import goals
from .stack import Stack, fresh_stack, wait_until

# The elapsed rule throughout: by default the learned schedule takes over once POLL_LEARN_MIN_BATCHES batches have
# completed, part way through a mode, and the modes would no longer differ in their throttling alone.
POLLING = {"POLL_INITIAL_DELAY_SECONDS": "5", "POLL_MAX_DELAY_SECONDS": "15", "POLL_BACKOFF_FACTOR": "0.18",
           "POLL_SCHEDULE": "elapsed"}


def fleet_throttling(batches: int, limit: int = 600, window: float = 60.0, instances: int = 3) -> dict[str, Any]:
    budget = int(limit * 0.9 * 60 / window)
    modes = {
        "off": {"PARTNER_CENTER_FLEET_THROTTLE": "false"},
        "shared 429": {},
        f"shared 429 + budget {budget}/min": {"PARTNER_CENTER_MAX_CALLS_PER_MINUTE": str(budget)},
    }
    figures = {name: _run(batches, limit, window, instances, settings) for name, settings in modes.items()}
    return {"batches": batches, "instances": instances, "rate_limit": f"{limit} per {window:g} s",
            "polling": POLLING, "modes": figures, **goals(figures)}


def _run(batches: int, limit: int, window: float, instances: int, settings: dict[str, str]) -> dict[str, Any]:
    rng = random.Random(9)
    with fresh_stack(queued_seconds=0, simulator_process=True, **POLLING, **settings) as stack:
        customer = str(uuid.uuid4())
        tracking_ids = []
        for index in range(batches):  # each batch finishes 10-90 s after it is dropped
            _control(stack, {"processingSeconds": rng.uniform(10, 90)})
            tracking_ids.append(stack.upload(customer, [{"serialNumber": f"FT-{index}"}]))
        _control(stack, {"rateLimitPartner": limit, "rateWindowSeconds": window})
        fleet = Fleet(instances, ["--max-polling-interval", "0.5"], os.environ, PROJECT_ROOT,
                      log_dir=Path(tempfile.mkdtemp(prefix="bench-fleet-")))
        fleet.start()
        try:
            queue = stack.queue(stack.env["STATUS_QUEUE_NAME"])
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda t: queue.send_message(json.dumps({"customerId": customer,
                                                                         "batchTrackingId": t})), tracking_ids))
            started = time.monotonic()
            wait_until(lambda: len(_final_rows(stack)) >= batches, 900)
            seconds = time.monotonic() - started
        finally:
            fleet.stop()
        rows = _final_rows(stack)
        gets = [r for r in requests.get(f"{stack.simulator_url}/_sim/requests", timeout=60).json()["requests"]
                if r["method"] == "GET"]
    lags = sorted((row["finalizedAt"] - row["completedTime"]).total_seconds() for row in rows)
    throttled = sum(1 for r in gets if r.get("status") == 429)
    return {
        "calls": len(gets),
        "calls_per_batch": round(len(gets) / batches, 2),
        "share_429": round(throttled / len(gets), 4),
        "lag_median_s": round(statistics.median(lags), 1),
        "lag_p95_s": round(lags[int(0.95 * (len(lags) - 1))], 1),
        "seconds_to_all_final": round(seconds, 1),
    }


def _control(stack: Stack, document: dict[str, Any]) -> None:
    requests.post(f"{stack.simulator_url}/_sim/config", json=document, timeout=10).raise_for_status()


def _final_rows(stack: Stack) -> list[dict[str, Any]]:
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(stack.azurite.connection_string, "BatchUploadStatus")
    try:
        return [dict(row) for row in table.query_entities("PartitionKey lt '~' and outcome ne 'pending'")]
    except Exception as exc:
        if "TableNotFound" in str(exc):
            return []
        raise
