"""Running the loopback HTTP stand-ins (simulator, webhook receiver) in a thread or in the foreground."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import TypeVar

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
