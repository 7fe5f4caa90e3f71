"""The audit's CSV cells: what a spreadsheet would run as a formula is written as text; JSON stays verbatim."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from shared.audit.output import DEVICE_COLUMNS, spreadsheet_safe, write_rows


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"])
def test_text_that_starts_like_a_formula_gets_an_apostrophe(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


def test_other_text_numbers_and_times_are_written_as_they_are() -> None:
    when = datetime(2026, 11, 24, tzinfo=UTC)
    assert [spreadsheet_safe(value) for value in ("SN-1", "a=b", -5, 1.5, True, when, None)] == [
        "SN-1", "a=b", "-5", "1.5", "True", when.isoformat(), ""]


def test_a_csv_export_neutralises_cells_and_a_json_export_keeps_them() -> None:
    row = {"serialNumber": "=cmd|' /C calc'!A0", "errorDescription": "-1 devices", "failed": True}
    out = io.StringIO()
    write_rows([row], DEVICE_COLUMNS, "csv", out)
    [_, cells] = list(csv.reader(io.StringIO(out.getvalue())))
    exported = dict(zip(DEVICE_COLUMNS, cells, strict=True))
    assert exported["serialNumber"] == "'=cmd|' /C calc'!A0" and exported["errorDescription"] == "'-1 devices"
    assert exported["failed"] == "True"
    out = io.StringIO()
    write_rows([row], DEVICE_COLUMNS, "json", out)
    assert json.loads(out.getvalue())["serialNumber"] == "=cmd|' /C calc'!A0"
