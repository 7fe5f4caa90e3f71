"""check_batch_status end to end: local host, Azurite and the simulator over HTTP."""

from __future__ import annotations

import itertools
import json
import os
import uuid

import pytest

from shared.app import get_app
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _customer() -> str:
    return str(uuid.uuid4())


def _tracking_id(location: str) -> str:
    return location.rsplit("/", 1)[-1]


def test_batch_that_finishes_after_several_polls_is_stored_with_requeue_delays(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 2, "processingSeconds": 3})
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": f"SN-{i}", "productKey": f"PK-{i}"} for i in range(3)])
    tracking = _tracking_id(location)
    stack.start_host()
    stack.send({"location": location, "source": "pytest"})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "completed"
    assert row["status"] == "finished"
    assert row["deviceCount"] == 3 and row["failedDeviceCount"] == 0
    assert row["pollCount"] >= 3
    assert row["source"] == "pytest"
    devices = stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @tid", tid=tracking)
    assert sorted(d["serialNumber"] for d in devices) == ["SN-0", "SN-1", "SN-2"]
    assert all(d["failed"] is False and d["customerId"] == customer for d in devices)
    gets = [r for r in stack.sim_requests() if r["method"] == "GET" and tracking in r["path"]]
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(gets)]
    assert gaps and min(gaps) >= 0.9, f"polls were not spaced by the requeue delay: {gaps}"
    [batch_row] = stack.batch_rows()
    assert batch_row["correlationId"] and batch_row["RowKey"] == tracking
    assert json.loads(json.dumps(row, default=str))  # row is plain data


def test_finished_batch_with_a_failed_device_fans_out_the_failure(stack: Stack) -> None:
    customer = _customer()
    stack.control("device-errors", {"serialNumber": "BAD-1", "errorCode": "808"})
    location = stack.upload(customer, [{"serialNumber": "GOOD-1"}, {"serialNumber": "BAD-1"}])
    tracking = _tracking_id(location)
    stack.start_host()
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["status"] == "finished"  # the batch says finished ...
    assert row["outcome"] == "completed_with_failures"  # ... but a device inside it failed
    assert row["failedDeviceCount"] == 1
    failed = stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @tid and failed eq true", tid=tracking)
    assert [(d["serialNumber"], d["errorCode"], d["errorDescription"]) for d in failed] == [
        ("BAD-1", "808", "ZtdDeviceAssignedToOtherTenant")
    ]


def _gets(stack: Stack, tracking: str) -> list[dict]:
    return [r for r in stack.sim_requests() if r["method"] == "GET" and tracking in r["path"]]


def test_all_devices_fine_sends_nothing_to_the_failure_queue(stack: Stack) -> None:
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "OK-1"}, {"productKey": "PK-ONLY"}])
    tracking = _tracking_id(location)
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "completed" and row["failedDeviceCount"] == 0
    assert stack.peek(stack.env["FAILURE_QUEUE_NAME"]) == []


def test_throttling_waits_at_least_retry_after_then_succeeds(stack: Stack) -> None:
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "T-1"}])
    tracking = _tracking_id(location)
    stack.control("script", {"trackingId": tracking, "responses": ["429:3", "429:3"]})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "completed"
    gets = _gets(stack, tracking)
    assert gets[1]["time"] - gets[0]["time"] >= 2.9  # Retry-After 3, above the 1-2 s schedule
    assert gets[2]["time"] - gets[1]["time"] >= 2.9


def test_bursts_of_5xx_are_retried_and_then_requeued(stack: Stack) -> None:
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "F-1"}])
    tracking = _tracking_id(location)
    stack.control("script", {"trackingId": tracking, "responses": ["500", "503", "502", "503", "500"]})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "completed"
    # three in-process tries for the first poll, then a requeue; the second poll retries twice more
    assert len(_gets(stack, tracking)) == 6 and row["pollCount"] == 2


def test_not_found_right_after_upload_is_normal(stack: Stack) -> None:
    stack.control("config", {"notFoundSeconds": 2.5})
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "N-1"}])
    tracking = _tracking_id(location)
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "completed"
    assert row["pollCount"] >= 2


def test_not_found_past_the_grace_is_final_and_raises_an_outcome_alert(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOT_FOUND_GRACE_SECONDS", "3")
    customer, tracking = _customer(), str(uuid.uuid4())
    stack.start_host(functions=["check_batch_status"])
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "not_found" and row["pollCount"] >= 2
    [alert] = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    assert alert["type"] == "batch_outcome" and alert["outcome"] == "not_found"
    assert alert["batchTrackingId"] == tracking and alert["customerId"] == customer


def test_persistent_401_ends_as_access_denied_after_refreshing_the_token(stack: Stack) -> None:
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "D-1"}])
    tracking = _tracking_id(location)
    stack.control("tokens", {"accepted": ["some-other-token"]})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "access_denied" and row["pollCount"] == 3
    assert len(_gets(stack, tracking)) == 6  # each poll: the 401, a new token, the 401 again
    [alert] = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    assert alert["outcome"] == "access_denied"


def test_a_passing_403_does_not_end_the_batch_but_a_persistent_one_does(stack: Stack) -> None:
    customer = _customer()
    passing, persistent = (_tracking_id(stack.upload(customer, [{"serialNumber": f"P-{i}"}])) for i in range(2))
    stack.control("script", {"trackingId": passing, "responses": ["403"]})
    stack.control("script", {"trackingId": persistent, "responses": ["403"] * 3})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"customerId": customer, "batchTrackingId": passing})
    stack.send({"customerId": customer, "batchTrackingId": persistent})

    assert stack.wait_final(customer, passing)["outcome"] == "completed"
    assert stack.wait_final(customer, persistent)["outcome"] == "access_denied"


def test_deadline_reached_is_timed_out(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_DEADLINE_SECONDS", "4")
    stack.control("config", {"queuedSeconds": 3600})
    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "SLOW-1"}])
    tracking = _tracking_id(location)
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["outcome"] == "timed_out" and row["status"] == "queued"
    assert (row["finalizedAt"] - row["firstSeenAt"]).total_seconds() >= 4


BAD_MESSAGES = {
    "not JSON": "this is not JSON",
    "base64 of garbage": "//79/Pv6+fj39vX08/Lx8A==",
    "missing ids": json.dumps({"source": "upload-job"}),
    "non-GUID ids": json.dumps({"customerId": "contoso", "batchTrackingId": "batch-1"}),
    "path characters in ids": json.dumps({"customerId": "47021739-3426-40bf-9601-61b4b6d7c793",
                                          "batchTrackingId": "../../customers/x?$top=1#"}),
    "JSON array": "[1, 2, 3]",
    "near 64 KiB": json.dumps({"customerId": "47021739-3426-40bf-9601-61b4b6d7c793",
                               "batchTrackingId": "0127ed8e-ff72-4983-a3d8-e8d8bd378932", "source": "x" * 63_000}),
}


def test_bad_messages_go_to_poison_with_a_reason_and_nothing_is_lost(stack: Stack) -> None:
    stack.start_host(functions=["check_batch_status"])
    for body in BAD_MESSAGES.values():
        stack.send(body)
    poison = stack.env["STATUS_QUEUE_NAME"] + "-poison"

    def envelopes() -> list[dict] | None:
        found = [json.loads(text) for text in stack.drain(poison)]
        return found or None

    collected: list[dict] = []
    wait_for(lambda: collected.extend(envelopes() or []) or len(_reassemble(collected)) >= len(BAD_MESSAGES),
             30, "every bad message in the poison queue")
    originals = _reassemble(collected)
    assert sorted(originals) == sorted(BAD_MESSAGES.values())
    assert all(envelope["reason"] and envelope["rejectedAt"] for envelope in collected)
    reasons = {original: envelope["reason"] for envelope in collected for original in [envelope["original"]]}
    assert any("not a GUID" in reason for reason in reasons.values())
    assert stack.host is not None and stack.host.failures == 0  # rejected without raising
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"]) == []
    assert stack.rows("BATCH_TABLE_NAME") == []  # neither a batch row nor an index row


def _reassemble(envelopes: list[dict]) -> list[str]:
    whole = [e["original"] for e in envelopes if "part" not in e]
    parts: dict[str, list[dict]] = {}
    for envelope in envelopes:
        if "part" in envelope:
            parts.setdefault(envelope["rejectionId"], []).append(envelope)
    for group in parts.values():
        if len(group) == group[0]["parts"]:
            whole.append("".join(e["original"] for e in sorted(group, key=lambda e: e["part"])))
    return whole


AWKWARD_SERIALS = ["SN/001", "SN\\002", "SN#003", "SN?004", "Ünïcödé-序列-005", "tab\tand\nnewline-006",
                   "ctrl\x01\x1f\x7f-007", "quote'n\"-008", "x" * 600]


def test_awkward_serial_numbers_are_stored_verbatim_under_valid_keys(stack: Stack) -> None:
    customer = _customer()
    devices = [{"serialNumber": serial} for serial in AWKWARD_SERIALS] + [{"productKey": "PK-NO-SERIAL"}]
    stack.control("device-errors", {"serialNumber": "SN#003", "errorCode": "808"})
    location = stack.upload(customer, devices)
    tracking = _tracking_id(location)
    stack.start_host(functions=["check_batch_status"])
    stack.send({"location": location})

    row = stack.wait_final(customer, tracking)

    assert row["deviceCount"] == len(devices) and row["failedDeviceCount"] == 1
    stored = stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @tid", tid=tracking)
    assert sorted(d.get("serialNumber", "") for d in stored) == sorted([*AWKWARD_SERIALS, ""])
    assert [d["productKey"] for d in stored if "serialNumber" not in d] == ["PK-NO-SERIAL"]
    history = stack.rows("DEVICE_HISTORY_TABLE_NAME")
    assert len(history) == len(devices) and {h["RowKey"] for h in history} == {tracking}
    assert sorted(h.get("serialNumber", "") for h in history) == sorted([*AWKWARD_SERIALS, ""])
    from shared.device_keys import serial_partition_key

    [by_serial] = stack.rows("DEVICE_HISTORY_TABLE_NAME", "PartitionKey eq @pk",
                             pk=serial_partition_key("SN#003"))
    assert by_serial["serialNumber"] == "SN#003" and by_serial["errorCode"] == "808"
    [chunk] = [json.loads(m.content) for m in stack.peek(stack.env["FAILURE_QUEUE_NAME"])]
    assert [d["serialNumber"] for d in chunk["devices"]] == ["SN#003"]


def test_every_message_batchwatch_sends_never_expires(stack: Stack) -> None:
    stack.control("config", {"queuedSeconds": 30, "processingSeconds": 0})
    customer = _customer()
    stack.control("device-errors", {"serialNumber": "TTL-BAD", "errorCode": "808"})
    waiting = _tracking_id(stack.upload(customer, [{"serialNumber": "TTL-1"}]))
    check = get_app().status_check
    check.handle(json.dumps({"customerId": customer, "batchTrackingId": waiting}).encode())  # requeued, delayed
    stack.control("config", {"queuedSeconds": 0})
    final = _tracking_id(stack.upload(customer, [{"serialNumber": "TTL-BAD"}]))
    check.handle(json.dumps({"customerId": customer, "batchTrackingId": final}).encode())

    for name in (stack.env["STATUS_QUEUE_NAME"], stack.env["FAILURE_QUEUE_NAME"]):
        queue = stack.queue(name)
        messages = wait_for(lambda queue=queue: list(queue.receive_messages(max_messages=32, visibility_timeout=30)),
                            10, f"a message in {name}")
        assert all(message.expires_on.year == 9999 for message in messages), name  # the service's "never"


def _hostile_final_body(tracking: str) -> str:
    """A final answer holding what Table Storage refuses as it is (see shared/table_values.py)."""
    wide = {f"field{i}": "x" * 5000 for i in range(250)}  # 250 properties, 2.5 MB as UTF-16
    devices = [
        {"serialNumber": "BIG-1", "status": "finished", "hugeCount": 2**40, "hugerCount": 2**70,
         "ratio": "__1e400__", "longText": "😀" * 20_000, "a" * 300: "a name too long for a property"},
        {"serialNumber": "WIDE-1", "status": "finished", **wide},
        {"serialNumber": "FAIL-1", "status": "finished_with_errors", "errorCode": "808",
         "errorDescription": "ZtdDeviceAssignedToOtherTenant " + "<&>" * 30_000},
        *({"serialNumber": f"NOTE-{i}", "status": "finished", "note": "y" * 30_000} for i in range(150)),
    ]
    return json.dumps({"batchTrackingId": tracking, "status": "finished", "startedTime": "0001-01-01T00:00:00",
                       "completedTime": "2026-11-24T10:00:00", "devicesStatus": devices}
                      ).replace('"__1e400__"', "1e400")  # valid JSON that no float holds


def test_dates_and_values_table_storage_refuses_are_stored_as_what_fits(stack: Stack) -> None:
    customer = _customer()
    tracking = _tracking_id(stack.upload(customer, [{"serialNumber": "ANY"}]))
    never_set = json.dumps({"status": "queued", "startedTime": "0001-01-01T00:00:00",
                            "completedTime": "0001-01-01T00:00:00+01:00"})
    stack.control("script", {"trackingId": tracking, "responses": [
        f"body:{never_set}", f"body:{never_set}", f"body:{_hostile_final_body(tracking)}"]})
    stack.start_host(functions=["check_batch_status"])
    stack.send({"customerId": customer, "batchTrackingId": tracking})

    row = stack.wait_final(customer, tracking)
    assert row["outcome"] == "completed_with_failures" and row["deviceCount"] == 153
    assert "startedTime" not in row and row["completedTime"].year == 2026
    assert row["pollCount"] == 3  # the two queued answers with a never-set date were ordinary polls
    devices = {d["serialNumber"]: d for d in stack.rows("DEVICE_TABLE_NAME", "PartitionKey eq @t", t=tracking)}
    big = devices["BIG-1"]
    assert big["hugeCount"].value == 2**40 and big["hugerCount"] == str(2**70) and big["ratio"] == "inf"
    assert big["longText"] == "😀" * 16_000 and "longText" in big["truncatedFields"]
    assert json.loads(big["extraFields"]) == {"a" * 300: "a name too long for a property"}
    wide = devices["WIDE-1"]
    assert "extraFields" in wide and len(wide) <= 252 and wide["truncatedFields"]
    assert len([d for d in devices if d.startswith("NOTE-")]) == 150
    assert devices["FAIL-1"]["failed"] is True and "truncatedFields" in devices["FAIL-1"]
    history = stack.rows("DEVICE_HISTORY_TABLE_NAME")
    assert len(history) == 153
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []


def test_while_the_fleet_is_throttled_no_instance_calls_partner_center(stack: Stack) -> None:
    """A 429 another instance got (the ~throttle row) holds this one's polls until it has passed."""
    from datetime import UTC, datetime, timedelta

    customer = _customer()
    location = stack.upload(customer, [{"serialNumber": "WAIT-1"}])
    tracking = _tracking_id(location)
    until = datetime.now(UTC) + timedelta(seconds=6)
    get_app().status_check.store.extend_throttle("partner", until)
    stack.start_host()
    stack.send({"location": location})
    wait_for(lambda: stack.batch_row(customer, tracking), 10, "the batch row (the chain started)")
    assert _gets(stack, tracking) == []  # held by the fleet's back-off: no call
    row = stack.wait_final(customer, tracking, timeout=60)
    assert row["outcome"] == "completed"
    first = min(request["time"] for request in _gets(stack, tracking))
    assert first >= until.timestamp() - 0.5
    assert stack.rows("BATCH_TABLE_NAME", "PartitionKey eq '~throttle'")[0]["throttledUntil"] == until


def test_processes_claiming_the_call_budget_at_once_never_get_more_than_it(stack: Stack) -> None:
    """The ~throttle/budget row on Azurite, claimed by eight stores at once: conflicts are retried under the
    etag, and the minute's grants add up to the budget, never more."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    from shared.config import load_settings
    from shared.results_store import ResultsStore
    from shared.storage import StorageClients

    settings = load_settings(os.environ)
    stores = [ResultsStore(StorageClients(settings.storage), settings.batch_table, settings.device_table,
                           settings.history_table) for _ in range(8)]
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def claim(store: ResultsStore) -> int:
        return sum(store.claim_calls(minute, 3, 100) for _ in range(10))

    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(claim, stores))
    assert sum(granted) == 100
    [row] = stack.rows("BATCH_TABLE_NAME", "PartitionKey eq '~throttle' and RowKey eq 'budget'")
    assert row["calls"] == 100 and row["window"] == minute
    assert stores[0].claim_calls(minute.replace(minute=(minute.minute + 1) % 60), 3, 100) == 3  # a new minute
