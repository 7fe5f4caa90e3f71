"""HTTP sessions shared by the storage clients and the Partner Center client."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Connections kept per host: the host runs up to batchSize + newBatchThreshold (12) invocations at once and
# history rows are written by 8 threads; requests' default of 10 would drop and reopen connections.
CONNECTION_POOL_SIZE = 32


def pooled_session(pool_size: int = CONNECTION_POOL_SIZE) -> requests.Session:
    """A requests session that keeps pool_size connections per host; transport retries stay off."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size,
                          max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
