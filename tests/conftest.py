"""Shared fixtures: Azurite for the session; a simulator, settings and a local host per test."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from local.azurite import Azurite, start_azurite
from local.host import LocalHost
from local.simulator import Simulator, SimulatorConfig, SimulatorServer, start_in_thread
from local.stack import APP_SETTING_PREFIXES, DEPLOYED_DIGEST_SCHEDULE, simulator_app_settings, upload_batch
from local.webhook_receiver import ReceiverServer
from local.webhook_receiver import start_in_thread as start_receiver
from shared.app import reset_app

PROJECT_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    instance = start_azurite(log_dir=tmp_path_factory.mktemp("azurite-logs"))
    yield instance
    instance.stop()


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    server = start_in_thread(Simulator(SimulatorConfig(queued_seconds=0.5, processing_seconds=1.0)))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    server = start_receiver()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings_env(azurite: Azurite, simulator: SimulatorServer, receiver: ReceiverServer,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """App settings for one test: its own queues and tables, short polling delays."""
    suffix = uuid.uuid4().hex[:8]
    values = simulator_app_settings(
        azurite.connection_string, simulator.url,
        STATUS_QUEUE_NAME=f"status-{suffix}",
        FAILURE_QUEUE_NAME=f"failures-{suffix}",
        BATCH_TABLE_NAME=f"Batch{suffix}",
        DEVICE_TABLE_NAME=f"Device{suffix}",
        DEVICE_HISTORY_TABLE_NAME=f"History{suffix}",
        ALERT_TABLE_NAME=f"Alert{suffix}",
        OPERATOR_LOG_TABLE_NAME=f"Operator{suffix}",
        POLL_INITIAL_DELAY_SECONDS="1",
        POLL_MAX_DELAY_SECONDS="2",
        POLL_DEADLINE_SECONDS="120",
        NOT_FOUND_GRACE_SECONDS="60",
        CHAIN_STALE_GRACE_SECONDS="3",
        ALERT_WEBHOOK_URL=receiver.url + "/hooks/secret-token-abc",
        ALERT_WEBHOOK_FORMAT="generic",
        ALERT_RETRY_INITIAL_DELAY_SECONDS="1",
        ALERT_RETRY_MAX_DELAY_SECONDS="2",
        DIGEST_SCHEDULE=DEPLOYED_DIGEST_SCHEDULE,
    )
    for name in [key for key in os.environ if key.startswith(APP_SETTING_PREFIXES)]:
        monkeypatch.delenv(name)  # through monkeypatch, so that a test's own setenv is undone with these
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_app()
    yield values
    reset_app()


@dataclass
class Stack:
    """The running app for one test and the ways a test looks at it."""

    env: dict[str, str]
    azurite: Azurite
    simulator: SimulatorServer
    receiver: ReceiverServer
    host: LocalHost | None = None

    # --- driving -------------------------------------------------------------------------------------
    def start_host(self, **options: Any) -> LocalHost:
        self.host = LocalHost(PROJECT_ROOT, os.environ, max_polling_interval=options.pop("max_polling_interval", 0.2),
                              **options)
        self.host.start()
        return self.host

    def stop_host(self) -> None:
        if self.host is not None:
            self.host.stop()
            self.host = None

    def upload(self, customer_id: str, devices: list[dict[str, Any]]) -> str:
        """Upload like an upstream job; returns the Location header."""
        response = upload_batch(self.simulator.url, customer_id, devices, f"test-{uuid.uuid4().hex[:6]}", timeout=10)
        assert response.status_code == 202, response.text
        return response.headers["Location"]

    def control(self, endpoint: str, document: Any) -> None:
        response = requests.post(f"{self.simulator.url}/_sim/{endpoint}", json=document, timeout=10)
        assert response.status_code == 200, response.text

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts the webhook receiver accepted."""
        return self.receiver.receiver.delivered()

    def script_receiver(self, *responses: str) -> None:
        with self.receiver.receiver.lock:
            self.receiver.receiver.script.extend(responses)

    def sim_requests(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.simulator.url}/_sim/requests", timeout=10).json()["requests"]

    def send(self, body: str | dict[str, Any], visibility_timeout: int | None = None) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.queue(self.env["STATUS_QUEUE_NAME"]).send_message(text, visibility_timeout=visibility_timeout)

    # --- looking -------------------------------------------------------------------------------------
    def queue(self, name: str) -> Any:
        return self.azurite.queue(name)

    def table(self, setting: str) -> Any:
        from azure.data.tables import TableClient

        return TableClient.from_connection_string(self.azurite.connection_string, self.env[setting])

    def batch_row(self, customer_id: str, tracking_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.table("BATCH_TABLE_NAME").get_entity(customer_id, tracking_id))
        except Exception:
            return None

    def rows(self, setting: str, query: str | None = None, **parameters: Any) -> list[dict[str, Any]]:
        try:
            table = self.table(setting)
            found = table.query_entities(query, parameters=parameters) if query else table.list_entities()
            return [dict(entity) for entity in found]
        except Exception as exc:
            if "TableNotFound" in str(exc):
                return []
            raise

    def batch_rows(self) -> list[dict[str, Any]]:
        """Batch rows, without batchwatch's own rows (~tracking, ~throttle, ~durations)."""
        return [row for row in self.rows("BATCH_TABLE_NAME") if not str(row["PartitionKey"]).startswith("~")]

    def peek(self, queue_name: str) -> list[Any]:
        """Every message in a queue, visible or not, read by receiving with a 1 s lease."""
        return list(self.queue(queue_name).peek_messages(max_messages=32))

    def drain(self, queue_name: str) -> list[str]:
        client = self.queue(queue_name)
        texts = []
        while batch := list(client.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=60)):
            for message in batch:
                texts.append(message.content)
                client.delete_message(message)
        return texts

    def wait_final(self, customer_id: str, tracking_id: str, timeout: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            row = self.batch_row(customer_id, tracking_id)
            return row if row and row.get("outcome") not in (None, "pending") else None

        return wait_for(final, timeout, f"batch {tracking_id} to reach a final outcome")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def stack(settings_env: dict[str, str], azurite: Azurite, simulator: SimulatorServer,
          receiver: ReceiverServer) -> Iterator[Stack]:
    running = Stack(settings_env, azurite, simulator, receiver)
    yield running
    running.stop_host()


@pytest.fixture(autouse=True)
def _quiet_sdk_logs() -> None:
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
