"""Figure 11: a finalisation's peak memory against the batch's size, storage left out.

    python -m bench.finalize_memory <answer file>     (run by finalize_memory() in a fresh interpreter)

The answer is copied into a temporary file as the HTTP client spools it, then parsed and turned into
what a finalisation makes of it: every device row a page at a time, every failure chunk as its queue
message. Writes go nowhere, so the figure is the app's own memory, not Azurite's speed: that is figure
10's. Peak RSS growth is measured from just before the answer is read: the kernel's peak (VmHWM) is reset
there (/proc/self/clear_refs), so that a peak while the modules were imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from local.azurite import PROJECT_ROOT

from .memory import peak_bytes, reset_peak

FAILED_SHARE = 10  # every 10th device failed
REPEATED_SHARE = 50  # every 50th device repeats the one before it (ZtdDeviceDuplicated)


def finalize_memory(sizes: tuple[int, ...]) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for devices in sizes:
            answer = Path(folder) / f"answer-{devices}.json"
            json_bytes = _write_answer(answer, devices)
            output = subprocess.run([sys.executable, "-m", "bench.finalize_memory", str(answer)], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, check=True, timeout=1800)
            runs.append({"devices": devices, "json_bytes": json_bytes,
                         **json.loads(output.stdout.strip().splitlines()[-1])})
    # The last two sizes: past the fixed budget's fill (SQLite's page caches), growth should not follow size.
    smaller, larger = runs[-2], runs[-1]
    return {"runs": runs, "size_ratio": round(larger["devices"] / smaller["devices"], 1),
            "rss_growth_ratio": round(larger["rss_growth_bytes"] / max(1, smaller["rss_growth_bytes"]), 2)}


def _write_answer(path: Path, devices: int) -> int:
    with path.open("w") as answer:
        answer.write('{"batchTrackingId": null, "status": "finished", "devicesStatus": [')
        for index in range(devices):
            serial = index - 1 if index % REPEATED_SHARE == 0 and index else index
            failed = index % FAILED_SHARE == 0
            device = {"serialNumber": f"SN-{serial:07}", "productKey": f"PK-{serial:07}", "deviceId": None,
                      "status": "finished", "errorCode": "808" if failed else "",
                      "errorDescription": "ZtdDeviceAssignedToOtherTenant" if failed else ""}
            answer.write(("," if index else "") + json.dumps(device))
        answer.write("]}")
    return path.stat().st_size


def _finalise(answer_path: str) -> dict[str, Any]:
    from shared.bounded_http import READ_PIECE_BYTES, SPOOL_IN_MEMORY_BYTES
    from shared.device_rows import DeviceRows
    from shared.failure_chunks import BatchContext, failure_chunks
    from shared.models import Outcome
    from shared.status_parser import parse_batch_status

    context = BatchContext("47021739-3426-40bf-9601-61b4b6d7c793", "0127ed8e-ff72-4983-a3d8-e8d8bd378932",
                           Outcome.COMPLETED_WITH_FAILURES, None, "bench")
    before = reset_peak()
    started = time.perf_counter()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        with open(answer_path, "rb") as answer:
            while piece := answer.read(READ_PIECE_BYTES):
                spool.write(piece)
        spool.seek(0)
        batch = parse_batch_status(spool)
        rows = sum(len(page) for _, page in DeviceRows(batch, context.batch_tracking_id).pages())
        chunk_bytes = sum(len(chunk.to_json()) for chunk in failure_chunks(context, batch.failed_devices))
        return {"rows": rows, "failed": len(batch.failed_devices), "chunk_bytes": chunk_bytes,
                "seconds": round(time.perf_counter() - started, 2),
                "rss_growth_bytes": max(0, peak_bytes() - before)}




if __name__ == "__main__":
    print(json.dumps(_finalise(sys.argv[1])))
