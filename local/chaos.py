"""`make chaos`: the real stack under faults, crashes, duplicates and hostile input, then an independent check.

    python -m local.chaos [--batches 200] [--large 5] [--large-devices 2000] [--kills 4] [--rate-429 0.05] ...

Runs Azurite (persistent workspace), the simulator with fault rates, the webhook receiver and three local host
instances on the same queues (--instances). It uploads the batches, submits every tracking id twice and adds
hostile messages. While batches are polled it kills one instance at a time with SIGKILL several times and starts
it again, and stops and restarts Azurite once. At the
end it reads Table Storage, the queues and the receiver (not the app's own view) and checks:
- every batch has a final row with the right outcome, and every device row exactly once;
- every failed device is in an alert (duplicated alertIds are counted: the crash window);
- no message is left anywhere but in a poison queue, which holds the hostile inputs and nothing else.
It prints the figures and exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local.azurite import PROJECT_ROOT, free_port, start_azurite
from local.fleet import Fleet
from local.serving import wait_until_answering
from local.stack import APP_SETTING_PREFIXES, simulator_app_settings, tracking_id, upload_batch

HOSTILE_MESSAGES = [
    "this is not JSON",
    "//79/Pv6+fj39vX08/Lx8A==",
    json.dumps({"source": "missing ids"}),
    json.dumps({"customerId": "contoso", "batchTrackingId": "batch-1"}),
    json.dumps({"customerId": "47021739-3426-40bf-9601-61b4b6d7c793", "batchTrackingId": "../../x?$top=1#"}),
    "[1, 2, 3]",
    json.dumps({"location": "/customers/x/devices/y"}),
    json.dumps({"customerId": "47021739-3426-40bf-9601-61b4b6d7c793",
                "batchTrackingId": "0127ed8e-ff72-4983-a3d8-e8d8bd378932", "source": "x" * 60_000}),
]


@dataclass
class Figures:
    batches: int = 0
    devices: int = 0
    failed_devices: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    instances: int = 0
    kills: int = 0
    azurite_restarts: int = 0
    duplicate_submissions: int = 0
    hostile_messages: int = 0
    rows_missing: int = 0
    wrong_outcomes: int = 0
    device_rows_missing: int = 0
    device_rows_duplicated: int = 0
    alerts_missing: int = 0
    alerts_duplicated: int = 0
    messages_left: int = 0
    unexpected_poison: int = 0
    hostile_not_in_poison: int = 0
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return (self.rows_missing + self.wrong_outcomes + self.device_rows_missing + self.device_rows_duplicated
                + self.alerts_missing
                + self.messages_left + self.unexpected_poison + self.hostile_not_in_poison)


class Stack:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.azurite = start_azurite(workspace=workdir / "azurite", log_dir=workdir)
        self.simulator_url = f"http://127.0.0.1:{free_port()}"
        self.receiver_url = f"http://127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)},
            **simulator_app_settings(self.azurite.connection_string, self.simulator_url),
            "PYTHONUNBUFFERED": "1",
            "PARTNER_CENTER_READ_TIMEOUT_SECONDS": "2",
            "PARTNER_CENTER_CONNECT_TIMEOUT_SECONDS": "2",
            "STATUS_QUEUE_NAME": "chaos-status",
            "FAILURE_QUEUE_NAME": "chaos-failures",
            "POLL_INITIAL_DELAY_SECONDS": "1",
            "POLL_MAX_DELAY_SECONDS": "3",
            "POLL_DEADLINE_SECONDS": "1800",
            "NOT_FOUND_GRACE_SECONDS": "120",
            "CHAIN_STALE_GRACE_SECONDS": "20",
            "ALERT_WEBHOOK_URL": f"{self.receiver_url}/webhook",
            "ALERT_RETRY_INITIAL_DELAY_SECONDS": "1",
            "ALERT_RETRY_MAX_DELAY_SECONDS": "5",
            "ALERT_MAX_ATTEMPTS": "30",
        }
        rates = [f"--rate-{kind}={getattr(args, 'rate_' + kind)}" for kind in ("429", "500", "503", "timeout",
                                                                               "malformed", "truncated")]
        self._spawn("simulator", [sys.executable, "-m", "local.simulator", "--port", _port(self.simulator_url),
                                  "--queued-seconds", "2", "--processing-seconds", "4", "--not-found-seconds", "3",
                                  "--random-failure-rate", "0.1", "--timeout-seconds", "4",
                                  "--seed", str(args.seed), *rates])
        self._spawn("receiver", [sys.executable, "-m", "local.webhook_receiver", "--port", _port(self.receiver_url)])
        wait_until_answering(self.simulator_url + "/_sim/batches")
        wait_until_answering(self.receiver_url + "/_receiver/alerts")
        self.start_hosts()

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (lives with the process)
        self.processes[name] = subprocess.Popen(command, cwd=PROJECT_ROOT, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_hosts(self) -> None:
        self.fleet = Fleet(self.args.instances, ["--max-polling-interval", "0.5", "--lease-seconds", "20"], self.env,
                           PROJECT_ROOT, log_dir=self.workdir)
        self.fleet.start()

    def kill_host(self, index: int) -> None:
        """SIGKILL one instance and start it again, as the platform replaces a failed instance."""
        self.fleet.kill(index)
        self.fleet.restart_dead()

    def restart_azurite(self) -> None:
        ports = (self.azurite.queue_port, self.azurite.table_port)
        self.azurite.stop()
        time.sleep(2)
        self.azurite = start_azurite(workspace=self.workdir / "azurite", log_dir=self.workdir, ports=ports)

    def stop(self) -> None:
        self.fleet.stop()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.azurite.stop()


def run(args: argparse.Namespace) -> Figures:
    figures = Figures(instances=args.instances)
    started = time.monotonic()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="batchwatch-chaos-"))
    print(f"chaos run in {workdir} (seed {args.seed})", flush=True)
    stack = Stack(args, workdir)
    try:
        batches = _upload(stack, args, rng)
        figures.batches = len(batches)
        queue = stack.azurite.queue(stack.env["STATUS_QUEUE_NAME"])
        messages = [json.dumps({"location": f"/customers/{c}/batchJobStatus/{t}", "source": "chaos"})
                    for c, t in batches]
        duplicates = [json.dumps({"customerId": c.upper(), "batchTrackingId": t, "source": "chaos (again)"})
                      for c, t in batches]
        figures.duplicate_submissions = len(duplicates)
        figures.hostile_messages = len(HOSTILE_MESSAGES)
        everything = messages + duplicates + HOSTILE_MESSAGES
        rng.shuffle(everything)
        for text in everything:
            queue.send_message(text)
        print(f"submitted {len(messages)} batches twice and {len(HOSTILE_MESSAGES)} hostile messages", flush=True)
        _chaos_until_final(stack, args, rng, batches, figures)
        _wait_quiet(stack)
        _check(stack, batches, figures)
    finally:
        stack.stop()
        figures.seconds = round(time.monotonic() - started, 1)
    return figures


def _upload(stack: Stack, args: argparse.Namespace, rng: random.Random) -> list[tuple[str, str]]:
    customers = [str(uuid.uuid4()) for _ in range(max(1, args.batches // 20))]
    sizes = [rng.randint(1, 20) for _ in range(args.batches)] + [args.large_devices] * args.large
    batches = []
    for size in sizes:
        customer = rng.choice(customers)
        devices = [{"serialNumber": f"CH-{uuid.uuid4().hex[:12]}", "productKey": f"PK-{uuid.uuid4().hex[:10]}"}
                   for _ in range(size)]
        response = upload_batch(stack.simulator_url, customer, devices, "chaos", timeout=120)
        response.raise_for_status()
        batches.append((customer, tracking_id(response.headers["Location"])))
    return batches


def _chaos_until_final(stack: Stack, args: argparse.Namespace, rng: random.Random, batches: list[tuple[str, str]],
                       figures: Figures) -> None:
    deadline = time.monotonic() + args.time_limit
    next_kill = time.monotonic() + rng.uniform(5, 15)
    final = 0
    while time.monotonic() < deadline:
        if figures.kills < args.kills and time.monotonic() >= next_kill:
            instance = rng.randrange(args.instances)
            if figures.kills == 0 and args.restart_azurite:
                stack.restart_azurite()
                figures.azurite_restarts += 1
            stack.kill_host(instance)
            figures.kills += 1
            print(f"  killed host instance {instance} with SIGKILL ({figures.kills} of {args.kills})"
                  + (" and restarted Azurite" if figures.kills == 1 and args.restart_azurite else ""), flush=True)
            next_kill = time.monotonic() + rng.uniform(10, 25)
        try:
            final = _final_count(stack, batches)
        except Exception as exc:  # Azurite restarting
            print(f"  (progress not readable: {type(exc).__name__})", flush=True)
        if final == len(batches) and figures.kills >= args.kills:
            break
        time.sleep(2)
    print(f"  {final} of {len(batches)} batches final", flush=True)


def _final_count(stack: Stack, batches: list[tuple[str, str]]) -> int:
    table = _table(stack, "BatchUploadStatus")
    wanted = {tracking for _, tracking in batches}
    try:
        rows = table.query_entities("outcome ne @pending", parameters={"pending": "pending"}, select=["RowKey"])
        return sum(1 for row in rows if row["RowKey"] in wanted)
    except Exception as exc:
        if "TableNotFound" in str(exc):
            return 0
        raise


def _wait_quiet(stack: Stack, timeout: float = 180) -> None:
    """Let watchdogs expire and the last alerts go out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = sum(_approximate(stack, stack.env[name]) for name in ("STATUS_QUEUE_NAME", "FAILURE_QUEUE_NAME"))
        if left == 0:
            return
        time.sleep(2)


def _check(stack: Stack, batches: list[tuple[str, str]], figures: Figures) -> None:
    truth = requests.get(f"{stack.simulator_url}/_sim/batches", timeout=60).json()
    faults = requests.get(f"{stack.simulator_url}/_sim/requests", timeout=60).json()["faults"]
    figures.faults_injected = faults
    batch_table, device_table = _table(stack, "BatchUploadStatus"), _table(stack, "DeviceUploadStatus")
    alerts = [a for a in requests.get(f"{stack.receiver_url}/_receiver/alerts", timeout=60).json()["alerts"]
              if a["answer"] < 300]
    alert_ids = Counter(alert["body"]["alertId"] for alert in alerts)
    figures.alerts_duplicated = sum(count - 1 for count in alert_ids.values())
    alerted = {(alert["body"]["batchTrackingId"], device["serialNumber"]) for alert in alerts
               for device in alert["body"].get("devices", [])}
    for customer, tracking in batches:
        expected = truth[tracking]
        figures.devices += expected["devices"]
        figures.failed_devices += len(expected["failed"])
        try:
            row = batch_table.get_entity(customer, tracking)
        except Exception:
            figures.rows_missing += 1
            continue
        outcome = "completed_with_failures" if expected["failed"] else "completed"
        if row.get("outcome") != outcome:
            figures.wrong_outcomes += 1
            print(f"  wrong outcome for {tracking}: {row.get('outcome')} (expected {outcome})", flush=True)
        stored = sum(1 for _ in device_table.query_entities("PartitionKey eq @t", parameters={"t": tracking},
                                                            select=["RowKey"]))
        figures.device_rows_missing += max(0, expected["devices"] - stored)
        figures.device_rows_duplicated += max(0, stored - expected["devices"])
        figures.alerts_missing += sum(1 for serial in expected["failed"] if (tracking, serial) not in alerted)
    figures.messages_left = sum(_approximate(stack, stack.env[name])
                                for name in ("STATUS_QUEUE_NAME", "FAILURE_QUEUE_NAME"))
    originals, unexpected = _poison_originals(stack, stack.env["STATUS_QUEUE_NAME"] + "-poison")
    figures.unexpected_poison = unexpected + sum(1 for original in originals if original not in HOSTILE_MESSAGES)
    figures.hostile_not_in_poison = sum(1 for hostile in HOSTILE_MESSAGES if hostile not in originals)
    failure_originals, failure_unexpected = _poison_originals(stack, stack.env["FAILURE_QUEUE_NAME"] + "-poison")
    figures.unexpected_poison += failure_unexpected + len(failure_originals)


def _poison_originals(stack: Stack, queue_name: str) -> tuple[list[str], int]:
    """The originals in a poison queue (split envelopes rejoined), and how many messages are not envelopes."""
    queue = stack.azurite.queue(queue_name)
    whole: list[str] = []
    parts: dict[str, list[dict[str, Any]]] = {}
    not_envelopes = 0
    while batch := list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=300)):
        for message in batch:
            try:
                envelope = json.loads(message.content)
                if not isinstance(envelope, dict) or "original" not in envelope:
                    raise ValueError
            except ValueError:
                not_envelopes += 1
                continue
            if "part" in envelope:
                parts.setdefault(envelope["rejectionId"], []).append(envelope)
            else:
                whole.append(envelope["original"])
    for group in parts.values():
        whole.append("".join(e["original"] for e in sorted(group, key=lambda e: e["part"])))
    return whole, not_envelopes


def _approximate(stack: Stack, queue_name: str) -> int:
    return int(stack.azurite.queue(queue_name).get_queue_properties().approximate_message_count)


def _table(stack: Stack, name: str) -> Any:
    from azure.data.tables import TableClient

    return TableClient.from_connection_string(stack.azurite.connection_string, name)


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="small batches (1-20 devices)")
    parser.add_argument("--large", type=int, default=5, help="large batches")
    parser.add_argument("--large-devices", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs of a host instance during the run")
    parser.add_argument("--instances", type=int, default=3, help="host instances on the same queues")
    parser.add_argument("--no-azurite-restart", dest="restart_azurite", action="store_false")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds before giving up on the batches")
    parser.add_argument("--seed", type=int, default=1)
    for kind, rate in (("429", 0.05), ("500", 0.03), ("503", 0.03), ("timeout", 0.01), ("malformed", 0.02),
                       ("truncated", 0.02)):
        parser.add_argument(f"--rate-{kind}", type=float, default=rate)
    args = parser.parse_args(argv)
    figures = run(args)
    print("\nchaos figures")
    for name, value in vars(figures).items():
        print(f"  {name:24} {value}")
    print(f"  {'lost':24} {figures.lost}")
    if figures.lost:
        print("FAILED: something was lost (see the figures above)")
        return 1
    print("passed: nothing lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
