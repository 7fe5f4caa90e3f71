"""Every batch that ends badly reaches ops, and only the chain's holder ends a batch."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.app import get_app, reset_app
from shared.audit.cli import main as audit
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _customer() -> str:
    return str(uuid.uuid4())


def _with_settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_app()


def _alerts_of(stack: Stack, tracking: str, count: int) -> list[dict[str, Any]]:
    def delivered() -> list[dict[str, Any]] | None:
        found = [alert["body"] for alert in stack.alerts() if alert["body"]["batchTrackingId"] == tracking]
        return found if len(found) >= count else None

    return wait_for(delivered, 30, f"{count} alert(s) for batch {tracking}")


def test_a_batch_still_queued_at_the_deadline_ends_timed_out_with_an_alert(stack: Stack,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _with_settings(monkeypatch, POLL_DEADLINE_SECONDS="3")
    stack.control("config", {"queuedSeconds": 600})
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "STUCK-1"}]).rsplit("/", 1)[1]
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)
    [alert] = _alerts_of(stack, tracking, 1)
    assert row["outcome"] == "timed_out" and row["status"] == "queued"
    assert alert["type"] == "batch_outcome" and alert["outcome"] == "timed_out"
    assert "not final" in alert["reason"] and "remediation" in alert


def test_a_batch_processing_at_the_deadline_alerts_its_failed_devices_and_says_how_many_were_in_progress(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_settings(monkeypatch, POLL_DEADLINE_SECONDS="2")
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "ANY"}]).rsplit("/", 1)[1]
    processing = json.dumps({"batchTrackingId": tracking, "status": "processing", "devicesStatus": [
        {"serialNumber": "SLOW-1", "status": "processing"},
        {"serialNumber": "SLOW-2", "status": "queued"},
        {"serialNumber": "BAD-1", "status": "finished_with_errors", "errorCode": "808",
         "errorDescription": "ZtdDeviceAssignedToOtherTenant"},
        {"serialNumber": "DONE-1", "status": "finished"},
    ]})
    stack.control("script", {"trackingId": tracking, "responses": [f"body:{processing}"] * 20})
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)
    alerts = {alert["type"]: alert for alert in _alerts_of(stack, tracking, 2)}
    assert row["outcome"] == "timed_out" and row["failedDeviceCount"] == 1 and row["inProgressDeviceCount"] == 2
    devices = {d["serialNumber"]: d for d in stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)}
    assert {serial: (d["status"], d["failed"]) for serial, d in devices.items()} == {
        "SLOW-1": ("processing", False), "SLOW-2": ("queued", False),
        "BAD-1": ("finished_with_errors", True), "DONE-1": ("finished", False)}
    assert [d["serialNumber"] for d in alerts["device_failures"]["devices"]] == ["BAD-1"]
    assert alerts["device_failures"]["outcome"] == "timed_out"
    outcome = alerts["batch_outcome"]
    assert outcome["outcome"] == "timed_out" and outcome["inProgressDeviceCount"] == 2
    assert "2 device(s) were still in progress" in outcome["reason"]


@pytest.mark.parametrize("devices", [None, []], ids=["missing", "empty"])
def test_finished_with_errors_without_devices_is_completed_with_failures_and_alerted(
        stack: Stack, devices: list | None) -> None:
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "ANY"}]).rsplit("/", 1)[1]
    answer: dict[str, Any] = {"batchTrackingId": tracking, "status": "finished_with_errors"}
    if devices is not None:
        answer["devicesStatus"] = devices
    stack.control("script", {"trackingId": tracking, "responses": [f"body:{json.dumps(answer)}"]})
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)
    [alert] = _alerts_of(stack, tracking, 1)
    assert row["outcome"] == "completed_with_failures" and row["failedDeviceCount"] == 0
    assert alert["type"] == "batch_outcome" and alert["outcome"] == "completed_with_failures"
    assert "finished_with_errors without listing devices" in alert["reason"]


def test_a_resubmitted_batch_that_ends_the_same_way_is_alerted_again(stack: Stack,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _with_settings(monkeypatch, NOT_FOUND_GRACE_SECONDS="1")
    customer, tracking = _customer(), str(uuid.uuid4())  # Partner Center never heard of it: 404 every time
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})
    assert stack.wait_final(customer, tracking)["outcome"] == "not_found"
    [first] = _alerts_of(stack, tracking, 1)

    assert audit(["resubmit", "--tracking-id", tracking]) == 0
    wait_for(lambda: (stack.batch_row(customer, tracking) or {}).get("resubmitCount") == 1, 10, "the resubmit")
    row = stack.wait_final(customer, tracking)
    second = _alerts_of(stack, tracking, 2)[1]
    assert row["outcome"] == "not_found" and row["previousOutcome"] == "not_found"
    assert second["type"] == first["type"] == "batch_outcome" and second["alertId"] != first["alertId"]
    def sent() -> list[dict[str, Any]] | None:
        rows = stack.rows("ALERT_TABLE_NAME", "PartitionKey eq @t and status eq 'sent'", t=tracking)
        return rows if len(rows) == 2 else None

    assert {row["RowKey"] for row in wait_for(sent, 10, "both alerts recorded as sent")} == {
        first["alertId"], second["alertId"]}


def _polls(stack: Stack, tracking: str) -> int:
    return len([r for r in stack.sim_requests() if r["method"] == "GET" and tracking in r["path"]])


def _next_message(stack: Stack) -> str:
    [message] = wait_for(lambda: stack.drain(stack.env["STATUS_QUEUE_NAME"]), 10, "the requeued message")
    return message


def test_a_stale_copy_of_a_chain_message_never_finalises_a_batch_it_does_not_hold(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 600})
    customer = _customer()
    stack.control("device-errors", {"serialNumber": "COPY-BAD", "errorCode": "808"})
    tracking = stack.upload(customer, [{"serialNumber": "COPY-BAD"}, {"serialNumber": "COPY-OK"}]).rsplit("/", 1)[1]
    check = get_app().status_check
    check.handle(json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode())
    stale = _next_message(stack)  # holds the chain now ...
    check.handle(stale.encode())  # ... and hands it on: the row expects the next message
    successor = _next_message(stack)
    final = json.dumps({"batchTrackingId": tracking, "status": "finished", "devicesStatus": [
        {"serialNumber": "COPY-BAD", "status": "finished_with_errors", "errorCode": "808"},
        {"serialNumber": "COPY-OK", "status": "finished"}]})
    stack.control("script", {"trackingId": tracking, "responses": [f"body:{final}"] * 2})  # now final

    check.handle(stale.encode())  # a copy of the old message (a redelivery, or state copied by hand)

    row = stack.batch_row(customer, tracking)
    assert row is not None and row["outcome"] == "pending" and row["pollCount"] == 2
    assert stack.rows("DEVICE_TABLE_NAME") == [] and stack.peek(stack.env["FAILURE_QUEUE_NAME"]) == []
    watchdog = json.loads(_next_message(stack))["_batchwatch"]
    assert watchdog.get("watch")  # it watches the chain instead
    check.handle(successor.encode())  # the holder finalises
    row = stack.batch_row(customer, tracking)
    assert row is not None and row["outcome"] == "completed_with_failures"
    assert len(stack.drain(stack.env["FAILURE_QUEUE_NAME"])) == 1


def _lose_the_first_answer_to(method: str, succeeded: int) -> list[str]:
    """The first such request to the batch table succeeds, but its client sees 503, as after a gateway
    timeout once the write committed: the SDK retries it (POST and PATCH are retried on 503)."""
    clients = get_app().clients
    lost: list[str] = []
    options = clients._client_options

    def lose(response: Any) -> None:
        request = response.http_request
        conditional = method != "PATCH" or request.headers.get("If-Match")  # not the tracking-index upsert
        if request.method == method and not lost and response.http_response.status_code == succeeded \
                and "/Batch" in request.url and conditional:
            lost.append(request.url)
            response.http_response.status_code = 503

    clients._client_options = lambda service: {**options(service),  # type: ignore[method-assign]
                                               "raw_response_hook": lose}
    clients._tables.clear()
    return lost


def test_a_create_whose_response_was_lost_is_recognised_as_the_chains_own(stack: Stack) -> None:
    """The create succeeds, its answer is lost, the SDK retries and gets 409: the message polls on."""
    lost = _lose_the_first_answer_to("POST", 201)
    stack.control("config", {"queuedSeconds": 600})
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "LOST-0"}]).rsplit("/", 1)[1]
    get_app().status_check.handle(json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode())

    assert lost, "no create response was lost"
    successor = json.loads(_next_message(stack))["_batchwatch"]
    assert "watch" not in successor and successor["pollCount"] == 1  # it polled: no watchdog of its own row
    assert stack.batch_row(customer, tracking)["pollCount"] == 1  # type: ignore[index]


def test_a_row_write_whose_response_was_lost_is_recognised_as_the_chains_own(stack: Stack) -> None:
    """The merge succeeds, its response is lost (503), the SDK retries it and gets 412: the chain carries on."""
    app = get_app()
    stack.control("config", {"queuedSeconds": 600})
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "LOST-1"}]).rsplit("/", 1)[1]
    app.status_check.handle(json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode())
    lost = _lose_the_first_answer_to("PATCH", 204)
    app.status_check.handle(_next_message(stack).encode())  # hands the row to its successor: the answer is lost

    assert lost, "no merge response was lost"
    successor = json.loads(_next_message(stack))
    assert "watch" not in successor["_batchwatch"] and successor["_batchwatch"]["pollCount"] == 2
    row = stack.batch_row(customer, tracking)
    assert row is not None and row["chainToken"] == successor["_batchwatch"]["token"]
    assert row["pollCount"] == 2 and _polls(stack, tracking) == 2


def test_answers_over_the_size_cap_end_the_batch_with_an_alert_naming_the_cause(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_settings(monkeypatch, PARTNER_CENTER_MAX_RESPONSE_BYTES="4096")
    customer = _customer()
    tracking = stack.upload(customer, [{"serialNumber": "HUGE-1"}]).rsplit("/", 1)[1]
    stack.control("script", {"trackingId": tracking, "responses": ["big:100000"] * 3})
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)
    [alert] = _alerts_of(stack, tracking, 1)
    assert row["outcome"] == "response_too_large" and row["pollCount"] == 3
    assert "over the cap of 4096 bytes on 3 polls in a row" in row["lastResult"]
    assert alert["type"] == "batch_outcome" and alert["outcome"] == "response_too_large"
    assert "over the cap of 4096 bytes" in alert["reason"]
    assert "PARTNER_CENTER_MAX_RESPONSE_BYTES" in alert["remediation"]
