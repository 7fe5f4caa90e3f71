"""A final result is read, keyed and chunked in a fixed amount of memory, whatever the number of devices.

tracemalloc counts the Python objects allocated (deterministic, unlike RSS): the answer is in a temporary
file, as the HTTP client leaves a large one, and everything a finalisation computes from it (the count, the
device rows a page at a time, the failure chunks one at a time) is consumed as it is made.
"""

from __future__ import annotations

import json
import tempfile
import tracemalloc

from shared.device_rows import DeviceRows
from shared.failure_chunks import BatchContext, failure_chunks
from shared.models import Outcome
from shared.status_parser import parse_batch_status

CONTEXT = BatchContext("c", "t", Outcome.COMPLETED_WITH_FAILURES, None, None)


def _peak_while_finalising(count: int) -> tuple[int, int, int]:
    """Peak traced bytes, devices stored and devices in chunks, for an answer of count devices, all failed."""
    with tempfile.TemporaryFile() as answer:
        answer.write(b'{"status": "finished", "devicesStatus": [')
        for index in range(count):
            device = {"serialNumber": f"SN-{index:07}", "productKey": f"PK-{index:07}", "status": "finished",
                      "errorCode": "808", "errorDescription": "ZtdDeviceAssignedToOtherTenant"}
            answer.write((", " if index else "").encode() + json.dumps(device).encode())
        answer.write(b"]}")
        answer.seek(0)
        tracemalloc.start()
        try:
            batch = parse_batch_status(answer)
            stored = sum(len(page) for _, page in DeviceRows(batch, "t").pages())
            chunked = sum(len(chunk.devices) for chunk in failure_chunks(CONTEXT, batch.failed_devices))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak, stored, chunked


def test_four_times_the_devices_take_no_more_memory() -> None:
    small, stored, chunked = _peak_while_finalising(3_000)  # past the first pages, which fill the fixed part
    assert stored == chunked == 3_000
    large, stored, chunked = _peak_while_finalising(12_000)  # 1.8 MB of JSON
    assert stored == chunked == 12_000
    assert large < 1.5 * small and large < 4 * 1024 * 1024
