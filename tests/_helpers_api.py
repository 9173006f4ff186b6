"""A tiny stand-in for kube-apiserver, and the recorded API JSON it serves.

The server speaks plain HTTP on 127.0.0.1 (a port the test itself opened) and answers
from per-path reply queues, so a test can script "500, then 200" or a 403 Status body.
The EndpointSlice list route pages its items with ``continue`` tokens like the real
apiserver, so the client's paging loop is exercised with small recordings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from kubernetes import client as k8s

from kdisco._api import _finish

DATA = Path(__file__).parent / "data" / "api"

Json = dict[str, Any]


def load(name: str) -> Json:
    """One recorded response body from tests/data/api."""
    doc = json.loads((DATA / name).read_text())
    assert isinstance(doc, dict)
    return doc


def slice_items(name: str) -> list[Json]:
    items = load(name)["items"]
    assert isinstance(items, list)
    return items


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@attrs.frozen
class Reply:
    status: int
    body: Json | bytes
    headers: dict[str, str] = attrs.Factory(dict)


Handler = Callable[[Request], Reply]


class FakeApiServer:
    """Answers GETs from scripted replies; remembers every request it saw."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                request = Request(
                    method="GET",
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                reply = server._dispatch(request)
                body = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        # A short poll keeps shutdown() (once per test) from waiting the default 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def route(self, path: str, *handlers: Handler | Reply) -> None:
        """Answer ``path`` with these, in order; the last one repeats."""
        self._routes[path] = [h if callable(h) else _const(h) for h in handlers]

    def _dispatch(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            queue = self._routes.get(request.path)
            if not queue:
                return Reply(404, _status(404, "NotFound", f"no route {request.path}"))
            handler = queue.pop(0) if len(queue) > 1 else queue[0]
        return handler(request)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- the two routes the api strategy reads ---------------------------------

    def serve_service(self, doc: Json) -> None:
        meta = doc["metadata"]
        self.route(service_path(meta["namespace"], meta["name"]), Reply(200, doc))

    def serve_slices(
        self, namespace: str, service: str, slice_list: Json, *, page_size: int = 1000
    ) -> None:
        """The slice list, filtered by the service-name label, paged like the apiserver."""
        items = [
            item
            for item in slice_list["items"]
            if item["metadata"]["labels"].get("kubernetes.io/service-name") == service
        ]

        def handler(request: Request) -> Reply:
            selector = request.query.get("labelSelector", [""])[0]
            if selector != f"kubernetes.io/service-name={service}":
                # Without the selector the client would read every slice in the
                # namespace: fail loudly rather than answer.
                return Reply(400, _status(400, "BadRequest", f"unexpected selector {selector!r}"))
            start = int(request.query.get("continue", ["0"])[0])
            limit = min(page_size, int(request.query.get("limit", [str(page_size)])[0]))
            page = items[start : start + limit]
            meta: Json = {"resourceVersion": slice_list["metadata"]["resourceVersion"]}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            return Reply(
                200,
                {
                    "kind": "EndpointSliceList",
                    "apiVersion": "discovery.k8s.io/v1",
                    "metadata": meta,
                    "items": page,
                },
            )

        self.route(slices_path(namespace), handler)


def _const(reply: Reply) -> Handler:
    return lambda _request: reply


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def service_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def slices_path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


@contextmanager
def fake_apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_for(url: str) -> Any:
    """A real ApiClient aimed at ``url``, built the way kdisco builds its own."""
    return _finish(k8s.Configuration(host=url))
