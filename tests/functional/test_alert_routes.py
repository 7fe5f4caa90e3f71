"""ALERT_ROUTES: each alert reaches the webhook of the first route that matches it; a broken route's alerts wait."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest

from tests.functional.host import FAILURE_QUEUE, STATUS_QUEUE, App
from tests.functional.scripts import devices, finishes

CONTOSO = "47021739-3426-40bf-9601-61b4b6d7c793"
FABRIKAM = "9a1f0b9e-5a52-4a1e-8f3c-2b0c6f0e7d11"
ROUTES = json.dumps([
    {"customer": FABRIKAM.upper(), "webhook": "ALERT_WEBHOOK_URL_FABRIKAM", "format": "slack"},
    {"source": "nightly-upload", "webhook": "ALERT_WEBHOOK_URL_NIGHTLY", "format": "teams"},
])


def _failing_batch(app: App, customer: str, source: str | None = None) -> str:
    tracking = str(uuid.uuid4())
    app.partner_center.scripts[tracking] = finishes(app.clock(), timedelta(minutes=1), devices(["A", "B"], ["B"]))
    message = {"customerId": customer, "batchTrackingId": tracking, **({"source": source} if source else {})}
    app.queues.put(STATUS_QUEUE, json.dumps(message))
    return tracking


def test_each_alert_goes_to_the_first_route_that_matches_and_the_rest_to_the_default() -> None:
    app = App.build(ALERT_ROUTES=ROUTES, ALERT_WEBHOOK_URL_FABRIKAM="https://fabrikam.test/hook",
                    ALERT_WEBHOOK_URL_NIGHTLY="https://nightly.test/hook")
    default = _failing_batch(app, CONTOSO)
    by_customer = _failing_batch(app, FABRIKAM)
    by_source = _failing_batch(app, CONTOSO, "nightly-upload")
    both = _failing_batch(app, FABRIKAM, "nightly-upload")  # the customer's route comes first
    app.run_until_idle()

    assert [alert["batchTrackingId"] for alert in app.webhook.delivered] == [default]
    fabrikam = app.route_webhooks["https://fabrikam.test/hook"].delivered
    nightly = app.route_webhooks["https://nightly.test/hook"].delivered
    assert sorted(_tracking_in_slack(alert) for alert in fabrikam) == sorted([by_customer, both])
    assert all("blocks" in alert for alert in fabrikam)
    assert [alert["attachments"][0]["contentType"] for alert in nightly] == ["application/vnd.microsoft.card.adaptive"]
    assert by_source in json.dumps(nightly)
    sent = {key[0]: row for key, row in app.alert_log.rows.items()}
    assert {tracking: (row["webhookHost"], row["format"]) for tracking, row in sent.items()} == {
        default: ("webhook.test", "generic"), by_customer: ("fabrikam.test", "slack"),
        both: ("fabrikam.test", "slack"), by_source: ("nightly.test", "teams")}


def _tracking_in_slack(alert: dict[str, object]) -> str:
    text = json.dumps(alert)
    return next(word for word in text.replace("\\n", " ").replace('"', " ").split() if _is_guid(word)
                and word not in (CONTOSO, FABRIKAM))


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def test_a_route_whose_webhook_is_not_set_is_reported_and_its_alerts_wait_until_it_is(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app = App.build(ALERT_ROUTES=ROUTES, ALERT_WEBHOOK_URL_NIGHTLY="http://nightly.test/hook")  # not https
    reported = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert any(f"the route for customer {FABRIKAM}" in line and "ALERT_WEBHOOK_URL_FABRIKAM is not set" in line
               for line in reported)
    assert any("ALERT_WEBHOOK_URL_NIGHTLY must use https" in line for line in reported)
    waiting = _failing_batch(app, FABRIKAM)
    sent = _failing_batch(app, CONTOSO)
    app.run_until_idle(horizon=timedelta(hours=2))

    assert [alert["batchTrackingId"] for alert in app.webhook.delivered] == [sent]  # never to the default
    assert app.route_webhooks == {} and app.queues.contents(FAILURE_QUEUE + "-poison") == []
    assert [json.loads(body)["batchTrackingId"] for body in app.queues.contents(FAILURE_QUEUE)] == [waiting]
    assert not [key for key in app.alert_log.rows if key[0] == waiting]
    assert any("alert waits" in record.getMessage() and getattr(record, "correlationId", None)
               for record in caplog.records)

    app.restart_notifier(ALERT_ROUTES=ROUTES, ALERT_WEBHOOK_URL_FABRIKAM="https://fabrikam.test/hook",
                         ALERT_WEBHOOK_URL_NIGHTLY="https://nightly.test/hook")
    app.run_until_idle()
    [alert] = app.route_webhooks["https://fabrikam.test/hook"].delivered
    assert waiting in json.dumps(alert) and app.queues.contents(FAILURE_QUEUE) == []


def test_the_digest_is_sent_once_however_often_the_timer_fires_and_a_source_route_takes_it() -> None:
    from datetime import UTC, date, datetime

    from shared.digest import DIGEST_SOURCE, DigestSettings, digest_chunk, summarise
    from tests.functional.fakes import FakeDigestSource

    day = date(2026, 11, 24)
    now = datetime(2026, 11, 25, 7, tzinfo=UTC)
    quiet = digest_chunk(day, summarise(day, FakeDigestSource(), now, DigestSettings()))
    app = App.build()
    for _ in range(3):  # three firings of the timer (or three instances)
        app.queues.put(FAILURE_QUEUE, quiet.to_json())
    app.run_until_idle()
    [sent] = app.webhook.delivered
    assert sent["type"] == "daily_digest" and sent["day"] == "2026-11-24" and sent["empty"] is True

    routed = App.build(ALERT_ROUTES=json.dumps([{"source": DIGEST_SOURCE, "webhook": "OPS_LEAD", "format": "teams"}]),
                       OPS_LEAD="https://ops-lead.test/hook")
    routed.queues.put(FAILURE_QUEUE, quiet.to_json())
    routed.run_until_idle()
    assert routed.webhook.delivered == [] and len(routed.route_webhooks["https://ops-lead.test/hook"].delivered) == 1
