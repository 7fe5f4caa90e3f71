import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.failure_chunks import (
    MESSAGE_BUDGET_BYTES,
    BadChunkError,
    BatchContext,
    FailureChunk,
    batch_outcome_chunk,
    encoded_size,
    failure_chunks,
)
from shared.models import DeviceStatus, Outcome

CONTEXT = BatchContext("47021739-3426-40bf-9601-61b4b6d7c793", "0127ed8e-ff72-4983-a3d8-e8d8bd378932",
                       Outcome.COMPLETED_WITH_FAILURES, "6f1b1a52-0000-4000-8000-000000000001", "job")
QUEUE_MESSAGE_LIMIT = 64 * 1024


def _failed(count: int, description: str = "ZtdDeviceAssignedToOtherTenant") -> tuple[DeviceStatus, ...]:
    return tuple(DeviceStatus(f"SN-{i:05}", f"PK-{i:05}", None, "finished_with_errors", "808", description)
                 for i in range(count))


def test_every_failed_device_is_in_exactly_one_chunk_that_fits_a_queue_message() -> None:
    chunks = [chunk.to_json() for chunk in failure_chunks(CONTEXT, _failed(1200))]
    documents = [json.loads(chunk) for chunk in chunks]
    assert len(chunks) > 1
    assert all(encoded_size(chunk) <= MESSAGE_BUDGET_BYTES for chunk in chunks)
    serials = [device["serialNumber"] for document in documents for device in document["devices"]]
    assert sorted(serials) == [f"SN-{i:05}" for i in range(1200)]
    assert [d["chunk"] for d in documents] == list(range(1, len(chunks) + 1))
    assert {d["chunks"] for d in documents} == {len(chunks)}
    assert len({d["alertId"] for d in documents}) == len(chunks)
    assert documents[0]["type"] == "device_failures" and documents[0]["outcome"] == "completed_with_failures"


def test_alert_ids_are_stable_for_the_same_result_and_run_but_new_for_another_run() -> None:
    first_run = BatchContext(**{**vars(CONTEXT), "run_started_at": "2026-11-01T00:00:00+00:00"})
    second_run = BatchContext(**{**vars(CONTEXT), "run_started_at": "2026-11-02T00:00:00+00:00"})
    assert list(failure_chunks(first_run, _failed(300))) == list(failure_chunks(first_run, _failed(300)))
    first_ids = {chunk.alert_id for chunk in failure_chunks(first_run, _failed(300))}
    assert first_ids.isdisjoint(chunk.alert_id for chunk in failure_chunks(second_run, _failed(300)))
    assert batch_outcome_chunk(first_run, "x").alert_id != batch_outcome_chunk(second_run, "x").alert_id


def test_huge_fields_are_cut_in_the_chunk_and_flagged() -> None:
    [chunk] = failure_chunks(CONTEXT, _failed(1, description="<&>" * 30_000))
    [device] = json.loads(chunk.to_json())["devices"]
    assert device["truncated"] is True and 100 < len(device["errorDescription"]) < 1024


def test_one_device_with_long_fields_outside_the_bmp_still_fits_one_message() -> None:
    text = "😀" * 1024  # 12 bytes each once JSON-escaped: six such fields were 73 KiB in one entry
    device = DeviceStatus(text, text, text, text, text, text)
    [chunk] = failure_chunks(CONTEXT, (device,))
    assert encoded_size(chunk.to_json()) <= MESSAGE_BUDGET_BYTES
    assert chunk.devices[0]["truncated"] is True and chunk.devices[0]["serialNumber"].startswith("😀")


DEVICE_TEXT = st.one_of(st.none(), st.text(max_size=3000), st.text(alphabet="😀&<>\"\\\x00\ud800", max_size=3000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(DEVICE_TEXT, DEVICE_TEXT, DEVICE_TEXT, DEVICE_TEXT, DEVICE_TEXT, DEVICE_TEXT),
                min_size=1, max_size=30))
def test_every_chunk_fits_a_queue_message_whatever_the_devices_hold(rows: list[tuple]) -> None:
    devices = tuple(DeviceStatus(a, b, c, d or "finished_with_errors", e, f) for a, b, c, d, e, f in rows)
    chunks = list(failure_chunks(CONTEXT, devices))
    assert sum(len(chunk.devices) for chunk in chunks) == len(devices)
    for chunk in chunks:
        text = chunk.to_json()
        assert encoded_size(text) <= QUEUE_MESSAGE_LIMIT
        assert FailureChunk.from_json(text) == chunk  # what notify_failures reads is what was sent


def test_batch_outcome_chunk_has_the_reason_and_no_devices() -> None:
    context = BatchContext(CONTEXT.customer_id, CONTEXT.batch_tracking_id, Outcome.NOT_FOUND, None, None)
    document = json.loads(batch_outcome_chunk(context, "404 for 900 s").to_json())
    assert document["type"] == "batch_outcome" and document["outcome"] == "not_found"
    assert document["devices"] == [] and document["reason"] == "404 for 900 s"


def _chunk_document(**changes: object) -> str:
    document = json.loads(batch_outcome_chunk(CONTEXT, "r").to_json())
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize("changes", [
    {"_delivery": {"attempt": "x"}}, {"_delivery": {"attempt": -1}}, {"_delivery": {"attempt": 10**30}},
    {"_delivery": {"attempt": True}}, {"_delivery": {"attempt": 1.5}}, {"_delivery": "3"},
    {"chunk": 0}, {"chunk": 2, "chunks": 1}, {"chunks": True}, {"chunk": 10**20}, {"deviceCount": -5},
    {"alertId": ""}, {"outcome": None}, {"devices": [{"serialNumber": 12}]}, {"devices": "none"},
    {"source": "s" * 300}, {"reason": ["a"]},
    {"alertId": "a/b#\n"}, {"customerId": "contoso"}, {"batchTrackingId": "0127ed8e-ff72-4983-a3d8-e8d8bd378932\n"},
    {"correlationId": "%s%s%s"}, {"alertId": None},
], ids=str)
def test_hostile_chunk_state_is_a_bad_chunk_with_a_reason(changes: dict) -> None:
    with pytest.raises(BadChunkError) as raised:
        FailureChunk.from_json(_chunk_document(**changes))
    assert str(raised.value).startswith("failure chunk")


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_non_json_numbers_in_delivery_state_are_bad_chunks(constant: str) -> None:
    delivery = f'"_delivery":{{"attempt":{constant}}},"chunk":1'
    text = batch_outcome_chunk(CONTEXT, "r").to_json().replace('"chunk":1', delivery)
    assert constant in text
    with pytest.raises(BadChunkError, match="non-JSON number"):
        FailureChunk.from_json(text)
