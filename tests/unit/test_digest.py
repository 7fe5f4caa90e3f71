"""The daily digest: its figures from stored rows, its message, and how each format shows it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft6Validator

from shared.alert_formats import render
from shared.digest import DIGEST_SOURCE, DigestSettings, digest_chunk, digest_day, summarise
from shared.failure_chunks import BadChunkError, FailureChunk
from tests.functional.fakes import FakeDigestSource

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
DAY = date(2026, 11, 24)
A, B = "47021739-3426-40bf-9601-61b4b6d7c793", "9a1f0b9e-5a52-4a1e-8f3c-2b0c6f0e7d11"
T1, T2, T3, T4 = (f"{n}{n}{n}{n}{n}{n}{n}{n}-0000-4000-8000-000000000000" for n in range(1, 5))


def _day_of_work() -> FakeDigestSource:
    rows = FakeDigestSource()
    at = datetime(2026, 11, 24, 12, tzinfo=UTC)
    rows.batches = [
        {"PartitionKey": A, "RowKey": T1, "outcome": "completed_with_failures", "failedDeviceCount": 3,
         "finalizedAt": at, "firstSeenAt": at},
        {"PartitionKey": B, "RowKey": T2, "outcome": "completed_with_failures", "failedDeviceCount": 1,
         "finalizedAt": at, "firstSeenAt": at},
        {"PartitionKey": B, "RowKey": T3, "outcome": "completed", "failedDeviceCount": 0,
         "finalizedAt": at - timedelta(days=1), "firstSeenAt": at},  # the day before: not counted
        {"PartitionKey": A, "RowKey": T4, "outcome": "pending", "firstSeenAt": NOW - timedelta(hours=30)},
    ]
    rows.devices = {
        T1: [{"failed": True, "errorCode": "808", "errorDescription": "ZtdDeviceAssignedToOtherTenant"}] * 2
        + [{"failed": True, "errorCode": "806", "errorDescription": None}, {"failed": False, "errorCode": None}],
        T2: [{"failed": True, "errorCode": "808", "errorDescription": None}],
    }
    rows.poison["device-failures-poison"] = 2
    return rows


def test_the_digest_counts_the_day_s_batches_failures_pending_and_poison() -> None:
    assert digest_day(NOW) == DAY
    figures = summarise(DAY, _day_of_work(), NOW, DigestSettings())
    assert figures["finalizedByOutcome"] == {"completed_with_failures": 2} and not figures["empty"]
    assert figures["failedDevicesByErrorCode"] == {"808 ZtdDeviceAssignedToOtherTenant": 3,
                                                   "806 ZtdDeviceAlreadyAssigned": 1}
    assert figures["topCustomers"] == [{"customerId": A, "failedDevices": 3, "batches": 1},
                                       {"customerId": B, "failedDevices": 1, "batches": 1}]
    assert figures["pendingOverThreshold"]["count"] == 1
    assert figures["pendingOverThreshold"]["oldest"][0]["batchTrackingId"] == T4
    assert summarise(DAY, _day_of_work(), NOW, DigestSettings(pending_hours=48))["pendingOverThreshold"]["count"] == 0
    assert figures["poisonMessages"]["device-failures-poison"] == 2


def test_a_quiet_day_is_empty_and_says_so_in_one_line() -> None:
    figures = summarise(DAY, FakeDigestSource(), NOW, DigestSettings())
    assert figures["empty"] is True
    document = digest_chunk(DAY, figures).document()
    assert render(document, "generic")["title"].endswith("no batch finalised, none pending too long, "
                                                          "no poison messages")
    assert len(render(document, "slack")["blocks"]) == 1


def test_one_alert_id_per_day_and_the_message_round_trips() -> None:
    figures = summarise(DAY, _day_of_work(), NOW, DigestSettings())
    chunk = digest_chunk(DAY, figures)
    again = digest_chunk(DAY, summarise(DAY, FakeDigestSource(), NOW, DigestSettings()))  # the timer fired again, later
    assert chunk.alert_id == again.alert_id != digest_chunk(DAY + timedelta(days=1), figures).alert_id
    assert chunk.source == DIGEST_SOURCE
    assert FailureChunk.from_json(chunk.to_json()) == chunk


@pytest.mark.parametrize("change", [
    {"digest": None}, {"digest": {"day": "yesterday"}},
    {"digest": {"day": "2026-11-24", "empty": False, "pendingOverThreshold": {"thresholdHours": 24},
                "finalizedByOutcome": {"completed": "many"}}},
    {"digest": {"day": "2026-11-24", "empty": False, "pendingOverThreshold": {"thresholdHours": 24, "count": 0,
                                                                              "oldest": []},
                "finalizedByOutcome": {}, "failedDevicesByErrorCode": {}, "poisonMessages": {},
                "topCustomers": [{"customerId": "<script>", "failedDevices": 1, "batches": 1}]}},
])
def test_a_hostile_digest_message_is_a_bad_chunk(change: dict[str, Any]) -> None:
    quiet = digest_chunk(DAY, summarise(DAY, FakeDigestSource(), NOW, DigestSettings()))
    document = {**json.loads(quiet.to_json()), **change}
    with pytest.raises(BadChunkError):
        FailureChunk.from_json(json.dumps(document))


def test_every_format_shows_every_section() -> None:
    from tests.unit.test_alert_formats import _adaptive_card_schema

    adaptive_card_schema = _adaptive_card_schema()
    document = digest_chunk(DAY, summarise(DAY, _day_of_work(), NOW, DigestSettings())).document()
    for alert_format in ("generic", "teams", "slack"):
        text = json.dumps(render(document, alert_format))
        for expected in ("808 ZtdDeviceAssignedToOtherTenant", A, T4, "device-failures-poison", "2026-11-24"):
            assert expected in text, (alert_format, expected)
    card = dict(render(document, "teams")["attachments"][0]["content"])
    assert card.pop("msteams") == {"width": "Full"}  # Teams' own extension, outside the card schema
    assert not list(Draft6Validator(adaptive_card_schema).iter_errors(card))
    assert len(render(document, "slack")["blocks"]) <= 50


def test_digest_settings_are_checked_and_named() -> None:
    from shared.config import ConfigError, load_digest_settings

    assert load_digest_settings({}) == DigestSettings(pending_hours=24.0, empty_day="say")
    chosen = load_digest_settings({"DIGEST_EMPTY_DAY": "Skip", "DIGEST_PENDING_HOURS": "6"})
    assert chosen == DigestSettings(6.0, "skip")
    for env, name in (({"DIGEST_EMPTY_DAY": "never"}, "DIGEST_EMPTY_DAY"),
                      ({"DIGEST_PENDING_HOURS": "0"}, "DIGEST_PENDING_HOURS")):
        with pytest.raises(ConfigError, match=name):
            load_digest_settings(env)


def test_an_unknown_code_with_a_long_description_still_makes_a_digest_that_is_sent() -> None:
    rows = _day_of_work()
    rows.devices["T1"] = rows.devices[T1] = [{"failed": True, "errorCode": "X" * 300, "errorDescription": "y" * 30_000}]
    chunk = digest_chunk(DAY, summarise(DAY, rows, NOW, DigestSettings()))
    assert FailureChunk.from_json(chunk.to_json()).digest == chunk.digest
    assert max(len(label) for label in chunk.digest["failedDevicesByErrorCode"]) <= 120  # type: ignore[index]


def test_a_resubmitted_batch_pending_again_is_not_counted_as_finalised() -> None:
    rows = _day_of_work()
    rows.batches.append({"PartitionKey": A, "RowKey": "again", "outcome": "pending", "failedDeviceCount": 0,
                         "finalizedAt": datetime(2026, 11, 24, 9, tzinfo=UTC), "firstSeenAt": NOW})
    assert summarise(DAY, rows, NOW, DigestSettings())["finalizedByOutcome"] == {"completed_with_failures": 2}


def test_a_storage_fault_while_the_digest_is_read_is_tried_again() -> None:
    from azure.core.exceptions import ServiceRequestError

    from shared.digest import READ_RETRY_SECONDS, send

    sent: list[str] = []
    pauses: list[float] = []
    chunk = send(DAY, FakeDigestSource(faults=2), sent.append, NOW, DigestSettings(), pauses.append)
    assert chunk is not None and [json.loads(text)["alertId"] for text in sent] == [chunk.alert_id]
    assert pauses == list(READ_RETRY_SECONDS[:2])
    with pytest.raises(ServiceRequestError):
        send(DAY, FakeDigestSource(faults=4), sent.append, NOW, DigestSettings(), pauses.append)
    assert len(sent) == 1
