"""No secret or bearer token in any log line at any level; TLS and loopback rules hold."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from local.fake_entra import FakeEntra
from shared.app import build_app
from shared.auth import build_credential
from shared.config import load_settings
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration

CLIENT_SECRET = "FAKE-SECRET-7f3a9c"
WEBHOOK_SECRET_PATH = "hooks/WEBHOOK-SECRET-51d2e8"


def test_a_full_run_logs_no_secret_token_or_webhook_url_at_any_level(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {"PARTNER_CENTER_AUTH": "client_secret", "PARTNER_CENTER_TENANT_ID": "contoso.onmicrosoft.com",
                        "PARTNER_CENTER_CLIENT_ID": "app-id", "PARTNER_CENTER_CLIENT_SECRET": CLIENT_SECRET,
                        "ALERT_WEBHOOK_URL": f"{stack.receiver.url}/{WEBHOOK_SECRET_PATH}"}.items():
        monkeypatch.setenv(name, value)
    stack.control("config", {"queuedSeconds": 0, "processingSeconds": 0})
    customer = str(uuid.uuid4())
    stack.control("device-errors", {"serialNumber": "LEAK-1", "errorCode": "808"})
    tracking = stack.upload(customer, [{"serialNumber": "LEAK-1"}, {"serialNumber": "FINE-1"}]).rsplit("/", 1)[1]
    entra = FakeEntra()
    import os

    settings = load_settings(os.environ)
    stack.simulator.simulator.tokens = {"entra-token-2"}  # the first token is refused: a 401 and a refresh
    app = build_app(os.environ, credential_factory=lambda: build_credential(settings.partner_center,
                                                                            transport=entra.transport()))
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("azure", "urllib3", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(noisy).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)

    app.status_check.handle(json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode())
    [chunk] = stack.drain(stack.env["FAILURE_QUEUE_NAME"])
    app.failure_notifier.handle(chunk.encode())

    wait_for(lambda: stack.alerts() or None, 10, "the alert")
    assert entra.token_requests and entra.token_requests[0]["client_secret"] == [CLIENT_SECRET]
    assert len(caplog.records) > 20  # the run did log, at every level
    text = "\n".join(f"{record.getMessage()} {record.args!r}" for record in caplog.records)
    for secret in (CLIENT_SECRET, "entra-token-1", "entra-token-2", WEBHOOK_SECRET_PATH):
        assert secret not in text, f"{secret} appeared in a log line"


def test_simulator_auth_and_plain_http_are_refused_away_from_loopback() -> None:
    from shared.config import ConfigError

    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    with pytest.raises(ConfigError, match="loopback"):
        load_settings({**base, "PARTNER_CENTER_AUTH": "simulator",
                       "PARTNER_CENTER_BASE_URL": "https://api.partnercenter.microsoft.com"})
    with pytest.raises(ConfigError, match="https"):
        load_settings({**base, "PARTNER_CENTER_AUTH": "default", "PARTNER_CENTER_BASE_URL": "http://192.168.1.5"})
    with pytest.raises(ConfigError, match="https"):
        load_settings({**base, "PARTNER_CENTER_AUTH": "default", "ALERT_WEBHOOK_URL": "http://hooks.example.com/x"})


def test_tls_verification_is_never_turned_off() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("shared/**/*.py"), *root.glob("check_batch_status/*.py"),
                 *root.glob("notify_failures/*.py")]:
        text = path.read_text()
        for forbidden in ("verify=False", "connection_verify=False", "CERT_NONE", "_create_unverified_context"):
            assert forbidden not in text, f"{path} turns TLS verification off ({forbidden})"


def test_text_from_partner_center_cannot_forge_or_flood_a_log_line(stack: Stack,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from shared.app import get_app

    customer = str(uuid.uuid4())
    tracking = stack.upload(customer, [{"serialNumber": "LOG-1"}]).rsplit("/", 1)[1]
    forged = "processing\n2026-11-24 10:00:00 ERROR forged line \x1b[31m\u2028" + "z" * 5000
    other = "x\r\nINFO another forged line"
    answers = [{"status": forged}, {"status": "queued", "batchTrackingId": other}]
    stack.control("script", {"trackingId": tracking, "responses": ["body:" + json.dumps(a) for a in answers]})
    caplog.set_level(logging.INFO)
    check = get_app().status_check
    message = json.dumps({"customerId": customer, "batchTrackingId": tracking}).encode()
    check.handle(message)  # polls: the status text is logged
    [successor] = wait_for(lambda: stack.drain(stack.env["STATUS_QUEUE_NAME"]), 10, "the requeued message")
    check.handle(successor.encode())  # polls: a body for another batch is logged as a transient fault

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("batchwatch")]
    assert any("forged line" in line for line in lines) and any("another forged line" in line for line in lines)
    for line in lines:
        assert not any(char in line for char in "\n\r\x1b\u2028"), line
        assert len(line) < 3000, f"a line of {len(line)} characters"
    assert any("\\x0a2026-11-24 10:00:00 error forged line \\x1b[31m\\u2028" in line for line in lines)
