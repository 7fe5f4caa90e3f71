"""Start and stop Azurite (queue and table services) from node_modules, on free loopback ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Azurite:
    queue_port: int
    table_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workspace: Path | None = None

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/devstoreaccount1;"
        )

    def queue(self, name: str) -> Any:
        """A client for one of its queues, created if it does not exist yet."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.connection_string, name)
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        return client

    def stop(self) -> None:
        """Shut down cleanly: SIGINT, which both services handle by saving their data (the table service
        ignores SIGTERM's chance to save, so a workspace would lose its last few seconds of writes)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_azurite(workspace: Path | None = None, log_dir: Path | None = None, timeout: float = 60.0,
                  ports: tuple[int, int] | None = None) -> Azurite:
    """Queue and table services; in memory unless a workspace folder is given (then data survives restarts).

    ports: (queue, table) to reuse, e.g. to restart on the same address; free ports otherwise.
    """
    dist = PROJECT_ROOT / "node_modules" / "azurite" / "dist" / "src"
    if not dist.exists():
        raise RuntimeError("Azurite is not installed: run `npm install` (make does it for you)")
    queue_port, table_port = ports or (free_port(), free_port())
    azurite = Azurite(queue_port=queue_port, table_port=table_port, workspace=workspace)
    log_dir = log_dir or Path(tempfile.gettempdir())
    for service, port in (("queue", azurite.queue_port), ("table", azurite.table_port)):
        command = [
            "node", str(dist / service / "main.js"),
            f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port),
            "--skipApiVersionCheck", "--disableTelemetry", "--silent",
        ]
        command += ["--location", str(workspace)] if workspace else ["--inMemoryPersistence"]
        log_file = open(log_dir / f"azurite-{service}-{port}.log", "wb")  # noqa: SIM115 (lives with the process)
        azurite.processes.append(subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + timeout
    for port, process in zip((azurite.queue_port, azurite.table_port), azurite.processes, strict=True):
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                azurite.stop()
                raise RuntimeError(f"Azurite did not start on port {port}; see {log_dir}/azurite-*-{port}.log")
            time.sleep(0.05)
    return azurite


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
