"""Benchmark 17: requests through kdisco.httpx.Transport next to plain httpx.

A local HTTP server on 127.0.0.1 (a pod stand-in); the same keep-alive client settings
on both sides; the Service answer cached in the Discoverer (as it is between changes).
No lab needed.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

import kdisco
import kdisco.httpx
from kdisco.testing import FakeResolver

from ._common import Section, Settings, Target, gc_paused, interleaved, median, progress, us


def _server() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as two writes: without this, Nagle holds the
            # second until the client's delayed ACK (40 ms), which would swamp both.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bench_transport(settings: Settings) -> Section:
    rounds = settings.n(5000, 300)
    server = _server()
    port = server.server_address[1]
    progress(f"17: httpx through kdisco.httpx.Transport vs plain httpx, {rounds} rounds")
    d = kdisco.Discoverer(
        strategies=[FakeResolver({"payments.billing": [f"127.0.0.1:{port}"]})],
        environ={},
        resolv_conf="/nonexistent",
    )
    plain = httpx.Client(transport=httpx.HTTPTransport())
    via = httpx.Client(transport=kdisco.httpx.Transport(d))
    direct_url = f"http://127.0.0.1:{port}/charge"
    service_url = f"http://payments.billing:{port}/charge"
    cases = {
        "plain httpx, by address (baseline)": lambda: plain.get(direct_url),
        "httpx + kdisco.httpx.Transport, by Service name": lambda: via.get(service_url),
    }
    for fn in cases.values():
        for _ in range(50):
            fn()  # connections open, caches warm
    with gc_paused():
        times = interleaved(cases, rounds, budget=120)
    plain.close()
    via.close()
    server.shutdown()
    server.server_close()
    base, ours = (median(t) for t in times.values())
    added = ours - base
    share = added / base
    limit = max(0.05 * base, 20e-6)
    return Section(
        17,
        "HTTP: a request through kdisco.httpx.Transport next to plain httpx",
        ["client", "p50 per request", "added"],
        [
            ["plain httpx, by address (baseline)", us(base), "—"],
            [
                "httpx + kdisco.httpx.Transport, by Service name",
                us(ours),
                f"{us(added)} ({share:+.1%})",
            ],
        ],
        targets=[
            Target(
                "added cost per request",
                "≤ 5 % or ≤ 20 µs, whichever is larger",
                f"{us(added)} ({share:+.1%})",
                added <= limit,
            )
        ],
        notes=[
            f"Median of {len(times[next(iter(times))])} interleaved requests per side, "
            "keep-alive on, one connection each, to a Python `ThreadingHTTPServer` on "
            "127.0.0.1 answering 2 bytes. The transport's share: recognising the Service "
            "name, a cached `discover()`, the balancer's pick and its outcome report, and "
            "rewriting the URL (and restoring it).",
        ],
    )
