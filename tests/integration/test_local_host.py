"""The local host behaves like the Functions host for queue triggers (host.json, function.json)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from local.host import LocalHost, QueueOptions, function_timeout, parse_timespan
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


def _app(tmp_path: Path, queues: dict[str, Any], sleep: float = 0.0, settings: dict[str, str] | None = None,
         source: str = RECORDING_FUNCTION, queue_setting: str = "RECORDER_QUEUE", **host: Any) -> str:
    name = f"recorder_{uuid.uuid4().hex[:8]}"
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": queues}, **host}))
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text(textwrap.dedent(source.replace("{sleep}", str(sleep))))
    (folder / "function.json").write_text(json.dumps({"bindings": [
        {"name": "item", "type": "queueTrigger", "direction": "in", "queueName": f"%{queue_setting}%",
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


def test_a_binding_expression_naming_a_missing_setting_disables_only_that_function(
        tmp_path: Path, stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    working = _app(tmp_path, {})
    broken = _app(tmp_path, {}, queue_setting="NOT_SET_ANYWHERE")
    host = LocalHost(tmp_path, {"AzureWebJobsStorage": stack.azurite.connection_string, "RECORDER_QUEUE": "q"})
    host.load()
    assert [spec.name for spec in host.functions] == [working]
    assert f"Error indexing method 'Functions.{broken}'" in caplog.text and "NOT_SET_ANYWHERE" in caplog.text


BROKEN_AT_IMPORT = """
import os
raise RuntimeError("BROKEN_SETTING is not set")  # as a function module that checks its settings at import
"""


@pytest.mark.parametrize("worker_process", [False, True], ids=["in-process", "worker"])
def test_a_function_that_fails_to_load_fails_each_invocation_and_the_host_runs_on(
        tmp_path: Path, stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        worker_process: bool) -> None:
    queues = {"messageEncoding": "none", "maxDequeueCount": 2, "visibilityTimeout": "00:00:01"}
    working = _app(tmp_path, queues, source=WORKER_FUNCTION)
    broken = _app(tmp_path, queues, source=BROKEN_AT_IMPORT, queue_setting="BROKEN_QUEUE")
    queue, broken_queue = f"wrk-{uuid.uuid4().hex[:8]}", f"brk-{uuid.uuid4().hex[:8]}"
    env = {**_worker_env(tmp_path, stack, queue), "BROKEN_QUEUE": broken_queue}
    monkeypatch.setenv("RECORDER_FILE", env["RECORDER_FILE"])  # read by the function in-process too
    stack.queue(broken_queue).send_message("for the broken function")
    stack.queue(queue).send_message("for the working one")
    host = LocalHost(tmp_path, env, max_polling_interval=0.1, worker_process=worker_process)
    host.start()
    try:
        assert wait_for(lambda: stack.drain(broken_queue + "-poison"), 30, "poison") == ["for the broken function"]
        wait_for(lambda: _records(tmp_path / "calls.jsonl"), 30, "the working function's invocation")
        assert host.failures == 2  # each delivery of the broken function's message failed
    finally:
        host.stop()
    assert f"Function '{broken}' failed to load: RuntimeError: BROKEN_SETTING is not set" in caplog.text
    assert working != broken and stack.peek(queue) == []


def test_an_invocation_past_function_timeout_fails_and_its_worker_is_restarted(
        tmp_path: Path, stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    _app(tmp_path, {"messageEncoding": "none", "maxDequeueCount": 2, "visibilityTimeout": "00:00:01",
                    "batchSize": 1, "newBatchThreshold": 0}, source=WORKER_FUNCTION, functionTimeout="00:00:01")
    queue = f"wrk-{uuid.uuid4().hex[:8]}"
    stack.queue(queue).send_message("slow one")  # sleeps 3 s
    host = LocalHost(tmp_path, _worker_env(tmp_path, stack, queue), max_polling_interval=0.1, worker_process=True)
    host.start()
    try:
        assert wait_for(lambda: stack.drain(queue + "-poison"), 60, "the slow message in poison") == ["slow one"]
        wait_for(lambda: host.worker is not None and host.worker.starts == 3, 30, "a new worker after each timeout")
        records = _records(tmp_path / "calls.jsonl")
        assert [r["dequeueCount"] for r in records] == [1, 2] and len({r["pid"] for r in records}) == 2
    finally:
        host.stop()
    assert "Timeout value of 00:00:01 exceeded by function" in caplog.text and host.failures == 2


def test_host_json_values_are_read_as_the_host_reads_them() -> None:
    options = QueueOptions.from_host_json(json.loads((PROJECT_ROOT / "host.json").read_text()))
    assert options.message_encoding == "none"
    assert (options.batch_size, options.threshold, options.max_dequeue_count) == (8, 4, 5)
    assert (options.visibility_timeout, options.max_polling_interval) == (60, 10)
    assert QueueOptions.from_host_json({}).threshold == 8 and QueueOptions.from_host_json({}).batch_size == 16
    assert parse_timespan("1.02:03:04.5") == 93784.5
    assert function_timeout({"functionTimeout": "00:10:00"}) == 600 and function_timeout({}) == 1800
    assert function_timeout({"functionTimeout": "-1"}) is None and function_timeout({"functionTimeout": -1}) is None


def test_the_app_with_a_missing_setting_keeps_running_and_holds_its_messages_back_naming_it(stack: Stack) -> None:
    """On Azure a bad setting does not stop the host; batchwatch's functions load without their settings and
    hold each message back (shared/invocation.py) instead of failing it towards the poison queue."""
    env = {key: value for key, value in os.environ.items() if key != "PARTNER_CENTER_AUTH"}
    host = subprocess.Popen([sys.executable, "-m", "local.host", "--max-polling-interval", "0.2"], cwd=PROJECT_ROOT,
                            env={**env, "PYTHONUNBUFFERED": "1", "SETTINGS_RETRY_SECONDS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stack.send({"customerId": str(uuid.uuid4()), "batchTrackingId": str(uuid.uuid4())})
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum("Executed 'Functions.check_batch_status' (Succeeded" in line
                                                  for line in lines) < 3:
            lines.append(host.stdout.readline() if host.stdout else "")
        assert host.poll() is None, "the host stopped"
    finally:
        host.terminate()
        host.wait(30)
    text = "".join(lines)
    assert "PARTNER_CENTER_AUTH is not set" in text and "messages wait in" in text
    assert "(Failed" not in text and "failed to load" not in text
    assert stack.peek(stack.env["STATUS_QUEUE_NAME"] + "-poison") == []
    held = wait_for(lambda: stack.peek(stack.env["STATUS_QUEUE_NAME"]), 10, "the held-back message to be visible")
    assert len(held) == 1  # the message, held back, never lost


# --- the language worker: functions run in their own process, as on Azure ------------------------------------
WORKER_FUNCTION = """
import json, os, time

def main(item):
    body = item.get_body().decode()
    with open(os.environ["RECORDER_FILE"], "a") as record:
        record.write(json.dumps({"body": body, "pid": os.getpid(), "dequeueCount": item.dequeue_count}) + "\\n")
    if body == "crash":
        os._exit(3)  # the worker process dies mid-invocation
    if body.startswith("fail"):
        raise RuntimeError("this message always fails")
    if body.startswith("slow"):
        time.sleep(3)
"""


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _worker_env(tmp_path: Path, stack: Stack, queue: str) -> dict[str, str]:
    return {**os.environ, "AzureWebJobsStorage": stack.azurite.connection_string, "RECORDER_QUEUE": queue,
            "RECORDER_FILE": str(tmp_path / "calls.jsonl")}


def test_functions_run_in_a_worker_process_and_failures_come_back_to_the_host(
    tmp_path: Path, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    _app(tmp_path, {"messageEncoding": "none", "maxDequeueCount": 2, "visibilityTimeout": "00:00:01"},
         source=WORKER_FUNCTION)
    queue = f"wrk-{uuid.uuid4().hex[:8]}"
    for body in ("one", "two", "fail me"):
        stack.queue(queue).send_message(body)
    host = LocalHost(tmp_path, _worker_env(tmp_path, stack, queue), max_polling_interval=0.1, worker_process=True)
    host.start()
    try:
        assert wait_for(lambda: stack.drain(queue + "-poison"), 30, "the failing message in poison") == ["fail me"]
        wait_for(lambda: host.invocations == 4, 10, "four invocations")
        records = _records(tmp_path / "calls.jsonl")
        assert host.worker is not None and {record["pid"] for record in records} == {host.worker.pid}
        assert host.worker.pid != os.getpid()
        assert sorted(record["body"] for record in records) == ["fail me", "fail me", "one", "two"]
        assert host.failures == 2
    finally:
        host.stop()
    assert stack.peek(queue) == []
    assert "RuntimeError: this message always fails" in caplog.text  # the worker's traceback, logged by the host


def test_a_worker_that_dies_is_replaced_and_its_message_retried_then_poisoned(tmp_path: Path, stack: Stack) -> None:
    _app(tmp_path, {"messageEncoding": "none", "maxDequeueCount": 2, "visibilityTimeout": "00:00:01",
                           "batchSize": 1, "newBatchThreshold": 0}, source=WORKER_FUNCTION)
    queue = f"wrk-{uuid.uuid4().hex[:8]}"
    stack.queue(queue).send_message("crash")
    host = LocalHost(tmp_path, _worker_env(tmp_path, stack, queue), max_polling_interval=0.1, worker_process=True)
    host.start()
    try:
        assert wait_for(lambda: stack.drain(queue + "-poison"), 60, "the crashing message in poison") == ["crash"]
        stack.queue(queue).send_message("after the crashes")
        wait_for(lambda: any(r["body"] == "after the crashes" for r in _records(tmp_path / "calls.jsonl")), 30,
                 "the next message, run by a new worker")
        records = _records(tmp_path / "calls.jsonl")
        assert [r["dequeueCount"] for r in records if r["body"] == "crash"] == [1, 2]
        assert len({r["pid"] for r in records}) == 3  # a worker per crash, and the one that runs on
        assert host.worker is not None and host.worker.starts == 3
    finally:
        host.stop()


def _host_command(tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "local.host", "--app-root", str(tmp_path), "--max-polling-interval", "0.1"]


def test_a_killed_host_leaves_no_worker_behind(tmp_path: Path, stack: Stack) -> None:
    _app(tmp_path, {"messageEncoding": "none"}, source=WORKER_FUNCTION)
    queue = f"wrk-{uuid.uuid4().hex[:8]}"
    host = subprocess.Popen(_host_command(tmp_path), cwd=PROJECT_ROOT, env=_worker_env(tmp_path, stack, queue),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stack.queue(queue).send_message("first")
        [record] = wait_for(lambda: _records(tmp_path / "calls.jsonl"), 60, "the first invocation")
        assert record["pid"] != host.pid
    finally:
        host.kill()
        host.wait(10)
    wait_for(lambda: not Path(f"/proc/{record['pid']}").exists(), 10, "the orphaned worker to exit")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_lets_the_running_function_finish(
    tmp_path: Path, stack: Stack, signum: signal.Signals
) -> None:
    """Ctrl-C, or a service manager stopping the group, reaches the worker too: only the host may stop it."""
    _app(tmp_path, {"messageEncoding": "none"}, source=WORKER_FUNCTION)
    queue = f"wrk-{uuid.uuid4().hex[:8]}"
    env = {**_worker_env(tmp_path, stack, queue), "PYTHONUNBUFFERED": "1"}
    host = subprocess.Popen(_host_command(tmp_path), cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        stack.queue(queue).send_message("slow one")
        wait_for(lambda: _records(tmp_path / "calls.jsonl"), 60, "the slow one to start")
        os.killpg(host.pid, signum)
        output, _ = host.communicate(timeout=30)
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert host.returncode == 0, text
    assert f"Received {signum.name}; stopping" in text and "Succeeded" in text
    assert stack.peek(queue) == []  # the slow one finished and was deleted


TIMER_FUNCTION = """
import time
fired = []

def main(tick):
    fired.append((time.time(), tick.past_due))
"""


def test_a_timer_trigger_runs_on_its_ncrontab_schedule_and_a_bad_schedule_disables_only_it(
        tmp_path: Path, stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    name = _app(tmp_path, {}, source=TIMER_FUNCTION)
    (tmp_path / name / "function.json").write_text(json.dumps({"bindings": [
        {"name": "tick", "type": "timerTrigger", "direction": "in", "schedule": "%TICK_SCHEDULE%"}]}))
    broken = tmp_path / "broken_timer"
    broken.mkdir()
    (broken / "__init__.py").write_text("def main(tick):\n    raise AssertionError('never runs')\n")
    (broken / "function.json").write_text(json.dumps({"bindings": [
        {"name": "tick", "type": "timerTrigger", "direction": "in", "schedule": "*/1 * * * *"}]}))  # 5 fields
    env = {"AzureWebJobsStorage": stack.azurite.connection_string, "TICK_SCHEDULE": "*/1 * * * * *"}
    host = LocalHost(tmp_path, env)
    host.start()
    try:
        wait_for(lambda: len(sys.modules[name].fired) >= 3, 10, "three ticks of a once-a-second schedule")
    finally:
        host.stop()
    fired = sys.modules[name].fired
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(fired)]
    assert all(0.5 < gap < 1.5 for gap in gaps[:2]), gaps  # once per second, not in a burst
    assert all(past_due is False for _, past_due in fired)
    assert "Error indexing method 'Functions.broken_timer'" in caplog.text and "not an NCRONTAB" in caplog.text
    assert host.failures == 0
