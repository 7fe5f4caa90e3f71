"""HTTP sessions shared by the storage clients and the Partner Center client."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.util.retry import Retry

from .bounded_http import DeadlineAdapter

# Connections kept per host: the host runs up to batchSize + newBatchThreshold (12) invocations at once and
# history rows are written by 8 threads; requests' default of 10 would drop and reopen connections.
CONNECTION_POOL_SIZE = 32


class EnvironmentOnceSession(requests.Session):
    """A session that reads the proxy and CA-bundle environment variables once per host, not per request.

    requests scans the whole environment on every request (get_environ_proxies, REQUESTS_CA_BUNDLE); a
    function app's environment is its app settings, fixed for the life of the worker, so the answer for a
    scheme and host cannot change. The first answer is kept and reused.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment_settings: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        scheme, netloc = urlsplit(url.decode() if isinstance(url, bytes) else url or "")[:2]
        frozen_cert = tuple(cert) if isinstance(cert, list) else cert
        key = (scheme, netloc, tuple((proxies or {}).items()), stream, verify, frozen_cert)
        settings = self._environment_settings.get(key)
        if settings is None:
            settings = dict(super().merge_environment_settings(url, proxies, stream, verify, cert))
            self._environment_settings[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


def pooled_session(pool_size: int = CONNECTION_POOL_SIZE, for_azure_core: bool = False) -> requests.Session:
    """A requests session that keeps pool_size connections per host, with no transport retries.

    Requests made inside call_deadline() are bounded in total, not only per socket read.

    for_azure_core: the adapter azure-core mounts itself (urllib3 errors raised as they are, which its
    transport translates); otherwise requests' default, which wraps them in requests exceptions.
    """
    session = EnvironmentOnceSession()
    retries = Retry(total=False, redirect=False, raise_on_status=False) if for_azure_core else Retry(0, read=False)
    adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
