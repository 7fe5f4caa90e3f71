"""The learned poll schedule on the real stack: the function reads a customer's summary from Table Storage, polls
by it, and adds each completed batch to the summaries."""

from __future__ import annotations

import logging
import os
import random
import uuid

import pytest

from shared.config import PollingSettings, default_of
from shared.durations import DECAY, DurationSummary, bin_of, summarise
from shared.learned_schedules import ALL
from shared.results_store import DURATIONS_PARTITION
from tests.conftest import Stack

pytestmark = pytest.mark.integration
HISTORY = default_of(PollingSettings, "learn_min_batches")  # just enough to learn from


def test_a_customer_with_a_history_is_polled_by_its_learned_schedule_and_the_batch_joins_it(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Two batches that each take about 20 s: the customer with POLL_LEARN_MIN_BATCHES past batches of 18-22 s is
    polled a few times near the end, the new customer by the elapsed rule from the start."""
    monkeypatch.setenv("POLL_SCHEDULE", "learned")
    monkeypatch.setenv("POLL_MAX_DELAY_SECONDS", "30")
    caplog.set_level(logging.INFO, logger="batchwatch.poll_schedule")
    rng = random.Random(3)
    history = summarise([rng.uniform(18, 22) for _ in range(HISTORY)])
    known, new = str(uuid.uuid4()), str(uuid.uuid4())
    stack.table("BATCH_TABLE_NAME").create_table()
    stack.table("BATCH_TABLE_NAME").upsert_entity({"PartitionKey": DURATIONS_PARTITION, "RowKey": known,
                                                   **history.to_fields()})
    stack.control("config", {"queuedSeconds": 2, "processingSeconds": 18})
    locations = {customer: stack.upload(customer, [{"serialNumber": f"SN-{customer[:4]}"}])
                 for customer in (known, new)}
    stack.start_host()
    for location in locations.values():
        stack.send({"location": location})

    rows = {customer: stack.wait_final(customer, location.rsplit("/", 1)[-1], timeout=90)
            for customer, location in locations.items()}

    assert {row["outcome"] for row in rows.values()} == {"completed"}
    polls = {customer: row["pollCount"] for customer, row in rows.items()}
    assert polls[known] <= 7 and polls[known] + 4 <= polls[new], polls  # measured here: 2 against 11
    assert f"poll schedule for customer {known}: learned from {HISTORY} batches" in caplog.text
    assert (f"poll schedule for customer {new}: every customer's schedule while there is one, else the elapsed rule "
            f"(0 batches recorded, {HISTORY} needed to learn its own)") in caplog.text
    assert f"poll schedule for every customer: the elapsed rule (0 batches recorded, {HISTORY} needed" in caplog.text
    stored = {row["RowKey"]: DurationSummary.from_fields(row)
              for row in stack.rows("BATCH_TABLE_NAME", "PartitionKey eq @p", p=DURATIONS_PARTITION)}
    assert stored[known] is not None and stored[known].batches == HISTORY + 1
    assert stored[new] is not None and stored[new].batches == 1
    assert stored[ALL] is not None and stored[ALL].batches == 2
    took = [index for index, weight in enumerate(stored[new].weights) if weight]
    assert took == [bin_of(20.0)] or abs(took[0] - bin_of(20.0)) <= 1  # Partner Center's ~20 s, not the polls'


def test_processes_adding_durations_at_once_each_land_once_under_the_etag(stack: Stack) -> None:
    """Three stores add five batches each to the same ~durations row at once: a lost race is retried on the row
    as it now is, so every batch is counted and none twice."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.config import load_settings
    from shared.results_store import ResultsStore
    from shared.storage import StorageClients

    settings = load_settings(os.environ)
    stores = [ResultsStore(StorageClients(settings.storage), settings.batch_table, settings.device_table,
                           settings.history_table) for _ in range(3)]

    def add(store: ResultsStore) -> None:
        for _ in range(5):
            store.add_duration("shared-scope", 300.0)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(add, stores))
    summary = stores[0].get_durations("shared-scope")
    assert summary is not None and summary.batches == 15
    assert summary.weights[bin_of(300.0)] == pytest.approx(sum(DECAY**age for age in range(15)))
    assert stores[0].get_durations("no-such-scope") is None
