"""Redelivery, duplicate submissions, lost messages, large batches and shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from shared.app import get_app
from tests.conftest import PROJECT_ROOT, Stack, wait_for

pytestmark = pytest.mark.integration


def _upload(stack: Stack, customer: str, count: int, failing: int = 0) -> str:
    for index in range(failing):
        stack.control("device-errors", {"serialNumber": f"FAIL-{index}", "errorCode": "808"})
    devices = [{"serialNumber": f"FAIL-{i}"} for i in range(failing)]
    devices += [{"serialNumber": f"OK-{i}", "productKey": f"PK-{i}"} for i in range(count - failing)]
    return stack.upload(customer, devices).rsplit("/", 1)[1]


def _polls(stack: Stack, tracking: str) -> int:
    return len([r for r in stack.sim_requests() if r["method"] == "GET" and tracking in r["path"]])


def _queue_length(stack: Stack, name: str) -> int:
    return stack.queue(name).get_queue_properties().approximate_message_count


def _assert_single_chain_and_clean_queue(stack: Stack, customer: str, tracking: str) -> dict:
    """One chain: Partner Center saw exactly the chain's polls (a redelivered chain message reads the row
    first and sees that the chain moved on) and no message is left behind."""
    row = stack.wait_final(customer, tracking)
    wait_for(lambda: _queue_length(stack, stack.env["STATUS_QUEUE_NAME"]) == 0, 30,
             "every duplicate and watchdog message to end")
    assert _polls(stack, tracking) == row["pollCount"], "a second polling chain called Partner Center"
    return row


def _receive_one(stack: Stack) -> str:
    queue = stack.queue(stack.env["STATUS_QUEUE_NAME"])

    def one() -> list:
        return list(queue.receive_messages(max_messages=1, visibility_timeout=30))

    [message] = wait_for(one, 10, "the requeued status message")
    queue.delete_message(message)
    return message.content


def test_redelivered_messages_do_not_fork_the_polling_chain(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 1, "processingSeconds": 5})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 3, failing=1)
    first = json.dumps({"customerId": customer, "batchTrackingId": tracking})
    check = get_app().status_check

    check.handle(first.encode())  # claims the batch, polls, requeues its successor
    check.handle(first.encode())  # the upstream message delivered again: becomes a watchdog
    successor = _receive_one(stack)
    check.handle(successor.encode())
    check.handle(successor.encode())  # the host crashed before deleting it: delivered twice
    stack.start_host(functions=["check_batch_status"])

    row = _assert_single_chain_and_clean_queue(stack, customer, tracking)
    assert row["outcome"] == "completed_with_failures"
    assert len(stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)) == 3
    chunks = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    assert [c["devices"][0]["serialNumber"] for c in chunks] == ["FAIL-0"]


def test_the_same_tracking_id_sent_twice_is_polled_by_one_chain(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 1, "processingSeconds": 4})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 4, failing=2)
    stack.start_host(functions=["check_batch_status"])
    location = f"/customers/{customer}/batchJobStatus/{tracking}"
    stack.send({"location": location, "source": "job-a"})
    stack.send({"customerId": customer.upper(), "batchTrackingId": tracking.upper(), "source": "job-b"})

    row = _assert_single_chain_and_clean_queue(stack, customer, tracking)

    assert row["failedDeviceCount"] == 2 and len(stack.batch_rows()) == 1
    assert [r["RowKey"] for r in stack.rows("BATCH_TABLE_NAME") if r["PartitionKey"] == "~tracking"] == [tracking]
    assert len(stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)) == 4
    chunks = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    assert len(chunks) == 1 and len(chunks[0]["devices"]) == 2


def test_a_successor_lost_before_it_was_sent_is_replaced_by_the_watchdog(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 1, "processingSeconds": 3})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 2)
    first = json.dumps({"customerId": customer, "batchTrackingId": tracking})
    check = get_app().status_check
    check.handle(first.encode())
    stack.queue(stack.env["STATUS_QUEUE_NAME"]).clear_messages()  # the successor never reached the queue
    check.handle(first.encode())  # the original comes back after its lease: a watchdog, no poll
    assert _polls(stack, tracking) == 1
    stack.start_host(functions=["check_batch_status"])

    row = _assert_single_chain_and_clean_queue(stack, customer, tracking)
    assert row["outcome"] == "completed"


def test_finalising_twice_writes_the_same_rows_and_chunks(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 3, failing=2)
    app = get_app()
    message = json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode()
    app.status_check.handle(message)
    row = stack.batch_row(customer, tracking)
    assert row is not None and row["outcome"] == "completed_with_failures"
    app.status_check.handle(message)  # the final message redelivered

    assert len(stack.rows("DEVICE_TABLE_NAME")) == 3 and len(stack.rows("DEVICE_HISTORY_TABLE_NAME")) == 3
    chunks = stack.drain(stack.env["FAILURE_QUEUE_NAME"])
    assert len(chunks) == 1
    assert stack.batch_row(customer, tracking)["finalizedAt"] == row["finalizedAt"]  # type: ignore[index]


def test_a_2000_device_batch_is_stored_in_steps_each_device_once_in_20_transactions(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINALIZE_STEP_SECONDS", "1")  # a page of 1,000 devices takes longer on Azurite
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 2000, failing=1200)
    stack.start_host(functions=["check_batch_status"])
    before = get_app().clients.counter.snapshot()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking, timeout=120)

    requests = get_app().clients.counter.snapshot() - before
    assert row["deviceCount"] == 2000 and row["failedDeviceCount"] == 1200 and row["devicesStored"] == 2000
    assert _polls(stack, tracking) >= 2  # each invocation that went on read the final answer again
    assert requests["table.transaction"] == 20  # DeviceUploadStatus: ceil(2000 / 100)
    assert requests["table.replace"] == 2000  # DeviceUploadHistory: one partition per serial number
    assert len(stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)) == 2000
    chunks = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    failed = [d["serialNumber"] for c in chunks for d in c["devices"]]
    assert sorted(failed) == sorted(f"FAIL-{i}" for i in range(1200)) and len(chunks) > 1


def test_sigterm_lets_the_running_poll_finish_and_loses_nothing(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 5, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = _upload(stack, customer, 1)
    stack.control("script", {"trackingId": tracking, "responses": ["slow:3"]})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    host = subprocess.Popen([sys.executable, "-m", "local.host", "--functions", "check_batch_status",
                             "--max-polling-interval", "0.2"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        stack.send({"customerId": customer, "batchTrackingId": tracking})
        wait_for(lambda: _polls(stack, tracking) == 1, 30, "the first poll to start")
        host.send_signal(signal.SIGTERM)
        output, _ = host.communicate(timeout=30)
    finally:
        if host.poll() is None:
            host.kill()
    text = output.decode(errors="replace")
    assert host.returncode == 0, text
    assert "Received SIGTERM; stopping" in text and "Succeeded" in text
    row = stack.batch_row(customer, tracking)
    assert row is not None and row["pollCount"] == 1 and row["outcome"] == "pending"
    assert _queue_length(stack, stack.env["STATUS_QUEUE_NAME"]) == 1  # the successor, nothing else
    time.sleep(0.1)
    stack.start_host(functions=["check_batch_status"])
    assert stack.wait_final(customer, tracking)["outcome"] == "completed"
