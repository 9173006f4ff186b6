"""Hostile local servers (127.0.0.1, started here, bounded): every call ends with the
right error within its deadline (+10 %), whatever the server does.

These are bounds the library promises, not speed figures: a call that overran its
deadline would be a bug however fast the machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import pytest

import kdisco
from kdisco import Discoverer
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import FakeApiServer, Reply, _status, client_for, service_path

DEADLINE = 2.0


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def within_deadline(elapsed: float) -> bool:
    return elapsed <= DEADLINE * 1.1


@contextlib.contextmanager
def udp_server(reply: Callable[[bytes], bytes | None]) -> Iterator[int]:
    """A UDP 'DNS server' on 127.0.0.1 answering each datagram with ``reply(query)``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            answer = reply(data)
            if answer is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(answer, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(1)
        sock.close()


def dns_discoverer(port: int) -> Discoverer:
    return Discoverer(
        strategies=["dns"],
        dns_server=f"127.0.0.1:{port}",
        environ={},
        cache=False,
        timeout=DEADLINE,
        resolv_conf="/nonexistent",
    )


def truncated(query: bytes) -> bytes:
    reply = dns.message.make_response(dns.message.from_wire(query))
    reply.flags |= dns.flags.TC
    return reply.to_wire()


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("never answers", lambda q: None),
        ("garbage", lambda q: b"\x00\x01garbage that is no DNS message at all"),
        ("wrong id", lambda q: bytes([q[0] ^ 0xFF, q[1]]) + q[2:]),
        ("truncated, and no TCP", truncated),
    ],
)
def test_hostile_dns_servers(name: str, reply: Callable[[bytes], bytes | None]) -> None:
    with udp_server(reply) as port, dns_discoverer(port) as d:
        elapsed, error = timed(lambda: d.discover("web.shop"))
    assert isinstance(error, kdisco.DiscoveryTimeout | kdisco.DiscoveryUnavailable), error
    assert within_deadline(elapsed), f"{name}: {elapsed:.2f} s for a {DEADLINE} s deadline"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_api_error_storm_is_retried_within_the_deadline(
    server: FakeApiServer, status: int
) -> None:
    server.route(service_path("shop", "web"), Reply(status, _status(status, "Storm", "busy")))
    api = ApiStrategy(client_factory=lambda: client_for(server.url), watch=False)
    with Discoverer(strategies=[api], environ={}, namespace="shop", timeout=DEADLINE) as d:
        elapsed, error = timed(lambda: d.discover("web"))
    # Retries stop when the next backoff would end past the deadline: the call ends
    # "unavailable" just before it, or "timed out" at it.
    assert isinstance(error, kdisco.DiscoveryUnavailable | kdisco.DiscoveryTimeout), error
    assert error.attempts[0].tries > 1  # retried, with backoff, inside the deadline
    assert within_deadline(elapsed)


@contextlib.contextmanager
def raw_http_server(respond: Callable[[socket.socket], None]) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = listener.accept()
                threading.Thread(target=respond, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


def test_a_response_cut_mid_body_is_retried_within_the_deadline() -> None:
    def half(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 500\r\n\r\n{"kind": "Service", "spec": {"clus'
            )

    with raw_http_server(half) as port:
        api = ApiStrategy(
            client_factory=lambda: client_for(f"http://127.0.0.1:{port}"), watch=False
        )
        with Discoverer(strategies=[api], environ={}, namespace="shop", timeout=DEADLINE) as d:
            elapsed, error = timed(lambda: d.discover("web"))
    assert isinstance(error, kdisco.DiscoveryUnavailable | kdisco.DiscoveryTimeout), error
    assert error.attempts[0].tries > 1
    assert "IncompleteRead" in str(error) or "ProtocolError" in str(error), error
    assert within_deadline(elapsed)


def test_a_server_that_accepts_and_never_answers_costs_the_deadline_only() -> None:
    def silent(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            time.sleep(DEADLINE * 3)

    with raw_http_server(silent) as port:
        api = ApiStrategy(
            client_factory=lambda: client_for(f"http://127.0.0.1:{port}"), watch=False
        )
        with Discoverer(strategies=[api], environ={}, namespace="shop", timeout=DEADLINE) as d:
            elapsed, error = timed(lambda: d.discover("web"))
    assert isinstance(error, kdisco.DiscoveryTimeout), error
    assert within_deadline(elapsed)
