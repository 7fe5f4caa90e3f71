"""The process-wide objects: settings, storage clients, one Partner Center credential and session.

Each function builds only its own part (status_check(), failure_notifier()), from only the settings it
needs, so that a broken alert setting never stops polling and a broken Partner Center setting never stops
alerts. get_app() builds both, for the tools and tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from azure.core.credentials import TokenCredential

from .alert_log import AlertLog
from .auth import TokenSource, build_credential
from .config import (
    AlertSettings,
    ConfigError,
    PollingSettings,
    Settings,
    load_alert_settings,
    load_polling_settings,
    load_settings,
    load_storage_settings,
)
from .failure_alerts import FailureNotifier
from .partner_center import PartnerCenterClient
from .results_store import ResultsStore
from .status_check import StatusCheck
from .storage import StorageClients
from .webhook import WebhookSender

T = TypeVar("T")


@dataclass
class App:
    settings: Settings
    clients: StorageClients
    partner_center: PartnerCenterClient
    status_check: StatusCheck
    failure_notifier: FailureNotifier


def build_status_check(settings: PollingSettings, clients: StorageClients, *,
                       session: requests.Session | None = None,
                       credential_factory: Callable[[], TokenCredential] | None = None,
                       **options: Any) -> StatusCheck:
    tokens = TokenSource(credential_factory or (lambda: build_credential(settings.partner_center)),
                         settings.partner_center.scope)
    partner_center = PartnerCenterClient(settings.partner_center, tokens, session=session)
    store = ResultsStore(clients, settings.batch_table, settings.device_table, settings.history_table)
    return StatusCheck(settings, clients, store, partner_center, **options)


def build_failure_notifier(settings: AlertSettings, clients: StorageClients) -> FailureNotifier:
    sender = WebhookSender(settings.alert_webhook_url) if settings.alert_webhook_url else None
    return FailureNotifier(settings, clients, AlertLog(clients, settings.alert_table), sender)


def build_app(env: Mapping[str, str], *, session: requests.Session | None = None,
              credential_factory: Callable[[], TokenCredential] | None = None, **status_check_options: Any) -> App:
    settings = load_settings(env)
    clients = StorageClients(settings.storage)
    check = build_status_check(settings, clients, session=session, credential_factory=credential_factory,
                               **status_check_options)
    assert isinstance(check.partner_center, PartnerCenterClient)
    return App(settings, clients, check.partner_center, check, build_failure_notifier(settings, clients))


_built: dict[str, Any] = {}
_lock = threading.RLock()  # a build may build what it shares (the storage clients)


def _once(name: str, build: Callable[[], T]) -> T:
    """Built on first use in this worker process; a build that raises (a bad setting) is tried again next time."""
    with _lock:
        if name not in _built:
            _built[name] = build()
        return _built[name]


def storage_clients() -> StorageClients:
    """The process's storage clients, from the storage settings alone."""
    return _once("clients", lambda: StorageClients(load_storage_settings(os.environ)))


def status_check() -> StatusCheck:
    """check_batch_status's handler; ConfigError names a missing or invalid setting it needs."""
    def build() -> StatusCheck:
        settings = load_polling_settings(os.environ)
        return build_status_check(settings, storage_clients())

    return _once("status_check", build)


def failure_notifier() -> FailureNotifier:
    """notify_failures' handler; ConfigError names a missing or invalid setting it needs."""
    def build() -> FailureNotifier:
        settings = load_alert_settings(os.environ)
        return build_failure_notifier(settings, storage_clients())

    return _once("failure_notifier", build)


def start_failure_notifier() -> None:
    """Build notify_failures' handler when its function is loaded, so that a route whose webhook cannot be used
    is reported at start-up. A wrong setting is left to the first invocation, which holds its message back and
    names the setting."""
    try:
        failure_notifier()
    except ConfigError:
        pass


def get_app() -> App:
    """Both functions' parts for this process, the very objects the functions use (tools and tests)."""
    def build() -> App:
        check = status_check()
        assert isinstance(check.partner_center, PartnerCenterClient)
        return App(load_settings(os.environ), storage_clients(), check.partner_center, check, failure_notifier())

    return _once("app", build)


def reset_app() -> None:
    """Forget everything built in this process (a new host run, or a test with other settings)."""
    with _lock:
        _built.clear()
