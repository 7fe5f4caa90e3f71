"""Running the loopback HTTP stand-ins (simulator, webhook receiver) in a thread or in the foreground."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer
from typing import TypeVar

import requests

Server = TypeVar("Server", bound=ThreadingHTTPServer)


def serve_in_thread(server: Server) -> Server:
    threading.Thread(target=server.serve_forever, name=type(server).__name__, daemon=True).start()
    return server


def serve_until_interrupted(server: ThreadingHTTPServer, banner: str) -> int:
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def wait_until_answering(url: str, timeout: float = 30) -> None:
    """Wait for a server started in another process to answer HTTP at url."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.1)
