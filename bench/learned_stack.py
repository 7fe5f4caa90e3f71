"""Figure 8b: the learned schedule on the real stack, at small scale: Azurite, the local host and the simulator over
HTTP, with POLL_SCHEDULE=learned. One customer has a stored history of batches like the ones it uploads; another has
none and polls by the elapsed rule. Both upload the same batches at once: the Partner Center calls each batch took,
and the lag from Partner Center's completedTime to the final row, as check_batch_status recorded them."""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import uuid
from typing import Any

import requests
from azure.data.tables import TableClient

from local.azurite import PROJECT_ROOT
from local.host import LocalHost
from shared.config import PollingSettings, default_of
from shared.durations import summarise
from shared.results_store import DURATIONS_PARTITION

from .stack import fresh_stack, wait_until

BATCH_SECONDS = 20  # the simulator's queued time: every batch completes this long after its upload
HISTORY = default_of(PollingSettings, "learn_min_batches")  # stored batches of BATCH_SECONDS +- 10%: enough to learn


def learned_stack(batches: int) -> dict[str, Any]:
    settings = {"POLL_SCHEDULE": "learned", "POLL_INITIAL_DELAY_SECONDS": "1", "POLL_MAX_DELAY_SECONDS": "30",
                "POLL_BACKOFF_FACTOR": "0.18", "BATCH_TABLE_NAME": "BenchBatches"}
    with fresh_stack(BATCH_SECONDS, False, **settings) as stack:
        rng = random.Random(3)
        history = summarise([rng.uniform(0.9 * BATCH_SECONDS, 1.1 * BATCH_SECONDS) for _ in range(HISTORY)])
        customers = {"learned": str(uuid.uuid4()), "elapsed rule": str(uuid.uuid4())}
        table = TableClient.from_connection_string(stack.azurite.connection_string, settings["BATCH_TABLE_NAME"])
        table.create_table()
        table.upsert_entity({"PartitionKey": DURATIONS_PARTITION, "RowKey": customers["learned"],
                             **history.to_fields()})
        uploads = {name: [stack.upload(customer, [{"serialNumber": f"SN-{customer[:8]}-{index}"}])
                          for index in range(batches)]
                   for name, customer in customers.items()}
        queue = stack.queue(stack.env["STATUS_QUEUE_NAME"])
        for name, customer in customers.items():
            for tracking in uploads[name]:
                queue.send_message(json.dumps({"customerId": customer, "batchTrackingId": tracking}))
        host = LocalHost(PROJECT_ROOT, os.environ, max_polling_interval=0.2, functions=["check_batch_status"])
        host.start()
        started = time.monotonic()
        try:
            wait_until(lambda: _final(table, customers) == 2 * batches, 300)
        finally:
            host.stop()
        elapsed = time.monotonic() - started
        gets = requests.get(f"{stack.simulator_url}/_sim/batches", timeout=60).json()
        figures = {}
        for name, customer in customers.items():
            rows = list(table.query_entities("PartitionKey eq @c", parameters={"c": customer}))
            lags = [(row["finalizedAt"] - row["completedTime"]).total_seconds() for row in rows]
            figures[name] = {"calls_per_batch": round(statistics.mean(gets[t]["gets"] for t in uploads[name]), 2),
                             "mean_lag_s": round(statistics.mean(lags), 1), "max_lag_s": round(max(lags), 1),
                             "outcomes": sorted({row["outcome"] for row in rows})}
        stored = table.get_entity(DURATIONS_PARTITION, customers["learned"])
    return {"batches_per_customer": batches, "batch_seconds": BATCH_SECONDS, "history": HISTORY,
            "wall_seconds": round(elapsed), "customers": figures,
            "history_after": stored["batches"]}


def _final(table: Any, customers: dict[str, str]) -> int:
    count = 0
    for customer in customers.values():
        rows = table.query_entities("PartitionKey eq @c and outcome ne 'pending'", parameters={"c": customer})
        count += sum(1 for _ in rows)
    return count
