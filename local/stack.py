"""What the tests, the benchmark, the chaos run and the demo share to stand the app up locally:
its app settings against Azurite and the simulator, an upload like an upstream job's, and the settings
applied to this process."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests

from shared.app import reset_app
from shared.auth import SIMULATOR_TOKEN

# Settings a run inherits from the shell would change what it measures or tests.
APP_SETTING_PREFIXES = ("PARTNER_CENTER_", "POLL_", "ALERT_", "DIGEST_")
DEPLOYED_DIGEST_SCHEDULE = "0 0 7 * * *"  # as infra/main.bicep sets it


def simulator_app_settings(storage_connection: str, simulator_url: str, **overrides: str) -> dict[str, str]:
    """App settings for the app against a local storage account and the Partner Center simulator."""
    return {
        "AzureWebJobsStorage": storage_connection,
        "PARTNER_CENTER_BASE_URL": simulator_url,
        "PARTNER_CENTER_AUTH": "simulator",
        "DIGEST_SCHEDULE": DEPLOYED_DIGEST_SCHEDULE,
        **overrides,
    }


def upload_batch(simulator_url: str, customer_id: str, devices: list[dict[str, Any]], batch_id: str = "local",
                 timeout: float = 60) -> requests.Response:
    """Upload like an upstream job: POST deviceBatches; the answer's Location header names the tracking id."""
    return requests.post(
        f"{simulator_url}/v1/customers/{customer_id}/deviceBatches",
        json={"batchId": batch_id, "devices": devices},
        headers={"Authorization": f"Bearer {SIMULATOR_TOKEN}"},
        timeout=timeout,
    )


def tracking_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


@contextmanager
def app_environment(env: Mapping[str, str]) -> Iterator[None]:
    """These app settings in os.environ (and no inherited PARTNER_CENTER_/POLL_/ALERT_ ones) for the block,
    with the app rebuilt from them; everything as it was afterwards."""
    inherited = [name for name in os.environ if name.startswith(APP_SETTING_PREFIXES)]
    saved = {name: os.environ.get(name) for name in [*inherited, *env]}
    for name in inherited:
        del os.environ[name]
    os.environ.update(env)
    reset_app()
    try:
        yield
    finally:
        reset_app()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
