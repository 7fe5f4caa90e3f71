import json

from shared.failure_chunks import MESSAGE_BUDGET_BYTES, BatchContext, batch_outcome_message, failure_chunks
from shared.models import DeviceStatus, Outcome

CONTEXT = BatchContext("c" * 36, "t" * 36, Outcome.COMPLETED_WITH_FAILURES, "r" * 36, "job")


def _failed(count: int, description: str = "ZtdDeviceAssignedToOtherTenant") -> tuple[DeviceStatus, ...]:
    return tuple(DeviceStatus(f"SN-{i:05}", f"PK-{i:05}", None, "finished_with_errors", "808", description)
                 for i in range(count))


def test_every_failed_device_is_in_exactly_one_chunk_that_fits_a_queue_message() -> None:
    chunks = failure_chunks(CONTEXT, _failed(1200))
    documents = [json.loads(chunk) for chunk in chunks]
    assert len(chunks) > 1
    assert all(len(chunk.encode()) <= MESSAGE_BUDGET_BYTES for chunk in chunks)
    serials = [device["serialNumber"] for document in documents for device in document["devices"]]
    assert sorted(serials) == [f"SN-{i:05}" for i in range(1200)]
    assert [d["chunk"] for d in documents] == list(range(1, len(chunks) + 1))
    assert {d["chunks"] for d in documents} == {len(chunks)}
    assert len({d["alertId"] for d in documents}) == len(chunks)
    assert documents[0]["type"] == "device_failures" and documents[0]["outcome"] == "completed_with_failures"


def test_alert_ids_are_stable_for_the_same_result() -> None:
    assert failure_chunks(CONTEXT, _failed(300)) == failure_chunks(CONTEXT, _failed(300))


def test_huge_fields_are_cut_in_the_chunk_and_flagged() -> None:
    [chunk] = failure_chunks(CONTEXT, _failed(1, description="<&>" * 30_000))
    [device] = json.loads(chunk)["devices"]
    assert device["truncated"] is True and len(device["errorDescription"]) == 1024


def test_batch_outcome_alert_has_the_reason_and_no_devices() -> None:
    context = BatchContext("c", "t", Outcome.NOT_FOUND, None, None)
    document = json.loads(batch_outcome_message(context, "404 for 900 s"))
    assert document["type"] == "batch_outcome" and document["outcome"] == "not_found"
    assert document["devices"] == [] and document["reason"] == "404 for 900 s"
