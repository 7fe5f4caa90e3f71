"""A wrong setting never poisons a message: the function that needs it holds its messages back and logs the
setting; the other function works on; once the setting is fixed everything completes. And a message whose
last delivery fails reaches the poison queue in a never-expiring envelope with its reason."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from shared import invocation
from shared.app import reset_app
from shared.failure_chunks import BatchContext, batch_outcome_chunk
from shared.models import Outcome
from tests.conftest import Stack, wait_for

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://batchwatch-kv.vault.azure.net/secrets/alert-webhook/)"

# (the setting, its wrong value (None: not set), the function that needs it, the words its error has)
FAULTS = [
    ("PARTNER_CENTER_AUTH", None, "check_batch_status", "PARTNER_CENTER_AUTH is not set"),
    ("POLL_MAX_DELAY_SECONDS", "ten minutes", "check_batch_status", "POLL_MAX_DELAY_SECONDS must be a number"),
    ("ALERT_WEBHOOK_URL", KEY_VAULT_REFERENCE, "notify_failures", "Key Vault reference that did not resolve"),
    ("ALERT_WEBHOOK_FORMAT", "email", "notify_failures", "ALERT_WEBHOOK_FORMAT must be one of"),
    ("ALERT_TABLE_NAME", "alert_log", "notify_failures", "ALERT_TABLE_NAME must be a table name"),
    ("PARTNER_CENTER_AUTH", "@Microsoft.KeyVault(VaultName=batchwatch-kv;SecretName=auth)", "check_batch_status",
     "Key Vault reference that did not resolve"),
]


@pytest.mark.parametrize(("setting", "wrong", "function", "error"), FAULTS,
                         ids=[f"{fault[0]}-{index}" for index, fault in enumerate(FAULTS)])
def test_a_wrong_setting_holds_messages_back_without_poison_until_it_is_fixed(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: str,
        wrong: str | None, function: str, error: str) -> None:
    right = stack.env.get(setting)
    monkeypatch.setenv("SETTINGS_RETRY_SECONDS", "1")
    if wrong is None:
        monkeypatch.delenv(setting)
    else:
        monkeypatch.setenv(setting, wrong)
    reset_app()
    customer = str(uuid.uuid4())
    stack.control("device-errors", {"serialNumber": "BAD-1", "errorCode": "808"})
    location = stack.upload(customer, [{"serialNumber": "GOOD-1"}, {"serialNumber": "BAD-1"}])
    tracking = location.rsplit("/", 1)[1]
    caplog.set_level(logging.INFO, logger="batchwatch")

    other = str(uuid.uuid4())
    if function == "check_batch_status":  # an alert from an earlier batch is waiting: it must still go out
        earlier = batch_outcome_chunk(BatchContext(other, str(uuid.uuid4()), Outcome.TIMED_OUT, None, None), "late")
        stack.queue(stack.env["FAILURE_QUEUE_NAME"]).send_message(earlier.to_json())

    stack.start_host()
    stack.send({"location": location})
    wait_for(lambda: any(error in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records), 30,
             f"an error naming {setting}")
    if function == "notify_failures":
        stack.wait_final(customer, tracking)  # polling goes on; the alert waits
    else:
        [alert] = wait_for(lambda: stack.alerts(), 30, "the earlier batch's alert, sent while polling waits")
        assert alert["body"]["customerId"] == other
    time.sleep(3)  # several rounds of holding back
    stack.stop_host()

    held = [r for r in caplog.records if r.name == f"batchwatch.{function}" and error in r.getMessage()]
    assert held and all(r.levelno in (logging.ERROR, logging.INFO) for r in held)
    assert sum(r.levelno == logging.ERROR for r in held) <= 1 + 3 + 2  # once per 1 s interval, not per message
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []
    assert stack.peek(stack.env["FAILURE_QUEUE_NAME"] + "-poison") == []
    assert [alert["body"]["customerId"] for alert in stack.alerts()] == ([other] if function == "check_batch_status"
                                                                         else [])
    if function == "check_batch_status":
        assert stack.batch_row(customer, tracking) is None  # nothing polled: the message waited

    if right is None:
        monkeypatch.delenv(setting)
    else:
        monkeypatch.setenv(setting, right)
    reset_app()  # on Azure, changing an app setting restarts the app
    stack.start_host()
    row = stack.wait_final(customer, tracking)
    alerts = wait_for(lambda: [a for a in stack.alerts() if a["body"]["customerId"] == customer], 30, "the alert")
    assert row["outcome"] == "completed_with_failures"
    assert [device["serialNumber"] for alert in alerts for device in alert["body"].get("devices", [])] == ["BAD-1"]
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []
    assert stack.peek(stack.env["FAILURE_QUEUE_NAME"] + "-poison") == []


def test_a_last_delivery_that_fails_is_poisoned_in_a_never_expiring_envelope_with_its_reason(stack: Stack) -> None:
    """The host would move it with a 7-day time-to-live and no reason; the adapter does it instead."""
    limit = invocation.max_dequeue_count()
    function = invocation.QueueFunction("check_batch_status", "status_queue", lambda: _crashing_handler)
    invocation.run(function, b'{"customerId": "x"}', "m-1", limit - 1 + 1)  # the last delivery
    with pytest.raises(RuntimeError):
        invocation.run(function, b'{"customerId": "y"}', "m-2", limit - 1)  # an earlier one: the host retries

    poison = stack.queue(stack.env["STATUS_QUEUE_NAME"] + "-poison")
    messages = list(poison.peek_messages(max_messages=32))
    assert len(messages) == 1
    envelope = json.loads(messages[0].content)
    assert envelope["original"] == '{"customerId": "x"}'
    assert "RuntimeError: the table was on fire" in envelope["reason"]
    assert f"dequeue count {limit}, maxDequeueCount {limit}" in envelope["reason"]
    received = list(poison.receive_messages(max_messages=1))
    assert received[0].expires_on is None or received[0].expires_on.year >= 9999  # never expires


def _crashing_handler(body: bytes, message_id: str, dequeue_count: int) -> None:
    raise RuntimeError("the table was on fire")


def test_the_error_is_logged_once_per_interval_however_many_messages_wait(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SETTINGS_RETRY_SECONDS", "2")
    monkeypatch.delenv("PARTNER_CENTER_AUTH")
    reset_app()
    caplog.set_level(logging.INFO, logger="batchwatch")
    for _ in range(20):
        stack.send({"customerId": str(uuid.uuid4()), "batchTrackingId": str(uuid.uuid4())})
    stack.start_host()
    started = time.monotonic()
    wait_for(lambda: sum("settings still wrong" in r.getMessage() for r in caplog.records) >= 19, 30,
             "every message held back")
    time.sleep(2)
    stack.stop_host()
    elapsed = time.monotonic() - started
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "PARTNER_CENTER_AUTH" in r.getMessage()]
    assert 1 <= len(errors) <= elapsed / 2 + 1  # once per 2 s interval, not once per message (20 messages)
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []
