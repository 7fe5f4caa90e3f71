"""The local host behaves like the Functions host for queue triggers (host.json, function.json)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.host import LocalHost, QueueOptions, parse_timespan
from tests.conftest import PROJECT_ROOT, Stack, wait_for

pytestmark = pytest.mark.integration

RECORDING_FUNCTION = """
import threading, time
calls = []
lock = threading.Lock()
running = 0
most_running = 0

def main(item, context):
    global running, most_running
    with lock:
        running += 1
        most_running = max(most_running, running)
        calls.append((item.get_body().decode(), item.dequeue_count, item.id, item.pop_receipt,
                      item.insertion_time, context.function_name))
    try:
        if item.get_body().startswith(b"fail"):
            raise RuntimeError("this message always fails")
        time.sleep({sleep})
    finally:
        with lock:
            running -= 1
"""


def _app(tmp_path: Path, queues: dict[str, Any], sleep: float = 0.0, settings: dict[str, str] | None = None) -> str:
    name = f"recorder_{uuid.uuid4().hex[:8]}"
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": queues}}))
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent(RECORDING_FUNCTION.replace("{sleep}", str(sleep))))
    (folder / "function.json").write_text(json.dumps({"bindings": [
        {"name": "item", "type": "queueTrigger", "direction": "in", "queueName": "%RECORDER_QUEUE%",
         "connection": "AzureWebJobsStorage"}]}))
    if settings is not None:
        (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": settings}))
    return name


def _host(tmp_path: Path, stack: Stack, queue: str) -> LocalHost:
    env = {"AzureWebJobsStorage": stack.azurite.connection_string, "RECORDER_QUEUE": queue}
    host = LocalHost(tmp_path, env, max_polling_interval=0.1)
    host.start()
    return host


def test_a_failing_message_is_released_then_moved_to_poison_after_max_dequeue_count(
    tmp_path: Path, stack: Stack
) -> None:
    name = _app(tmp_path, {"messageEncoding": "none", "maxDequeueCount": 3, "visibilityTimeout": "00:00:01"})
    queue = f"rec-{uuid.uuid4().hex[:8]}"
    stack.queue(queue).send_message("fail please")
    host = _host(tmp_path, stack, queue)
    try:
        [poisoned] = wait_for(lambda: stack.drain(queue + "-poison"), 30, "the poison queue")
        module = sys.modules[name]
        assert poisoned == "fail please"
        assert [call[1] for call in module.calls] == [1, 2, 3]
        assert len({call[2] for call in module.calls}) == 1  # the same message each time
        assert all(call[3] and call[4] for call in module.calls)  # pop receipt and insertion time passed
        assert all(call[5] == name for call in module.calls)
        assert host.failures == 3
    finally:
        host.stop()
    assert stack.peek(queue) == []


def test_a_message_already_past_max_dequeue_count_goes_to_poison_without_running(tmp_path: Path, stack: Stack) -> None:
    name = _app(tmp_path, {"messageEncoding": "none", "maxDequeueCount": 2})
    queue = f"rec-{uuid.uuid4().hex[:8]}"
    client = stack.queue(queue)
    client.send_message("crashed host left me behind")
    for _ in range(2):  # two hosts crashed while running it: dequeue count is now 2
        list(client.receive_messages(max_messages=1, visibility_timeout=1))
        time.sleep(1.2)
    host = _host(tmp_path, stack, queue)
    try:
        assert wait_for(lambda: stack.drain(queue + "-poison"), 30, "poison") == ["crashed host left me behind"]
        assert sys.modules[name].calls == []
    finally:
        host.stop()


def test_base64_encoding_decodes_valid_messages_and_poisons_invalid_ones(tmp_path: Path, stack: Stack) -> None:
    name = _app(tmp_path, {"messageEncoding": "base64"})
    queue = f"rec-{uuid.uuid4().hex[:8]}"
    stack.queue(queue).send_message(base64.b64encode(b"hello").decode())
    stack.queue(queue).send_message("not base64!")
    host = _host(tmp_path, stack, queue)
    try:
        assert wait_for(lambda: stack.drain(queue + "-poison"), 30, "poison") == ["not base64!"]
        wait_for(lambda: sys.modules[name].calls, 10, "the valid message")
        assert [call[0] for call in sys.modules[name].calls] == ["hello"]
    finally:
        host.stop()


def test_concurrency_is_bounded_by_batch_size_and_new_batch_threshold(tmp_path: Path, stack: Stack) -> None:
    name = _app(tmp_path, {"messageEncoding": "none", "batchSize": 2, "newBatchThreshold": 1}, sleep=0.5)
    queue = f"rec-{uuid.uuid4().hex[:8]}"
    for index in range(12):
        stack.queue(queue).send_message(f"m{index}")
    host = _host(tmp_path, stack, queue)
    try:
        wait_for(lambda: len(sys.modules[name].calls) == 12, 60, "all twelve messages")
        assert 2 <= sys.modules[name].most_running <= 3
    finally:
        host.stop()
    assert stack.peek(queue) == []


def test_local_settings_values_are_loaded_and_the_environment_wins(tmp_path: Path, stack: Stack) -> None:
    name = _app(tmp_path, {"messageEncoding": "none"}, settings={"RECORDER_QUEUE": "from-settings-file",
                                                                  "ONLY_IN_FILE": "yes"})
    env = {"AzureWebJobsStorage": stack.azurite.connection_string}
    LocalHost(tmp_path, env).load()
    assert env["RECORDER_QUEUE"] == "from-settings-file" and env["ONLY_IN_FILE"] == "yes"
    env = {"AzureWebJobsStorage": stack.azurite.connection_string, "RECORDER_QUEUE": "from-env"}
    host = LocalHost(tmp_path, env)
    host.load()
    assert host.functions[0].queue_name == "from-env" and host.functions[0].name == name


def test_a_binding_expression_naming_a_missing_setting_fails_at_load(tmp_path: Path, stack: Stack) -> None:
    _app(tmp_path, {})
    with pytest.raises(KeyError, match="RECORDER_QUEUE"):
        LocalHost(tmp_path, {"AzureWebJobsStorage": stack.azurite.connection_string}).load()


def test_host_json_values_are_read_as_the_host_reads_them() -> None:
    options = QueueOptions.from_host_json(json.loads((PROJECT_ROOT / "host.json").read_text()))
    assert options.message_encoding == "none"
    assert (options.batch_size, options.threshold, options.max_dequeue_count) == (8, 4, 5)
    assert (options.visibility_timeout, options.max_polling_interval) == (60, 10)
    assert QueueOptions.from_host_json({}).threshold == 8 and QueueOptions.from_host_json({}).batch_size == 16
    assert parse_timespan("1.02:03:04.5") == 93784.5


def test_the_app_fails_at_start_up_naming_a_missing_setting(stack: Stack) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PARTNER_CENTER_AUTH"}
    result = subprocess.run([sys.executable, "-m", "local.host"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "PARTNER_CENTER_AUTH is not set" in result.stderr
