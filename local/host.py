"""Run the function folders locally, the way the Azure Functions host runs queue and timer triggers.

    python -m local.host [--app-root .]

What it does as the Functions host does (extensions.queues in host.json, function.json bindings):
- finds every folder with a function.json, resolves %SETTING% in queueName, loads local.settings.json
  Values into the environment (values already in the environment win);
- receives up to batchSize messages with a 10-minute lease, renews the lease while a function runs,
  and receives more when the in-flight count falls to newBatchThreshold;
- passes an azure.functions.queue.QueueMessage (id, body, dequeue_count, times, pop_receipt);
- deletes the message when the function returns; when it raises, releases it with visibilityTimeout,
  or moves it to <queue>-poison once dequeue_count reaches maxDequeueCount; a message already past
  maxDequeueCount goes to poison without running; with messageEncoding base64, a message that is not
  valid base64 goes to poison at once;
- backs off from 100 ms to maxPollingInterval while the queue is empty;
- runs a timerTrigger function at each occurrence of its NCRONTAB schedule (six fields, seconds first,
  UTC; %SETTING% resolved), one run at a time, with an azure.functions.TimerRequest;
- runs the functions in a separate Python worker process (local.worker), restarted if it dies, as
  the host runs its language worker; --in-process runs them in the host's own process instead (for a
  debugger; functionTimeout is then not enforced);
- a function folder that cannot be indexed (a %SETTING% that is not set) is disabled with an error; a
  function that fails to load (an import error, a setting its module checks at import) keeps its
  listener and fails every invocation with the load error, so its messages end in <queue>-poison after
  maxDequeueCount, as on Azure; the host itself keeps running;
- an invocation that runs past host.json's functionTimeout fails, and its worker is restarted;
- on SIGINT/SIGTERM stops receiving, lets running functions finish, releases what has not started.

--instances N runs N such hosts as separate processes on the same queues (local/fleet.py), as Azure runs the
app on N instances when it scales out.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.fleet import supervise
from local.functions import (
    Entry,
    FunctionLoadError,
    FunctionSpec,
    check_loaded,
    find_functions,
    invoke,
    load_entries,
    next_occurrence,
)
from local.process_logging import configure_logging
from local.worker import FunctionFailed, FunctionTimedOut, Invocation, WorkerExited, WorkerProcess
from shared.app import reset_app
from shared.config import StorageSettings, load_storage_settings
from shared.storage import StorageClients

log = logging.getLogger("local.host")
LEASE_SECONDS = 600.0  # the Functions host's fixed dequeue visibility
MIN_POLLING_INTERVAL = 0.1


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def threshold(self) -> int:
        return self.new_batch_threshold if self.new_batch_threshold is not None else self.batch_size // 2

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any]) -> QueueOptions:
        queues = host.get("extensions", {}).get("queues", {})
        return cls(
            batch_size=min(int(queues.get("batchSize", 16)), 32),
            new_batch_threshold=queues.get("newBatchThreshold"),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=max(
                MIN_POLLING_INTERVAL, parse_timespan(queues.get("maxPollingInterval", "00:01:00"))
            ),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )


@dataclass
class _InFlight:
    function: FunctionSpec
    message: Any
    pop_receipt: str
    renewed_at: float = field(default_factory=time.monotonic)


def parse_timespan(value: Any) -> float:
    """host.json TimeSpan ("hh:mm:ss[.fff]" or "d.hh:mm:ss") as seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", str(value).strip())
    if not match:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def function_timeout(host_json: Mapping[str, Any]) -> float | None:
    """host.json's functionTimeout in seconds; None for -1 (no limit). Flex Consumption's default is 30 minutes."""
    value = host_json.get("functionTimeout", "00:30:00")
    if str(value).strip() == "-1":
        return None
    seconds = parse_timespan(value)
    if seconds <= 0:
        raise ValueError(f"functionTimeout must be -1 or a positive TimeSpan, got {value!r}")
    return seconds


def load_local_settings(app_root: Path, env: MutableMapping[str, str]) -> None:
    path = app_root / "local.settings.json"
    if not path.exists():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for name, value in values.items():
        env.setdefault(name, str(value))


class LocalHost:
    def __init__(
        self,
        app_root: Path,
        env: MutableMapping[str, str] | None = None,
        *,
        max_polling_interval: float | None = None,
        lease_seconds: float = LEASE_SECONDS,
        functions: list[str] | None = None,
        worker_process: bool = False,
    ) -> None:
        """worker_process: run the functions in a separate worker process, as on Azure (the CLI's default);
        otherwise in this process, where a test can look at their modules."""
        self.app_root = app_root.resolve()
        self.env = os.environ if env is None else env
        host_json = json.loads((self.app_root / "host.json").read_text(encoding="utf-8"))
        options = QueueOptions.from_host_json(host_json)
        if max_polling_interval is not None:
            options = QueueOptions(**{**options.__dict__, "max_polling_interval": max_polling_interval})
        self.options = options
        self.function_timeout = function_timeout(host_json)
        self.lease_seconds = lease_seconds
        self.only = set(functions) if functions else None
        self.functions: list[FunctionSpec] = []
        self.worker_process = worker_process
        self.worker: WorkerProcess | None = None
        self._entries: dict[str, Entry] = {}
        self._load_errors: dict[str, str] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._in_flight: dict[str, _InFlight] = {}
        self._lock = threading.Lock()
        self._clients: dict[str, StorageClients] = {}
        self.invocations = 0
        self.failures = 0

    # --- start-up ----------------------------------------------------------------------------------
    def load(self) -> None:
        load_local_settings(self.app_root, self.env)
        self.functions = find_functions(self.app_root, self.env, self.only)
        if not self.worker_process:
            reset_app()  # a new worker: the app is built again from the current settings
            self._entries, self._load_errors = load_entries(self.app_root, self.functions)

    def start(self) -> None:
        """Load the functions (in the worker, if there is one) and start listening.

        A function that fails to load keeps its listener and fails each invocation with the load error, as on
        Azure; only a worker that cannot start at all raises.
        """
        if not self.functions:
            self.load()
        if not self.functions:
            log.warning("No job functions found: every function folder failed to index")
        elif self.worker_process:
            self.worker = WorkerProcess(
                self.app_root, self.functions, self.env, len(self.functions) * self._concurrency
            )
            self.worker.start()
        for function in self.functions:
            if function.is_timer:
                ticker = threading.Thread(target=self._tick, args=(function,), name=f"timer-{function.name}",
                                          daemon=True)
                ticker.start()
                self._threads.append(ticker)
                continue
            executor = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=function.name)
            self._executors.append(executor)
            thread = threading.Thread(
                target=self._listen, args=(function, executor), name=f"listen-{function.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        renewer = threading.Thread(target=self._renew_leases, name="lease-renewal", daemon=True)
        renewer.start()
        self._threads.append(renewer)
        log.info(
            "Host started (batchSize %d, newBatchThreshold %d, maxDequeueCount %d, visibilityTimeout %gs, "
            "maxPollingInterval %gs, messageEncoding %s)",
            self.options.batch_size,
            self.options.threshold,
            self.options.max_dequeue_count,
            self.options.visibility_timeout,
            self.options.max_polling_interval,
            self.options.message_encoding,
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Stop receiving, let running functions finish, release messages that have not started."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=False)
        if self.worker is not None:
            self.worker.stop()
        log.info("Host stopped after %d invocations (%d failed)", self.invocations, self.failures)

    @property
    def _concurrency(self) -> int:
        return self.options.batch_size + self.options.threshold

    # --- the listener ------------------------------------------------------------------------------
    def clients_for(self, connection: str) -> StorageClients:
        if connection not in self._clients:
            self._clients[connection] = StorageClients(self._storage_settings(connection))
        return self._clients[connection]

    def _storage_settings(self, connection: str) -> StorageSettings:
        if connection in ("", "AzureWebJobsStorage"):
            return load_storage_settings(self.env)
        prefix = (
            connection
            if connection in self.env or f"{connection}__queueServiceUri" in self.env
            else f"AzureWebJobs{connection}"
        )
        return load_storage_settings(
            {
                "AzureWebJobsStorage": self.env.get(prefix, ""),
                "AzureWebJobsStorage__queueServiceUri": self.env.get(f"{prefix}__queueServiceUri", ""),
                "AzureWebJobsStorage__tableServiceUri": self.env.get(f"{prefix}__tableServiceUri", "-"),
                "AzureWebJobsStorage__clientId": self.env.get(f"{prefix}__clientId", ""),
            }
        )

    def _listen(self, function: FunctionSpec, executor: ThreadPoolExecutor) -> None:
        clients = self.clients_for(function.connection)
        queue = clients.queue(function.queue_name)
        pending = 0
        pending_lock = threading.Condition()
        wait = MIN_POLLING_INTERVAL

        def done(_: Any) -> None:
            nonlocal pending
            with pending_lock:
                pending -= 1
                pending_lock.notify_all()

        while not self._stopping.is_set():
            with pending_lock:
                while pending > self.options.threshold and not self._stopping.is_set():
                    pending_lock.wait(0.2)
            if self._stopping.is_set():
                break
            try:
                messages = list(
                    queue.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=int(self.lease_seconds),
                    )
                )
            except Exception as exc:  # a missing queue or a storage outage: keep polling, like the host
                if getattr(exc, "error_code", None) == "QueueNotFound":
                    _create_queue(queue)
                else:
                    log.warning("Receiving from %s failed: %s", function.queue_name, exc)
                messages = []
            if not messages:
                self._stopping.wait(wait)
                wait = min(self.options.max_polling_interval, wait * 2) * random.uniform(0.8, 1.0)
                wait = max(wait, MIN_POLLING_INTERVAL)
                continue
            wait = MIN_POLLING_INTERVAL
            for message in messages:
                with pending_lock:
                    pending += 1
                with self._lock:
                    self._in_flight[message.id] = _InFlight(function, message, message.pop_receipt or "")
                executor.submit(self._process, function, clients, message).add_done_callback(done)

    def _process(self, function: FunctionSpec, clients: StorageClients, message: Any) -> None:
        queue = clients.queue(function.queue_name)
        try:
            if self._stopping.is_set():
                self._update(queue, message.id, 0)  # not started: hand it back at once
                return
            if message.dequeue_count > self.options.max_dequeue_count:
                self._to_poison(function, clients, message, "dequeue count past maxDequeueCount before running")
                return
            try:
                body = self._decode(message.content)
            except ValueError:
                log.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s", message.id)
                self._to_poison(function, clients, message, "message is not valid base64")
                return
            invocation_id = str(uuid.uuid4())
            log.info(
                "Executing 'Functions.%s' (Reason='New queue message detected on '%s'.', Id=%s)",
                function.name,
                function.queue_name,
                invocation_id,
            )
            started = time.monotonic()
            try:
                self._run(function, invocation_id, self._message_fields(message, body))
            except Exception as exc:
                with self._lock:
                    self.invocations += 1
                    self.failures += 1
                # the worker's traceback, or the load or timeout error, is the text
                in_worker = isinstance(exc, FunctionFailed | WorkerExited | FunctionTimedOut | FunctionLoadError)
                log.error(
                    "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)%s",
                    function.name,
                    invocation_id,
                    (time.monotonic() - started) * 1000,
                    f"\n{exc}" if in_worker else "",
                    exc_info=None if in_worker else exc,
                )
                if message.dequeue_count >= self.options.max_dequeue_count:
                    self._to_poison(function, clients, message, "function failed maxDequeueCount times")
                else:
                    self._update(queue, message.id, int(self.options.visibility_timeout))
                return
            with self._lock:
                self.invocations += 1
            log.info(
                "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
                function.name,
                invocation_id,
                (time.monotonic() - started) * 1000,
            )
            self._delete(queue, message.id)
        finally:
            with self._lock:
                self._in_flight.pop(message.id, None)

    def _tick(self, function: FunctionSpec) -> None:
        """A timer trigger: run the function at each occurrence of its schedule, one run at a time, as the host
        does (a run still going at the next occurrence delays it)."""
        while not self._stopping.is_set():
            due = next_occurrence(function.schedule, datetime.now(UTC))
            if self._stopping.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            invocation_id = str(uuid.uuid4())
            log.info("Executing 'Functions.%s' (Reason='Timer fired at %s', Id=%s)", function.name,
                     due.isoformat(), invocation_id)
            started = time.monotonic()
            try:
                self._run(function, invocation_id, {"past_due": False})
            except Exception as exc:
                with self._lock:
                    self.invocations += 1
                    self.failures += 1
                log.error("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)\n%s", function.name, invocation_id,
                          (time.monotonic() - started) * 1000, exc)
                continue
            with self._lock:
                self.invocations += 1
            log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", function.name, invocation_id,
                     (time.monotonic() - started) * 1000)

    def _run(self, function: FunctionSpec, invocation_id: str, message: dict[str, Any]) -> None:
        if self.worker is not None:
            self.worker.invoke(Invocation(invocation_id, function.name, message), self.function_timeout)
        else:  # in-process (for a debugger): functionTimeout is not enforced, a thread cannot be stopped
            check_loaded(function.name, self._load_errors)
            invoke(self._entries[function.name], invocation_id, message)

    def _message_fields(self, message: Any, body: bytes) -> dict[str, Any]:
        """The azure.functions QueueMessage's arguments (plain values: they cross to the worker process)."""
        return {
            "id": message.id,
            "body": body,
            "dequeue_count": message.dequeue_count,
            "expiration_time": message.expires_on,
            "insertion_time": message.inserted_on,
            "time_next_visible": message.next_visible_on,
            "pop_receipt": self._receipt(message.id),
        }

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "none":
            return content.encode("utf-8", "surrogatepass")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not base64") from exc

    def _to_poison(self, function: FunctionSpec, clients: StorageClients, message: Any, why: str) -> None:
        poison = f"{function.queue_name}-poison"
        log.warning(
            "Message has reached MaxDequeueCount of %d (%s). Moving message to queue '%s'. MessageId=%s",
            self.options.max_dequeue_count,
            why,
            poison,
            message.id,
        )
        clients.send(poison, message.content, time_to_live=None)  # the host's copy takes the 7-day default
        self._delete(clients.queue(function.queue_name), message.id)

    def _receipt(self, message_id: str) -> str:
        with self._lock:
            return self._in_flight[message_id].pop_receipt

    def _delete(self, queue: Any, message_id: str) -> None:
        try:
            queue.delete_message(message_id, self._receipt(message_id))
        except Exception as exc:  # lost lease: the message comes back, as on Azure
            log.warning("Deleting message %s failed: %s", message_id, exc)

    def _update(self, queue: Any, message_id: str, visibility: int) -> None:
        try:
            queue.update_message(message_id, self._receipt(message_id), visibility_timeout=visibility)
        except Exception as exc:
            log.warning("Releasing message %s failed: %s", message_id, exc)

    def _renew_leases(self) -> None:
        """Renew the lease of a running function's message at half its length, as the host does."""
        while not self._stopping.wait(min(5.0, self.lease_seconds / 4)):
            now = time.monotonic()
            with self._lock:
                due = [item for item in self._in_flight.values() if now - item.renewed_at >= self.lease_seconds / 2]
            for item in due:
                queue = self.clients_for(item.function.connection).queue(item.function.queue_name)
                try:
                    receipt = queue.update_message(
                        item.message.id, item.pop_receipt, visibility_timeout=int(self.lease_seconds)
                    ).pop_receipt
                except Exception as exc:
                    log.warning("Renewing the lease of message %s failed: %s", item.message.id, exc)
                    continue
                with self._lock:
                    if item.message.id in self._in_flight:
                        item.pop_receipt, item.renewed_at = receipt or "", now


def _create_queue(queue: Any) -> None:
    try:
        queue.create_queue()
    except Exception:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.host", description="Run the function folders locally.")
    parser.add_argument("--app-root", type=Path, default=Path("."))
    parser.add_argument("--functions", nargs="+", help="run only these function folders (like func start --functions)")
    parser.add_argument("--lease-seconds", type=float, default=LEASE_SECONDS,
                        help="dequeue lease (the Functions host uses 600); shorter only for crash tests")
    parser.add_argument(
        "--max-polling-interval",
        type=float,
        default=None,
        help="seconds; overrides host.json's maxPollingInterval (local development only)",
    )
    parser.add_argument("--in-process", action="store_true",
                        help="run the functions in the host's process instead of a worker process (for a debugger)")
    parser.add_argument("--instances", type=int, default=1,
                        help="run N hosts on the same queues, as Azure scales out to N instances")
    args = parser.parse_args(argv)
    configure_logging()
    if args.instances > 1:
        host_args = _strip_instances(sys.argv[1:] if argv is None else argv)
        return supervise(args.instances, host_args, os.environ, Path.cwd())
    host = LocalHost(args.app_root, max_polling_interval=args.max_polling_interval, functions=args.functions,
                     lease_seconds=args.lease_seconds, worker_process=not args.in_process)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        log.info("Received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        host.start()
    except Exception as exc:
        log.error("Start-up failed: %s", exc)
        host.stop()
        return 1
    stop.wait()
    host.stop()
    return 0


def _strip_instances(argv: list[str]) -> list[str]:
    """The command line without --instances, for each instance's own host."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--instances":
            skip = True
        elif not arg.startswith("--instances="):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main())
