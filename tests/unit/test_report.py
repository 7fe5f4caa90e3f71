"""The report's figures and HTML, from rows in memory."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.audit.report import Progress, build_report
from shared.audit.report_html import render_report

NOW = datetime(2026, 11, 25, 8, tzinfo=UTC)
MONDAY = datetime(2026, 11, 16, 9, tzinfo=UTC)
A, B = "47021739-3426-40bf-9601-61b4b6d7c793", "9a1f0b9e-5a52-4a1e-8f3c-2b0c6f0e7d11"
HOSTILE = '<script>alert(1)</script>&"\''


def _batch(customer: str, tracking: str, outcome: str, first_seen: datetime, minutes: float | None,
           failed: int = 0, **extra: Any) -> dict[str, Any]:
    row = {"PartitionKey": customer, "RowKey": tracking, "outcome": outcome, "firstSeenAt": first_seen,
           "failedDeviceCount": failed, **extra}
    if minutes is not None:
        row["finalizedAt"] = first_seen + timedelta(minutes=minutes)
    return row


BATCHES = [
    _batch(A, "t1", "completed", MONDAY, 3),
    _batch(A, "t2", "completed_with_failures", MONDAY + timedelta(days=2), 20, failed=2),
    _batch(B, "t3", "completed_with_failures", MONDAY + timedelta(days=7), 90, failed=1),
    _batch(B, "t4", "timed_out", MONDAY + timedelta(days=8), 60 * 48, lastResult=HOSTILE),
    _batch(B, "t5", "pending", MONDAY + timedelta(days=8), None),
]
DEVICES = {
    "t2": [{"serialNumber": "SN-1", "errorCode": "808", "errorDescription": None},
           {"serialNumber": HOSTILE, "errorCode": "806", "errorDescription": None}],
    "t3": [{"serialNumber": "SN-1", "errorCode": "808", "errorDescription": None}],
}


def _report(bucket: str = "day") -> Any:
    return build_report(BATCHES, lambda tracking: DEVICES.get(tracking, []), since=None, until=None, customer=None,
                        bucket=bucket, now=NOW)


def test_the_figures_of_a_period() -> None:
    report = _report("week")
    assert report.batches == 5
    assert {week: dict(counts) for week, counts in report.outcomes_by_bucket.items()} == {
        "2026-11-16": {"completed": 1, "completed_with_failures": 1},
        "2026-11-23": {"completed_with_failures": 1, "timed_out": 1, "pending": 1}}
    assert [(code.label, code.count) for code in report.codes] == [("808 ZtdDeviceAssignedToOtherTenant", 2),
                                                                   ("806 ZtdDeviceAlreadyAssigned", 1)]
    assert [(c.customer_id, c.batches, c.failed_batches, c.failed_devices) for c in report.customers] == [
        (A, 2, 1, 2), (B, 3, 1, 1)]
    assert dict(report.durations) == {"under 5 min": 1, "5-15 min": 0, "15-30 min": 1, "30-60 min": 0,
                                      "1-2 h": 1, "2-6 h": 0, "6-24 h": 0, "over 24 h": 1}
    assert [row["RowKey"] for row in report.attention] == ["t4", "t5"]
    [repeated] = report.repeated_serials
    assert (repeated.serial, repeated.batches) == ("SN-1", ("t2", "t3"))
    assert len(_report("day").outcomes_by_bucket) == 4


def test_everything_from_partner_center_and_messages_is_escaped() -> None:
    page = render_report(_report())
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in page
    assert not re.search(r"<(?!/?(html|head|meta|title|style|body|h1|h2|p|section|div|table|thead|tbody|tr|th|td|"
                         r"svg|rect|text|span|i)\b|!DOCTYPE)", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_progress_is_shown_only_to_a_person_at_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    ticks = iter(range(1000))

    def slow() -> float:  # each look at the clock finds a second passed
        return float(next(ticks))

    shown, quick, piped = Terminal(), Terminal(), io.StringIO()
    for stream, clock in ((shown, slow), (quick, lambda: 0.0), (piped, slow)):
        build_report(BATCHES, lambda tracking: DEVICES.get(tracking, []), since=None, until=None, customer=None,
                     bucket="day", now=NOW, progress=Progress(stream, clock))
    lines = shown.getvalue().split("\r")
    assert lines[0] == "" and lines[1] == "read 2 batches, 1 failed devices"  # within a batch, as devices are read
    assert lines[-1] == "read 5 batches, 3 failed devices\n"
    assert quick.getvalue() == "" and piped.getvalue() == ""  # a short read, or nobody watching


def test_a_resubmitted_batch_pending_again_has_no_duration_yet() -> None:
    again = _batch(A, "t6", "pending", MONDAY + timedelta(days=9), None, finalizedAt=MONDAY)
    report = build_report([*BATCHES, again], lambda tracking: [], since=None, until=None, customer=None,
                          bucket="day", now=NOW)
    assert sum(count for _, count in report.durations) == 4


def test_the_cli_writes_a_stored_lone_surrogate_as_its_escape(monkeypatch: Any, tmp_path: Any) -> None:
    """Texts are stored verbatim, and Table Storage keeps a lone surrogate: the page shows its escape."""
    from shared.audit import cli

    class StoredRows:
        def __init__(self, *_: object) -> None:
            pass

        def in_period(self, *_: object) -> list[dict[str, Any]]:
            return [_batch(A, "t1", "timed_out", MONDAY, 5, lastResult="not final: \ud800")]

        def devices(self, tracking: str, failed_only: bool = False) -> list[dict[str, Any]]:
            return []

    monkeypatch.setattr(cli, "AuditQueries", StoredRows)
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    page = tmp_path / "report.html"
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["report", "--output", str(page)], out, err) == 0
    assert "wrote" in out.getvalue() and "not final: \\ud800" in page.read_text(encoding="utf-8")
