"""`make bench`: cost per poll, throughput against the storage ceiling, persistence, memory, start-up,
and polling efficiency against the peers. Every time is reported as a ratio to a ceiling measured in
the same run, on a fresh Azurite per figure (Azurite slows as queues grow and stalls at its clean-up).

    python -m bench.run [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from local.azurite import PROJECT_ROOT, Azurite, free_port, start_azurite
from local.fake_entra import FakeEntra
from local.host import LocalHost, QueueOptions
from local.serving import wait_until_answering
from local.simulator import Simulator, SimulatorConfig, SimulatorServer, start_in_thread
from shared.app import get_app, reset_app
from shared.auth import SIMULATOR_TOKEN, TokenSource, build_credential
from shared.config import PartnerCenterSettings, load_storage_settings
from shared.device_keys import device_row_keys, history_partition_key
from shared.models import BatchStatus, DeviceStatus, Outcome
from shared.partner_center import PartnerCenterClient
from shared.policy import PollingPolicy, StatusReceived, decide
from shared.results_store import device_entity
from shared.status_parser import parse_batch_status
from shared.storage import StorageClients

RESULTS = PROJECT_ROOT / "bench" / "results"
NEVER = 10**9


@dataclass
class Stack:
    azurite: Azurite
    simulator: SimulatorServer | None
    simulator_url: str
    env: dict[str, str]

    def upload(self, customer: str, devices: list[dict[str, str]]) -> str:
        response = requests.post(
            f"{self.simulator_url}/v1/customers/{customer}/deviceBatches",
            json={"batchId": "bench", "devices": devices},
            headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"},
            timeout=60,
        )
        response.raise_for_status()
        return response.headers["Location"].rsplit("/", 1)[1]

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
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "PARTNER_CENTER_BASE_URL": simulator_url,
        "PARTNER_CENTER_AUTH": "simulator",
        "STATUS_QUEUE_NAME": "bench-status",
        "FAILURE_QUEUE_NAME": "bench-failures",
        "POLL_INITIAL_DELAY_SECONDS": "0",
        "POLL_MAX_DELAY_SECONDS": "0",
        "POLL_BACKOFF_FACTOR": "0",
        "POLL_DEADLINE_SECONDS": str(NEVER),
        **settings,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    reset_app()
    try:
        yield Stack(azurite, simulator, simulator_url, env)
    finally:
        reset_app()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if simulator is not None:
            simulator.shutdown()
            simulator.server_close()
        if process is not None:
            process.terminate()
            process.wait(30)
        azurite.stop()



def _seed_batches(stack: Stack, count: int) -> list[str]:
    """Batches that stay queued forever, and one status message for each."""
    customer = str(uuid.uuid4())
    queue = stack.queue(stack.env["STATUS_QUEUE_NAME"])
    tracking_ids = [stack.upload(customer, [{"serialNumber": f"SN-{i}"}]) for i in range(count)]

    def send(tracking: str) -> None:
        queue.send_message(json.dumps({"customerId": customer, "batchTrackingId": tracking}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, tracking_ids))
    return tracking_ids


# --- 1 and 2: requests per poll ------------------------------------------------------------------------
def requests_per_poll(seconds: float) -> dict[str, Any]:
    with fresh_stack(POLL_INITIAL_DELAY_SECONDS="1", POLL_MAX_DELAY_SECONDS="1") as stack:
        _seed_batches(stack, 20)
        host = LocalHost(PROJECT_ROOT, os.environ, max_polling_interval=0.5, functions=["check_batch_status"])
        host.start()
        try:
            time.sleep(4)  # every batch claimed and polled once: steady state from here
            before = _storage_counts(host), stack.sim_gets(), host.invocations
            time.sleep(seconds)
            after = _storage_counts(host), stack.sim_gets(), host.invocations
        finally:
            host.stop()
    polls = after[2] - before[2]
    storage = after[0] - before[0]
    per_operation = {name: round(count / polls, 3) for name, count in sorted(storage.items())}
    return {
        "polls": polls,
        "storage_requests_per_poll": round(sum(storage.values()) / polls, 3),
        "storage_by_operation": per_operation,
        "floor": 3,
        "partner_center_requests_per_poll": round((after[1] - before[1]) / polls, 3),
        "note": "queue.receive is the host's (batched, up to batchSize per request, plus idle polls); "
        "table.merge is the batch row's etag-guarded update that keeps one polling chain",
    }


def _storage_counts(host: LocalHost) -> Counter[str]:
    counts: Counter[str] = Counter()
    for clients in host._clients.values():
        counts += clients.counter.snapshot()
    counts += get_app().clients.counter.snapshot()
    return counts


def token_requests(polls: int) -> dict[str, Any]:
    simulator = start_in_thread(Simulator(SimulatorConfig(queued_seconds=NEVER)))
    try:
        tracking = (
            requests.post(
                f"{simulator.url}/v1/customers/{'0' * 8}-0000-0000-0000-{'0' * 12}/deviceBatches",
                json={"devices": [{"serialNumber": "SN"}]},
                headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"},
                timeout=10,
            )
            .headers["Location"]
            .rsplit("/", 1)[1]
        )
        simulator.simulator.tokens = {"entra-token-1"}
        entra = FakeEntra()
        settings = PartnerCenterSettings(
            base_url=simulator.url,
            scope="https://api.partnercenter.microsoft.com/.default",
            auth="client_secret",
            tenant_id="contoso.onmicrosoft.com",
            client_id="app",
            client_secret="secret",
        )
        client = PartnerCenterClient(
            settings, TokenSource(lambda: build_credential(settings, transport=entra.transport()), settings.scope)
        )
        customer = f"{'0' * 8}-0000-0000-0000-{'0' * 12}"
        for _ in range(polls):
            client.get_batch_status(customer, tracking, str(uuid.uuid4()))
        return {
            "polls": polls,
            "token_requests": len(entra.token_requests),
            "partner_center_requests": client.request_count,
        }
    finally:
        simulator.shutdown()
        simulator.server_close()


# --- 3: poll throughput against the bare queue cycle -------------------------------------------------------
def throughput(depth: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Our polls/s and the bare cycle's, in alternating windows (ours, bare, bare, ours, ...).

    The machine is shared and its speed drifts within minutes, so one window of each side gave ratios from
    0.44 to 0.57 in repeated runs. Adjacent pairs see the same machine; the figure is the median of the
    pairs' ratios. Each window has a fresh Azurite and ends before Azurite's first queue clean-up (60 s).
    """
    options = QueueOptions.from_host_json(json.loads((PROJECT_ROOT / "host.json").read_text()))
    concurrency = options.batch_size + options.threshold
    ours: list[float] = []
    bare: list[float] = []
    for index in range(rounds):
        sides = [lambda: ours.append(_ours_window(depth, seconds)),
                 lambda: bare.append(_bare_window(depth, seconds, options.batch_size, concurrency))]
        for side in sides if index % 2 == 0 else reversed(sides):
            side()
    ratios = [round(mine / theirs, 2) for mine, theirs in zip(ours, bare, strict=True)]
    return {
        "depth": depth,
        "rounds": rounds,
        "seconds_per_window": seconds,
        "ours_per_second": round(statistics.median(ours), 1),
        "bare_per_second": round(statistics.median(bare), 1),
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
        "ours_windows": [round(rate, 1) for rate in ours],
        "bare_windows": [round(rate, 1) for rate in bare],
        "goal": 0.5,
        "concurrency": concurrency,
    }


def _ours_window(depth: int, seconds: float) -> float:
    with fresh_stack(simulator_process=True) as stack:
        _seed_batches(stack, depth)
        host = LocalHost(PROJECT_ROOT, os.environ, max_polling_interval=0.1, functions=["check_batch_status"],
                         worker_process=True)
        host.start()
        try:
            _wait(lambda: host.invocations >= depth, 120)  # every batch row created: steady state
            start, started = host.invocations, time.monotonic()
            time.sleep(seconds)
            return (host.invocations - start) / (time.monotonic() - started)
        finally:
            host.stop()


def _bare_window(depth: int, seconds: float, batch_size: int, concurrency: int) -> float:
    with fresh_stack() as stack:
        return _bare_cycle(stack, depth, seconds, batch_size, concurrency)


def _bare_cycle(stack: Stack, depth: int, seconds: float, batch_size: int, concurrency: int) -> float:
    """receive + delete + send-with-delay per message, batched and as concurrent as the host, through a client
    made as the app makes its own (same pooled transport: the SDK's default pool of 10 drops connections)."""
    stack.queue("bare-cycle")  # created
    queue = StorageClients(load_storage_settings(stack.env)).queue("bare-cycle")
    body = json.dumps({"customerId": str(uuid.uuid4()), "batchTrackingId": str(uuid.uuid4()), "pad": "x" * 120})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: queue.send_message(body), range(depth)))
    done = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def cycle(message: Any) -> None:
        nonlocal done
        queue.delete_message(message)
        queue.send_message(message.content, visibility_timeout=0)
        with lock:
            done += 1

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        in_flight: set[Any] = set()
        while time.monotonic() < stop:
            in_flight = {future for future in in_flight if not future.done()}
            if len(in_flight) > concurrency - batch_size:
                time.sleep(0.001)
                continue
            for message in queue.receive_messages(
                messages_per_page=batch_size, max_messages=batch_size, visibility_timeout=600
            ):
                in_flight.add(pool.submit(cycle, message))
        elapsed = time.monotonic() - started
    return done / elapsed


# --- 4 and 5: persisting a 10,000-device result, and the memory it takes -----------------------------------
def persistence_and_memory(devices: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ours once, in a fresh interpreter that also reports its memory, between two bare runs (bare, ours, bare).

    Each run has its own fresh Azurite. The bare figure is the mean of the two runs around ours, so that
    a machine that slows down or speeds up during the figure does not favour either side. The bare runs
    write the very entities ours writes: built from the same simulator response (device ids included), with
    a recordedAt time.
    """
    identities = [{"serialNumber": f"SN-{i:06}", "productKey": f"PK-{i:06}"} for i in range(devices)]
    with fresh_stack(queued_seconds=0) as stack:
        response = _final_response(stack, str(uuid.uuid4()), identities)
    parsed = parse_batch_status(response).devices
    bare_runs = [_bare_run(parsed)]
    with fresh_stack(queued_seconds=0) as stack:
        customer = str(uuid.uuid4())
        tracking = stack.upload(customer, identities)
        small = stack.upload(customer, [{"serialNumber": "WARM-UP"}])
        output = subprocess.run(
            [sys.executable, "-m", "bench.persist_probe", customer, tracking, small],
            cwd=PROJECT_ROOT, env=os.environ.copy(), capture_output=True, text=True, check=True, timeout=900,
        )
    ours = json.loads(output.stdout.strip().splitlines()[-1])
    assert ours["outcome"] == Outcome.COMPLETED and ours["device_count"] == devices, ours
    bare_runs.append(_bare_run(parsed))
    bare_total = statistics.mean(run["total"] for run in bare_runs)
    bare_devices = statistics.mean(run["devices"] for run in bare_runs)
    seconds = ours["seconds"]
    persistence = {
        "devices": devices,
        "ours_seconds": round(seconds["finalize"], 2),
        "ours_device_rows_seconds": round(seconds["devices"], 2),
        "ours_history_rows_seconds": round(seconds["history"], 2),
        "bare_seconds": round(bare_total, 2),
        "bare_device_rows_seconds": round(bare_devices, 2),
        "bare_runs_seconds": [round(run["total"], 2) for run in bare_runs],
        "ratio": round(bare_total / seconds["finalize"], 2),
        "device_rows_ratio": round(bare_devices / seconds["devices"], 2),
        "goal": 0.8,
        "transactions_device_table": ours["transactions"],
        "expected_transactions": math.ceil(devices / 100),
        "history_single_upserts": ours["history_upserts"],
    }
    growth = max(0, ours["rss_peak"] - ours["rss_before"])
    memory = {
        "devices": devices,
        "json_bytes": len(response),
        "rss_growth_bytes": growth,
        "ratio_to_json": round(growth / len(response), 1),
    }
    return persistence, memory


def _final_response(stack: Stack, customer: str, identities: list[dict[str, str]]) -> bytes:
    tracking = stack.upload(customer, identities)
    response = requests.get(
        f"{stack.simulator_url}/v1/customers/{customer}/batchJobStatus/{tracking}",
        headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.content


def _bare_run(devices: tuple[DeviceStatus, ...]) -> dict[str, float]:
    with fresh_stack(queued_seconds=0) as stack:
        return _bare_writes(stack, str(uuid.uuid4()), str(uuid.uuid4()), devices)


def _bare_writes(stack: Stack, customer: str, tracking: str, devices: tuple[DeviceStatus, ...]) -> dict[str, float]:
    """The same entities straight through the SDK: submit_transaction in 100s, history 8 at a time."""
    from azure.data.tables import TableClient, UpdateMode

    now = datetime.now(UTC)
    device_rows = [
        device_entity(d, d.failed, customer, tracking, tracking, key, now)
        for d, key in zip(devices, device_row_keys(devices), strict=True)
    ]
    history_rows = [device_entity(d, d.failed, customer, tracking, history_partition_key(d), tracking, now)
                    for d in devices]
    device_table = TableClient.from_connection_string(stack.azurite.connection_string, "BareDevices")
    history_table = TableClient.from_connection_string(stack.azurite.connection_string, "BareHistory")
    device_table.create_table()
    history_table.create_table()
    started = time.perf_counter()
    for index in range(0, len(device_rows), 100):
        device_table.submit_transaction(
            [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in device_rows[index : index + 100]]
        )
    devices_done = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda row: history_table.upsert_entity(row, mode=UpdateMode.REPLACE), history_rows))
    return {"devices": devices_done - started, "total": time.perf_counter() - started}


# --- 6: start-up ------------------------------------------------------------------------------------------
def startup(runs: int) -> dict[str, Any]:
    env = {
        **os.environ,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "PARTNER_CENTER_AUTH": "simulator",
        "PARTNER_CENTER_BASE_URL": "http://127.0.0.1:9",
    }

    def median_import(statement: str) -> float:
        times = []
        for _ in range(runs + 1):
            code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
            result = subprocess.run(
                [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
            )
            times.append(float(result.stdout.strip()))
        return statistics.median(times[1:])  # the first run warms the file cache

    ours = median_import("import check_batch_status")
    sdk = median_import("import azure.functions, azure.storage.queue, azure.data.tables, azure.core, requests")
    return {
        "runs": runs,
        "ours_ms": round(ours * 1000),
        "sdk_only_ms": round(sdk * 1000),
        "ratio": round(ours / sdk, 2),
    }


# --- 7: polling efficiency in virtual time ------------------------------------------------------------------
def polling_efficiency(batches: int) -> dict[str, Any]:
    rng = random.Random(20261123)
    durations = [min(max(rng.lognormvariate(math.log(480), 1.0), 60.0), 86_400.0) for _ in range(batches)]
    processing = StatusReceived(BatchStatus("t", "processing", None, None, ()))
    policy = PollingPolicy()
    jitter = random.Random(7)

    def ours(duration: float) -> tuple[int, float]:
        elapsed, calls = 0.0, 1
        while elapsed < duration:
            decision = decide(processing, elapsed, 0, 0, policy, jitter)
            elapsed += decision.delay  # type: ignore[union-attr]
            calls += 1
        return calls, elapsed - duration

    def fixed(interval: float) -> Callable[[float], tuple[int, float]]:
        def poll(duration: float) -> tuple[int, float]:
            calls = 1 + math.ceil(duration / interval)
            return calls, (calls - 1) * interval - duration

        return poll

    schedules = {
        "batchwatch": ours,
        "fixed 5 s (Partner Center PowerShell)": fixed(5),
        "fixed 15 s (Import-AutopilotCSV)": fixed(15),
        "fixed 30 s (Get-WindowsAutopilotInfo)": fixed(30),
    }
    figures = {}
    for name, schedule in schedules.items():
        outcomes = [schedule(duration) for duration in durations]
        lags = sorted(lag for _, lag in outcomes)
        figures[name] = {
            "calls_per_batch": round(statistics.mean(calls for calls, _ in outcomes), 2),
            "mean_lag_s": round(statistics.mean(lags), 1),
            "p95_lag_s": round(lags[int(0.95 * len(lags))], 1),
            "mean_lag_share": round(
                statistics.mean(lag / d for (_, lag), d in zip(outcomes, durations, strict=True)), 3
            ),
        }
    ours_figures, fixed30 = figures["batchwatch"], figures["fixed 30 s (Get-WindowsAutopilotInfo)"]
    goals = {
        "calls_at_most_half_of_fixed_30s": ours_figures["calls_per_batch"] <= fixed30["calls_per_batch"] / 2,
        "mean_lag_at_most_10_percent": ours_figures["mean_lag_share"] <= 0.10,
        "p95_lag_at_most_300s": ours_figures["p95_lag_s"] <= 300,
    }
    return {"batches": batches, "policies": figures, "goals_met": goals}


def _wait(probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark set-up did not finish")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    quick = args.quick
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "quick": quick,
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("polling_efficiency", lambda: polling_efficiency(1000 if quick else 10_000)),
        ("startup", lambda: startup(3 if quick else 10)),
        ("requests_per_poll", lambda: requests_per_poll(3 if quick else 6)),
        ("token_requests", lambda: token_requests(100 if quick else 1000)),
        ("throughput_depth_100", lambda: throughput(100, 3 if quick else 6, 1 if quick else 3)),
        ("throughput_depth_1000", lambda: throughput(100 if quick else 1000, 3 if quick else 6, 1 if quick else 3)),
        ("persistence_and_memory", lambda: persistence_and_memory(500 if quick else 10_000)),
    ]
    for name, step in steps:
        print(f"... {name} ({time.monotonic() - started:.0f} s so far)", file=sys.stderr, flush=True)
        results[name] = step()
    results["persistence"], results["memory"] = results.pop("persistence_and_memory")
    results["wall_seconds"] = round(time.monotonic() - started)
    _print(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for path in (RESULTS / f"bench-{stamp}.json", *(() if quick else (RESULTS / "latest.json",))):
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS / f'bench-{stamp}.json'}" + ("" if quick else f" and {RESULTS / 'latest.json'}"))
    return 0


def _print(results: dict[str, Any]) -> None:
    poll = results["requests_per_poll"]
    print(f"\nbatchwatch benchmark, {results['when']}, {results['machine']}, {results['wall_seconds']} s\n")
    if results["quick"]:
        print("(--quick: a smoke run at small sizes; its figures are not the ones the goals refer to)\n")
    print(
        f"1. storage requests per poll: {poll['storage_requests_per_poll']} (floor {poll['floor']}); "
        + ", ".join(f"{name} {count}" for name, count in poll["storage_by_operation"].items())
    )
    tokens = results["token_requests"]
    print(
        f"2. Partner Center requests per poll: {poll['partner_center_requests_per_poll']}; "
        f"token requests for {tokens['polls']} polls in one process: {tokens['token_requests']}"
    )
    for key in ("throughput_depth_100", "throughput_depth_1000"):
        figure = results[key]
        print(
            f"3. polls/s at depth {figure['depth']} (median of {figure['rounds']} alternating windows of "
            f"{figure['seconds_per_window']} s): ours {figure['ours_per_second']}, bare queue cycle "
            f"{figure['bare_per_second']}; ratio {figure['ratio']} (goal >= {figure['goal']}), per round "
            + ", ".join(str(ratio) for ratio in figure["round_ratios"])
        )
    persist = results["persistence"]
    print(
        f"4. persisting {persist['devices']} devices: ours {persist['ours_seconds']} s (device rows "
        f"{persist['ours_device_rows_seconds']} s, history {persist['ours_history_rows_seconds']} s), bare "
        f"{persist['bare_seconds']} s (mean of the runs before and after ours: "
        f"{', '.join(str(run) for run in persist['bare_runs_seconds'])} s; device rows "
        f"{persist['bare_device_rows_seconds']} s); ratio "
        f"{persist['ratio']}, device rows alone {persist['device_rows_ratio']} (goal >= {persist['goal']}); "
        f"{persist['transactions_device_table']} transactions (ceil(n/100) = {persist['expected_transactions']}),"
        f" {persist['history_single_upserts']} history upserts"
    )
    mem = results["memory"]
    print(
        f"5. memory for {mem['devices']} devices: RSS grew {mem['rss_growth_bytes'] / 1e6:.1f} MB for "
        f"{mem['json_bytes'] / 1e6:.1f} MB of JSON, ratio {mem['ratio_to_json']}"
    )
    start = results["startup"]
    print(
        f"6. start-up (median of {start['runs']}): import check_batch_status {start['ours_ms']} ms, the SDK modules "
        f"alone {start['sdk_only_ms']} ms, ratio {start['ratio']}"
    )
    efficiency = results["polling_efficiency"]
    print(f"7. polling efficiency over {efficiency['batches']} batch durations (log-normal, median 8 min, sigma 1):")
    print(f"   {'policy':40} {'calls/batch':>11} {'mean lag':>9} {'p95 lag':>8} {'lag/duration':>12}")
    for name, figure in efficiency["policies"].items():
        print(
            f"   {name:40} {figure['calls_per_batch']:>11} {figure['mean_lag_s']:>8}s {figure['p95_lag_s']:>7}s "
            f"{figure['mean_lag_share']:>12.1%}"
        )
    print(
        "   goals: "
        + ", ".join(f"{goal} {'met' if met else 'MISSED'}" for goal, met in efficiency["goals_met"].items())
    )


if __name__ == "__main__":
    sys.exit(main())
