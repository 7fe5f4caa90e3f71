"""What both queue-triggered functions do around their handler, where the Functions host would lose a message.

- A setting the function needs is missing or invalid (a Key Vault reference not yet resolved, a typo):
  the host would fail every invocation and, after maxDequeueCount, move every message to <queue>-poison.
  Instead the message waits: it is sent back to its queue as it came (chain state intact, never expiring)
  to be read again in SETTINGS_RETRY_SECONDS, and an error naming the setting is logged once per interval.
  Once the setting is fixed (which restarts the app on Azure), work resumes with nothing lost.
- The last delivery the host allows (dequeue count = maxDequeueCount) fails: the host would move the
  message to <queue>-poison as it is, with the service's default time-to-live of 7 days. Instead the
  message goes there in a never-expiring envelope with its reason (the exception and the dequeue count),
  and the invocation succeeds so that the host does not move it again.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import telemetry
from .app import storage_clients
from .config import QUEUE_NAMES, ConfigError, StorageNames, default_of, settings_retry_seconds
from .log import context_logger
from .poison import send_to_poison
from .storage import queue_delay

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"

Handler = Callable[[bytes, str, int], None]


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue: str  # the StorageNames field of its trigger's queue: status_queue or failure_queue
    handler: Callable[[], Handler]  # raises ConfigError when a setting it needs is wrong


def run(function: QueueFunction, body: bytes, message_id: str, dequeue_count: int) -> None:
    """One invocation: the handler, or the message held back while settings are wrong, or poisoned with a reason
    on the last delivery."""
    telemetry.configure()
    try:
        handle = function.handler()
    except ConfigError as exc:
        _wait_for_settings(function, body, message_id, exc)
        return
    try:
        handle(body, message_id, dequeue_count)
    except Exception as exc:
        limit = max_dequeue_count()
        if dequeue_count < limit:
            raise  # the host tries it again
        reason = (f"failed on its last delivery (dequeue count {dequeue_count}, maxDequeueCount {limit}): "
                  f"{type(exc).__name__}: {exc}")
        poison = send_to_poison(storage_clients(), _queue_name(function), body.decode("utf-8", "replace"), reason,
                                datetime.now(UTC))
        context_logger(f"batchwatch.{function.name}", messageId=message_id).exception(
            "moved the message to %s: %s", poison, reason)


HOST_OVERRIDE = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount"


def max_dequeue_count() -> int:
    """The host's maxDequeueCount: the app setting that overrides host.json, else host.json's, else the host's
    default of 5."""
    try:
        override = os.environ.get(HOST_OVERRIDE, "").strip()
        return max(1, int(override)) if override else _host_json_max_dequeue_count()
    except ValueError:
        return 5


@functools.cache
def _host_json_max_dequeue_count() -> int:
    """host.json is part of the deployed app: read once per process."""
    try:
        queues = json.loads(HOST_JSON.read_text(encoding="utf-8")).get("extensions", {}).get("queues", {})
        return max(1, int(queues.get("maxDequeueCount", 5)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 5


_last_logged: dict[str, float] = {}
_log_lock = threading.Lock()


def _wait_for_settings(function: QueueFunction, body: bytes, message_id: str, error: ConfigError) -> None:
    delay = settings_retry_seconds(os.environ)
    storage_clients().send(_queue_name(function), body.decode("utf-8", "replace"),
                           visibility_timeout=queue_delay(delay))
    key = f"{function.name}: {error}"
    with _log_lock:
        due = time.monotonic() - _last_logged.get(key, -delay) >= delay
        if due:
            _last_logged[key] = time.monotonic()
    log = context_logger(f"batchwatch.{function.name}", messageId=message_id)
    if due:
        log.error("a setting this function needs is wrong: %s; messages wait in %s and are tried again every %d s "
                  "until it is fixed", error, _queue_name(function), delay)
    else:
        log.info("settings still wrong (%s); message sent back to wait %d s", error, delay)


def _queue_name(function: QueueFunction) -> str:
    """The trigger's queue, from its setting as the binding reads it (%STATUS_QUEUE_NAME%), or the default."""
    return os.environ.get(QUEUE_NAMES[function.queue], "").strip() or default_of(StorageNames, function.queue)

