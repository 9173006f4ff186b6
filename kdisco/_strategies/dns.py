"""The ``dns`` strategy: ask cluster DNS (CoreDNS) the way the DNS spec publishes Services."""

from __future__ import annotations

import functools
import ipaddress
import selectors
import socket
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import dns.entropy
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from kdisco._attempts import Outcome
from kdisco._deadline import Deadline
from kdisco._exceptions import TransientError
from kdisco._models import Endpoint, Resolution, ServiceKind, ServicePort, distinct
from kdisco._names import Query, in_cluster_target, is_dns_name
from kdisco._settings import DnsTarget, Settings

from .base import Miss

if TYPE_CHECKING:
    # Imported where it is used: an event loop is running there, and sync users do not
    # pay for loading asyncio.
    import asyncio

    from kdisco._notify import Notifier

#: Named ports are published as ``_<port>._<proto>``; TCP first since nearly all are.
_SRV_PROTOCOLS = ("tcp", "udp")
#: Per-packet timeout cap: a lost UDP packet is retried (by the chain, inside the
#: deadline) rather than waited on.
_ATTEMPT_TIMEOUT = 1.0
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
#: Most questions in flight to one server at once (SRV targets without glue).
_BATCH = 32
#: Enough for any UDP answer (EDNS payloads top out well below 64 KiB).
_MAX_UDP = 65535

_T = TypeVar("_T")
_Reply = dns.message.Message | BaseException
#: The lookup logic is written once, without I/O: it yields each round of queries for
#: one server with the time it has, and the driver (``_exchange``, or ``_aexchange``
#: for asyncio) does the exchange, filling in the round's replies, before resuming it.
_Steps = Generator[tuple["_Round", Deadline], None, _T]


class DnsStrategy:
    """Resolve ``<svc>.<ns>.svc.<zone>.`` (always fully qualified: never the ndots:5 walk).

    A/AAAA give ClusterIPs or, for headless Services, the ready endpoints; SRV
    ``_<port>._<proto>`` gives named ports and per-endpoint hostnames; a CNAME is an
    ExternalName. NXDOMAIN is a definitive "not here" and is never retried.
    """

    name = "dns"
    #: Only cluster-internal addresses (ClusterIPs, pod IPs): not asked for
    #: ``reach="external"``.
    views = ("cluster",)

    def __init__(
        self,
        nameservers: Sequence[DnsTarget] = (),
        *,
        not_applicable: str | None = None,
    ) -> None:
        self._not_applicable = not_applicable
        self._nameservers = tuple(nameservers)
        if not self._nameservers and not_applicable is None:
            self._not_applicable = "no nameserver configured"

    @property
    def nameservers(self) -> tuple[DnsTarget, ...]:
        return self._nameservers

    @property
    def not_applicable(self) -> str | None:
        """Why this strategy cannot apply here at all (the chain then gives it no share
        of the deadline), or None."""
        return self._not_applicable

    def __repr__(self) -> str:
        where = ", ".join(map(str, self._nameservers)) or self._not_applicable
        return f"DnsStrategy({where})"

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        steps = self._steps(query, deadline)
        try:
            while True:
                _exchange(*next(steps))
        except StopIteration as done:
            result: Resolution | Miss = done.value
            return result

    def prepare_async(self) -> None:
        """Load what ``alookup`` needs, so its first call imports nothing on the loop.
        (``kdisco.aio`` calls this off the loop; sync users never pay for it.)"""
        _async_backend()

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """``lookup`` for asyncio: the same questions, answers and errors."""
        steps = self._steps(query, deadline)
        try:
            while True:
                await _aexchange(*next(steps))
        except StopIteration as done:
            result: Resolution | Miss = done.value
            return result

    def _steps(self, query: Query, deadline: Deadline) -> _Steps[Resolution | Miss]:
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        if query.include_not_ready:
            return Miss(
                Outcome.NOT_APPLICABLE,
                "include_not_ready: cluster DNS publishes only ready endpoints",
            )
        if isinstance(query.port, str):
            found = yield from self._lookup_named_port(query, query.port, deadline)
        else:
            found = yield from self._lookup_addresses(query, deadline)
        if (
            query.backends
            and isinstance(found, Resolution)
            and found.kind not in (ServiceKind.HEADLESS, ServiceKind.EXTERNAL_NAME)
        ):
            # A headless Service's records are its pods; a ClusterIP's is its
            # virtual IP (one address could be either): the api strategy can tell.
            return Miss(
                Outcome.NOT_APPLICABLE,
                f"backends: DNS gives {query.service.fqdn} as one address, not its pods",
            )
        return found

    # -- queries ---------------------------------------------------------------

    def _ask(
        self, qname: dns.name.Name | str, rdtype: dns.rdatatype.RdataType, deadline: Deadline
    ) -> _Steps[dns.resolver.Answer | None]:
        """One round of one question over the nameservers; None means NXDOMAIN."""
        (result,) = yield from self._ask_all([(qname, rdtype)], deadline)
        if isinstance(result, TransientError):
            raise result
        return result

    def _ask_all(
        self,
        questions: Sequence[tuple[dns.name.Name | str, dns.rdatatype.RdataType]],
        deadline: Deadline,
    ) -> _Steps[list[dns.resolver.Answer | TransientError | None]]:
        """One round of several questions, sent together, over the nameservers.

        Per question: its answer, None for NXDOMAIN, or the TransientError to raise if
        the caller needs that answer. Questions a server answered are not asked again;
        the rest go to the next server. Sending A and AAAA together (as glibc does)
        makes an uncached lookup cost one round trip, not two.

        There is deliberately no retry loop here: dnspython's ``Resolver.resolve``
        sleeps a backoff between rounds without looking at its lifetime, overrunning
        short deadlines, and retrying (with backoff, jitter and an injectable sleep) is
        the chain's job anyway.
        """
        names = [q if isinstance(q, dns.name.Name) else _name(q) for q, _ in questions]
        queries = _queries(names, [rdtype for _, rdtype in questions])
        results: list[dns.resolver.Answer | TransientError | None] = [None] * len(questions)
        errors: list[list[str]] = [[] for _ in questions]
        pending = list(range(len(questions)))
        for i, ns in enumerate(self._nameservers):
            if not pending:
                break
            # Servers not yet asked get an equal share of what is left, so one dead
            # server cannot use up the time of the next.
            share = deadline.remaining() / (len(self._nameservers) - i)
            if share <= 0:
                break
            slot = deadline.slice(min(_ATTEMPT_TIMEOUT, share))
            try:
                round_ = _Round([queries[k] for k in pending], ns)
            except ValueError as exc:  # a nameserver that is not an IP address
                replies: list[_Reply] = [exc] * len(pending)
            else:
                yield round_, slot
                replies = round_.outcome()
            still: list[int] = []
            for k, reply in zip(pending, replies, strict=True):
                outcome = _classify(names[k], questions[k][1], reply, ns)
                if isinstance(outcome, str):
                    errors[k].append(outcome)
                    still.append(k)
                else:
                    results[k] = outcome
            pending = still
        for k in pending:
            qname, rdtype = questions[k]
            if errors[k]:
                text = f"{qname} {rdtype.name}: {'; '.join(errors[k])}"
            else:
                text = f"no time left to ask {qname} {rdtype.name}"
            results[k] = TransientError(text)
        return results

    def _lookup_addresses(self, query: Query, deadline: Deadline) -> _Steps[Resolution | Miss]:
        service = query.service
        questions = [(service.fqdn, dns.rdatatype.A), (service.fqdn, dns.rdatatype.AAAA)]
        if isinstance(query.port, int):
            # CoreDNS answers SRV on the bare Service name with one record per
            # declared port: asked in the same round trip, it tells a port the
            # Service does not declare (FACTS.md §8).
            questions.append((service.fqdn, dns.rdatatype.SRV))
        answer_a, answer_aaaa, *answer_srv = yield from self._ask_all(questions, deadline)
        # A decides first, as if asked alone: its NXDOMAIN or CNAME settles the
        # question whatever became of AAAA.
        if isinstance(answer_a, TransientError):
            raise answer_a
        if answer_a is None:
            return _nxdomain(service.fqdn)
        external = _external_name(answer_a)
        if external is not None:
            return _external_resolution(query, external, _ttl(answer_a))
        if isinstance(answer_aaaa, TransientError):
            raise answer_aaaa
        addresses = _addresses(answer_a) + (_addresses(answer_aaaa) if answer_aaaa else [])
        if not addresses:
            return Miss(Outcome.NOT_FOUND, f"no A or AAAA records for {service.fqdn}")
        port = query.port if isinstance(query.port, int) else None
        if port is not None and answer_srv:
            undeclared = _undeclared_port(service.fqdn, port, answer_srv[0])
            if undeclared is not None:
                return undeclared
        v4 = sum(1 for a in addresses if ":" not in a)
        # A ClusterIP Service has at most one address per family; more can only be
        # the endpoints of a headless Service. One address could be either.
        kind = ServiceKind.HEADLESS if v4 > 1 or len(addresses) - v4 > 1 else ServiceKind.UNKNOWN
        return Resolution(
            service=service,
            kind=kind,
            endpoints=tuple(Endpoint(host=a, port=port) for a in addresses),
            source=self.name,
            ttl=_ttl(answer_a, answer_aaaa),
        )

    def _lookup_named_port(
        self, query: Query, port_name: str, deadline: Deadline
    ) -> _Steps[Resolution | Miss]:
        service = query.service
        for proto in _SRV_PROTOCOLS:
            qname = f"_{port_name}._{proto}.{service.fqdn}"
            answer = yield from self._ask(qname, dns.rdatatype.SRV, deadline)
            if answer is None or answer.rrset is None:
                continue
            return (yield from self._srv_resolution(query, port_name, proto, answer, deadline))
        # No SRV: tell "no such Service" from "no such port" with one more question.
        answer_a = yield from self._ask(service.fqdn, dns.rdatatype.A, deadline)
        if answer_a is None:
            return _nxdomain(service.fqdn)
        external = _external_name(answer_a)
        if external is not None:
            if in_cluster_target(external, service.cluster_domain) is not None:
                # An alias of another Service: the chain follows it, and that
                # Service's own SRV records map the port name.
                return _external_resolution(query, external, _ttl(answer_a))
            return Miss(
                Outcome.NOT_APPLICABLE,
                f"{service.fqdn} is an ExternalName ({external}); DNS cannot map port "
                f"name {port_name!r} to a number",
            )
        return Miss(
            Outcome.NO_SUCH_PORT,
            f"no SRV record _{port_name}._tcp/_udp.{service.fqdn} "
            "(the Service has no port of that name)",
        )

    def _srv_resolution(
        self,
        query: Query,
        port_name: str,
        proto: str,
        answer: dns.resolver.Answer,
        deadline: Deadline,
    ) -> _Steps[Resolution | Miss]:
        service = query.service
        assert answer.rrset is not None
        fqdn = _name(service.fqdn)
        glue = _glue(answer.response)
        endpoints: list[Endpoint] = []
        headless = False
        # A target of "." means "not available at this name" (RFC 2782), and port 0
        # is no port at all: neither record can be connected to.
        records: list[Any] = [
            r
            for r in answer.rrset.processing_order()
            if r.target != dns.name.root and r.port != 0  # type: ignore[attr-defined]
        ]
        missing = [srv.target for srv in records if srv.target not in glue]
        if missing:
            glue.update((yield from self._resolve_targets(list(dict.fromkeys(missing)), deadline)))
        for srv in records:
            target: dns.name.Name = srv.target
            is_service_name = target == fqdn
            headless = headless or not is_service_name
            hostname = None
            if not is_service_name and target.is_subdomain(fqdn):
                hostname = target.relativize(fqdn).to_text()
            addresses = glue.get(target, [])
            endpoints.extend(Endpoint(host=a, port=srv.port, hostname=hostname) for a in addresses)
        if not endpoints:
            # Records that lead nowhere are no answer: saying "found, no endpoints"
            # would be cached and keep the api strategy from its turn.
            return Miss(
                Outcome.NOT_FOUND,
                f"SRV _{port_name}._{proto}.{service.fqdn} has no target with an address",
            )
        ports: set[int] = {srv.port for srv in records}
        declared = ServicePort(
            name=port_name,
            # For a headless Service the SRV port is each endpoint's target port, which
            # may differ between endpoints; the Service's own number is then unknown.
            port=ports.pop() if len(ports) == 1 and not headless else 0,
            protocol=proto.upper(),
        )
        return Resolution(
            service=service,
            kind=ServiceKind.HEADLESS if headless else ServiceKind.CLUSTER_IP,
            endpoints=distinct(endpoints),
            ports=(declared,) if declared.port else (),
            port=declared if declared.port else None,
            source=self.name,
            ttl=_ttl(answer),
        )

    def _resolve_targets(
        self, targets: list[dns.name.Name], deadline: Deadline
    ) -> _Steps[dict[dns.name.Name, list[str]]]:
        """A and AAAA of SRV targets the server sent no glue for, a batch at a time."""
        found: dict[dns.name.Name, list[str]] = {}
        for first in range(0, len(targets), _BATCH // 2):
            batch = targets[first : first + _BATCH // 2]
            questions = [(t, rdtype) for t in batch for rdtype in _ADDRESS_TYPES]
            answers = yield from self._ask_all(questions, deadline)
            for (target, _), answer in zip(questions, answers, strict=True):
                if isinstance(answer, TransientError):
                    raise answer
                addresses = found.setdefault(target, [])
                if answer is not None:
                    addresses.extend(_addresses(answer))
        return found


def _nxdomain(fqdn: str) -> Miss:
    # DNS cannot tell these apart; the api strategy can, when it comes next.
    return Miss(
        Outcome.NOT_FOUND,
        f"NXDOMAIN for {fqdn} (no such Service, or a headless Service with no ready endpoints)",
        # Cluster DNS publishes every Service: its NXDOMAIN outranks the api
        # strategy's refusal in the error (a typo is not a missing Role rule).
        decisive=True,
    )


def _undeclared_port(
    fqdn: str, port: int, answer: dns.resolver.Answer | TransientError | None
) -> Miss | None:
    """NO_SUCH_PORT when the bare-name SRV lists a ClusterIP Service's declared ports and
    ``port`` is not one; None when it cannot tell (no records, a failure, or a headless
    Service, whose SRV ports are each endpoint's own)."""
    if not isinstance(answer, dns.resolver.Answer) or answer.rrset is None:
        return None
    name = _name(fqdn)
    records: list[Any] = list(answer.rrset)
    if not records or any(r.target != name for r in records):
        return None
    declared = sorted({r.port for r in records})
    if port in declared:
        return None
    return Miss(
        Outcome.NO_SUCH_PORT,
        f"{fqdn} declares no port {port} (SRV lists {', '.join(map(str, declared))})",
    )


def _external_resolution(query: Query, external: str, ttl: float | None) -> Resolution:
    port = query.port if isinstance(query.port, int) else None
    return Resolution(
        service=query.service,
        kind=ServiceKind.EXTERNAL_NAME,
        endpoints=(Endpoint(host=external, port=port),),
        external_name=external,
        source="dns",
        ttl=ttl,
    )


def _ttl(*answers: dns.resolver.Answer | None) -> float | None:
    """The smallest TTL among the records an answer was built from."""
    ttls = [
        rrset.ttl
        for answer in answers
        if answer is not None
        for rrset in (*answer.response.answer, *answer.response.additional)
        if rrset.rdtype != dns.rdatatype.OPT
    ]
    return float(min(ttls)) if ttls else None


def _external_name(answer: dns.resolver.Answer) -> str | None:
    """The first CNAME target when the Service name is an alias (an ExternalName)."""
    cnames = answer.chaining_result.cnames
    if not cnames:
        return None
    first: dns.rrset.RRset = cnames[0]
    target: dns.name.Name = first[0].target
    text = target.to_text(omit_final_dot=True)
    # A CNAME to the root (or to anything that is no host name) names nothing to
    # connect to: it is no ExternalName answer.
    return text if is_dns_name(text) else None


def _addresses(answer: dns.resolver.Answer) -> list[str]:
    if answer.rrset is None:
        return []
    return [str(ipaddress.ip_address(rr.address)) for rr in answer.rrset]


def _glue(response: dns.message.Message) -> dict[dns.name.Name, list[str]]:
    """Addresses CoreDNS put in the additional section for SRV targets."""
    glue: dict[dns.name.Name, list[str]] = {}
    for rrset in response.additional:
        if rrset.rdclass == dns.rdataclass.IN and rrset.rdtype in (
            dns.rdatatype.A,
            dns.rdatatype.AAAA,
        ):
            glue.setdefault(rrset.name, []).extend(
                str(ipaddress.ip_address(rr.address)) for rr in rrset
            )
    return glue


@functools.lru_cache(maxsize=1024)
def _name(text: str) -> dns.name.Name:
    """Parsed once per name: Names are immutable, and parsing is a good share of the
    CPU an uncached lookup costs."""
    return dns.name.from_text(text)


class _Query:
    """One question as sent: its random id and its wire form."""

    __slots__ = ("id", "name", "rdtype", "wire")

    def __init__(self, qid: int, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> None:
        self.id = qid
        self.name = name
        self.rdtype = rdtype
        self.wire = qid.to_bytes(2, "big") + _rendered(name, rdtype)

    def message(self) -> dns.message.QueryMessage:
        """As a dnspython message, for its TCP exchange (only truncated answers need it)."""
        return dns.message.make_query(self.name, self.rdtype, id=self.id)

    def answered_by(self, reply: dns.message.Message) -> bool:
        """dnspython's ``is_response`` (the id is already matched), without a message to
        call it on: building one per question costs more than the check."""
        if not reply.flags & dns.flags.QR or reply.opcode() != dns.opcode.QUERY:
            return False
        if not reply.question:
            # An error may leave the question out; dnspython accepts that too.
            return reply.rcode() in _QUESTIONLESS_ERRORS
        return all(
            q.name == self.name and q.rdtype == self.rdtype and q.rdclass == dns.rdataclass.IN
            for q in reply.question
        )


_QUESTIONLESS_ERRORS = frozenset(
    (dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED)
)


@functools.lru_cache(maxsize=1024)
def _rendered(name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> bytes:
    """A query's wire form after its id, rendered once per question: rendering is a good
    share of the CPU an uncached lookup costs."""
    return dns.message.make_query(name, rdtype).to_wire()[2:]


def _queries(
    names: Sequence[dns.name.Name], rdtypes: Sequence[dns.rdatatype.RdataType]
) -> list[_Query]:
    """One query per question, with distinct ids so replies sent together can be told apart."""
    queries: list[_Query] = []
    ids: set[int] = set()
    for name, rdtype in zip(names, rdtypes, strict=True):
        qid = dns.entropy.random_16()
        while qid in ids:
            qid = (qid + 1) & 0xFFFF
        ids.add(qid)
        queries.append(_Query(qid, name, rdtype))
    return queries


def _classify(
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    reply: dns.message.Message | BaseException,
    ns: DnsTarget,
) -> dns.resolver.Answer | str | None:
    """A server's reply to one question: the answer, None (NXDOMAIN), or why it failed."""
    if isinstance(reply, dns.exception.Timeout | TimeoutError):
        return f"{ns}: timed out"
    if isinstance(reply, BaseException):
        return f"{ns}: {type(reply).__name__}: {reply}"
    if not isinstance(reply, dns.message.QueryMessage):
        return f"{ns}: not an answer to a query"
    rcode = reply.rcode()
    if rcode == dns.rcode.NXDOMAIN and not reply.answer:
        return None
    if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        # NXDOMAIN with an answer section is a CNAME (an ExternalName) whose
        # target does not exist: the Service itself does.
        try:
            return dns.resolver.Answer(name, rdtype, dns.rdataclass.IN, reply, ns.host, ns.port)
        except dns.exception.DNSException as exc:
            return f"{ns}: malformed answer: {exc}"
    # SERVFAIL (CoreDNS not synced yet), REFUSED, ...: maybe another server knows.
    return f"{ns}: {dns.rcode.to_text(rcode)}"


class _Round:
    """Queries sent together to one server over UDP, and the replies matched to them as
    they come: the part of an exchange both drivers share (it does no I/O)."""

    __slots__ = ("_by_id", "destination", "family", "queries", "replies", "truncated")

    def __init__(self, queries: list[_Query], ns: DnsTarget) -> None:
        self.family = dns.inet.af_for_address(ns.host)  # ValueError: not an IP address
        self.destination = (ns.host, ns.port)
        self.queries = queries
        self.replies: list[_Reply | None] = [None] * len(queries)
        #: Queries whose answers did not fit UDP (large headless Services): the driver
        #: asks them again over TCP.
        self.truncated: list[int] = []
        self._by_id = {query.id: k for k, query in enumerate(queries)}

    @property
    def waiting(self) -> bool:
        return bool(self._by_id)

    def received(self, wire: bytes, source: object) -> None:
        """A reply counts only from the server asked, with the id and question of one of
        the queries (anything else is ignored, as dnspython does)."""
        if len(wire) < 12 or not _same_address(self.family, source, self.destination):
            return
        reply_id = int.from_bytes(wire[:2], "big")
        k = self._by_id.get(reply_id)
        if k is None:
            return
        reply = _parse_reply(self.queries[k], wire)
        if reply is None:
            return  # not an answer to this question: keep waiting
        del self._by_id[reply_id]
        if isinstance(reply, dns.message.Truncated):
            self.truncated.append(k)
        else:
            self.replies[k] = reply

    def failed(self, exc: BaseException) -> None:
        """Sending or receiving failed (no route, ...): every unanswered query failed."""
        self.replies = [r if r is not None else exc for r in self.replies]
        self.truncated = []
        self._by_id = {}

    def outcome(self) -> list[_Reply]:
        """Each query's reply or failure; what has no reply by now timed out."""
        return [r if r is not None else TimeoutError() for r in self.replies]


#: How asking over TCP can fail; each is that server's failure to answer.
_TCP_ERRORS = (dns.exception.DNSException, OSError, EOFError)


def _exchange(round_: _Round, slot: Deadline) -> None:
    """The sync driver: send every query over one UDP socket, then collect the replies
    as they come until the slot ends; truncated answers are asked again over TCP."""
    try:
        with (
            socket.socket(round_.family, socket.SOCK_DGRAM) as sock,
            selectors.DefaultSelector() as sel,
        ):
            sock.setblocking(False)
            for query in round_.queries:
                sock.sendto(query.wire, round_.destination)
            sel.register(sock, selectors.EVENT_READ)
            while round_.waiting:
                remaining = slot.remaining()
                if remaining <= 0 or not sel.select(remaining):
                    break
                try:
                    wire, source = sock.recvfrom(_MAX_UDP)
                except BlockingIOError:
                    continue
                round_.received(wire, source)
    except (OSError, ValueError) as exc:
        round_.failed(exc)
    host, port = round_.destination
    for k in round_.truncated:
        try:
            reply: _Reply = dns.query.tcp(
                round_.queries[k].message(), host, timeout=_positive(slot), port=port
            )
        except _TCP_ERRORS as exc:
            reply = exc
        round_.replies[k] = reply


async def _aexchange(round_: _Round, slot: Deadline) -> None:
    """The async driver: ``_exchange`` with the waiting done by the running loop, and the
    TCP retries of truncated answers made concurrently. The socket is closed before it
    returns, cancelled or not."""
    import asyncio  # loaded already: an event loop is running

    try:
        with socket.socket(round_.family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for query in round_.queries:
                sock.sendto(query.wire, round_.destination)
            async with asyncio.timeout(slot.remaining()):
                await _receive(sock, round_)
    except TimeoutError:
        pass  # what has no reply timed out
    except (OSError, ValueError) as exc:
        round_.failed(exc)
    if round_.truncated:
        replies = await asyncio.gather(
            *(_atcp(round_.queries[k], round_.destination, slot) for k in round_.truncated)
        )
        for k, reply in zip(round_.truncated, replies, strict=True):
            round_.replies[k] = reply


async def _receive(sock: socket.socket, round_: _Round) -> None:
    """Hand the round what the socket receives until every query has its reply.

    The loop watches the socket and the callback reads it: one future per round, not
    one per datagram as ``sock_recvfrom`` would make, nor a transport per round (each
    costs more than the rest of an uncached lookup's asyncio work). Windows' proactor
    loop cannot watch a socket, so there it is ``sock_recvfrom`` after all.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    # By number: given the socket, the selector formats its repr for each miss.
    fd = sock.fileno()
    try:
        loop.add_reader(fd, _readable, sock, round_, done)
    except NotImplementedError:
        while round_.waiting:
            round_.received(*await loop.sock_recvfrom(sock, _MAX_UDP))
        return
    try:
        await done
    finally:
        loop.remove_reader(fd)


def _readable(sock: socket.socket, round_: _Round, done: asyncio.Future[None]) -> None:
    try:
        wire, source = sock.recvfrom(_MAX_UDP)
    except BlockingIOError:
        return
    except OSError as exc:
        round_.failed(exc)
    else:
        round_.received(wire, source)
    if not round_.waiting and not done.done():
        done.set_result(None)


def _async_backend() -> Any:
    import dns.asyncbackend
    import dns.asyncquery  # the TCP retry (_atcp) uses it

    return dns.asyncbackend.get_backend("asyncio")


async def _atcp(query: _Query, destination: tuple[str, int], slot: Deadline) -> _Reply:
    import asyncio

    import dns.asyncquery

    try:
        async with asyncio.timeout(_positive(slot)):
            return await dns.asyncquery.tcp(
                query.message(),
                destination[0],
                port=destination[1],
                backend=_async_backend(),
            )
    except _TCP_ERRORS as exc:
        return exc


def _parse_reply(query: _Query, wire: bytes) -> _Reply | None:
    """The reply, Truncated when it must be asked over TCP, None when it is not one."""
    try:
        reply = dns.message.from_wire(wire, raise_on_truncation=True)
    except dns.message.Truncated as exc:
        partial = exc.message()  # type: ignore[no-untyped-call]
        return exc if query.answered_by(partial) else None
    except dns.exception.DNSException as exc:
        return exc  # malformed: a failure of this server, as dnspython would raise
    return reply if query.answered_by(reply) else None


def _same_address(family: int, source: object, destination: tuple[str, int]) -> bool:
    if not isinstance(source, tuple) or source[1] != destination[1]:
        return False
    if source[0] == destination[0]:
        return True  # the usual case, without parsing either
    try:
        return bool(
            dns.inet.inet_pton(family, str(source[0])) == dns.inet.inet_pton(family, destination[0])
        )
    except (OSError, ValueError):
        return False


def _positive(slot: Deadline) -> float:
    remaining = slot.remaining()
    if remaining <= 0:
        raise TimeoutError("no time left for this server")
    return remaining


def from_settings(settings: Settings, notifier: Notifier) -> DnsStrategy:
    """The registry's factory: the servers the settings found, or why there are none."""
    return DnsStrategy(settings.dns_servers, not_applicable=settings.dns_unavailable)
