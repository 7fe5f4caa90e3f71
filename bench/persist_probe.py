"""Handles one large final batch in a fresh interpreter and prints its times, request counts and memory.

    python -m bench.persist_probe <customer> <tracking id> <tracking id of a one-device batch>

Run by bench.run, with the app settings in the environment: the small batch warms the process up (tables
created, connections open), then the large one is timed from the parsed response to the batch row written. When
the result is stored in steps (FINALIZE_STEP_SECONDS), the probe handles each next invocation's message as the
host would, and reports every invocation's time.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.memory import peak_bytes, reset_peak
from shared import status_check
from shared.app import get_app


def main(customer: str, tracking: str, small: str) -> dict[str, Any]:
    app = get_app()
    app.status_check.handle(json.dumps({"customerId": customer, "batchTrackingId": small}).encode())
    timings: dict[str, float] = {}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

        return run

    store = app.status_check.store
    status_check.StatusCheck._finalize = timed("finalize", status_check.StatusCheck._finalize)  # type: ignore[method-assign]
    store.write_devices = timed("devices", store.write_devices)  # type: ignore[method-assign]
    store.write_history = timed("history", store.write_history)  # type: ignore[method-assign]
    before_bytes, before_counts = reset_peak(), app.clients.counter.snapshot()  # the peak counts from here
    invocations = [_invocation(app.status_check, json.dumps({"customerId": customer, "batchTrackingId": tracking}))]
    row = app.clients.table(app.settings.batch_table).get_entity(customer, tracking)
    queue = app.clients.queue(app.settings.status_queue)
    _progress(invocations, row)
    while row["outcome"] == "pending":  # the final result is stored in steps: the next invocation goes on
        received = list(queue.receive_messages(max_messages=1, visibility_timeout=600))
        for message in received:
            invocations.append(_invocation(app.status_check, message.content))
            queue.delete_message(message)
        row = app.clients.table(app.settings.batch_table).get_entity(customer, tracking)
        if received:
            _progress(invocations, row)
        else:
            time.sleep(0.5)  # the next message is not visible yet (a retry's delay)
    peak = peak_bytes()
    counts = app.clients.counter.snapshot() - before_counts
    return {
        "outcome": row["outcome"],
        "device_count": row["deviceCount"],
        "seconds": timings,
        "invocations_seconds": invocations,
        "rss_before": before_bytes,
        "rss_peak": peak,
        "transactions": counts["table.transaction"],
        "history_upserts": counts["table.replace"],
    }


def _progress(invocations: list[float], row: Any) -> None:
    """A line on stderr after each invocation, so that a run of hours shows how far it has got."""
    print(f"persist probe: invocation {len(invocations)} took {invocations[-1]} s; {row.get('devicesStored') or 0} "
          f"devices stored", file=sys.stderr, flush=True)


def _invocation(check: status_check.StatusCheck, content: str) -> float:
    started = time.perf_counter()
    check.handle(content.encode())
    return round(time.perf_counter() - started, 2)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
