"""Metrics and log attributes, read with the OpenTelemetry SDK's in-memory exporters on a real run of the
local host (Azurite, the simulator over HTTP, the webhook receiver)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from tests.conftest import Stack, wait_for

_READER = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))  # once per process: the API allows one


@pytest.fixture
def exported_logs() -> Iterator[InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger(telemetry.LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield exporter
    logger.removeHandler(handler)


def _points(name: str) -> list[tuple[dict[str, Any], Any]]:
    data = _READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [(dict(point.attributes or {}), point) for point in metric.data.data_points]
    return found


def _sum(name: str, **attributes: str) -> float:
    return sum(point.value for found, point in _points(name) if all(found.get(k) == v for k, v in attributes.items()))


def test_a_batch_with_a_failed_device_is_counted_and_its_log_records_carry_the_ids(
        stack: Stack, exported_logs: InMemoryLogRecordExporter) -> None:
    before = {"final": _sum("batchwatch.batches.finalized", outcome="completed_with_failures"),
              "808": _sum("batchwatch.devices.failed", error_code="808"),
              "polls": _sum("batchwatch.polls"), "200": _sum("batchwatch.partner_center.answers", **{"class": "200"}),
              "sent": _sum("batchwatch.alerts", result="sent")}
    lags_before = sum(point.count for _, point in _points("batchwatch.completion_lag"))
    customer = str(uuid.uuid4())
    stack.control("device-errors", {"serialNumber": "BAD-1", "errorCode": "808"})
    location = stack.upload(customer, [{"serialNumber": "GOOD-1"}, {"serialNumber": "BAD-1"}])
    tracking = location.rsplit("/", 1)[1]
    stack.start_host()
    stack.send({"location": location, "correlationId": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"})
    stack.wait_final(customer, tracking)
    wait_for(lambda: stack.alerts(), 30, "the alert")
    wait_for(lambda: _sum("batchwatch.alerts", result="sent") > before["sent"], 10, "the alert counted")

    assert _sum("batchwatch.batches.finalized", outcome="completed_with_failures") == before["final"] + 1
    assert _sum("batchwatch.devices.failed", error_code="808") == before["808"] + 1
    polls = _sum("batchwatch.polls") - before["polls"]
    assert polls >= 1
    assert _sum("batchwatch.partner_center.answers", **{"class": "200"}) - before["200"] == polls  # no faults here
    assert _sum("batchwatch.alerts", result="sent") == before["sent"] + 1
    assert sum(point.count for _, point in _points("batchwatch.completion_lag")) == lags_before + 1

    records = [data.log_record for data in exported_logs.get_finished_logs()]
    final = [record for record in records if str(record.body).startswith("final: completed_with_failures")]
    assert len(final) == 1
    attributes = dict(final[0].attributes or {})
    assert attributes["batchTrackingId"] == tracking and attributes["customerId"] == customer
    assert attributes["correlationId"] == "3f2504e0-4f89-41d3-9a0c-0305e82c3301" and attributes["messageId"]
    assert (attributes["outcome"], attributes["failedDeviceCount"], attributes["deviceCount"]) == (
        "completed_with_failures", 1, 2)  # what the workbook sums per customer


def test_answers_are_classed_and_poisoned_messages_counted(stack: Stack) -> None:
    poisoned = _sum("batchwatch.messages.poisoned", queue=stack.env["STATUS_QUEUE_NAME"] + "-poison")
    throttled = _sum("batchwatch.partner_center.answers", **{"class": "429"})
    customer = str(uuid.uuid4())
    location = stack.upload(customer, [{"serialNumber": "SN-1"}])
    tracking = location.rsplit("/", 1)[1]
    stack.control("script", {"trackingId": tracking, "responses": ["429"]})
    stack.start_host()
    stack.send({"location": location})
    stack.send("this is not JSON")
    stack.wait_final(customer, tracking)
    wait_for(lambda: stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison"), 10, "the bad message in poison")
    assert _sum("batchwatch.messages.poisoned", queue=stack.env["STATUS_QUEUE_NAME"] + "-poison") == poisoned + 1
    assert _sum("batchwatch.partner_center.answers", **{"class": "429"}) == throttled + 1


def test_nothing_is_configured_without_a_connection_string() -> None:
    assert telemetry.configure({}) is False
    assert telemetry.answer_class(503) == "5xx" and telemetry.answer_class(403) == "401_403"
    assert telemetry.answer_class(None, "timeout") == "timeout" and telemetry.answer_class(418) == "other_4xx"


def test_a_retried_alert_and_a_server_error_are_counted(stack: Stack) -> None:
    retried = _sum("batchwatch.alerts", result="retried")
    server_errors = _sum("batchwatch.partner_center.answers", **{"class": "5xx"})
    customer = str(uuid.uuid4())
    stack.control("device-errors", {"serialNumber": "BAD-2", "errorCode": "806"})
    location = stack.upload(customer, [{"serialNumber": "BAD-2"}])
    stack.control("script", {"trackingId": location.rsplit("/", 1)[1], "responses": ["503"]})
    stack.script_receiver("500")
    stack.start_host()
    stack.send({"location": location})
    wait_for(lambda: stack.alerts(), 60, "the alert, after one refused delivery")
    wait_for(lambda: _sum("batchwatch.alerts", result="retried") > retried, 10, "the retry counted")
    assert _sum("batchwatch.alerts", result="retried") == retried + 1
    assert _sum("batchwatch.partner_center.answers", **{"class": "5xx"}) >= server_errors + 1
