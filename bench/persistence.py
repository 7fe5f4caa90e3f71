"""Figures 4, 5 and 10: persisting a large result against the same entities written straight through the SDK,
the memory it takes, and a batch of 100,000 devices stored in steps."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests

from local.azurite import PROJECT_ROOT
from shared.auth import SIMULATOR_TOKEN
from shared.device_keys import device_row_keys, history_partition_key
from shared.models import DeviceStatus, Outcome
from shared.results_store import device_entity
from shared.status_parser import parse_batch_status

from .stack import Stack, fresh_stack

PROBE_SECONDS = 600.0
PROBE_SECONDS_PER_DEVICE = 0.15  # 20,000 devices: 1 hour; 100,000: 4.3 hours


def persistence_and_memory(devices: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ours once, in a fresh interpreter that also reports its memory, between two bare runs (bare, ours, bare).

    Each run has its own fresh Azurite. The bare figure is the mean of the two runs around ours, so that
    a machine that slows down or speeds up during the figure does not favour either side. The bare runs
    write the very entities ours writes: built from the same simulator response (device ids included), with
    a recordedAt time.
    """
    identities = [{"serialNumber": f"SN-{i:06}", "productKey": f"PK-{i:06}"} for i in range(devices)]
    with fresh_stack(queued_seconds=0) as stack:
        customer = str(uuid.uuid4())
        response = _final_response(stack, customer, stack.upload(customer, identities))
    parsed = tuple(parse_batch_status(response).devices)
    bare_runs = [_bare_run(parsed)]
    with fresh_stack(queued_seconds=0) as stack:
        customer = str(uuid.uuid4())
        ours = _probe(stack, customer, stack.upload(customer, identities), devices)
    assert ours["device_count"] == devices, ours
    bare_runs.append(_bare_run(parsed))
    bare_total = statistics.mean(run["total"] for run in bare_runs)
    bare_devices = statistics.mean(run["devices"] for run in bare_runs)
    seconds = ours["seconds"]
    persistence = {
        "devices": devices,
        "ours_seconds": round(seconds["finalize"], 2),
        "ours_device_rows_seconds": round(seconds["devices"], 2),
        "ours_history_rows_seconds": round(seconds["history"], 2),
        "bare_seconds": round(bare_total, 2),
        "bare_device_rows_seconds": round(bare_devices, 2),
        "bare_runs_seconds": [round(run["total"], 2) for run in bare_runs],
        "ratio": round(bare_total / seconds["finalize"], 2),
        "device_rows_ratio": round(bare_devices / seconds["devices"], 2),
        "goal": 0.8,
        "transactions_device_table": ours["transactions"],
        "expected_transactions": math.ceil(devices / 100),
        "history_single_upserts": ours["history_upserts"],
    }
    growth = max(0, ours["rss_peak"] - ours["rss_before"])
    memory = {
        "devices": devices,
        "json_bytes": len(response),
        "rss_growth_bytes": growth,
        "ratio_to_json": round(growth / len(response), 1),
    }
    return persistence, memory


def large_batch(devices: int) -> dict[str, Any]:
    """Figure 10: one batch of this many devices through the app, its result stored in steps across invocations
    (FINALIZE_STEP_SECONDS as deployed), then the same device rows straight through SDK transactions on the
    same Azurite: total time, the longest invocation, peak RSS growth, and rows written per second."""
    identities = [{"serialNumber": f"XL-{i:06}", "productKey": f"PK-{i:06}"} for i in range(devices)]
    with fresh_stack(queued_seconds=0) as stack:
        customer = str(uuid.uuid4())
        tracking = stack.upload(customer, identities)
        ours = _probe(stack, customer, tracking, devices)
        response = _final_response(stack, customer, tracking)
        parsed = tuple(parse_batch_status(response).devices)
        bare = _bare_writes(stack, str(uuid.uuid4()), str(uuid.uuid4()), parsed)
    assert ours["device_count"] == devices, ours
    total = ours["seconds"]["finalize"]
    ours_rows_per_second = 2 * devices / total  # a device row and a history row per device
    bare_rows_per_second = devices / bare["devices"]
    return {
        "devices": devices,
        "json_bytes": len(response),
        "invocations": len(ours["invocations_seconds"]),
        "invocations_seconds": ours["invocations_seconds"],
        "longest_invocation_seconds": max(ours["invocations_seconds"]),
        "seconds_to_final": round(sum(ours["invocations_seconds"]), 1),
        "storing_seconds": round(total, 1),
        "rss_growth_bytes": max(0, ours["rss_peak"] - ours["rss_before"]),
        "ours_rows_per_second": round(ours_rows_per_second, 1),
        "bare_transaction_rows_per_second": round(bare_rows_per_second, 1),
        "ratio": round(ours_rows_per_second / bare_rows_per_second, 2),
        "bare_with_history_seconds": round(bare["total"], 1),
        "ratio_to_bare_with_history": round(bare["total"] / total, 2),
    }


def _probe(stack: Stack, customer: str, tracking: str, devices: int) -> dict[str, Any]:
    """Ours in a fresh interpreter (bench.persist_probe), which also reports its memory. Its progress, a line per
    invocation, goes to stderr as it runs. Azurite slows as the partition grows (about 1,000 devices a minute
    past 30,000 here), so the time allowed grows with the batch: PROBE_SECONDS plus PROBE_SECONDS_PER_DEVICE."""
    small = stack.upload(customer, [{"serialNumber": "WARM-UP"}])
    output = subprocess.run(
        [sys.executable, "-m", "bench.persist_probe", customer, tracking, small],
        cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, text=True, check=True,
        timeout=PROBE_SECONDS + PROBE_SECONDS_PER_DEVICE * devices,
    )
    ours: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    assert ours["outcome"] == Outcome.COMPLETED, ours
    return ours


def _final_response(stack: Stack, customer: str, tracking: str) -> bytes:
    response = requests.get(
        f"{stack.simulator_url}/v1/customers/{customer}/batchJobStatus/{tracking}",
        headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.content


def _bare_run(devices: tuple[DeviceStatus, ...]) -> dict[str, float]:
    with fresh_stack(queued_seconds=0) as stack:
        return _bare_writes(stack, str(uuid.uuid4()), str(uuid.uuid4()), devices)


def _bare_writes(stack: Stack, customer: str, tracking: str, devices: tuple[DeviceStatus, ...]) -> dict[str, float]:
    """The same entities straight through the SDK: submit_transaction in 100s, history 8 at a time."""
    from azure.data.tables import TableClient, UpdateMode

    now = datetime.now(UTC)
    device_rows = [
        device_entity(d, d.failed, customer, tracking, tracking, key, now)
        for d, key in zip(devices, device_row_keys(devices), strict=True)
    ]
    history_rows = [device_entity(d, d.failed, customer, tracking, history_partition_key(d), tracking, now)
                    for d in devices]
    device_table = TableClient.from_connection_string(stack.azurite.connection_string, "BareDevices")
    history_table = TableClient.from_connection_string(stack.azurite.connection_string, "BareHistory")
    device_table.create_table()
    history_table.create_table()
    started = time.perf_counter()
    for index in range(0, len(device_rows), 100):
        device_table.submit_transaction(
            [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in device_rows[index : index + 100]]
        )
    devices_done = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda row: history_table.upsert_entity(row, mode=UpdateMode.REPLACE), history_rows))
    return {"devices": devices_done - started, "total": time.perf_counter() - started}
