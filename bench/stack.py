"""The stack each benchmark figure stands up afresh: Azurite, the simulator and the app settings."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from local.azurite import PROJECT_ROOT, Azurite, free_port, start_azurite
from local.serving import wait_until_answering
from local.simulator import Simulator, SimulatorConfig, SimulatorServer, start_in_thread
from local.stack import app_environment, simulator_app_settings, tracking_id, upload_batch

NEVER = 10**9


@dataclass
class Stack:
    azurite: Azurite
    simulator: SimulatorServer | None
    simulator_url: str
    env: dict[str, str]

    def upload(self, customer: str, devices: list[dict[str, str]]) -> str:
        """Upload a batch; returns its tracking id."""
        response = upload_batch(self.simulator_url, customer, devices, "bench")
        response.raise_for_status()
        return tracking_id(response.headers["Location"])

    def queue(self, name: str) -> Any:
        return self.azurite.queue(name)

    def sim_gets(self) -> int:
        batches = requests.get(f"{self.simulator_url}/_sim/batches", timeout=60).json()
        return sum(batch["gets"] for batch in batches.values())


@contextmanager
def fresh_stack(queued_seconds: float = NEVER, simulator_process: bool = False, **settings: str) -> Iterator[Stack]:
    """A fresh Azurite, a simulator and app settings in os.environ for one figure.

    simulator_process: run the simulator in its own process, as Partner Center is remote, so that its
    threads do not compete with the host for this process's GIL.
    """
    azurite = start_azurite(log_dir=Path(tempfile.gettempdir()))
    simulator: SimulatorServer | None = None
    process: subprocess.Popen[bytes] | None = None
    if simulator_process:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "local.simulator", "--port", str(port), "--queued-seconds",
                                    str(queued_seconds), "--processing-seconds", "0"], cwd=PROJECT_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        simulator_url = f"http://127.0.0.1:{port}"
        wait_until_answering(simulator_url + "/_sim/batches")
    else:
        simulator = start_in_thread(Simulator(SimulatorConfig(queued_seconds=queued_seconds, processing_seconds=0)))
        simulator_url = simulator.url
    figure_settings = {
        "STATUS_QUEUE_NAME": "bench-status",
        "FAILURE_QUEUE_NAME": "bench-failures",
        "POLL_INITIAL_DELAY_SECONDS": "0",
        "POLL_MAX_DELAY_SECONDS": "0",
        "POLL_BACKOFF_FACTOR": "0",
        "POLL_DEADLINE_SECONDS": "2592000",  # the maximum: no batch times out during a figure
        **settings,
    }
    env = simulator_app_settings(azurite.connection_string, simulator_url, **figure_settings)
    try:
        with app_environment(env):
            yield Stack(azurite, simulator, simulator_url, env)
    finally:
        if simulator is not None:
            simulator.shutdown()
            simulator.server_close()
        if process is not None:
            process.terminate()
            process.wait(30)
        azurite.stop()


def seed_batches(stack: Stack, count: int) -> list[str]:
    """Batches that stay queued forever, and one status message for each."""
    customer = str(uuid.uuid4())
    queue = stack.queue(stack.env["STATUS_QUEUE_NAME"])
    tracking_ids = [stack.upload(customer, [{"serialNumber": f"SN-{i}"}]) for i in range(count)]

    def send(tracking: str) -> None:
        queue.send_message(json.dumps({"customerId": customer, "batchTrackingId": tracking}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, tracking_ids))
    return tracking_ids


def wait_until(probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark set-up did not finish")
        time.sleep(0.1)
