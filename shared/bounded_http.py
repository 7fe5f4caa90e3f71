"""HTTP calls bounded in time and size: a total deadline per call and caps on the body, whatever the server does.

requests' timeouts apply to each socket read, so a server that drips a byte at a time is never timed out,
and a small gzip body can inflate to gigabytes. request_within() bounds both: a timer shuts the call's
sockets down at the deadline, and the body is read raw in small pieces, counted as it arrives and as it
inflates, and refused past either cap.
"""

from __future__ import annotations

import http.client
import io
import socket
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

READ_PIECE_BYTES = 64 * 1024
SPOOL_IN_MEMORY_BYTES = 1024 * 1024  # a larger body is held in a temporary file, not in memory
ACCEPTED_ENCODINGS = "gzip, deflate"  # the only encodings read_capped inflates


class DeadlineExceeded(requests.Timeout):
    """The call as a whole (connect, headers and body) took longer than its deadline."""


class ResponseTooLarge(requests.RequestException):
    """The body, as sent or once decompressed, is larger than the caller accepts."""


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer (the body only when the caller asked to read it). content holds the body from its
    start: in memory up to SPOOL_IN_MEMORY_BYTES, else in a temporary file, so a large answer costs no memory
    until it is read, and can be read in a stream."""

    status_code: int
    headers: Mapping[str, str]
    content: IO[bytes] = field(default_factory=io.BytesIO)

    @property
    def body(self) -> bytes:
        """The whole body at once (for small answers)."""
        self.content.seek(0)
        return self.content.read()


def request_within(session: requests.Session, method: str, url: str, *, deadline: float, max_bytes: int,
                   max_decoded_bytes: int, read_body: Callable[[int], bool] = lambda status: status == 200,
                   **kwargs: Any) -> Answer:
    """One request through a pooled_session, ended at deadline seconds in all; the body is read (under the caps)
    only when read_body(status) is true. Raises DeadlineExceeded, ResponseTooLarge or a requests exception."""
    headers = {"Accept-Encoding": ACCEPTED_ENCODINGS, **kwargs.pop("headers", {})}
    with call_deadline(deadline) as guard:
        response = session.request(method, url, headers=headers, stream=True, **kwargs)
        try:
            if not read_body(response.status_code):
                return Answer(response.status_code, response.headers)
            return Answer(response.status_code, response.headers, read_capped(response, max_bytes, max_decoded_bytes))
        finally:
            guard.finish()  # before the connection can go back to the pool: the timer must not touch it there
            response.close()


class _Deadline:
    """One call's deadline: when it passes, the sockets the call uses are shut down, so a blocked read ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._finished = False
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def attach(self, connection: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut_down(connection)

    def finish(self) -> None:
        """The call is over: from now on the timer does nothing."""
        with self._lock:
            self._finished = True
            self._connections.clear()
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
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
    Call finish() on the guard before a response's connection goes back to the pool (request_within does).
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
        deadline.finish()
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


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections a call_deadline can shut down (requests outside one are unaffected)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _DEADLINE_AWARE_POOLS

    def proxy_manager_for(self, proxy: Any, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _DEADLINE_AWARE_POOLS
        return manager


def read_capped(response: requests.Response, max_bytes: int, max_decoded_bytes: int) -> IO[bytes]:
    """The body, refused (ResponseTooLarge) once more than max_bytes arrive or max_decoded_bytes decompress,
    spooled (see Answer.content) and positioned at its start.

    Reads the raw bytes in small pieces (so chunked answers are counted too) and inflates gzip or deflate
    itself with a bound on each step, so a compressed bomb is stopped at the cap instead of in memory.
    """
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"body of {int(declared)} bytes is over the cap of {max_bytes} bytes")
    inflate = _inflater(response.headers.get("Content-Encoding"))
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - the caller owns it
    try:
        _inflate_into(spool, _raw_pieces(response), inflate, max_bytes, max_decoded_bytes)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _inflate_into(spool: IO[bytes], raw_pieces: Iterator[bytes], inflate: Inflate, max_bytes: int,
                  max_decoded_bytes: int) -> None:
    received = decoded = 0
    for raw in raw_pieces:
        received += len(raw)
        if received > max_bytes:
            raise ResponseTooLarge(f"over {max_bytes} bytes arrived; the cap was reached before the end")
        for piece in inflate(raw, max_decoded_bytes - decoded + 1):
            decoded += len(piece)
            if decoded > max_decoded_bytes:
                raise ResponseTooLarge(f"the body decompressed to over {max_decoded_bytes} bytes")
            spool.write(piece)
    for piece in inflate(b"", max_decoded_bytes - decoded + 1, final=True):
        decoded += len(piece)
        if decoded > max_decoded_bytes:
            raise ResponseTooLarge(f"the body decompressed to over {max_decoded_bytes} bytes")
        spool.write(piece)


def _raw_pieces(response: requests.Response) -> Iterator[bytes]:
    """The raw body in pieces, with urllib3's read errors raised as the requests exceptions
    Response.iter_content raises for them (reading .raw directly bypasses that translation)."""
    try:
        yield from response.raw.stream(READ_PIECE_BYTES, decode_content=False)
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


Inflate = Callable[..., Iterator[bytes]]


def _inflater(content_encoding: str | None) -> Inflate:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        def identity(data: bytes, limit: int, final: bool = False) -> Iterator[bytes]:
            if data:
                yield data

        return identity
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise requests.exceptions.ContentDecodingError(f"unsupported Content-Encoding {encoding[:40]!r}")
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, detected

    def inflate(data: bytes, limit: int, final: bool = False) -> Iterator[bytes]:
        try:
            while data:
                yield decompressor.decompress(data, max(1, min(limit, READ_PIECE_BYTES)))
                data = decompressor.unconsumed_tail
            if final:
                yield decompressor.flush()
        except zlib.error as exc:
            raise requests.exceptions.ContentDecodingError(f"malformed {encoding} body: {exc}") from exc

    return inflate
