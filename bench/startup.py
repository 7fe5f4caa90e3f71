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

    def median_import(statement: str, extra: dict[str, str] | None = None) -> float:
        times = []
        for _ in range(runs + 1):
            code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**env, **(extra or {})},
                                    capture_output=True, text=True, check=True)
            times.append(float(result.stdout.strip().splitlines()[-1]))
        return statistics.median(times[1:])  # the first run warms the file cache

    # The cold start of an invocation: the module, the handler built from the settings, telemetry set up.
    cold = ("import check_batch_status; from shared import app, telemetry; app.status_check(); "
            "telemetry.configure()")
    ours = median_import(cold)
    # An ingestion endpoint that refuses: configuring the exporter makes no request.
    insights = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                                         "IngestionEndpoint=http://127.0.0.1:9/"}
    with_insights = median_import(cold, insights)
    sdk = median_import("import azure.functions, azure.storage.queue, azure.data.tables, azure.core, requests")
    return {
        "runs": runs,
        "ours_ms": round(ours * 1000),
        "with_application_insights_ms": round(with_insights * 1000),
        "sdk_only_ms": round(sdk * 1000),
        "ratio": round(ours / sdk, 2),
        "application_insights_ratio": round(with_insights / sdk, 2),
    }
