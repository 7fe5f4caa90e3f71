"""Application Insights is set up once per process, only with a connection string, with batchwatch's logger and
without the SDKs' own HTTP instrumentation; a failure to set it up never stops the work. maxDequeueCount is the
host's, app-setting override first."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from shared import invocation, telemetry


@pytest.fixture
def distro(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    module = types.ModuleType("azure.monitor.opentelemetry")
    module.configure_azure_monitor = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    monkeypatch.setattr(telemetry, "_attempted", None)
    return calls


def test_set_up_once_with_the_connection_string_and_batchwatchs_logger(distro: list[dict[str, Any]]) -> None:
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=abc;IngestionEndpoint=https://x/"}
    assert telemetry.configure({}) is False and distro == []
    assert telemetry.configure(env) is True and telemetry.configure(env) is True
    [arguments] = distro
    assert arguments["connection_string"] == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert arguments["logger_name"] == "batchwatch"
    assert all(not option["enabled"] for option in arguments["instrumentation_options"].values())
    assert {"requests", "urllib3", "azure_sdk"} <= set(arguments["instrumentation_options"])


def test_a_failed_set_up_is_logged_once_and_not_tried_again(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    module = types.ModuleType("azure.monitor.opentelemetry")

    def broken(**_: Any) -> None:
        raise ValueError("bad connection string")

    module.configure_azure_monitor = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", module)
    monkeypatch.setattr(telemetry, "_attempted", None)
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "nonsense"}
    assert telemetry.configure(env) is False and telemetry.configure(env) is False
    assert caplog.text.count("Application Insights is not set up: ValueError: bad connection string") == 1


def test_max_dequeue_count_is_the_app_setting_override_else_host_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(invocation.HOST_OVERRIDE, raising=False)
    assert invocation.max_dequeue_count() == 5  # host.json
    monkeypatch.setenv(invocation.HOST_OVERRIDE, "9")
    assert invocation.max_dequeue_count() == 9
