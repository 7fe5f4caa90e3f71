"""check_batch_status end to end: local host, Azurite and the simulator over HTTP."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest

from tests.conftest import Stack

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
    assert stack.rows("BATCH_TABLE_NAME")[0]["correlationId"]
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
