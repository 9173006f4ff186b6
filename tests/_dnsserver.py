"""A tiny in-process DNS responder for unit tests of the ``dns`` strategy.

It binds 127.0.0.1 on a free port, UDP and TCP on the same port number, and answers
from a table of real wire-format responses keyed by (qname, qtype), built with
dnspython exactly as a nameserver would send them: NOERROR with answer and additional
(glue) sections, NODATA, NXDOMAIN and SERVFAIL (with an SOA in the authority section,
as CoreDNS sends), CNAME chains, and a "drop" entry that never replies so the client
times out. Answers that do not fit the client's UDP payload (512 bytes without EDNS)
are sent with the TC bit and no records, so the client must retry over TCP, which gets
the whole answer.

This responder proves the strategy's *logic* against well-formed answers shaped like
CoreDNS's kubernetes plugin's. It is not CoreDNS: proof against a real CoreDNS serving
a real cluster is the lab issue's job, not this module's.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from types import TracebackType

import attrs
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

#: Without EDNS a DNS client accepts at most this much over UDP (RFC 1035 §4.2.1).
_CLASSIC_UDP_LIMIT = 512
_SOA_TEXT = "ns.dns.{zone}. hostmaster.{zone}. 1700000000 7200 1800 86400 5"


@attrs.frozen
class Seen:
    """One question the responder received."""

    qname: str
    qtype: str
    transport: str  # "udp" or "tcp"


@attrs.frozen(kw_only=True)
class Entry:
    """How to answer one (qname, qtype)."""

    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    answer: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    soa: bool = False
    drop: bool = False


def rrset(name: str, rdtype: str, *rdatas: str, ttl: int = 5) -> dns.rrset.RRset:
    """``rrset("web.default.svc.cluster.local.", "A", "10.96.0.10")``."""
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *rdatas)


def _key(qname: str | dns.name.Name, qtype: str) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
    return name, dns.rdatatype.from_text(qtype)


class DnsResponder:
    """Start with ``with DnsResponder(zone=...) as server:``; ``server.port`` is the port.

    Questions with no entry get NXDOMAIN, as an authoritative server for the zone
    would say; every question is recorded in ``queries`` so tests can assert what was
    (and was not) asked.
    """

    def __init__(self, *, zone: str = "cluster.local") -> None:
        self.zone = zone.rstrip(".")
        self.queries: list[Seen] = []
        self._table: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], list[Entry]] = {}
        self._lock = threading.Lock()
        self._udp, self._tcp = bind_pair()
        self.port: int = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    # -- the table -------------------------------------------------------------

    def set(self, qname: str, qtype: str, entry: Entry, *then: Entry) -> None:
        """Answer with ``entry``; with ``then``, each later question gets the next one
        (the last one repeats), e.g. SERVFAIL twice and then an answer."""
        with self._lock:
            self._table[_key(qname, qtype)] = [entry, *then]

    def answer(
        self,
        qname: str,
        qtype: str,
        *answer: dns.rrset.RRset,
        additional: Iterable[dns.rrset.RRset] = (),
    ) -> None:
        self.set(qname, qtype, Entry(answer=answer, additional=tuple(additional)))

    def nodata(self, qname: str, qtype: str) -> None:
        """NOERROR with an empty answer: the name exists, not with this type."""
        self.set(qname, qtype, Entry(soa=True))

    def nxdomain(self, qname: str, qtype: str) -> None:
        self.set(qname, qtype, Entry(rcode=dns.rcode.NXDOMAIN, soa=True))

    def servfail(self, qname: str, qtype: str) -> None:
        self.set(qname, qtype, Entry(rcode=dns.rcode.SERVFAIL))

    def drop(self, qname: str, qtype: str) -> None:
        """Never reply, so the client's timeout is what ends the question."""
        self.set(qname, qtype, Entry(drop=True))

    def asked(self, qtype: str | None = None) -> list[str]:
        """The qnames asked so far (optionally only of one type), in order."""
        with self._lock:
            return [q.qname for q in self.queries if qtype is None or q.qtype == qtype]

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> DnsResponder:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()

    # -- serving ---------------------------------------------------------------

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, self._on_udp)
            sel.register(self._tcp, selectors.EVENT_READ, self._on_tcp)
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            while True:
                for key, _ in sel.select():
                    handler: Callable[[], None] | None = key.data
                    if handler is None:
                        return
                    handler()

    def _on_udp(self, limit: int = _CLASSIC_UDP_LIMIT) -> None:
        wire, peer = self._udp.recvfrom(65535)
        request = dns.message.from_wire(wire)
        response = self._respond(request, "udp")
        if response is None:
            return
        payload = response.to_wire()
        if request.edns >= 0:
            limit = max(limit, request.payload)
        if len(payload) > limit:
            # What a real server does with an answer too big for UDP: say so, send no
            # records, and let the client ask again over TCP.
            truncated = dns.message.make_response(request)
            truncated.flags |= dns.flags.TC
            payload = truncated.to_wire()
        self._udp.sendto(payload, peer)

    def _on_tcp(self) -> None:
        conn, _ = self._tcp.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                (length,) = struct.unpack("!H", recv_exactly(conn, 2))
                request = dns.message.from_wire(recv_exactly(conn, length))
            except (OSError, EOFError):
                return
            response = self._respond(request, "tcp")
            if response is None:
                return
            payload = response.to_wire()
            conn.sendall(struct.pack("!H", len(payload)) + payload)

    def _respond(self, request: dns.message.Message, transport: str) -> dns.message.Message | None:
        question = request.question[0]
        with self._lock:
            self.queries.append(
                Seen(
                    qname=question.name.to_text(),
                    qtype=dns.rdatatype.to_text(question.rdtype),
                    transport=transport,
                )
            )
            script = self._table.get((question.name, question.rdtype))
            if script is None:
                entry = Entry(rcode=dns.rcode.NXDOMAIN, soa=True)
            else:
                entry = script.pop(0) if len(script) > 1 else script[0]
        if entry.drop:
            return None
        response = dns.message.make_response(request)
        response.flags |= dns.flags.AA
        response.set_rcode(entry.rcode)
        response.answer.extend(entry.answer)
        response.additional.extend(entry.additional)
        if entry.soa:
            zone = self.zone
            response.authority.append(rrset(f"{zone}.", "SOA", _SOA_TEXT.format(zone=zone), ttl=5))
        return response


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed the connection")
        data += chunk
    return data


def bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free 127.0.0.1 port."""
    last: OSError | None = None
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError as exc:
            # Someone holds that port for TCP; try another.
            last = exc
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        return udp, tcp
    raise RuntimeError(f"no free port for both UDP and TCP on 127.0.0.1: {last}")
