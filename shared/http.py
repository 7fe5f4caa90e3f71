"""HTTP sessions shared by the storage clients and the Partner Center client."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

# Connections kept per host: the host runs up to batchSize + newBatchThreshold (12) invocations at once and
# history rows are written by 8 threads; requests' default of 10 would drop and reopen connections.
CONNECTION_POOL_SIZE = 32
READ_PIECE_BYTES = 64 * 1024


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
    adapter = _DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class DeadlineExceeded(requests.Timeout):
    """The call as a whole (connect, headers and body) took longer than its deadline."""


class ResponseTooLarge(requests.RequestException):
    """The body, as sent or once decompressed, is larger than the caller accepts."""


class _Deadline:
    """One call's deadline: when it passes, the sockets the call uses are shut down, so a blocked read ends.

    requests' read timeout applies to each socket read, so a server that drips a byte at a time never
    trips it; shutting the socket down from a timer ends the call wherever it is waiting.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def attach(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut_down(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut_down(connection)


def _shut_down(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_active = threading.local()


@contextmanager
def call_deadline(seconds: float) -> Iterator[_Deadline]:
    """Bound every request this thread makes inside the block (through a pooled_session) to seconds in all.

    Raises DeadlineExceeded when the deadline ended the call, whatever exception the shut-down socket caused.
    """
    deadline = _Deadline(seconds)
    previous = getattr(_active, "deadline", None)
    _active.deadline = deadline
    deadline._timer.start()
    try:
        yield deadline
    except (requests.RequestException, OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
        if deadline.expired:
            raise DeadlineExceeded(f"no complete answer within {seconds:g} s") from exc
        raise
    finally:
        deadline._timer.cancel()
        _active.deadline = previous
    if deadline.expired:
        raise DeadlineExceeded(f"no complete answer within {seconds:g} s")


class _DeadlineAwarePool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        deadline = getattr(_active, "deadline", None)
        if deadline is not None:
            deadline.attach(connection)
        return connection


class _DeadlineAwareHTTPSPool(HTTPSConnectionPool):
    _get_conn = _DeadlineAwarePool._get_conn


_DEADLINE_AWARE_POOLS = {"http": _DeadlineAwarePool, "https": _DeadlineAwareHTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_AWARE_POOLS

    def proxy_manager_for(self, proxy: Any, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _DEADLINE_AWARE_POOLS
        return manager


def read_capped(response: requests.Response, max_bytes: int, max_decoded_bytes: int) -> bytes:
    """The body, refused (ResponseTooLarge) once more than max_bytes arrive or max_decoded_bytes decompress.

    Reads in small pieces, so a compressed bomb is stopped at the cap instead of being inflated in memory.
    """
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        response.close()
        raise ResponseTooLarge(f"body of {int(declared)} bytes is over the cap of {max_bytes} bytes")
    pieces: list[bytes] = []
    decoded = 0
    for piece in response.iter_content(READ_PIECE_BYTES):
        decoded += len(piece)
        received = response.raw.tell()
        if received > max_bytes or decoded > max_decoded_bytes:
            response.close()
            what = (f"over {max_bytes} bytes arrived" if received > max_bytes
                    else f"the body decompressed to over {max_decoded_bytes} bytes")
            raise ResponseTooLarge(f"{what}; the cap was reached before the end")
        pieces.append(piece)
    return b"".join(pieces)
