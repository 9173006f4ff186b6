"""Hypothesis fuzzing of what kdisco reads off the wire (issue 10).

Two inputs come from outside the process and are parsed by kdisco itself: DNS replies
(the ``dns`` strategy) and Kubernetes API JSON (the ``api`` strategy). A broken or
hostile server, a middlebox or a version skew can send anything, so hypothesis sends
anything: well-formed DNS replies with random records, rcodes, flags and sections, the
same with bytes flipped or cut off, and garbage, over UDP and TCP; API objects that
start valid and get a few fields replaced by junk (wrong types, nulls, huge numbers,
strings where lists belong, addresses that are not addresses) or removed, behind
random status codes, and bodies that are not JSON at all.

Through the public entry point, ``Discoverer.discover()``, the contract is:

- only ``kdisco.DiscoveryError`` comes out, and when a strategy failed, what it failed
  with (the error's ``__cause__``) is a failure it means to report (``TransientError``,
  ``MalformedObject``, a ``DiscoveryError``), never a crash (``TypeError``,
  ``AttributeError``, ...) that the chain merely caught and relabelled;
- every ``Resolution`` is well formed: IP-literal hosts (an ExternalName's host is a
  DNS name), ports None or 1-65535, boolean conditions;
- no call outlives its deadline by more than a small margin.

The pure JSON parsers (``kdisco._k8s.objects``) get the same objects directly, and
many more of them, since they cost no I/O. The inputs that broke the contract when
this file was written are pinned at the end, one test each. Every socket is on
127.0.0.1 and opened here; addresses in the generated data are data, never connected
to. Runs are derandomized, so CI sees the same cases every time.
"""

from __future__ import annotations

import ipaddress
import json
import math
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import attrs
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdisco
from kdisco import Discoverer, Resolution, RetryPolicy, ServiceKind, ServicePort, TransientError
from kdisco._k8s.objects import MalformedObject, ServiceInfo, SliceInfo, resolve_info
from kdisco._names import parse_query
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.base import Miss
from tests._dnsserver import bind_pair, recv_exactly
from tests._helpers_api import (
    FakeApiServer,
    Reply,
    client_for,
    fake_apiserver,
    service_path,
    slices_path,
)

T = TypeVar("T")

#: Each discover() gets this deadline; its elapsed time is checked against it plus
#: MARGIN. This is a bound (nothing may hang past its deadline), not a speed figure.
TIMEOUT = 1.0
MARGIN = 0.5
#: Backoff sleeps between retries are not what is fuzzed; short ones let many cases
#: fit the budget, and a server that never stops failing still meets the deadline.
FAST_RETRY = RetryPolicy(initial=0.005, maximum=0.05)
#: What a strategy may fail with: reports, not crashes.
REPORTED = (TransientError, kdisco.DiscoveryError, MalformedObject)


def fuzz(examples: int) -> settings:
    """Reproducible settings: the same cases on every run, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def weighted(*options: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """``st.one_of`` with weights. (``one_of`` merges repeated strategies, so listing one
    twice does not make it likelier.)"""
    slots = [strategy for weight, strategy in options for _ in range(weight)]
    return st.sampled_from(range(len(slots))).flatmap(slots.__getitem__)


# -- the contract -------------------------------------------------------------------------


def is_ip(host: object) -> bool:
    """An IP literal, judged by ``ipaddress`` (not by the inet_pton kdisco itself uses)."""
    if not isinstance(host, str) or "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_host_name(host: object) -> bool:
    """A DNS name, as an ExternalName's host must be: printable ASCII without spaces
    (escapes like ``\\000`` are text), not empty and not the root."""
    if not isinstance(host, str) or not host.isascii() or not host.isprintable():
        return False
    if " " in host or host in ("", "@", "."):
        return False
    try:
        return bool(dns.name.from_text(host) != dns.name.root)
    except dns.exception.DNSException:
        return False


def check_port_number(port: object, where: str) -> None:
    assert port is None or (type(port) is int and 1 <= port <= 65535), (
        f"{where}: port {port!r} is not None or 1-65535"
    )


def check_service_port(sp: ServicePort, where: str) -> None:
    check_port_number(sp.port, where)
    assert sp.port is not None, f"{where}: {sp!r}"
    assert sp.name is None or isinstance(sp.name, str), f"{where}: {sp!r}"


def check_resolution(res: object) -> None:
    assert isinstance(res, Resolution), f"discover() returned {res!r}"
    assert res.endpoints, f"an answer with no endpoints: {res!r}"
    for sp in res.ports:
        check_service_port(sp, "Resolution.ports")
    if res.port is not None:
        check_service_port(res.port, "Resolution.port")
    for ep in res.endpoints:
        if res.kind is ServiceKind.EXTERNAL_NAME:
            assert is_host_name(ep.host), f"ExternalName host {ep.host!r} is not a DNS name"
        else:
            assert is_ip(ep.host), f"{res.kind} endpoint host {ep.host!r} is not an IP literal"
        check_port_number(ep.port, f"endpoint {ep.host!r}")
        for flag in (ep.ready, ep.serving, ep.terminating):
            assert type(flag) is bool, f"endpoint {ep!r}: condition {flag!r} is not a bool"
        for text in (ep.hostname, ep.pod, ep.node, ep.zone):
            assert text is None or isinstance(text, str), f"endpoint {ep!r}"


def discover_checked(d: Discoverer, name: str, port: int | str | None) -> None:
    """One discover() held to the contract; anything but a DiscoveryError propagates."""
    started = time.monotonic()
    try:
        res = d.discover(name, port=port)
    except kdisco.DiscoveryError as exc:
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, REPORTED):
            raise AssertionError(
                f"a strategy crashed ({type(cause).__name__}: {cause}); "
                f"the chain turned it into {type(exc).__name__}"
            ) from cause
    else:
        check_resolution(res)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + MARGIN, f"discover() took {elapsed:.2f}s with timeout={TIMEOUT}"


# -- DNS: what a hostile server can say --------------------------------------------------

ZONE = "cluster.local."
WEB = "web.default.svc.cluster.local."
DB = "db.shop.svc.cluster.local."
SERVICES = {"web": WEB, "db.shop": DB}
ODD = r"\000\255.web.default.svc.cluster.local."
LONG = ".".join(["x" * 60] * 3) + ".web.default.svc.cluster.local."
#: What SRV records point at and glue is given for: the Services themselves (the SRV of
#: a ClusterIP Service), endpoints of a headless one, a name with odd labels.
HOSTS = (WEB, DB, f"pod-0.{WEB}", f"pod-0.{DB}", ODD)
#: Targets of SRV and CNAME records: those, the root ("no service here"), names
#: outside the cluster or in another cluster domain, a long name.
TARGETS = (*HOSTS, ".", "other.example.", "web.default.svc.elsewhere.", LONG)
#: Owners of records; "@" is the name asked about.
OWNERS = ("@", *HOSTS, f"_http._tcp.{WEB}", "other.example.", LONG)
SOA = f"ns.dns.{ZONE} hostmaster.{ZONE} 1700000000 7200 1800 86400 5"


def asked_keys(fqdn: str, port: int | str | None) -> list[tuple[str, str]]:
    """What the dns strategy asks first about a Service (kdisco/_strategies/dns.py):
    A and AAAA together, with the bare-name SRV for a port number; SRV
    ``_<port>._tcp`` then ``_udp`` for a port name, then A."""
    if isinstance(port, str):
        return [(f"_{port}._tcp.{fqdn}", "SRV"), (f"_{port}._udp.{fqdn}", "SRV"), (fqdn, "A")]
    keys = [(fqdn, "A"), (fqdn, "AAAA")]
    return [*keys, (fqdn, "SRV")] if port is not None else keys


#: Asked later: addresses of SRV targets, and the questions about a Service that an
#: ExternalName (a CNAME) leads to.
LATER_KEYS = sorted(
    {(t, rdtype) for t in TARGETS if t != "." for rdtype in ("A", "AAAA")}
    | {
        key
        for fqdn in SERVICES.values()
        for port in (None, 80, "http")
        for key in asked_keys(fqdn, port)
    }
)


@attrs.frozen
class Records:
    """One RRset; owner ``@`` is the name asked about."""

    owner: str
    rdtype: str
    ttl: int
    rdatas: tuple[str, ...]


@attrs.frozen
class DnsReply:
    """A well-formed reply to whatever was asked, built with dnspython for its id and
    question. Flag ``noQR`` clears the response bit."""

    rcode: dns.rcode.Rcode
    flags: tuple[str, ...]
    answer: tuple[Records, ...] = ()
    additional: tuple[Records, ...] = ()
    soa: bool = False
    edns: bool = False


@attrs.frozen
class Mangled:
    """A reply with bytes flipped (``(offset, xor mask)``) and maybe cut short."""

    reply: DnsReply
    flips: tuple[tuple[int, int], ...]
    cut: int | None


@attrs.frozen
class Garbage:
    """Bytes, optionally behind the question's id (so that they are not just ignored)."""

    data: bytes
    keep_id: bool


Datagram = DnsReply | Mangled | Garbage


@attrs.frozen
class Framed:
    """A TCP reply whose 2-byte length prefix is off by ``length_delta``."""

    datagram: Datagram
    length_delta: int = 0


@attrs.frozen
class Hangup:
    """A TCP connection closed without a word."""


TcpReply = Framed | Hangup


@attrs.frozen
class Plan:
    """How one (name, type) is answered. The n-th UDP question gets ``rounds[n]`` and
    then ``final`` (the client takes the first datagram that answers it and ignores the
    rest); the n-th TCP question gets ``tcp[n]``, else ``final``. ``final`` is an
    answer (NOERROR or NXDOMAIN, no TC), so kdisco's retries end well before the
    deadline unless kdisco cannot use even that."""

    rounds: tuple[Datagram, ...]
    tcp: tuple[TcpReply, ...]
    final: DnsReply


@attrs.frozen
class DnsCase:
    name: str
    port: int | str | None
    #: (name, type, plan); a question with no plan gets NXDOMAIN.
    zone: tuple[tuple[str, str, Plan], ...]


NXDOMAIN = DnsReply(rcode=dns.rcode.NXDOMAIN, flags=("AA",), soa=True)


def ipv4_text() -> st.SearchStrategy[str]:
    return st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


def ipv6_text() -> st.SearchStrategy[str]:
    return st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


RDATAS: dict[str, st.SearchStrategy[str]] = {
    "A": ipv4_text(),
    "AAAA": ipv6_text(),
    "SRV": st.builds(
        "{} {} {} {}".format,
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.sampled_from([80, 8080, 0, 65535]) | st.integers(0, 65535),
        weighted((3, st.sampled_from(HOSTS)), (1, st.sampled_from(TARGETS))),
    ),
    "CNAME": st.sampled_from(TARGETS),
    "TXT": st.sampled_from(['"v=spf1 -all"', '"10.0.0.1"', '""']),
}
TTLS = st.sampled_from([0, 5, 30, 2**31 - 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)


def rrsets(owner: st.SearchStrategy[str], rdtype: str) -> st.SearchStrategy[Records]:
    return st.builds(
        Records,
        owner=owner,
        rdtype=st.just(rdtype),
        ttl=TTLS,
        rdatas=st.lists(RDATAS[rdtype], min_size=1, max_size=3, unique=True).map(tuple),
    )


#: A record of any type at any name: what does not belong in the answer.
STRAY = st.one_of(*(rrsets(st.sampled_from(OWNERS), t) for t in RDATAS))
#: The additional section: addresses of SRV targets (glue), or anything.
GLUE = st.lists(
    st.one_of(rrsets(st.sampled_from(HOSTS), "A"), rrsets(st.sampled_from(HOSTS), "AAAA"), STRAY),
    max_size=2,
).map(tuple)


def answers(qtype: str) -> st.SearchStrategy[tuple[Records, ...]]:
    """Mostly records of the type asked at the name asked, or a CNAME there (an
    ExternalName); sometimes followed by a stray record."""
    main = weighted((3, rrsets(st.just("@"), qtype)), (1, rrsets(st.just("@"), "CNAME")))
    return st.tuples(main, st.lists(STRAY, max_size=1)).map(lambda t: (t[0], *t[1]))


QTYPES = ("A", "AAAA", "SRV")
#: An answer, NODATA or a bare NXDOMAIN. (NXDOMAIN with records is malformed and kdisco
#: rightly retries it until the deadline: rounds send it, but as the final answer it
#: would make many cases last a whole second.)
FINAL_HEADS = {
    qtype: weighted(
        (4, answers(qtype).map(lambda a: (dns.rcode.NOERROR, a))),
        (1, st.just((dns.rcode.NOERROR, ()))),
        (1, st.just((dns.rcode.NXDOMAIN, ()))),
    )
    for qtype in QTYPES
}
#: Any rcode (NOERROR and NXDOMAIN likelier), with answers or stray records.
ROUND_HEADS = {
    qtype: st.tuples(
        st.sampled_from([0, 0, 0, 3, *range(16)]).map(dns.rcode.Rcode.make),
        weighted((3, answers(qtype)), (1, st.lists(STRAY, max_size=2).map(tuple))),
    )
    for qtype in QTYPES
}
#: Header flags; a final answer is never truncated (TC) and always a response (QR).
FLAGS = {
    final: st.frozensets(st.sampled_from(["AA", "RA", "AD", "CD", *extra]))
    for final, extra in ((True, ()), (False, ("TC", "TC", "noQR")))
}
#: Built once, like the strategies above: building them is slow next to drawing.
GLUE_FOR = {(t, rdtype): rrsets(st.just(t), rdtype) for t in TARGETS for rdtype in ("A", "AAAA")}


@st.composite
def replies(draw: st.DrawFn, qtype: str, *, final: bool = False) -> DnsReply:
    rcode, answer = draw((FINAL_HEADS if final else ROUND_HEADS)[qtype])
    additional = draw(GLUE)
    if qtype == "SRV":
        # Addresses for some of the SRV targets, as CoreDNS sends them (random glue
        # alone would rarely name a target).
        targets = {rd.split()[3] for r in answer if r.rdtype == "SRV" for rd in r.rdatas} - {"."}
        glue = [
            draw(GLUE_FOR[target, rdtype])
            for target in sorted(targets)
            for rdtype in ("A", "AAAA")
            if draw(st.booleans())
        ]
        additional = (*glue, *additional)
    return DnsReply(
        rcode=rcode,
        flags=tuple(sorted(draw(FLAGS[final]))),
        answer=answer,
        additional=additional,
        soa=draw(st.booleans()),
        edns=draw(st.booleans()),
    )


def datagrams(qtype: str) -> st.SearchStrategy[Datagram]:
    return st.one_of(
        replies(qtype),
        st.builds(
            Mangled,
            reply=replies(qtype),
            flips=st.lists(st.tuples(st.integers(0, 511), st.integers(1, 255)), max_size=4).map(
                tuple
            ),
            cut=st.none() | st.integers(0, 300),
        ),
        st.builds(Garbage, data=st.binary(max_size=64), keep_id=st.booleans()),
    )


def plans(qtype: str) -> st.SearchStrategy[Plan]:
    sent = datagrams(qtype)
    tcp = st.one_of(
        st.builds(Framed, datagram=sent, length_delta=st.sampled_from([0, -1, 1, -12])),
        st.just(Hangup()),
    )
    return st.builds(
        Plan,
        rounds=st.lists(sent, max_size=2).map(tuple),
        tcp=st.lists(tcp, max_size=1).map(tuple),
        final=replies(qtype, final=True),
    )


PLANS = {qtype: plans(qtype) for qtype in QTYPES}
FINALS = {
    qtype: st.builds(Plan, rounds=st.just(()), tcp=st.just(()), final=replies(qtype, final=True))
    for qtype in QTYPES
}


@st.composite
def dns_cases(draw: st.DrawFn) -> DnsCase:
    name = draw(st.sampled_from(sorted(SERVICES)))
    port = draw(st.sampled_from([None, 80, "http"]))
    zone: list[tuple[str, str, Plan]] = []
    # What kdisco asks first mostly has a plan (else it gets NXDOMAIN); a few of the
    # questions asked later (SRV targets, a followed ExternalName) just an answer.
    for qname, qtype in asked_keys(SERVICES[name], port):
        if draw(st.sampled_from([True, True, True, False])):
            zone.append((qname, qtype, draw(PLANS[qtype])))
    asked = {(q, t) for q, t, _ in zone}
    for qname, qtype in draw(st.lists(st.sampled_from(LATER_KEYS), max_size=3, unique=True)):
        if (qname, qtype) not in asked:
            zone.append((qname, qtype, draw(FINALS[qtype])))
    return DnsCase(name=name, port=port, zone=tuple(zone))


def _rrset(spec: Records, qname: dns.name.Name) -> dns.rrset.RRset:
    owner = qname if spec.owner == "@" else dns.name.from_text(spec.owner)
    return dns.rrset.from_text(owner, spec.ttl, "IN", spec.rdtype, *spec.rdatas)


def render(d: Datagram, query: dns.message.Message) -> bytes:
    """The bytes to send for ``d`` in reply to ``query``."""
    if isinstance(d, Garbage):
        return (query.id.to_bytes(2, "big") if d.keep_id else b"") + d.data
    if isinstance(d, Mangled):
        wire = bytearray(render(d.reply, query))
        for offset, mask in d.flips:
            wire[offset % len(wire)] ^= mask
        return bytes(wire if d.cut is None else wire[: d.cut])
    response = dns.message.make_response(query)
    qname = query.question[0].name
    response.answer.extend(_rrset(r, qname) for r in d.answer)
    if d.soa:
        response.authority.append(dns.rrset.from_text(ZONE, 5, "IN", "SOA", SOA))
    response.additional.extend(_rrset(r, qname) for r in d.additional)
    if d.edns:
        response.use_edns(0, payload=1232)
    response.set_rcode(d.rcode)
    for flag in d.flags:
        if flag == "noQR":
            response.flags &= ~dns.flags.QR
        else:
            response.flags |= dns.flags.Flag[flag]
    # Unshuffled: dnspython shuffles rdatas with the global random module, which would
    # make cases depend on timing (this runs in the responder's thread).
    return response.to_wire(max_size=65535, want_shuffle=False)


Key = tuple[dns.name.Name, int]


class FuzzResponder:
    """UDP and TCP on one 127.0.0.1 port, answering each question from a ``Plan``.

    Anything going wrong inside the responder (a bad plan is a bug of this test) is
    kept in ``errors``, which each case checks.
    """

    def __init__(self) -> None:
        self._udp, self._tcp = bind_pair()
        self.port: int = self._udp.getsockname()[1]
        self._lock = threading.Lock()
        self._zone: dict[Key, Plan] = {}
        self._asked: dict[tuple[Key, str], int] = {}
        self.errors: list[BaseException] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="test-fuzz-dns", daemon=True)
        self._thread.start()

    def load(self, case: DnsCase) -> None:
        zone = {
            (dns.name.from_text(q), int(dns.rdatatype.from_text(t))): plan
            for q, t, plan in case.zone
        }
        with self._lock:
            self._zone, self._asked, self.errors = zone, {}, []

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()

    def _next(self, query: dns.message.Message, transport: str) -> tuple[Plan | None, int]:
        """The plan for this question, and how many times it was asked before."""
        question = query.question[0]
        key = (question.name, int(question.rdtype))
        with self._lock:
            n = self._asked.get((key, transport), 0)
            self._asked[(key, transport)] = n + 1
            return self._zone.get(key), n

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "tcp")
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            while True:
                for key, _ in sel.select():
                    if key.data is None:
                        return
                    try:
                        if key.data == "udp":
                            self._on_udp()
                        else:
                            self._on_tcp()
                    except Exception as exc:
                        with self._lock:
                            self.errors.append(exc)

    def _on_udp(self) -> None:
        try:
            wire, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        query = dns.message.from_wire(wire)
        plan, n = self._next(query, "udp")
        sends: tuple[Datagram, ...] = (NXDOMAIN,)
        if plan is not None:
            sends = (*plan.rounds[n : n + 1], plan.final)
        for d in sends:
            payload = render(d, query)
            try:
                self._udp.sendto(payload, peer)
            except OSError:
                return  # the client is gone

    def _on_tcp(self) -> None:
        conn, _ = self._tcp.accept()
        with conn:
            conn.settimeout(1.0)
            try:
                (length,) = struct.unpack("!H", recv_exactly(conn, 2))
                query = dns.message.from_wire(recv_exactly(conn, length))
            except (OSError, EOFError):
                return
            plan, n = self._next(query, "tcp")
            reply: TcpReply = Framed(NXDOMAIN if plan is None else plan.final)
            if plan is not None and n < len(plan.tcp):
                reply = plan.tcp[n]
            if isinstance(reply, Hangup):
                return
            payload = render(reply.datagram, query)
            length = min(0xFFFF, max(0, len(payload) + reply.length_delta))
            try:
                conn.sendall(struct.pack("!H", length) + payload)
            except OSError:
                return


@pytest.fixture(scope="module")
def responder() -> Iterator[FuzzResponder]:
    r = FuzzResponder()
    try:
        yield r
    finally:
        r.close()


def run_dns_case(responder: FuzzResponder, case: DnsCase) -> None:
    responder.load(case)
    with Discoverer(
        strategies=["dns"],
        dns_server=f"127.0.0.1:{responder.port}",
        namespace="default",
        environ={},
        cache=False,
        timeout=TIMEOUT,
        retry=FAST_RETRY,
        resolv_conf="/nonexistent/resolv.conf",
        serviceaccount_dir="/nonexistent/serviceaccount",
    ) as d:
        discover_checked(d, case.name, case.port)
    assert responder.errors == [], "the test's responder failed"


@fuzz(300)
@given(case=dns_cases())
def test_hostile_dns_answers_give_a_resolution_or_a_discovery_error(
    responder: FuzzResponder, case: DnsCase
) -> None:
    run_dns_case(responder, case)


# -- API JSON: valid objects, then a few fields broken -------------------------------------

SERVICE_LABEL = "kubernetes.io/service-name"
ODD_STRINGS = (
    "",
    "None",
    "10.96.0.1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "01.02.03.04",
    "1.2.3",
    "10.0.0.1 ",
    "10.0.0.1\x00",
    "١٢٣.0.0.1",
    "evil.com",
    "evil com",
    "\ud800",
    "FQDN",
    "IPv4",
    "IPv6",
    "ExternalName",
    "http",
    "web",
    "99999",
    "web.shop.svc.cluster.local",
    "db.shop.svc.cluster.local.",
)
#: Picked from lists of values known to trip parsers: one draw each, where st.text()
#: would cost several. (The budget is counted in examples, and hypothesis spends its
#: time per draw: values are picked whole wherever the parser does not care which.)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 80, 65535, 65536, 2**31, 2**63, 2**64, -(2**63), 10**300]),
    st.sampled_from([float("nan"), float("inf"), -0.0, 0.5, 80.0, 1e308]),
    st.sampled_from(ODD_STRINGS),
    st.integers(),
)
#: Junk two levels deep: a scalar, or a list or an object of scalars. (Junk goes in at
#: any depth of a valid object, which makes the nesting.)
junk: st.SearchStrategy[Any] = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["", "name", "port", "items", "ready"]), scalars, max_size=2),
)


def obj(
    required: dict[str, st.SearchStrategy[Any]] | None = None, **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with these fields; those passed by keyword may be missing."""
    return st.fixed_dictionaries(required or {}, optional=optional)


#: Leaves a field out of an object built by ``combinations``.
MISSING = object()


def combinations(fields: dict[str, list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object for each combination of the fields' values (MISSING leaves the field
    out), drawn as one number. Hypothesis spends its time per draw, and which valid
    value a parser sees matters less than how many cases it sees: a draw per field
    would halve them. Number 0, where shrinking heads, takes every field's first value."""
    names = list(fields)
    sizes = [len(fields[name]) for name in names]

    def build(number: int) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name, size in zip(names, sizes, strict=True):
            number, index = divmod(number, size)
            value = fields[name][index]
            if value is not MISSING:
                doc[name] = _copy(value)
        return doc

    return st.integers(0, math.prod(sizes) - 1).map(build)


def _copy(doc: Any) -> Any:
    """A fresh copy of a JSON tree (``broken`` changes it in place)."""
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


service_json_valid = combinations(
    {
        "type": [MISSING, "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        "clusterIP": [MISSING, "None", "10.0.0.1", "fd00::1", "0.0.0.0"],
        "clusterIPs": [
            MISSING,
            [],
            ["None"],
            ["10.0.0.1"],
            ["::ffff:10.0.0.1"],
            ["10.0.0.2", "fd00::2"],
            # Only a broken or hostile server says both "headless" and an address.
            ["None", "10.0.0.3"],
        ],
        "ports": [
            MISSING,
            [],
            [{"port": 80}],
            [{"name": "http", "port": 80, "protocol": "TCP"}],
            [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
            [{"name": "", "port": 65535, "appProtocol": "kubernetes.io/h2c"}, {"port": 1}],
            [{"name": "HTTP", "port": 80, "protocol": "UDP", "appProtocol": "http"}],
        ],
        "externalName": [
            MISSING,
            "example.com",
            "example.com.",
            "db.shop.svc.cluster.local",
            "web.shop.svc.cluster.local.",
        ],
        "publishNotReadyAddresses": [MISSING, True, False],
    }
).map(lambda spec: {"metadata": {"name": "web", "namespace": "shop"}, "spec": spec})


def _endpoint(addresses: list[str], variant: int = 0) -> dict[str, Any]:
    """A valid endpoint; ``variant`` varies its optional fields."""
    conditions = [
        {"ready": True, "serving": True, "terminating": False},
        {"ready": False, "serving": True, "terminating": True},
        {"ready": None, "serving": None, "terminating": None},
        {"ready": False},
        {},
    ]
    ep: dict[str, Any] = {"addresses": addresses, "conditions": conditions[variant % 5]}
    if variant % 2:
        ep.update(hostname=f"pod-{variant}", nodeName="node-1", zone="z1")
    if variant % 3:
        ep["targetRef"] = {"kind": "Pod" if variant % 3 == 1 else "Node", "name": f"pod-{variant}"}
    return ep


slice_json_valid = combinations(
    {
        "metadata": [
            {"name": "web-a", "labels": {SERVICE_LABEL: "web"}, "resourceVersion": "7"},
            {"name": "web-b", "labels": {SERVICE_LABEL: "web"}},
            {"name": "web-c"},
        ],
        "addressType": ["IPv4", "IPv6", "FQDN", "", "ipv4", MISSING],
        "endpoints": [
            [],
            [_endpoint(["10.0.0.1"])],
            [_endpoint(["10.0.0.1"], 1), _endpoint(["10.0.0.2"], 2)],
            [
                _endpoint(["0.0.0.0"], 3),
                _endpoint(["255.255.255.255"], 4),
                _endpoint(["10.0.0.3"], 5),
            ],
            [_endpoint(["2001:db8::1"])],
            [_endpoint(["::"], 1), _endpoint(["::ffff:10.0.0.1"], 2)],
            [_endpoint(["fe80::1"], 3), _endpoint(["fd00::4"], 4)],
            # Two families in one slice (an IPv6 address in an IPv4 slice, or the reverse).
            [_endpoint(["10.0.0.5"], 1), _endpoint(["fd00::5"], 5)],
            [_endpoint(["10.0.0.6", "fd00::6"], 2)],
        ],
        "ports": [
            MISSING,
            [],
            [{"name": "http", "port": 8080}],
            [{"name": "", "port": 80}],
            [{"name": "http", "port": None}],
            [{"name": "grpc", "port": 9090}, {"name": "http", "port": 8080}],
            [{"port": 65535}],
        ],
    }
)


def slice_list_valid(*, last: bool) -> st.SearchStrategy[dict[str, Any]]:
    """One page of a LIST. Only pages before the last carry a continue token (the last
    one repeats, and a token on it would page until the deadline)."""
    meta = {"resourceVersion": "9"} if last else {"resourceVersion": "9", "continue": "2"}
    return obj({"items": st.lists(slice_json_valid, max_size=3)}, metadata=st.just(meta))


#: Strategies the walk below draws from, built once (it runs for every example).
_DEFECTS = st.sampled_from([0, 1, 1, 2, 3])
_PICK = st.integers(0, 2**16)
_REMOVE = st.sampled_from([False, False, True])


@st.composite
def broken(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid object with up to three fields replaced by junk or removed: one defect at
    a time reaches the code behind the first check. Each defect's place is found by a
    walk from the top that stops at each level with even odds, so the top-level fields
    (where one wrong type derails a whole list) are hit as often as deep ones."""
    doc: dict[str, Any] = _copy(draw(valid))  # st.just() shares one object
    for _ in range(draw(_DEFECTS)):
        node: Any = doc
        while node:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = keys[draw(_PICK) % len(keys)]
            child = node[key]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            if draw(_REMOVE):
                del node[key]
            else:
                node[key] = draw(junk)
            break
    return doc


service_json = broken(service_json_valid)
slice_json = broken(slice_json_valid)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


not_json = st.sampled_from(
    [b"", b"{", b"[1, 2]", b'"Service"', b"NaN", b"1" * 5000, b"\xff\xfe{}", b"<html>"]
) | st.binary(max_size=32)


def http_replies(
    anything: st.SearchStrategy[dict[str, Any]], last: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[tuple[Reply, ...]]:
    """Up to two replies of any status and body, then one that settles the question
    (200 with a JSON object, 404, 401 or 403), repeated for every later request."""
    reply = st.builds(
        Reply,
        status=st.sampled_from([200, 200, 404, 403, 401, 410, 429, 500, 503, 302, 204, 418]),
        body=st.one_of(broken(anything).map(dumps), junk.map(dumps), not_json),
    )
    settled = weighted(
        (4, st.builds(Reply, status=st.just(200), body=broken(last).map(dumps))),
        (
            1,
            st.builds(
                Reply, status=st.sampled_from([404, 401, 403]), body=junk.map(dumps) | not_json
            ),
        ),
    )
    return st.tuples(st.lists(reply, max_size=2), settled).map(lambda t: (*t[0], t[1]))


@attrs.frozen
class ApiCase:
    port: int | str | None
    #: Replies to GET of the Service web.shop, in order; the last one repeats.
    service: tuple[Reply, ...]
    #: ... of db.shop, which an ExternalName may lead to.
    other: tuple[Reply, ...]
    #: ... to LIST of the EndpointSlices, page by page.
    slices: tuple[Reply, ...]


#: Half the Services the API case sees are headless, so that their slices are read.
api_service_valid = weighted(
    (1, service_json_valid),
    (
        1,
        combinations(
            {
                "clusterIP": ["None", MISSING],
                "clusterIPs": [MISSING, [], ["None"]],
                "ports": [
                    [{"name": "http", "port": 80}],
                    [{"port": 80}, {"name": "grpc", "port": 90}],
                ],
                "publishNotReadyAddresses": [MISSING, True],
            }
        ).map(lambda spec: {"metadata": {"name": "web"}, "spec": spec}),
    ),
)
api_cases = st.builds(
    ApiCase,
    port=st.sampled_from([None, 80, "http"]),
    service=http_replies(api_service_valid, api_service_valid),
    other=weighted(
        (2, st.just((Reply(404, b"{}"),))),
        (1, http_replies(service_json_valid, service_json_valid)),
    ),
    slices=http_replies(slice_list_valid(last=False), slice_list_valid(last=True)),
)


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeApiServer]:
    with fake_apiserver() as server:
        yield server


def run_api_case(server: FakeApiServer, case: ApiCase) -> None:
    server.requests.clear()
    server.route(service_path("shop", "web"), *case.service)
    server.route(service_path("shop", "db"), *case.other)
    server.route(slices_path("shop"), *case.slices)
    url = server.url
    strategy = ApiStrategy(client_factory=lambda: client_for(url), watch=False)
    with Discoverer(
        strategies=[strategy],
        namespace="shop",
        environ={},
        cache=False,
        timeout=TIMEOUT,
        retry=FAST_RETRY,
        resolv_conf="/nonexistent/resolv.conf",
        serviceaccount_dir="/nonexistent/serviceaccount",
    ) as d:
        discover_checked(d, "web", case.port)


@fuzz(500)
@given(case=api_cases)
def test_hostile_api_json_gives_a_resolution_or_a_discovery_error(
    api_server: FakeApiServer, case: ApiCase
) -> None:
    run_api_case(api_server, case)


# -- the pure parsers and the answers built from them: many more cases --------------------

QUERY_PORTS = [None, 80, 8080, "http", "grpc"]
#: A headless Service with the ports the generated slices name, for answers from slices.
HEADLESS = {
    "metadata": {"name": "web"},
    "spec": {
        "clusterIP": "None",
        "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}],
    },
}


def answer_from(
    svc: dict[str, Any], slices: list[dict[str, Any]], port: int | str | None
) -> Resolution | Miss | None:
    """The api strategy's answer built from API objects (as ``ApiStrategy`` builds it), or
    None when the parsers refuse one of them. Only ``MalformedObject`` may come out."""
    query = parse_query(
        "web", namespace="shop", default_namespace="shop", cluster_domain="cluster.local", port=port
    )
    try:
        info = ServiceInfo.from_json(svc)
        prefer = info.slice_port_name(query.port)
        parsed = [SliceInfo.from_json(s, prefer) for s in slices]
    except MalformedObject:
        return None
    return resolve_info(query, info, lambda: parsed)


@fuzz(4600)
@given(doc=service_json, port=st.sampled_from(QUERY_PORTS))
def test_services_parse_or_name_the_bad_field_and_give_well_formed_answers(
    doc: dict[str, Any], port: int | str | None
) -> None:
    try:
        info = ServiceInfo.from_json(doc)
    except MalformedObject:
        return
    assert type(info.type) is str
    assert type(info.external_name) is str
    assert type(info.publish_not_ready) is bool
    for sp in info.ports:
        check_service_port(sp, "ServiceInfo.ports")
    for ip in info.cluster_ips:
        assert ip == "None" or is_ip(ip), f"cluster IP {ip!r}"
    result = answer_from(doc, [], port)
    if isinstance(result, Resolution):
        check_resolution(result)


IP_VERSION = {"IPv4": 4, "IPv6": 6}


@fuzz(4600)
@given(doc=slice_json, port=st.sampled_from(QUERY_PORTS))
def test_slices_parse_or_name_the_bad_field_and_give_well_formed_answers(
    doc: dict[str, Any], port: int | str | None
) -> None:
    try:
        sl = SliceInfo.from_json(doc, port if isinstance(port, str) else None)
    except MalformedObject:
        return
    for pname, number in sl.ports:
        assert isinstance(pname, str)
        check_port_number(number, f"slice port {pname!r}")
    for endpoint_port in (None, 8080):
        for ep in sl.endpoints(endpoint_port):
            if sl.address_type != "FQDN":
                assert is_ip(ep.host), f"slice endpoint host {ep.host!r}"
            if sl.address_type in IP_VERSION:
                version = ipaddress.ip_address(ep.host).version
                assert version == IP_VERSION[sl.address_type], f"{ep.host!r} in {sl.address_type}"
            for flag in (ep.ready, ep.serving, ep.terminating):
                assert type(flag) is bool, f"condition {flag!r}"
    # The same slice behind a headless Service, twice (as if in two pages): merged.
    result = answer_from(HEADLESS, [doc, doc], port)
    if isinstance(result, Resolution):
        check_resolution(result)


# -- what the fuzzing found: the smallest inputs, one test each ---------------------------
# Each broke the contract when this file was written; they stay as regression tests.


def answered(
    qname: str, qtype: str, *answer: Records, glue: tuple[Records, ...] = ()
) -> tuple[str, str, Plan]:
    """A zone entry whose every question gets one well-formed NOERROR answer."""
    reply = DnsReply(rcode=dns.rcode.NOERROR, flags=("AA",), answer=answer, additional=glue)
    return (qname, qtype, Plan(rounds=(), tcp=(), final=reply))


FOUND_IN_DNS = {
    # SRV port 0 (RFC 2782 allows it) became Endpoint(port=0).
    "srv-port-0": DnsCase(
        name="web",
        port="http",
        zone=(
            answered(
                f"_http._tcp.{WEB}",
                "SRV",
                Records("@", "SRV", 5, (f"0 0 0 {WEB}",)),
                glue=(Records(WEB, "A", 5, ("10.96.0.10",)),),
            ),
        ),
    ),
    # A CNAME to the root became an ExternalName whose host is ".".
    "cname-to-the-root": DnsCase(
        name="web", port=None, zone=(answered(WEB, "A", Records("@", "CNAME", 5, (".",))),)
    ),
}


@pytest.mark.parametrize("case", list(FOUND_IN_DNS.values()), ids=list(FOUND_IN_DNS))
def test_found_in_dns(responder: FuzzResponder, case: DnsCase) -> None:
    run_dns_case(responder, case)


def headless_with_slices(page: bytes) -> ApiCase:
    """A headless Service whose EndpointSlice list is ``page``."""
    service = Reply(200, dumps({"metadata": {"name": "web"}, "spec": {"clusterIP": "None"}}))
    return ApiCase(
        port=None, service=(service,), other=(Reply(404, b"{}"),), slices=(Reply(200, page),)
    )


FOUND_IN_API = {
    # A list page whose metadata is not an object: AttributeError in client.pages().
    "list-metadata-not-an-object": headless_with_slices(b'{"metadata": 1, "items": []}'),
    "list-metadata-a-string": headless_with_slices(b'{"metadata": "x", "items": []}'),
    # items not a list: TypeError iterating it in api._list_slices().
    "list-items-a-number": headless_with_slices(b'{"items": 1}'),
    "list-items-true": headless_with_slices(b'{"items": true}'),
    # An item that is not an object (or items a string or an object, whose characters
    # or keys become the items): AttributeError in SliceInfo.from_json (object_name).
    "list-item-null": headless_with_slices(b'{"items": [null]}'),
    "list-items-a-string": headless_with_slices(b'{"items": "web"}'),
    "list-items-an-object": headless_with_slices(b'{"items": {"web-a": {}}}'),
}


@pytest.mark.parametrize("case", list(FOUND_IN_API.values()), ids=list(FOUND_IN_API))
def test_found_in_api_lists(api_server: FakeApiServer, case: ApiCase) -> None:
    run_api_case(api_server, case)


FOUND_IN_SERVICES = {
    # "headless" and an address at once: Endpoint(host="None").
    "cluster-ips-none-and-an-address": {"clusterIPs": ["None", "10.0.0.3"]},
    "cluster-ips-an-address-and-none": {"clusterIPs": ["10.0.0.3", "None"]},
    # An ExternalName with no usable name: Endpoint(host="") or a host that is no name.
    "external-name-missing": {"type": "ExternalName"},
    "external-name-the-root": {"type": "ExternalName", "externalName": "."},
    "external-name-with-a-space": {"type": "ExternalName", "externalName": "evil com"},
    "external-name-with-a-nul": {"type": "ExternalName", "externalName": "example.com\x00"},
}


@pytest.mark.parametrize("spec", list(FOUND_IN_SERVICES.values()), ids=list(FOUND_IN_SERVICES))
def test_found_in_services(spec: dict[str, Any]) -> None:
    result = answer_from({"metadata": {"name": "web"}, "spec": spec}, [], None)
    if isinstance(result, Resolution):
        check_resolution(result)
