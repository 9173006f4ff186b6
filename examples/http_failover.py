"""Requests to a Service name, balanced over its pods, surviving a pod's death.

    python examples/http_failover.py

Three HTTP servers on 127.0.0.1 stand for the pods of ``payments.billing``; a
``FakeResolver`` stands for the cluster (on a real cluster, leave ``discoverer`` out
and kdisco asks cluster DNS, the kubelet's variables and the API). One pod is killed
half-way: the requests it would have served are retried on the others, and it is
ejected from the rotation.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

import kdisco
import kdisco.httpx
from kdisco.aio import AsyncDiscoverer
from kdisco.testing import FakeResolver


def start_pod(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps({"pod": name, "host": self.headers["Host"]}).encode()
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


def kill(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


async def main() -> None:
    pods = {name: start_pod(name) for name in ("payments-0", "payments-1", "payments-2")}
    addresses = [f"127.0.0.1:{s.server_address[1]}" for s in pods.values()]
    fake = FakeResolver({"payments.billing": {"endpoints": addresses}})
    async with AsyncDiscoverer(strategies=[fake]) as discoverer:
        # Keyword arguments go to the httpx transport underneath. Keep-alive is off
        # here only so that the killed pod's open connection is not reused: a pod
        # that really dies takes its connections with it.
        transport = kdisco.httpx.AsyncTransport(
            discoverer, limits=httpx.Limits(max_keepalive_connections=0)
        )
        async with httpx.AsyncClient(transport=transport) as client:
            served: collections.Counter[str] = collections.Counter()
            for i in range(30):
                if i == 15:
                    kill(pods["payments-1"])
                    print("killed payments-1")
                reply = (await client.get("http://payments.billing/charge")).json()
                served[reply["pod"]] += 1
            print("served:", dict(sorted(served.items())))
            print("Host header the pods saw:", reply["host"])
            port = pods["payments-1"].server_address[1]
            health = transport.balancer.health(kdisco.Endpoint(host="127.0.0.1", port=port))
            print("payments-1 ejected:", health.ejected_until is not None)
    for name, server in pods.items():
        if name != "payments-1":
            kill(server)


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    asyncio.run(main())
