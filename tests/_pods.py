"""Real HTTP servers on 127.0.0.1 standing for a Service's pods (HTTP integrations' tests).

Each answers every request with JSON naming itself, the Host header it got and the
path, so a test can tell which "pod" served a request and what it was sent.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Pod:
    def __init__(self, index: int, tls: tuple[Path, Path] | None = None) -> None:
        self.index = index
        self.requests = 0
        self._connections: list[socket.socket] = []
        pod = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                pod._connections.append(self.connection)

            def _reply(self) -> None:
                pod.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = 503 if self.path.startswith("/unavailable") else 200
                data = json.dumps(
                    {
                        "pod": pod.index,
                        "host": self.headers.get("Host"),
                        "path": self.path,
                        "method": self.command,
                        "body": body.decode(),
                    }
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _reply  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.alive = True

    def kill(self) -> None:
        """Die as a pod does: open connections are cut and new ones refused."""
        if self.alive:
            self.alive = False
            self.server.shutdown()
            self.server.server_close()
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._thread.join(5)


@contextmanager
def pods(count: int, *, tls: tuple[Path, Path] | None = None) -> Iterator[list[Pod]]:
    started = [Pod(i, tls) for i in range(count)]
    try:
        yield started
    finally:
        for pod in started:
            pod.kill()


def free_port() -> int:
    """A port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IngressRoutes:
    """A strategy answering as ``reach="external"`` does for a Service behind an
    Ingress: each endpoint a URL (scheme, host, port, path), here of pods on
    127.0.0.1 (a real Ingress's host would be its rule's)."""

    name = "routes"

    def __init__(self, pods: list[Pod], path: str) -> None:
        self._pods = pods
        self._path = path

    def lookup(self, query: Any, deadline: Any) -> Any:
        import kdisco

        return kdisco.Resolution(
            service=query.service,
            kind=kdisco.ServiceKind.CLUSTER_IP,
            endpoints=tuple(
                kdisco.Endpoint(host="127.0.0.1", port=p.port, scheme="http", path=self._path)
                for p in self._pods
            ),
            source="api",
            reach="external",
        )
