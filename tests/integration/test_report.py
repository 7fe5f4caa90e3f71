"""python -m shared.audit report, rendered in a real browser (Debian's chromium through Playwright).

The demo's batches run through the local host; the report of them must draw every chart, show the numbers
the tables hold, make no request, and show a serial that holds markup as text. The screenshot is kept in
test-artifacts/report.png.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.azurite import PROJECT_ROOT
from local.demo import upload_demo_batches
from shared.audit.cli import main
from shared.remediation import remediation_for
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration
HOSTILE_SERIAL = '<img src=x onerror="document.title=\'pwned\'">'
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def chromium_path() -> str | None:
    return os.environ.get("BATCHWATCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def page() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("BROWSER CHECK DID NOT RUN: no chromium found (apt-get install chromium, or set "
                    "BATCHWATCH_CHROMIUM); the HTML report was not checked in a browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 900})
        finally:
            browser.close()


def _run_demo_batches(stack: Stack) -> list[dict[str, Any]]:
    batches = upload_demo_batches(stack.simulator.url)
    customer = batches[1]["customerId"]  # the 808 batch's customer: these fail there too
    for serial in (HOSTILE_SERIAL, "REFURB-0001"):
        stack.control("device-errors", {"serialNumber": serial, "errorCode": "808"})
    for label in ("markup in a serial", "the same devices again"):
        location = stack.upload(customer, [{"serialNumber": HOSTILE_SERIAL}, {"serialNumber": "REFURB-0001"}])
        batches.append({"label": label, "customerId": customer, "trackingId": location.rsplit("/", 1)[1]})
    stack.start_host()
    for batch in batches:
        stack.send({"customerId": batch["customerId"], "batchTrackingId": batch["trackingId"], "source": "demo"})
    for batch in batches:
        if "404" not in batch["label"]:
            stack.wait_final(batch["customerId"], batch["trackingId"], timeout=90)
    wait_for(lambda: stack.batch_row(batches[-1]["customerId"], batches[-1]["trackingId"]), 10, "the rows")
    return batches


def _table(page: Any, name: str) -> list[list[str]]:
    return page.evaluate("""name => [...document.querySelectorAll(`table[data-table="${name}"] tbody tr`)]
        .map(row => [...row.cells].map(cell => cell.textContent))""", name)


def test_the_report_draws_every_chart_with_the_stored_numbers_in_a_browser(
        stack: Stack, page: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batches = _run_demo_batches(stack)
    output = tmp_path / "report.html"
    today = datetime.now(UTC).date()
    assert main(["report", "--since", today.isoformat(), "--until", (today + timedelta(days=1)).isoformat(),
                 "--output", str(output)]) == 0
    assert f"{len(batches)} batches" in capsys.readouterr().out

    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(output.as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert requests == [output.as_uri()]  # no CDN, no font, no image: nothing but the file
    assert page.title().startswith("batchwatch report") and page.evaluate("document.images.length") == 0

    drawn = page.evaluate("""[...document.querySelectorAll('svg[data-chart]')].map(svg => ({
        name: svg.dataset.chart,
        bars: [...svg.querySelectorAll('rect')].map(rect => {
            const box = rect.getBoundingClientRect();
            return {value: Number(rect.dataset.value), width: box.width, height: box.height};
        })}))""")
    charts = {chart["name"]: chart["bars"] for chart in drawn}
    assert set(charts) == {"outcomes", "codes", "customers", "durations"}
    for name, bars in charts.items():
        assert bars and all(bar["width"] > 0 and bar["height"] > 0 for bar in bars), name

    stored = [row for row in stack.rows("BATCH_TABLE_NAME") if not str(row["PartitionKey"]).startswith("~")]
    outcomes = Counter(str(row["outcome"]) for row in stored)
    [[_, *cells]] = _table(page, "outcomes")  # one day
    header = page.evaluate("[...document.querySelectorAll('table[data-table=outcomes] th')].map(c => c.textContent)")
    assert dict(zip(header[1:-1], map(int, cells[:-1]), strict=True)) == dict(outcomes)
    assert int(cells[-1]) == len(stored) == len(batches)
    assert sum(bar["value"] for bar in charts["outcomes"]) == len(stored)

    failed = stack.rows("DEVICE_TABLE_NAME", "failed eq true")
    codes = Counter(_label(device) for device in failed)
    assert {code: int(count) for code, count, _ in _table(page, "codes")} == dict(codes)
    assert sorted(bar["value"] for bar in charts["codes"]) == sorted(codes.values())
    customers = {customer: int(devices) for customer, _, _, devices in _table(page, "customers")}
    by_customer: Counter[str] = Counter()
    for row in stored:
        by_customer[str(row["PartitionKey"])] += int(row.get("failedDeviceCount") or 0)
    assert customers == dict(by_customer) and len(failed) == sum(by_customer.values())
    final = sum(1 for row in stored if row.get("finalizedAt"))
    assert sum(int(count) for _, count in _table(page, "durations")) == final

    attention = _table(page, "attention")
    assert [(row[0], row[2]) for row in attention] == [(batches[4]["trackingId"], "pending")]  # the unknown id
    repeated = {row[0]: row for row in _table(page, "repeated")}
    assert set(repeated) == {HOSTILE_SERIAL, "REFURB-0001"}  # markup shown as text, never run
    assert repeated["REFURB-0001"][1] == "3" and page.title() != "pwned"


def _label(device: dict[str, Any]) -> str:
    return remediation_for(device.get("errorCode"), device.get("errorDescription")).label
