"""The language worker: the function folders' code runs here, in its own process, as on Azure.

The Functions host keeps the queue listener, the leases, the deletes and the poison moves in its own
process and sends each invocation to a Python worker process. local.host does the same through this
module: the worker loads the entry points, runs invocations on a thread pool and answers each with
None (succeeded) or the traceback. It ignores SIGINT and SIGTERM, because the host decides when it
stops (a Ctrl-C reaches the whole process group), and it exits at once when the host's end of the pipe
closes, so a killed host never leaves a worker running. When the worker dies, the host fails its
running invocations and starts a new one.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local.functions import FunctionLoadError, FunctionSpec, check_loaded, invoke, load_entries
from local.process_logging import configure_logging

log = logging.getLogger("local.host")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    """The first thing the host sends the worker."""

    app_root: Path
    specs: list[FunctionSpec]
    concurrency: int
    log_level: int


@dataclass(frozen=True)
class Invocation:
    """What the host sends the worker for one message (picklable)."""

    invocation_id: str
    function_name: str
    message: dict[str, Any]


class FunctionFailed(Exception):
    """The function raised; the message is the worker's traceback."""


class WorkerExited(Exception):
    """The worker process ended while the invocation ran, or no worker could be started."""


class FunctionTimedOut(Exception):
    """The invocation ran past functionTimeout; its worker was restarted."""


class WorkerStartError(RuntimeError):
    """The worker could not load the functions (an import error, a bad binding, missing settings)."""


class WorkerProcess:
    """The host's side: starts the worker, sends invocations, waits for their answers, restarts it."""

    def __init__(
        self, app_root: Path, specs: list[FunctionSpec], env: Mapping[str, str], concurrency: int
    ) -> None:
        self._app_root = app_root
        self._specs = specs
        self._env = dict(env)
        self._concurrency = concurrency
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._pending: dict[str, Future[None]] = {}
        self._connection: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the worker and wait until it has loaded every function; raises WorkerStartError."""
        self._spawn()
        self._reader = threading.Thread(target=self._read_answers, name="worker-answers", daemon=True)
        self._reader.start()

    def invoke(self, invocation: Invocation, timeout: float | None = None) -> None:
        """Run one invocation in the worker; raises FunctionFailed, WorkerExited or FunctionTimedOut.

        Past timeout (host.json's functionTimeout) the invocation fails and the worker is restarted, as the
        Functions host restarts a language worker whose function timed out: a thread cannot be stopped.
        """
        if not self._ready.wait(START_TIMEOUT_SECONDS):
            raise WorkerExited("no language worker is running")
        answer: Future[None] = Future()
        with self._lock:
            connection = self._connection
            if connection is None or not self._ready.is_set():
                raise WorkerExited("the language worker is restarting")
            self._pending[invocation.invocation_id] = answer
            process = self._process  # the worker this invocation runs in
            try:
                connection.send(invocation)
            except OSError as exc:
                self._pending.pop(invocation.invocation_id, None)
                raise WorkerExited(f"the language worker is gone: {exc}") from exc
        try:
            answer.result(timeout)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(invocation.invocation_id, None)
                running = self._process is process  # not replaced meanwhile (another timeout, a crash)
            log.error("Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation; "
                      "restarting the language worker.", _timespan(timeout or 0), invocation.function_name,
                      invocation.invocation_id)
            if running and process is not None:
                process.kill()  # the reader sees the pipe close, fails the rest and starts a new worker
            raise FunctionTimedOut(f"Timeout value of {_timespan(timeout or 0)} was exceeded by function: "
                                   f"Functions.{invocation.function_name}") from None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the worker to finish what it runs and exit (called once the host's invocations are done)."""
        self._stopping.set()
        with self._lock:
            connection = self._connection
            if connection is not None:
                try:
                    connection.send(None)
                except OSError:
                    pass
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("The language worker did not stop within %g s; killing it", timeout)
                self._process.kill()
                self._process.wait(5)
        if self._reader is not None:
            self._reader.join(5)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # --- inside the host process ------------------------------------------------------------------------------
    def _spawn(self) -> None:
        host_end, worker_end = multiprocessing.Pipe()
        python_path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), self._env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "local.worker", "--fd", str(worker_end.fileno())],
            pass_fds=[worker_end.fileno()],
            cwd=self._app_root,
            env={**self._env, "PYTHONPATH": python_path},
            stdin=subprocess.DEVNULL,
        )
        worker_end.close()  # only the worker holds it now: the host's death closes the pipe for the worker
        config = WorkerConfig(self._app_root, self._specs, self._concurrency, logging.getLogger().getEffectiveLevel())
        try:
            host_end.send(config)
            if not host_end.poll(START_TIMEOUT_SECONDS):
                raise WorkerStartError(f"the language worker did not load the functions in {START_TIMEOUT_SECONDS} s")
            greeting = host_end.recv()
        except (EOFError, OSError):
            process.wait(5)
            raise WorkerStartError(f"the language worker exited at start-up (exit code {process.returncode})") from None
        except WorkerStartError:
            process.kill()
            process.wait(5)
            raise
        if greeting != "ready":
            process.wait(5)
            raise WorkerStartError(str(greeting))
        with self._lock:
            self._connection, self._process = host_end, process
            self.starts += 1
        self._ready.set()
        log.info("Language worker started (pid %d)", process.pid)

    def _read_answers(self) -> None:
        while True:
            connection = self._connection
            assert connection is not None
            try:
                invocation_id, failure = connection.recv()
            except (EOFError, OSError):
                if not self._worker_exited():
                    return
                continue
            with self._lock:
                answer = self._pending.pop(invocation_id, None)
            if answer is None:
                continue
            if failure:
                answer.set_exception(FunctionFailed(failure))
            else:
                answer.set_result(None)

    def _worker_exited(self) -> bool:
        """Fail what the worker was running and start a new one; False when the host is stopping."""
        self._ready.clear()
        assert self._process is not None
        try:
            exit_code: int | None = self._process.wait(5)
        except subprocess.TimeoutExpired:  # it closed the pipe but lives on: end it
            self._process.kill()
            exit_code = self._process.wait(5)
        with self._lock:
            pending, self._pending = self._pending, {}
            self._connection = None
        for answer in pending.values():
            answer.set_exception(WorkerExited(f"the language worker exited (exit code {exit_code})"))
        if self._stopping.is_set():
            return False
        log.error("The language worker exited (exit code %s) with %d invocations running; starting a new one",
                  exit_code, len(pending))
        while not self._stopping.is_set():
            try:
                self._spawn()
                return True
            except WorkerStartError as exc:
                log.error("Restarting the language worker failed: %s", exc)
                self._stopping.wait(5)
        return False


def _timespan(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# --- inside the worker process --------------------------------------------------------------------------------
def serve(connection: Connection) -> None:
    """The worker's main loop: load the functions, then run what the host sends until it says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config: WorkerConfig = connection.recv()

    configure_logging(config.log_level)
    try:
        entries, load_errors = load_entries(config.app_root, config.specs)
    except Exception as exc:
        logging.getLogger("local.worker").exception("Loading the functions failed")
        connection.send(str(exc) or type(exc).__name__)
        return
    connection.send("ready")
    send_lock = threading.Lock()

    def run(invocation: Invocation) -> None:
        try:
            check_loaded(invocation.function_name, load_errors)
            invoke(entries[invocation.function_name], invocation.invocation_id, invocation.message)
            failure = None
        except FunctionLoadError as exc:
            failure = str(exc)
        except BaseException:
            failure = traceback.format_exc()
        with send_lock:
            connection.send((invocation.invocation_id, failure))

    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="invocation") as pool:
        while True:
            try:
                invocation = connection.recv()
            except (EOFError, OSError):
                os._exit(1)  # the host is gone: so is its worker, as on Azure
            if invocation is None:
                break
            pool.submit(run, invocation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.worker", description="Started by local.host; not by hand.")
    parser.add_argument("--fd", type=int, required=True, help="the host's end of the pipe")
    serve(Connection(parser.parse_args(argv).fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
