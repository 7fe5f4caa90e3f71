"""HTTP sessions shared by the storage clients and the Partner Center client."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Connections kept per host: the host runs up to batchSize + newBatchThreshold (12) invocations at once and
# history rows are written by 8 threads; requests' default of 10 would drop and reopen connections.
CONNECTION_POOL_SIZE = 32


def pooled_session(pool_size: int = CONNECTION_POOL_SIZE, for_azure_core: bool = False) -> requests.Session:
    """A requests session that keeps pool_size connections per host, with no transport retries.

    for_azure_core: the adapter azure-core mounts itself (urllib3 errors raised as they are, which its
    transport translates); otherwise requests' default, which wraps them in requests exceptions.
    """
    session = requests.Session()
    retries = Retry(total=False, redirect=False, raise_on_status=False) if for_azure_core else Retry(0, read=False)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
