"""notify_failures end to end: check_batch_status -> failure queue -> notify_failures -> webhook receiver."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.alert_log import CLAIM_SECONDS, AlertAttempt, AlertLog
from shared.app import get_app
from shared.failure_alerts import FailureNotifier
from shared.failure_chunks import BatchContext, failure_chunks
from shared.models import DeviceStatus, Outcome
from shared.webhook import WebhookSender
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _failing_batch(stack: Stack, customer: str, failing: int, fine: int = 1) -> str:
    for index in range(failing):
        stack.control("device-errors", {"serialNumber": f"FAIL-{index:05}", "errorCode": ("808", "806")[index % 2]})
    devices = [{"serialNumber": f"FAIL-{i:05}"} for i in range(failing)]
    devices += [{"serialNumber": f"FINE-{i:05}"} for i in range(fine)]
    return stack.upload(customer, devices).rsplit("/", 1)[1]


def _chunk(tracking: str | None = None, devices: int = 2) -> str:
    context = BatchContext(str(uuid.uuid4()), tracking or str(uuid.uuid4()), Outcome.COMPLETED_WITH_FAILURES,
                           str(uuid.uuid4()), "pytest", device_count=devices, failed_device_count=devices)
    failed = tuple(DeviceStatus(f"SN-{i}", f"PK-{i}", None, "finished_with_errors", "808",
                                "ZtdDeviceAssignedToOtherTenant") for i in range(devices))
    [chunk] = failure_chunks(context, failed)
    return chunk.to_json()


def _send_chunk(stack: Stack, chunk: str) -> None:
    stack.queue(stack.env["FAILURE_QUEUE_NAME"]).send_message(chunk)


def test_a_batch_with_failures_reaches_ops_as_one_alert_with_advice(stack: Stack) -> None:
    customer = str(uuid.uuid4())
    tracking = _failing_batch(stack, customer, failing=2, fine=3)
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking, "source": "nightly"})

    [alert] = wait_for(lambda: stack.alerts() or None, 60, "the alert")
    body = alert["body"]
    assert body["type"] == "device_failures" and body["customerId"] == customer
    assert body["batchTrackingId"] == tracking and body["outcome"] == "completed_with_failures"
    assert body["countsByErrorCode"] == {"806 ZtdDeviceAlreadyAssigned": 1, "808 ZtdDeviceAssignedToOtherTenant": 1}
    assert {d["serialNumber"] for d in body["devices"]} == {"FAIL-00000", "FAIL-00001"}
    assert all(d["remediation"] for d in body["devices"])
    assert alert["headers"]["Idempotency-Key"] == body["alertId"]
    [logged] = wait_for(lambda: [row for row in stack.rows("ALERT_TABLE_NAME") if row["status"] == "sent"] or None,
                        10, "the AlertLog row marked sent")
    assert len(stack.rows("ALERT_TABLE_NAME")) == 1
    assert logged["PartitionKey"] == tracking and logged["RowKey"] == body["alertId"]
    assert logged["status"] == "sent" and logged["webhookHost"] == "127.0.0.1" and logged["httpStatus"] == 200
    assert "secret-token-abc" not in json.dumps(logged, default=str)


def test_every_failed_device_of_a_1500_device_batch_is_in_exactly_one_alert(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    tracking = _failing_batch(stack, customer, failing=1200, fine=300)
    stack.start_host()
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    assert stack.wait_final(customer, tracking, timeout=120)["failedDeviceCount"] == 1200

    def all_alerts() -> list | None:
        alerts = stack.alerts()
        return alerts if alerts and len(alerts) == alerts[0]["body"]["chunks"] else None

    alerts = wait_for(all_alerts, 60, "every chunk's alert")
    serials = Counter(d["serialNumber"] for alert in alerts for d in alert["body"]["devices"])
    assert len(serials) == 1200 and set(serials.values()) == {1}
    assert len({alert["body"]["alertId"] for alert in alerts}) == len(alerts) > 1
    # AlertLog's "sent" is written just after the receiver answered 2xx: wait for it, then compare exactly
    wait_for(lambda: len(stack.rows("ALERT_TABLE_NAME", "PartitionKey eq @t and status eq 'sent'", t=tracking))
             >= len(alerts), 30, "every alert recorded as sent")
    assert len(stack.rows("ALERT_TABLE_NAME", "PartitionKey eq @t", t=tracking)) == len(alerts)


def test_a_redelivered_chunk_sends_no_second_alert(stack: Stack) -> None:
    chunk = _chunk()
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, chunk)
    wait_for(lambda: stack.alerts(), 30, "the first alert")
    _send_chunk(stack, chunk)
    _send_chunk(stack, chunk)
    wait_for(lambda: not stack.peek(stack.env["FAILURE_QUEUE_NAME"]) and stack.host and stack.host.invocations >= 3,
             30, "the copies to be handled")
    assert len(stack.alerts()) == 1


def test_receiver_500_then_200_delivers_once_after_a_requeue(stack: Stack) -> None:
    stack.script_receiver("500")
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, _chunk())

    [alert] = wait_for(lambda: stack.alerts() or None, 30, "the alert after a retry")
    attempts = stack.receiver.receiver.alerts
    assert [a["answer"] for a in attempts] == [500, 200]
    assert attempts[1]["time"] - attempts[0]["time"] >= 0.9  # requeued with a delay, not retried at once
    [logged] = wait_for(lambda: [row for row in stack.rows("ALERT_TABLE_NAME") if row["status"] == "sent"] or None,
                        30, "the alert recorded as sent")
    assert logged["attempts"] == 2 and alert["body"]["chunk"] == 1 and len(stack.rows("ALERT_TABLE_NAME")) == 1


def test_receiver_429_is_retried_after_retry_after(stack: Stack) -> None:
    stack.script_receiver("429:3")
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, _chunk())

    wait_for(lambda: stack.alerts() or None, 30, "the alert after the 429")
    attempts = stack.receiver.receiver.alerts
    assert [a["answer"] for a in attempts] == [429, 200]
    assert attempts[1]["time"] - attempts[0]["time"] >= 2.9


def test_receiver_404_moves_the_chunk_to_poison_with_the_setting_to_fix(stack: Stack) -> None:
    stack.script_receiver("404")
    stack.start_host(functions=["notify_failures"])
    chunk = _chunk()
    _send_chunk(stack, chunk)

    [envelope] = wait_for(lambda: stack.drain(stack.env["FAILURE_QUEUE_NAME"] + "-poison"), 30, "the poison queue")
    poisoned = json.loads(envelope)
    assert "answered 404" in poisoned["reason"] and "ALERT_WEBHOOK_URL" in poisoned["reason"]
    assert json.loads(poisoned["original"])["alertId"] == json.loads(chunk)["alertId"]
    assert stack.alerts() == [] and len(stack.receiver.receiver.alerts) == 1
    [logged] = stack.rows("ALERT_TABLE_NAME")
    assert logged["status"] == "rejected"


def test_an_alert_that_keeps_failing_ends_in_poison_not_lost(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_MAX_ATTEMPTS", "3")
    stack.script_receiver("503", "503", "503")
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, _chunk())

    [envelope] = wait_for(lambda: stack.drain(stack.env["FAILURE_QUEUE_NAME"] + "-poison"), 30, "the poison queue")
    assert "gave up after 3 attempts" in json.loads(envelope)["reason"]
    assert [a["answer"] for a in stack.receiver.receiver.alerts] == [503, 503, 503]


@pytest.mark.parametrize("alert_format", ["teams", "slack"])
def test_teams_and_slack_payloads_reach_the_receiver(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                     alert_format: str) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_FORMAT", alert_format)
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, _chunk(devices=40))

    [alert] = wait_for(lambda: stack.alerts() or None, 30, "the alert")
    if alert_format == "teams":
        assert alert["body"]["attachments"][0]["content"]["type"] == "AdaptiveCard"
    else:
        assert alert["body"]["blocks"][0]["type"] == "header"
    assert "808 ZtdDeviceAssignedToOtherTenant" in json.dumps(alert["body"])


def test_a_malformed_chunk_goes_to_poison_with_its_reason(stack: Stack) -> None:
    stack.start_host(functions=["notify_failures"])
    _send_chunk(stack, json.dumps({"type": "device_failures", "devices": []}))

    [envelope] = wait_for(lambda: stack.drain(stack.env["FAILURE_QUEUE_NAME"] + "-poison"), 30, "the poison queue")
    assert "has no alertId" in json.loads(envelope)["reason"]
    assert stack.alerts() == []


def test_a_webhook_that_never_finishes_its_answer_is_given_up_at_the_post_deadline(stack: Stack) -> None:
    app = get_app()
    sender = WebhookSender(stack.env["ALERT_WEBHOOK_URL"], deadline=1.0)
    notifier = FailureNotifier(app.settings, app.clients, app.failure_notifier.alert_log, sender)
    stack.script_receiver("drip:20")
    chunk = _chunk()
    started = time.monotonic()
    notifier.handle(chunk.encode())
    assert time.monotonic() - started < 10  # the receiver drips for 20 s, each byte well inside the read timeout
    [row] = stack.rows("ALERT_TABLE_NAME")
    assert row["status"] == "retrying" and "no answer within 1 s" in row["lastError"]
    [requeued] = wait_for(lambda: stack.drain(stack.env["FAILURE_QUEUE_NAME"]), 10, "the requeued chunk")
    notifier.handle(requeued.encode())
    assert [alert["body"]["alertId"] for alert in stack.alerts()] == [json.loads(chunk)["alertId"]]
    assert stack.rows("ALERT_TABLE_NAME")[0]["status"] == "sent"


def test_a_copy_whose_claim_was_taken_over_never_overwrites_the_alert_log(stack: Stack) -> None:
    log = AlertLog(get_app().clients, stack.env["ALERT_TABLE_NAME"])
    tracking, alert_id = str(uuid.uuid4()), str(uuid.uuid4())
    start = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    stale = log.claim(tracking, alert_id, start)
    assert stale.granted and not log.claim(tracking, alert_id, start + timedelta(seconds=60)).granted
    fresh = log.claim(tracking, alert_id, start + timedelta(seconds=CLAIM_SECONDS + 1))  # the first looks dead
    assert fresh.granted and fresh.etag != stale.etag
    attempt = AlertAttempt("sent", "device_failures", "completed_with_failures", "c", 1, 1, 1, "generic", 1, "")
    assert log.record(tracking, alert_id, attempt, fresh.etag)
    assert not log.record(tracking, alert_id, replace(attempt, status="retrying", last_error="late"), stale.etag)
    [row] = stack.rows("ALERT_TABLE_NAME")
    assert row["status"] == "sent" and "lastError" not in row
    assert log.claim(tracking, alert_id, start + timedelta(seconds=600)).already_sent


def test_a_customer_s_route_takes_its_alerts_to_its_own_webhook_in_its_format(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    routed, other = str(uuid.uuid4()), str(uuid.uuid4())
    monkeypatch.setenv("ALERT_ROUTES", json.dumps(
        [{"customer": routed, "webhook": "ALERT_WEBHOOK_URL_ROUTED", "format": "slack"}]))
    monkeypatch.setenv("ALERT_WEBHOOK_URL_ROUTED", stack.receiver.url + "/hooks/routed-team")
    routed_batch, other_batch = _failing_batch(stack, routed, failing=1), _failing_batch(stack, other, failing=1)
    stack.start_host()
    for customer, tracking in ((routed, routed_batch), (other, other_batch)):
        stack.send({"customerId": customer, "batchTrackingId": tracking})

    alerts = wait_for(lambda: stack.alerts() if len(stack.alerts()) >= 2 else None, 60, "both alerts")
    by_path = {alert["path"]: alert["body"] for alert in alerts}
    assert set(by_path) == {"/hooks/routed-team", "/hooks/secret-token-abc"}
    assert "blocks" in by_path["/hooks/routed-team"] and routed_batch in json.dumps(by_path["/hooks/routed-team"])
    assert by_path["/hooks/secret-token-abc"]["batchTrackingId"] == other_batch


def test_the_host_runs_the_digest_timer_and_each_day_s_digest_reaches_ops_once(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="local.host")
    monkeypatch.setenv("DIGEST_SCHEDULE", "*/2 * * * * *")  # every 2 seconds: the same day's digest, again and again
    stack.start_host(functions=["send_digest", "notify_failures"])
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()

    def digests() -> list[dict[str, object]]:
        return [alert["body"] for alert in stack.alerts() if alert["body"].get("type") == "daily_digest"]

    wait_for(lambda: caplog.text.count("Executed 'Functions.send_digest' (Succeeded") >= 3 or None, 60,
             "three firings")
    wait_for(lambda: not stack.peek(stack.env["FAILURE_QUEUE_NAME"]) or None, 30, "every copy handled")
    [digest] = digests()
    assert digest["day"] == yesterday and "poisonMessages" in digest and "title" in digest
    sent = [row for row in stack.rows("ALERT_TABLE_NAME") if row["RowKey"] == digest["alertId"]]
    assert [row["status"] for row in sent] == ["sent"]


@pytest.mark.parametrize("empty_day", ["say", "skip"])
def test_a_quiet_day_s_digest_says_so_or_is_skipped_as_set(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                          empty_day: str) -> None:
    from shared import digest

    monkeypatch.setenv("DIGEST_EMPTY_DAY", empty_day)
    digest.run(now=datetime.now(UTC) + timedelta(days=30))  # a day when nothing happened in these tables
    queued = [json.loads(message.content) for message in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    if empty_day == "skip":
        assert queued == []
    else:
        [chunk] = queued
        assert chunk["type"] == "daily_digest" and chunk["digest"]["empty"] is True
        assert chunk["digest"]["poisonMessages"] == {f"{stack.env['STATUS_QUEUE_NAME']}-poison": 0,
                                                     f"{stack.env['FAILURE_QUEUE_NAME']}-poison": 0}


def test_a_route_whose_webhook_cannot_be_used_is_reported_when_the_function_loads(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ALERT_ROUTES", json.dumps([{"source": "nightly", "webhook": "ALERT_WEBHOOK_URL_NIGHTLY"}]))
    stack.start_host(functions=["notify_failures"])
    wait_for(lambda: "ALERT_WEBHOOK_URL_NIGHTLY is not set" in caplog.text or None, 30,
             "the broken route reported at start-up, before any alert")
