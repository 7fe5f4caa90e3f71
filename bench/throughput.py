"""Figure 3: polls per second against the bare queue cycle (receive, delete, send with a delay)."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from local.azurite import PROJECT_ROOT
from local.host import LocalHost, QueueOptions
from shared.config import load_storage_settings
from shared.storage import StorageClients

from .stack import Stack, fresh_stack, seed_batches, wait_until


def throughput(depth: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Our polls/s and the bare cycle's, in alternating windows (ours, bare, bare, ours, ...).

    The machine is shared and its speed drifts within minutes, so one window of each side gave ratios from
    0.44 to 0.57 in repeated runs. Adjacent pairs see the same machine; the figure is the median of the
    pairs' ratios. Each window has a fresh Azurite and ends before Azurite's first queue clean-up (60 s).
    """
    options = QueueOptions.from_host_json(json.loads((PROJECT_ROOT / "host.json").read_text()))
    concurrency = options.batch_size + options.threshold
    ours: list[float] = []
    bare: list[float] = []
    for index in range(rounds):
        sides = [lambda: ours.append(_ours_window(depth, seconds)),
                 lambda: bare.append(_bare_window(depth, seconds, options.batch_size, concurrency))]
        for side in sides if index % 2 == 0 else reversed(sides):
            side()
    ratios = [round(mine / theirs, 2) for mine, theirs in zip(ours, bare, strict=True)]
    return {
        "depth": depth,
        "rounds": rounds,
        "seconds_per_window": seconds,
        "ours_per_second": round(statistics.median(ours), 1),
        "bare_per_second": round(statistics.median(bare), 1),
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
        "ours_windows": [round(rate, 1) for rate in ours],
        "bare_windows": [round(rate, 1) for rate in bare],
        "goal": 0.5,
        "concurrency": concurrency,
    }


def _ours_window(depth: int, seconds: float) -> float:
    with fresh_stack(simulator_process=True) as stack:
        seed_batches(stack, depth)
        host = LocalHost(PROJECT_ROOT, os.environ, max_polling_interval=0.1, functions=["check_batch_status"],
                         worker_process=True)
        host.start()
        try:
            wait_until(lambda: host.invocations >= depth, 120)  # every batch row created: steady state
            start, started = host.invocations, time.monotonic()
            time.sleep(seconds)
            return (host.invocations - start) / (time.monotonic() - started)
        finally:
            host.stop()


def _bare_window(depth: int, seconds: float, batch_size: int, concurrency: int) -> float:
    with fresh_stack() as stack:
        return _bare_cycle(stack, depth, seconds, batch_size, concurrency)


def _bare_cycle(stack: Stack, depth: int, seconds: float, batch_size: int, concurrency: int) -> float:
    """receive + delete + send-with-delay per message, batched and as concurrent as the host, through a client
    made as the app makes its own (same pooled transport: the SDK's default pool of 10 drops connections)."""
    stack.queue("bare-cycle")  # created
    queue = StorageClients(load_storage_settings(stack.env)).queue("bare-cycle")
    body = json.dumps({"customerId": str(uuid.uuid4()), "batchTrackingId": str(uuid.uuid4()), "pad": "x" * 120})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: queue.send_message(body), range(depth)))
    done = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def cycle(message: Any) -> None:
        nonlocal done
        queue.delete_message(message)
        queue.send_message(message.content, visibility_timeout=0)
        with lock:
            done += 1

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        in_flight: set[Any] = set()
        while time.monotonic() < stop:
            in_flight = {future for future in in_flight if not future.done()}
            if len(in_flight) > concurrency - batch_size:
                time.sleep(0.001)
                continue
            for message in queue.receive_messages(
                messages_per_page=batch_size, max_messages=batch_size, visibility_timeout=600
            ):
                in_flight.add(pool.submit(cycle, message))
        elapsed = time.monotonic() - started
    return done / elapsed
