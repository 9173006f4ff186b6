"""What only the ``dns`` strategy's asyncio lookup can get wrong.

Every scenario of tests/test_dns.py runs through both ``lookup`` and ``alookup``; here
are the rest: lookups on one loop are in flight together, cancelling one leaves no
socket behind, a silent server ends it at its deadline, and the loop is never blocked.
Each runs on a selector loop, and on one that cannot watch sockets (as Windows'
proactor loop cannot), where the lookup waits in ``sock_recvfrom`` instead.
No pytest-asyncio: each test runs its own loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, TypeVarTuple

import dns.flags
import dns.message
import dns.rdatatype
import pytest

import kdisco
from kdisco import Deadline, Miss
from kdisco._names import Query, parse_query
from kdisco._settings import DnsTarget
from kdisco._strategies.dns import DnsStrategy
from tests._dnsserver import DnsResponder, bind_pair, rrset

if TYPE_CHECKING:
    from _typeshed import HasFileno

ZONE = "cluster.local"
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class BlindLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a socket, like Windows' proactor loop."""

    def add_reader(
        self, fd: int | HasFileno, callback: Callable[[*Ts], object], *args: *Ts
    ) -> None:
        raise NotImplementedError


class Run(Protocol):
    def __call__(self, main: Coroutine[Any, Any, T], *, debug: bool = False) -> T: ...


@pytest.fixture(params=["selector", "blind"])
def run(request: pytest.FixtureRequest) -> Run:
    """``asyncio.run``, on a selector loop or on a ``BlindLoop``."""
    factory = BlindLoop if request.param == "blind" else asyncio.SelectorEventLoop

    def run(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
        with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)

    return run


def query(name: str, port: int | str | None = None) -> Query:
    return parse_query(
        name, namespace=None, default_namespace="default", cluster_domain=ZONE, port=port
    )


def fqdn(svc: str) -> str:
    return f"{svc}.default.svc.{ZONE}."


def strategy(*ports: int) -> DnsStrategy:
    return DnsStrategy([DnsTarget("127.0.0.1", port) for port in ports])


# -- servers -------------------------------------------------------------------------


class HoldingServer:
    """Replies to nothing until it holds ``expected`` questions, then to all of them.

    Lookups that waited for one another (or A that waited for AAAA) would never get
    there. Records each question's source port, so tests can see which socket asked.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen: list[tuple[int, str, str]] = []  # (source port, qname, qtype)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held: list[tuple[dns.message.Message, tuple[str, int]]] = []
        try:
            while len(held) < self.expected:
                wire, peer = self.sock.recvfrom(65535)
                held.append((dns.message.from_wire(wire), peer))
        except OSError:
            return
        for request, peer in held:
            question = request.question[0]
            qname = question.name.to_text()
            qtype = dns.rdatatype.to_text(question.rdtype)
            self.seen.append((peer[1], qname, qtype))
            reply = dns.message.make_response(request)
            if qtype == "A":
                number = int(qname.split(".")[0].removeprefix("svc-"))
                reply.answer.append(rrset(qname, "A", f"10.0.0.{number}"))
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.sock.close()


class SilentTcpServer:
    """Says "truncated" to every UDP question, then accepts the TCP retry and never
    answers it. ``connected`` is set once a client is waiting on TCP."""

    def __init__(self) -> None:
        self.udp, self.tcp = bind_pair()
        self.port: int = self.udp.getsockname()[1]
        self.udp.settimeout(0.05)
        self.tcp.settimeout(0.05)
        self.connected = threading.Event()
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                wire, peer = self.udp.recvfrom(65535)
            except OSError:
                pass
            else:
                reply = dns.message.make_response(dns.message.from_wire(wire))
                reply.flags |= dns.flags.TC
                self.udp.sendto(reply.to_wire(), peer)
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            self.held.append(conn)
            self.connected.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in (self.udp, self.tcp, *self.held):
            sock.close()


@contextmanager
def silent_server(transport: str) -> Iterator[tuple[int, threading.Event | DnsResponder]]:
    """A server that leaves a lookup waiting on ``transport``, and what tells that the
    lookup is waiting: the TCP server's ``connected``, or the responder's questions."""
    if transport == "tcp":
        tcp = SilentTcpServer()
        try:
            yield tcp.port, tcp.connected
        finally:
            tcp.close()
    else:
        with DnsResponder(zone=ZONE) as udp:
            udp.drop(fqdn("web"), "A")
            udp.drop(fqdn("web"), "AAAA")
            yield udp.port, udp


async def waiting(on: threading.Event | DnsResponder) -> None:
    """Return once the server is holding the lookup (polled: the loop stays free)."""
    for _ in range(400):
        if on.is_set() if isinstance(on, threading.Event) else len(on.queries) >= 2:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the lookup never reached the server")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- concurrency ---------------------------------------------------------------------


def test_lookups_on_one_loop_are_in_flight_together_one_socket_each(run: Run) -> None:
    lookups = 20
    server = HoldingServer(expected=2 * lookups)  # A and AAAA of every lookup

    async def main() -> list[kdisco.Resolution | Miss]:
        dns_strategy = strategy(server.port)
        deadline = Deadline(3.0)
        return await asyncio.gather(
            *(dns_strategy.alookup(query(f"svc-{i}"), deadline) for i in range(lookups))
        )

    try:
        results = run(main())
    finally:
        server.close()
    for i, res in enumerate(results):
        assert isinstance(res, kdisco.Resolution), res
        assert [ep.host for ep in res] == [f"10.0.0.{i}"]
    ports: dict[str, set[int]] = {}
    for source_port, qname, _ in server.seen:
        ports.setdefault(qname, set()).add(source_port)
    # A and AAAA of one lookup share its one socket; every lookup has its own.
    assert all(len(p) == 1 for p in ports.values()), ports
    assert len(set.union(*ports.values())) == lookups


# -- cancellation --------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_cancelling_a_lookup_closes_every_socket_it_opened(transport: str, run: Run) -> None:
    async def cancel_while_waiting(port: int, on: threading.Event | DnsResponder) -> None:
        task = asyncio.create_task(strategy(port).alookup(query("web"), Deadline(5.0)))
        await waiting(on)
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with silent_server(transport) as (port, on):
            run(cancel_while_waiting(port, on))
            gc.collect()
    # An unclosed socket warns when collected; a leaked one still holds its fd.
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert open_fds() == before


# -- deadlines -----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_silent_server_ends_the_lookup_at_its_deadline(transport: str, run: Run) -> None:
    seconds = 0.3

    async def timed(port: int) -> float:
        started = time.monotonic()
        with pytest.raises(kdisco.TransientError, match="timed out"):
            await strategy(port).alookup(query("web"), Deadline(seconds))
        return time.monotonic() - started

    with silent_server(transport) as (port, _):
        elapsed = run(timed(port))
    assert seconds * 0.9 <= elapsed <= seconds * 1.1, elapsed


def test_silent_servers_each_get_their_share_and_the_lookup_ends_at_its_deadline(
    run: Run,
) -> None:
    seconds = 0.3

    async def timed(ports: list[int]) -> float:
        started = time.monotonic()
        with pytest.raises(kdisco.TransientError, match="timed out"):
            await strategy(*ports).alookup(query("web"), Deadline(seconds))
        return time.monotonic() - started

    with silent_server("udp") as (first, asked_first), silent_server("udp") as (second, asked):
        elapsed = run(timed([first, second]))
    assert seconds * 0.9 <= elapsed <= seconds * 1.1, elapsed
    # The first server had half the time, not all of it: the second was asked too.
    assert isinstance(asked_first, DnsResponder)
    assert isinstance(asked, DnsResponder)
    assert asked_first.asked() == asked.asked() == [fqdn("web"), fqdn("web")]


# -- the event loop ------------------------------------------------------------------


def test_lookups_never_block_the_event_loop(caplog: pytest.LogCaptureFixture, run: Run) -> None:
    # In debug mode asyncio logs every callback that runs longer than this. A blocking
    # wait here would take the 0.3 s of a silent server; 0.05 s leaves room for the GIL
    # switches to the in-process servers' threads (5 ms each), which are not blocking.
    slow = 0.05
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def main(answering: int, silent: int, truncating: int) -> None:
        asyncio.get_running_loop().slow_callback_duration = slow
        tick = asyncio.create_task(ticker())
        deadline = Deadline(0.3)
        found, timed_out, over_tcp = await asyncio.gather(
            strategy(answering).alookup(query("web", 80), deadline),
            strategy(silent).alookup(query("web"), deadline),
            strategy(truncating).alookup(query("big"), deadline),
            return_exceptions=True,
        )
        tick.cancel()
        assert isinstance(found, kdisco.Resolution), found
        assert isinstance(timed_out, kdisco.TransientError), timed_out
        assert isinstance(over_tcp, kdisco.TransientError), over_tcp

    caplog.set_level(logging.WARNING, logger="asyncio")
    with DnsResponder(zone=ZONE) as answering, silent_server("udp") as (silent, _):
        answering.answer(fqdn("web"), "A", rrset(fqdn("web"), "A", "10.96.0.20"))
        answering.nodata(fqdn("web"), "AAAA")
        answering.nodata(fqdn("web"), "SRV")
        with silent_server("tcp") as (truncating, _):
            run(main(answering.port, silent, truncating), debug=True)
    assert [r.getMessage() for r in caplog.records if "took" in r.getMessage()] == []
    # The ticker went on ticking all through the lookups (about 60 times in 0.3 s).
    assert ticks >= 10


def test_a_loop_that_cannot_watch_sockets_gets_the_same_answers() -> None:
    # tests/test_dns.py runs every scenario through alookup on a selector loop; these
    # are the ones whose waiting differs on a BlindLoop: UDP replies, and TCP after a
    # truncated one.
    endpoints = {f"w-{i}": f"10.1.0.{i + 1}" for i in range(60)}
    with DnsResponder(zone=ZONE) as server:
        name = fqdn("web")
        server.answer(name, "A", rrset(name, "A", "10.96.0.20"))
        server.answer(name, "AAAA", rrset(name, "AAAA", "fd00:10:96::20"))
        server.answer(name, "SRV", rrset(name, "SRV", f"0 100 80 {name}"))
        big = fqdn("big")
        server.answer(big, "A", rrset(big, "A", *endpoints.values()))
        server.nodata(big, "AAAA")

        async def main() -> tuple[kdisco.Resolution | Miss, ...]:
            dns_strategy = strategy(server.port)
            return (
                await dns_strategy.alookup(query("web", 80), Deadline(3.0)),
                await dns_strategy.alookup(query("web", 8080), Deadline(3.0)),
                await dns_strategy.alookup(query("big"), Deadline(3.0)),
            )

        with asyncio.Runner(loop_factory=BlindLoop) as runner:
            web, undeclared, large = runner.run(main())
    assert isinstance(web, kdisco.Resolution), web
    assert [(ep.host, ep.port) for ep in web] == [("10.96.0.20", 80), ("fd00:10:96::20", 80)]
    assert isinstance(undeclared, Miss)
    assert undeclared.outcome is kdisco.Outcome.NO_SUCH_PORT
    assert isinstance(large, kdisco.Resolution), large
    assert sorted(ep.host for ep in large) == sorted(endpoints.values())
    assert [q.transport for q in server.queries if q.qname == big and q.qtype == "A"] == [
        "udp",
        "tcp",
    ]
