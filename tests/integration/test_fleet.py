"""Several instances on the same queues, as Azure scales the app out: each a separate local host process (with
its own worker), sharing only Azurite and the simulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.fleet import Fleet
from shared.throttle import REFRESH_SECONDS
from tests.conftest import PROJECT_ROOT, Stack, wait_for

pytestmark = pytest.mark.integration
INSTANCES = 3


@pytest.fixture
def fleet(stack: Stack, tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(INSTANCES, ["--max-polling-interval", "0.2", "--lease-seconds", "8"], os.environ, PROJECT_ROOT,
                    log_dir=tmp_path)
    yield running
    running.stop()


def _gets(stack: Stack, tracking: str) -> list[dict]:
    return [r for r in stack.sim_requests() if r["method"] == "GET" and tracking in r["path"]]


def _upload(stack: Stack, customer: str, index: int) -> tuple[str, set[str]]:
    """A batch of 1-4 devices, every other batch with one failing; its tracking id and the failing serials."""
    failing = {f"F{index}-X"} if index % 2 else set()
    for serial in failing:
        stack.control("device-errors", {"serialNumber": serial, "errorCode": "808"})
    devices = [{"serialNumber": serial} for serial in failing]
    devices += [{"serialNumber": f"F{index}-OK{n}"} for n in range(1 + index % 3)]
    return stack.upload(customer, devices).rsplit("/", 1)[1], failing


def test_killing_one_of_three_instances_loses_nothing_and_each_batch_keeps_one_chain(stack: Stack,
                                                                                     fleet: Fleet) -> None:
    stack.control("config", {"queuedSeconds": 1, "processingSeconds": 4})
    customer = str(uuid.uuid4())
    batches = dict(_upload(stack, customer, index) for index in range(12))
    fleet.start()
    for tracking in batches:  # every batch twice, as two upstream jobs would
        stack.send({"customerId": customer, "batchTrackingId": tracking, "source": "job-a"})
        stack.send({"location": f"/customers/{customer}/batchJobStatus/{tracking}", "source": "job-b"})
    wait_for(lambda: len(stack.batch_rows()) >= 6, 30, "chains to start on the instances")
    fleet.kill(0)  # SIGKILL: whatever it held comes back when its lease ends

    rows = {tracking: stack.wait_final(customer, tracking, timeout=90) for tracking in batches}
    wait_for(lambda: not stack.peek(stack.env["STATUS_QUEUE_NAME"]), 60, "every chain and duplicate message to end")
    expected_alerts = set().union(*batches.values())
    wait_for(lambda: {d["serialNumber"] for a in stack.alerts() for d in a["body"]["devices"]} >= expected_alerts,
             60, "an alert for every failed device")

    for tracking, row in rows.items():
        devices = stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)
        assert len(devices) == 1 + len(batches[tracking]) + list(batches).index(tracking) % 3
        assert row["outcome"] == ("completed_with_failures" if batches[tracking] else "completed")
        # One chain: Partner Center saw the chain's polls, give or take the one the killed instance had under
        # way (counted in the row before its call, or called before its row write).
        assert abs(len(_gets(stack, tracking)) - row["pollCount"]) <= 1, tracking
    alerted = [d["serialNumber"] for a in stack.alerts() for d in a["body"]["devices"]]
    assert sorted(alerted) == sorted(expected_alerts)
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []


def test_a_429_one_instance_gets_holds_the_new_batches_of_every_instance(stack: Stack, fleet: Fleet) -> None:
    window = 12.0
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0, "rateLimitPartner": 10,
                             "rateWindowSeconds": window})
    customer = str(uuid.uuid4())
    first_wave = [_upload(stack, customer, index)[0] for index in range(12)]
    second_wave = [_upload(stack, customer, index)[0] for index in range(12, 18)]
    fleet.start()
    time.sleep(2 + window - (time.time() + 2) % window)  # the instances are up; a rate window has just begun
    for tracking in first_wave:
        stack.send({"customerId": customer, "batchTrackingId": tracking})
    throttled = wait_for(lambda: [r for r in stack.sim_requests() if r.get("status") == 429], 30, "the first 429")
    # Once every instance has had time to read the ~throttle row, new batches arrive, on any instance.
    time.sleep(max(0.0, throttled[0]["time"] + REFRESH_SECONDS + 1 - time.time()))
    [row] = stack.rows("BATCH_TABLE_NAME", "PartitionKey eq '~throttle' and RowKey eq 'partner'")
    until = row["throttledUntil"].timestamp()
    assert until - time.time() >= 3, "the window is too short for this test to show anything"
    for tracking in second_wave:
        stack.send({"customerId": customer, "batchTrackingId": tracking})

    for tracking in first_wave + second_wave:
        stack.wait_final(customer, tracking, timeout=90)
    first_calls = [min(r["time"] for r in _gets(stack, tracking)) for tracking in second_wave]
    assert min(first_calls) >= until - 0.5  # no instance called for them while the partner was held
    requests = [r for r in stack.sim_requests() if r["method"] == "GET"]
    share_429 = sum(1 for r in requests if r.get("status") == 429) / len(requests)
    assert share_429 < 0.5, f"{share_429:.0%} of calls were answered 429"


def test_the_host_cli_runs_n_instances_and_stops_them_all(stack: Stack, tmp_path: Path) -> None:
    customer = str(uuid.uuid4())
    tracking, _ = _upload(stack, customer, 0)
    output = tmp_path / "fleet.log"
    with output.open("w") as log:
        host = subprocess.Popen([sys.executable, "-m", "local.host", "--instances", "2", "--max-polling-interval",
                                 "0.2"], cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            stack.send({"customerId": customer, "batchTrackingId": tracking})
            assert stack.wait_final(customer, tracking)["outcome"] == "completed"
        finally:
            host.send_signal(signal.SIGTERM)
            code = host.wait(60)
    text = output.read_text()
    assert code == 0
    for instance in (0, 1):
        assert f"[instance {instance}] local.host: Host started" in text
        assert f"[instance {instance}] local.host: Host stopped" in text
