"""Metrics an operator can chart and alert on, through OpenTelemetry.

The instruments below are OpenTelemetry API objects: they cost nothing until a meter provider is set. When
APPLICATIONINSIGHTS_CONNECTION_STRING is set, configure() sets up the Azure Monitor distro once per process,
so that the metrics and batchwatch's log records (with their correlationId, batchTrackingId, customerId and
messageId as attributes: customDimensions in Application Insights) reach Application Insights. Without it
nothing is configured and nothing is imported beyond the API.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry import metrics

from .log import context_logger

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
LOGGER_NAME = "batchwatch"  # every batchwatch logger is batchwatch.<something>

_meter = metrics.get_meter("batchwatch")
BATCHES_FINALIZED = _meter.create_counter(
    "batchwatch.batches.finalized", unit="{batch}", description="batches that reached a final outcome, by outcome")
DEVICES_FAILED = _meter.create_counter(
    "batchwatch.devices.failed", unit="{device}", description="failed devices of final batches, by error code")
POLLS = _meter.create_counter("batchwatch.polls", unit="{poll}", description="Partner Center status polls")
PARTNER_CENTER_ANSWERS = _meter.create_counter(
    "batchwatch.partner_center.answers", unit="{answer}",
    description="Partner Center answers by class: 200, 404, 429, 5xx, 401_403, other_4xx, timeout, network, "
                "too_large")
COMPLETION_LAG = _meter.create_histogram(
    "batchwatch.completion_lag", unit="s",
    description="from Partner Center's completedTime to batchwatch's final row")
ALERTS = _meter.create_counter(
    "batchwatch.alerts", unit="{alert}", description="webhook deliveries by result: sent, retried, failed, rejected")
POISONED = _meter.create_counter(
    "batchwatch.messages.poisoned", unit="{message}", description="messages batchwatch moved to a poison queue")

_attempted: bool | None = None  # None: not yet; else whether it worked (it is tried once per process)
_lock = threading.Lock()


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Send metrics and logs to Application Insights when its connection string is set; True when it is."""
    global _attempted
    env = os.environ if env is None else env
    connection_string = (env.get(CONNECTION_STRING_SETTING) or "").strip()
    if not connection_string:
        return False
    with _lock:
        if _attempted is not None:
            return _attempted
        _attempted = False
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor

            # Only batchwatch's own records and metrics: the Functions host already reports invocations and
            # dependencies, and the SDKs' own instrumentation would double them.
            configure_azure_monitor(connection_string=connection_string, logger_name=LOGGER_NAME,
                                    enable_live_metrics=False,
                                    instrumentation_options={name: {"enabled": False} for name in (
                                        "azure_sdk", "requests", "urllib", "urllib3", "django", "fastapi",
                                        "flask", "psycopg2")})
        except Exception as exc:  # telemetry must never stop the work; not tried again in this process
            context_logger("batchwatch.telemetry").error("Application Insights is not set up: %s: %s",
                                                         type(exc).__name__, exc)
            return False
        _attempted = True
        logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    return True


def answer_class(status_code: int | None, failure: str | None = None) -> str:
    """The class of one Partner Center answer, for PARTNER_CENTER_ANSWERS."""
    if failure is not None:
        return failure
    assert status_code is not None
    if status_code in (200, 404, 429):
        return str(status_code)
    if status_code in (401, 403):
        return "401_403"
    return "5xx" if status_code >= 500 else "other_4xx"
