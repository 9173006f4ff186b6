"""A FastAPI application calling a Service through kdisco's async httpx transport.

    python examples/fastapi_checkout.py

``/checkout`` calls ``http://payments.billing/charge``: kdisco.aio finds the Service,
the Balancer spreads the calls over its pods, and a dead pod is skipped, with no
thread and no hard-coded host. Here two HTTP servers on 127.0.0.1 stand for the pods
and a ``FakeResolver`` for the cluster; the application code is what it would be in
a pod (there, build the ``AsyncDiscoverer`` without ``strategies=``). The requests to
the application go through ``httpx.ASGITransport``, so no port is opened for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fastapi
import httpx

import kdisco.aio
import kdisco.httpx
from kdisco.testing import FakeResolver


def make_app(discoverer: kdisco.aio.AsyncDiscoverer) -> fastapi.FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        transport = kdisco.httpx.AsyncTransport(discoverer, failure_statuses={503})
        async with discoverer, httpx.AsyncClient(transport=transport, timeout=5.0) as client:
            app.state.payments = client
            yield

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/checkout")
    async def checkout(request: fastapi.Request) -> dict[str, object]:
        client: httpx.AsyncClient = request.app.state.payments
        try:
            reply = await client.post("http://payments.billing/charge", json={"cents": 1299})
        except kdisco.NoReadyEndpoints:
            raise fastapi.HTTPException(503, "payments has no ready pods") from None
        return {"charged_by": reply.json()["pod"]}

    return app


def start_pod(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"pod": name}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def main() -> None:
    pods = [start_pod(f"payments-{i}") for i in range(2)]
    fake = FakeResolver({"payments.billing": [f"127.0.0.1:{p.server_address[1]}" for p in pods]})
    app = make_app(kdisco.aio.AsyncDiscoverer(strategies=[fake]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as shop:
            for _ in range(4):
                print((await shop.post("/checkout")).json())
    for pod in pods:
        pod.shutdown()
        pod.server_close()


if __name__ == "__main__":
    asyncio.run(main())
