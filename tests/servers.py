"""Real local servers for tests: any WSGI app on a loopback port in a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    port: int
    server: BaseWSGIServer


@contextmanager
def serve_wsgi(app: Any, threaded: bool = True) -> Iterator[RunningServer]:
    server = make_server("127.0.0.1", 0, app, threaded=threaded)
    # A short poll interval makes shutdown() return in ~50 ms instead of 0.5 s per server.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    port = server.server_port
    try:
        yield RunningServer(url=f"http://127.0.0.1:{port}", port=port, server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
