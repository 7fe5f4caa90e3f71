"""Rows out as a table for people, or CSV / JSON Lines for tools; written as they come (no buffering)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

BATCH_COLUMNS = {"customerId": 36, "batchTrackingId": 36, "outcome": 23, "status": 20, "deviceCount": 7,
                 "failedDeviceCount": 6, "pollCount": 5, "firstSeenAt": 19, "finalizedAt": 19, "source": 24,
                 "correlationId": 36}
DEVICE_COLUMNS = {"batchTrackingId": 36, "serialNumber": 24, "productKey": 29, "deviceId": 36, "status": 20,
                  "failed": 6, "errorCode": 19, "errorDescription": 34, "recordedAt": 19}
HISTORY_COLUMNS = {"recordedAt": 19, "serialNumber": 24, "productKey": 29, "customerId": 36, "batchTrackingId": 36,
                   "status": 20, "failed": 6, "errorCode": 19, "errorDescription": 34}
PENDING_COLUMNS = {"firstSeenAt": 19, "lastPolledAt": 19, "nextPollAt": 19, "pollCount": 5, "status": 12,
                   "customerId": 36, "batchTrackingId": 36, "lastResult": 40}
POISON_COLUMNS = {"insertedOn": 19, "messageId": 36, "reason": 60, "original": 60}
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def spreadsheet_safe(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: text from Partner Center or a message (a serial, an error
    description, a poison message) that starts like a formula gets a leading apostrophe. Numbers, times and
    booleans are written as they are. JSON output stays verbatim."""
    rendered = text(value)
    return "'" + rendered if isinstance(value, str) and rendered.startswith(FORMULA_STARTS) else rendered


def write_rows(rows: Iterable[dict[str, Any]], columns: dict[str, int], output_format: str, out: TextIO,
               record: str | None = None) -> int:
    """Write rows as they are read; returns how many were written."""
    count = 0
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([spreadsheet_safe(row.get(name)) for name in columns])
            count += 1
    elif output_format == "json":
        for row in rows:
            document = {key: value for key, value in row.items() if not key.startswith("_")}
            if record:
                document = {"record": record, **document}
            out.write(json.dumps(document, default=text, ensure_ascii=False) + "\n")
            count += 1
    else:
        out.write("  ".join(name[:width].ljust(width) for name, width in columns.items()).rstrip() + "\n")
        for row in rows:
            out.write("  ".join(_cell(row.get(name), width) for name, width in columns.items()).rstrip() + "\n")
            count += 1
    return count


def _cell(value: Any, width: int) -> str:
    if isinstance(value, datetime):
        rendered = value.strftime("%Y-%m-%d %H:%M:%S")
    else:
        rendered = text(value).replace("\n", "\\n").replace("\t", "\\t")
    if len(rendered) > width:
        rendered = rendered[: width - 1] + "…"
    return rendered.ljust(width)
