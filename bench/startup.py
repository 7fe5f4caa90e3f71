"""Figure 6: the import time of a function against the SDK modules alone."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

from local.azurite import PROJECT_ROOT


def startup(runs: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "PARTNER_CENTER_AUTH": "simulator",
        "PARTNER_CENTER_BASE_URL": "http://127.0.0.1:9",
    }

    def median_import(statement: str) -> float:
        times = []
        for _ in range(runs + 1):
            code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            result = subprocess.run(
                [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
            )
            times.append(float(result.stdout.strip()))
        return statistics.median(times[1:])  # the first run warms the file cache

    ours = median_import("import check_batch_status")
    sdk = median_import("import azure.functions, azure.storage.queue, azure.data.tables, azure.core, requests")
    return {
        "runs": runs,
        "ours_ms": round(ours * 1000),
        "sdk_only_ms": round(sdk * 1000),
        "ratio": round(ours / sdk, 2),
    }
