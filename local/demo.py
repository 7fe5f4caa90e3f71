"""`make run`: Azurite, the simulator and the local host, with demo batches tracked to their outcome.

Everything runs on loopback and stops at the end; nothing outside this folder is touched.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from local.azurite import PROJECT_ROOT, Azurite, free_port, start_azurite
from local.serving import wait_until_answering
from local.stack import APP_SETTING_PREFIXES, simulator_app_settings, tracking_id, upload_batch

TIMEOUT_SECONDS = 240
DEMO_SETTINGS = {
    "STATUS_QUEUE_NAME": "batch-status-requests",
    "FAILURE_QUEUE_NAME": "device-failures",
    "POLL_INITIAL_DELAY_SECONDS": "2",
    "POLL_MAX_DELAY_SECONDS": "5",
    "POLL_DEADLINE_SECONDS": "600",
    "NOT_FOUND_GRACE_SECONDS": "15",
    "CHAIN_STALE_GRACE_SECONDS": "10",
}


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="batchwatch-demo-"))
    processes: list[subprocess.Popen[bytes]] = []
    azurite: Azurite | None = None
    started = time.monotonic()
    try:
        print("Starting Azurite (queue and table, in memory) ...", flush=True)
        azurite = start_azurite(log_dir=workdir)
        simulator_url = f"http://127.0.0.1:{free_port()}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(APP_SETTING_PREFIXES)},
            **simulator_app_settings(azurite.connection_string, simulator_url, **DEMO_SETTINGS),
            "PYTHONUNBUFFERED": "1",
        }
        print(f"Starting the Partner Center simulator on {simulator_url} (5% 429s, 5% 503s injected) ...", flush=True)
        processes.append(
            _spawn(
                [
                    sys.executable,
                    "-m",
                    "local.simulator",
                    "--port",
                    simulator_url.rsplit(":", 1)[1],
                    "--queued-seconds",
                    "3",
                    "--processing-seconds",
                    "8",
                    "--rate-429",
                    "0.05",
                    "--rate-503",
                    "0.05",
                ],
                env,
                workdir / "simulator.log",
            )
        )
        wait_until_answering(simulator_url + "/_sim/batches")
        receiver_url = f"http://127.0.0.1:{free_port()}"
        env["ALERT_WEBHOOK_URL"] = receiver_url + "/webhook"
        env["ALERT_WEBHOOK_FORMAT"] = "generic"
        print(f"Starting a webhook receiver on {receiver_url} (it records the alerts ops would get) ...", flush=True)
        processes.append(_spawn([sys.executable, "-m", "local.webhook_receiver", "--port",
                                 receiver_url.rsplit(":", 1)[1]], env, workdir / "receiver.log"))
        wait_until_answering(receiver_url + "/_receiver/alerts")
        host_log = workdir / "host.log"
        print("Starting the local Functions host (check_batch_status, notify_failures) ...", flush=True)
        processes.append(_spawn([sys.executable, "-m", "local.host", "--max-polling-interval", "1"], env, host_log))

        batches = upload_demo_batches(simulator_url)
        _drop_messages(azurite, env["STATUS_QUEUE_NAME"], batches)
        outcomes = _watch(azurite, batches)
        _summary(azurite, batches, outcomes, receiver_url)
        print(f"\nDone in {time.monotonic() - started:.0f} s. Logs: {workdir}")
        return 0 if all(outcome != "pending" for outcome in outcomes.values()) else 1
    finally:
        for process in reversed(processes):
            _stop(process)
        if azurite is not None:
            azurite.stop()


def upload_demo_batches(simulator_url: str) -> list[dict[str, Any]]:
    """Upload like an upstream job: POST deviceBatches, keep the Location header."""
    other_tenant, customer_a, customer_b = (str(uuid.uuid4()) for _ in range(3))
    _control(simulator_url, "registrations", {"serialNumber": "REFURB-0001", "customerId": other_tenant})
    _control(simulator_url, "registrations", {"serialNumber": "REFURB-0002", "customerId": other_tenant})
    _control(simulator_url, "registrations", {"serialNumber": "KNOWN-0001", "customerId": customer_b})
    hash_ok = base64.b64encode(b"demo-hardware-hash-" * 8).decode()
    plans = [
        (
            "all devices fine",
            customer_a,
            [{"serialNumber": f"CLEAN-{i:04}", "productKey": f"PK-{i:04}"} for i in range(5)],
        ),
        (
            "808: registered to another tenant",
            customer_b,
            [{"serialNumber": "REFURB-0001"}, {"serialNumber": "REFURB-0002"}, {"serialNumber": "NEW-0001"}],
        ),
        (
            "806, duplicate hash, bad hash",
            customer_b,
            [
                {"serialNumber": "KNOWN-0001"},
                {"serialNumber": "DUP-1", "hardwareHash": hash_ok},
                {"serialNumber": "DUP-2", "hardwareHash": hash_ok},
                {"serialNumber": "HASH-BAD", "hardwareHash": "###"},
            ],
        ),
        (
            "1,000 devices",
            customer_a,
            [{"serialNumber": f"FLEET-{i:05}", "productKey": f"FPK-{i:05}"} for i in range(1000)],
        ),
    ]
    batches = []
    for label, customer, devices in plans:
        response = upload_batch(simulator_url, customer, devices, label, timeout=30)
        response.raise_for_status()
        location = response.headers["Location"]
        batches.append(
            {"label": label, "customerId": customer, "location": location, "trackingId": tracking_id(location)}
        )
        print(f"  uploaded '{label}': 202, Location: {location}")
    missing = str(uuid.uuid4())
    batches.append(
        {
            "label": "unknown tracking id (404)",
            "customerId": customer_a,
            "location": f"/customers/{customer_a}/batchJobStatus/{missing}",
            "trackingId": missing,
        }
    )
    return batches


def _drop_messages(azurite: Azurite, queue_name: str, batches: list[dict[str, Any]]) -> None:
    queue = azurite.queue(queue_name)
    for index, batch in enumerate(batches):
        if index == 0:  # ids form, base64-encoded as the Functions default encoding would send it
            body = json.dumps(
                {"customerId": batch["customerId"], "batchTrackingId": batch["trackingId"], "source": "demo-upload-job"}
            )
            queue.send_message(base64.b64encode(body.encode()).decode())
        else:
            queue.send_message(json.dumps({"location": batch["location"], "source": "demo-upload-job"}))
    queue.send_message(json.dumps({"location": batches[1]["location"], "source": "demo-upload-job (again)"}))
    queue.send_message("this is not JSON")
    queue.send_message(json.dumps({"customerId": "not-a-guid", "batchTrackingId": "../../etc"}))
    print(f"Dropped {len(batches)} tracking messages, one duplicate and two bad messages on '{queue_name}'.\n")


def _watch(azurite: Azurite, batches: list[dict[str, Any]]) -> dict[str, str]:
    """Print a line whenever a batch's status or outcome changes, until every batch is final."""
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(azurite.connection_string, "BatchUploadStatus")
    deadline = time.monotonic() + TIMEOUT_SECONDS
    outcomes = {batch["trackingId"]: "pending" for batch in batches}
    seen: dict[str, tuple[Any, Any]] = {}
    while time.monotonic() < deadline and any(outcome == "pending" for outcome in outcomes.values()):
        for batch in batches:
            try:
                row = table.get_entity(batch["customerId"], batch["trackingId"])
            except Exception:
                continue
            state = (row.get("status"), row.get("outcome"))
            if seen.get(batch["trackingId"]) != state:
                seen[batch["trackingId"]] = state
                print(
                    f"{time.strftime('%H:%M:%S')}  {batch['label']:36} status {row.get('status'):12} "
                    f"outcome {row.get('outcome'):24} after {row.get('pollCount', 0)} polls",
                    flush=True,
                )
            outcomes[batch["trackingId"]] = str(row.get("outcome") or "pending")
        time.sleep(0.5)
    _wait_for_empty_queue(azurite, DEMO_SETTINGS["FAILURE_QUEUE_NAME"])
    return outcomes


def _wait_for_empty_queue(azurite: Azurite, queue_name: str, timeout: float = 30) -> None:
    """Let notify_failures take the last chunks before the summary is printed."""
    from azure.storage.queue import QueueClient

    queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not list(queue.peek_messages(max_messages=1)):
                time.sleep(2)  # a received chunk is invisible while its function runs
                if not list(queue.peek_messages(max_messages=1)):
                    return
        except Exception:
            return
        time.sleep(0.5)


def _summary(azurite: Azurite, batches: list[dict[str, Any]], outcomes: dict[str, str], receiver_url: str) -> None:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

    connection = azurite.connection_string
    batch_table = TableClient.from_connection_string(connection, "BatchUploadStatus")
    device_table = TableClient.from_connection_string(connection, "DeviceUploadStatus")
    print("\nSummary read back from Table Storage")
    print(f"{'batch':36} {'outcome':25} {'status':22} {'devices':>7} {'failed':>6} {'polls':>5}")
    codes: Counter[str] = Counter()
    for batch in batches:
        row: dict[str, Any] = {}
        try:
            row = dict(batch_table.get_entity(batch["customerId"], batch["trackingId"]))
        except Exception:
            pass
        print(
            f"{batch['label'][:36]:36} {row.get('outcome', '-'):25} {row.get('status', '-'):22} "
            f"{row.get('deviceCount', 0):>7} {row.get('failedDeviceCount', 0):>6} {row.get('pollCount', 0):>5}"
        )
        failed = device_table.query_entities(
            "PartitionKey eq @tid and failed eq true", parameters={"tid": batch["trackingId"]}
        )
        codes.update(f"{device.get('errorCode')} {device.get('errorDescription')}" for device in failed)
    print("\nFailed devices by error code")
    for code, count in codes.most_common():
        print(f"  {count:4}  {code}")
    alerts = [alert for alert in requests.get(receiver_url + "/_receiver/alerts", timeout=10).json()["alerts"]
              if alert["answer"] < 300]
    print(f"\nAlerts received by the webhook ({len(alerts)}):")
    for alert in alerts:
        body = alert["body"]
        counts = ", ".join(f"{code} x{count}" for code, count in body.get("countsByErrorCode", {}).items())
        print(f"  [{body['outcome']}] customer {body['customerId']}, batch {body['batchTrackingId']}, "
              f"part {body['chunk']}/{body['chunks']}: {counts or body.get('reason')}")
        for device in body["devices"][:3]:
            print(f"      {device['serialNumber']}: {device['errorCode']} {device['errorDescription']}")
            print(f"          what to do: {device['remediation'][:110]}...")
    poison = QueueClient.from_connection_string(connection, "batch-status-requests-poison")
    print("\nRejected to batch-status-requests-poison:")
    try:
        for message in poison.peek_messages(max_messages=32):
            envelope = json.loads(message.content)
            print(f"  {envelope['reason']}  (original: {envelope['original'][:60]!r})")
    except Exception as exc:
        print(f"  (could not read: {exc})")


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_file = open(log_path, "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _control(url: str, endpoint: str, document: dict[str, Any]) -> None:
    requests.post(f"{url}/_sim/{endpoint}", json=document, timeout=10).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
