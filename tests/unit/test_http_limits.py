"""A total deadline per call and caps on the body, against a raw socket server that misbehaves on purpose."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
import requests

from shared.bounded_http import Answer, DeadlineExceeded, ResponseTooLarge, request_within
from shared.http import pooled_session

Script = Callable[[socket.socket], None]


@pytest.fixture
def server() -> Iterator[Callable[[Script], str]]:
    """Serves each accepted connection with the given script (reads the request first)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    scripts: list[Script] = []

    def handle(connection: socket.socket, script: Script) -> None:
        with connection:
            connection.settimeout(10)
            try:
                connection.recv(65536)
                script(connection)
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(connection, scripts[-1]), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def start(script: Script) -> str:
        scripts.append(script)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/status"

    yield start
    stop.set()
    thread.join(2)
    listener.close()


def _drip(head: bytes, forever: bytes) -> Script:
    def script(connection: socket.socket) -> None:
        connection.sendall(head)
        for _ in range(300):  # 30 s of one byte every 0.1 s: never a read timeout of 5 s
            connection.sendall(forever)
            time.sleep(0.1)

    return script


def _answer(status: str, headers: dict[str, str], body: bytes) -> Script:
    def script(connection: socket.socket) -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}",
                 "Connection: close"]
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        time.sleep(0.5)

    return script


def _get(url: str, session: requests.Session | None = None, deadline: float = 10, max_bytes: int = 10**7,
         max_decoded_bytes: int = 10**7, timeout: object = 5) -> Answer:
    return request_within(session or pooled_session(), "GET", url, deadline=deadline, max_bytes=max_bytes,
                          max_decoded_bytes=max_decoded_bytes, timeout=timeout)


@pytest.mark.parametrize("script", [
    _drip(b"HTTP/1.1 200 OK\r\n", b"X"),  # headers that never end
    _drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"{"),  # a body that never ends
], ids=["headers", "body"])
def test_a_slow_drip_ends_at_the_call_deadline(server: Callable[[Script], str], script: Script) -> None:
    url = server(script)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        _get(url, deadline=1.0, timeout=(5, 5))
    assert time.monotonic() - started < 10  # the drip would have gone on for 30 s


def test_a_declared_length_over_the_cap_is_refused_before_reading(server: Callable[[Script], str]) -> None:
    url = server(_answer("200 OK", {}, b"x" * 5000))
    with pytest.raises(ResponseTooLarge, match="5000 bytes is over the cap of 1000"):
        _get(url, max_bytes=1000)


def test_a_chunked_answer_over_the_cap_is_refused_as_it_arrives(server: Callable[[Script], str]) -> None:
    def chunked(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for _ in range(100):  # 100 chunks of 10,000 bytes, no Content-Length
            connection.sendall(b"2710\r\n" + b"y" * 10_000 + b"\r\n")
        connection.sendall(b"0\r\n\r\n")

    url = server(chunked)
    with pytest.raises(ResponseTooLarge, match="over 100000 bytes arrived"):
        _get(url, max_bytes=100_000)


@pytest.mark.parametrize("script", [
    lambda connection: connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"{" * 41),
    lambda connection: connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
], ids=["length", "chunked"])
def test_a_body_cut_short_is_a_requests_error_not_a_urllib3_one(server: Callable[[Script], str],
                                                                 script: Script) -> None:
    url = server(script)  # the connection closes before the body is complete
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _get(url)


def test_an_unknown_content_encoding_is_refused(server: Callable[[Script], str]) -> None:
    url = server(_answer("200 OK", {"Content-Encoding": "br"}, b"not brotli"))
    with pytest.raises(requests.exceptions.ContentDecodingError, match="unsupported Content-Encoding"):
        _get(url)


def test_a_compressed_bomb_is_stopped_at_the_decompressed_cap(server: Callable[[Script], str]) -> None:
    bomb = gzip.compress(b"0" * 50_000_000)  # 50 MB in about 50 KB
    url = server(_answer("200 OK", {"Content-Encoding": "gzip"}, bomb))
    with pytest.raises(ResponseTooLarge, match="decompressed to over 1000000 bytes"):
        _get(url, max_bytes=10**6, max_decoded_bytes=10**6)


def test_a_normal_answer_inside_the_deadline_is_read_and_later_calls_are_unaffected(
        server: Callable[[Script], str]) -> None:
    body = gzip.compress(b'{"status": "finished"}')
    url = server(_answer("200 OK", {"Content-Encoding": "gzip"}, body))
    session = pooled_session()
    for _ in range(3):
        answer = _get(url, session=session, deadline=0.5, max_bytes=1000, max_decoded_bytes=1000)
        assert answer.body == b'{"status": "finished"}' and answer.status_code == 200
    time.sleep(0.7)  # past every deadline: a finished deadline must not break a later call
    assert session.get(url, timeout=5).status_code == 200


def test_requests_outside_a_deadline_are_not_affected(server: Callable[[Script], str]) -> None:
    url = server(_answer("503 Service Unavailable", {}, b"busy"))
    response = pooled_session().get(url, timeout=5)
    assert response.status_code == 503 and response.content == b"busy"
    with pytest.raises(requests.ConnectionError):
        pooled_session().get("http://127.0.0.1:9/", timeout=1)


def test_a_large_answer_is_held_in_a_temporary_file_not_in_memory(server: Callable[[Script], str]) -> None:
    document = b'{"status": "finished", "devicesStatus": [' + b",".join([b'{"serialNumber": "SN-000000"}'] * 600_000) \
        + b"]}"  # 17 MB once inflated, 50 KB on the wire
    url = server(_answer("200 OK", {"Content-Encoding": "gzip"}, gzip.compress(document)))
    tracemalloc.start()
    try:
        answer = _get(url, max_decoded_bytes=10**8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024 < len(document)
    assert answer.body == document  # all of it, read back from the file
