"""Figures 1 and 2: storage and Partner Center requests per poll, and token requests for many polls."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any

from local.azurite import PROJECT_ROOT
from local.fake_entra import FakeEntra
from local.host import LocalHost
from local.simulator import Simulator, SimulatorConfig, start_in_thread
from local.stack import simulator_app_settings, tracking_id, upload_batch
from shared.app import get_app
from shared.auth import TokenSource, build_credential
from shared.config import load_settings
from shared.partner_center import PartnerCenterClient

from .stack import NEVER, fresh_stack, seed_batches


def requests_per_poll(seconds: float) -> dict[str, Any]:
    with fresh_stack(POLL_INITIAL_DELAY_SECONDS="1", POLL_MAX_DELAY_SECONDS="1") as stack:
        seed_batches(stack, 20)
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
        customer = f"{'0' * 8}-0000-0000-0000-{'0' * 12}"
        tracking = tracking_id(upload_batch(simulator.url, customer, [{"serialNumber": "SN"}]).headers["Location"])
        simulator.simulator.tokens = {"entra-token-1"}
        entra = FakeEntra()
        settings = load_settings(simulator_app_settings(
            "UseDevelopmentStorage=true", simulator.url, PARTNER_CENTER_AUTH="client_secret",
            PARTNER_CENTER_TENANT_ID="contoso.onmicrosoft.com", PARTNER_CENTER_CLIENT_ID="app",
            PARTNER_CENTER_CLIENT_SECRET="secret")).partner_center
        client = PartnerCenterClient(
            settings, TokenSource(lambda: build_credential(settings, transport=entra.transport()), settings.scope)
        )
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
