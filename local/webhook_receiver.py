"""A loopback webhook receiver that records the alerts ops would get, for `make run` and the tests.

    python -m local.webhook_receiver [--port 8791]

POST /<any path>            records the JSON body; answers 200, or the next scripted answer
POST /_receiver/script      {"responses": ["500", "429:2", "404", "200", "drip:30"]} answers for the next
                            alerts; drip:S starts a 200 and sends a header byte every 0.1 s for S seconds
GET  /_receiver/alerts      {"alerts": [{"path", "headers", "body", "time", "answer"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.serving import serve_in_thread, serve_until_interrupted


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alerts: list[dict[str, Any]] = []
        self.script: list[str] = []

    def delivered(self) -> list[dict[str, Any]]:
        """The alerts that were answered with 2xx, as a receiver's user would have seen them."""
        with self.lock:
            return [alert for alert in self.alerts if 200 <= alert["answer"] < 300]


class _Handler(BaseHTTPRequestHandler):
    server: ReceiverServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on a kept-alive connection the body then
    # waits for the client's delayed ACK (up to 40 ms on Linux), a latency real servers do not add.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/_receiver/alerts"):
            with self.server.receiver.lock:
                self._answer(200, {"alerts": list(self.server.receiver.alerts)})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        if self.path.startswith("/_receiver/script"):
            with receiver.lock:
                receiver.script.extend(json.loads(raw or b"{}").get("responses", []))
            self._answer(200, {"ok": True})
            return
        with receiver.lock:
            scripted = receiver.script.pop(0) if receiver.script else "200"
        code, _, retry_after = scripted.partition(":")
        if code == "drip":
            self._drip(float(retry_after or 30))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with receiver.lock:
            receiver.alerts.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                    "time": time.time(), "answer": int(code), "bytes": len(raw)})
        self._answer(int(code), {"ok": int(code) < 300}, {"Retry-After": retry_after} if retry_after else None)

    def _drip(self, seconds: float) -> None:
        """A receiver that never finishes its answer: no single read times out, the whole answer never ends."""
        self.close_connection = True
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(int(seconds * 10)):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, code: int, document: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, receiver: Receiver | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.receiver = receiver or Receiver()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def start_in_thread(port: int = 0) -> ReceiverServer:
    return serve_in_thread(ReceiverServer(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.webhook_receiver", description="Record webhook alerts.")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args(argv)
    server = ReceiverServer(args.port)
    return serve_until_interrupted(server, f"Webhook receiver listening on {server.url}")


if __name__ == "__main__":
    sys.exit(main())
