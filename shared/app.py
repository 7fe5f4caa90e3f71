"""The process-wide objects: settings, storage clients, one Partner Center credential and session."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.credentials import TokenCredential

from .alert_log import AlertLog
from .auth import TokenSource, build_credential
from .config import Settings, load_settings
from .failure_alerts import FailureNotifier
from .partner_center import PartnerCenterClient
from .results_store import ResultsStore
from .status_check import StatusCheck
from .storage import StorageClients
from .webhook import WebhookSender


@dataclass
class App:
    settings: Settings
    clients: StorageClients
    partner_center: PartnerCenterClient
    status_check: StatusCheck
    failure_notifier: FailureNotifier


def build_app(
    env: Mapping[str, str],
    *,
    session: requests.Session | None = None,
    credential_factory: Callable[[], TokenCredential] | None = None,
    **status_check_options: Any,
) -> App:
    settings = load_settings(env)
    clients = StorageClients(settings.storage)
    tokens = TokenSource(credential_factory or (lambda: build_credential(settings.partner_center)),
                         settings.partner_center.scope)
    partner_center = PartnerCenterClient(settings.partner_center, tokens, session=session)
    store = ResultsStore(clients, settings.batch_table, settings.device_table, settings.history_table)
    return App(
        settings=settings,
        clients=clients,
        partner_center=partner_center,
        status_check=StatusCheck(settings, clients, store, partner_center, **status_check_options),
        failure_notifier=FailureNotifier(settings, clients, AlertLog(clients, settings.alert_table),
                                         WebhookSender(settings.alert_webhook_url) if settings.alert_webhook_url
                                         else None),
    )


_app: App | None = None
_lock = threading.Lock()


def get_app() -> App:
    """The app for this worker process, built on first use from the environment."""
    global _app
    with _lock:
        if _app is None:
            _app = build_app(os.environ)
        return _app


def reset_app() -> None:
    """Forget the process's app (a new host run, or a test with other settings)."""
    global _app
    with _lock:
        _app = None
