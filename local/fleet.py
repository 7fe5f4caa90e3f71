"""Several local hosts on the same queues, as Azure runs the app when it scales out to several instances.

Each instance is its own `python -m local.host` process (with its own worker process), sharing nothing with
the others but the storage account and Partner Center, as instances share nothing on Azure. `python -m
local.host --instances N` runs N of them under this supervisor, which restarts an instance that dies (as the
platform replaces one) and stops them all on SIGINT/SIGTERM. The chaos run, the benchmark and the tests use
it to kill one instance while the others go on.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from local.process_logging import INSTANCE_VARIABLE

log = logging.getLogger("local.fleet")


class Fleet:
    """N host processes started with the same arguments; each one's output goes to its own log file."""

    def __init__(self, instances: int, host_args: Sequence[str], env: Mapping[str, str], cwd: Path,
                 log_dir: Path | None = None) -> None:
        if instances < 1:
            raise ValueError("a fleet has at least one instance")
        self.host_args = list(host_args)
        self.env = dict(env)
        self.cwd = cwd
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * instances
        self._logs: list[IO[bytes] | None] = [None] * instances
        self.restarts = 0

    def start(self) -> None:
        for index in range(len(self.processes)):
            self.start_instance(index)

    def start_instance(self, index: int) -> None:
        output: IO[bytes] | None = None
        previous = self._logs[index]
        if previous is not None:  # the log of the process this one replaces
            previous.close()
        if self.log_dir is not None:
            output = open(self.log_dir / f"host-{index}.log", "ab")  # noqa: SIM115 (closed with the process)
            self._logs[index] = output
        self.processes[index] = subprocess.Popen(
            [sys.executable, "-m", "local.host", *self.host_args],
            cwd=self.cwd, env={**self.env, INSTANCE_VARIABLE: str(index)}, stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT if output else None,
        )

    def kill(self, index: int) -> None:
        """SIGKILL one instance, as a crashed or recycled instance stops: no clean-up at all."""
        process = self.processes[index]
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart_dead(self) -> list[int]:
        """Start again every instance that has exited; the indexes started."""
        dead = [index for index, process in enumerate(self.processes) if process is None or process.poll() is not None]
        for index in dead:
            self.start_instance(index)
            self.restarts += 1
        return dead

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every instance (each finishes what it runs and releases the rest), then wait for them."""
        running = [process for process in self.processes if process is not None and process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for output in self._logs:
            if output is not None:
                output.close()


def supervise(instances: int, host_args: Sequence[str], env: Mapping[str, str], cwd: Path,
              check_seconds: float = 5.0) -> int:
    """Run the fleet until SIGINT/SIGTERM, restarting an instance that dies."""
    fleet = Fleet(instances, host_args, env, cwd)
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.info("Received %s; stopping %d instances", signal.Signals(signum).name, instances)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    fleet.start()
    log.info("Started %d host instances on the same queues", instances)
    while not stop.wait(check_seconds):
        for index in fleet.restart_dead():
            log.warning("Instance %d exited; started it again", index)
    fleet.stop()
    return 0
