"""The ``dns`` strategy: ask cluster DNS (CoreDNS) the way the DNS spec publishes Services."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from ._deadline import Deadline
from ._exceptions import TransientError
from ._models import Endpoint, Outcome, Resolution, ServiceKind, ServicePort
from ._names import Query, parse_service_fqdn
from ._strategy import Miss

#: Named ports are published as ``_<port>._<proto>``; TCP first since nearly all are.
_SRV_PROTOCOLS = ("tcp", "udp")
#: Per-packet timeout cap: a lost UDP packet is retried (by the chain, inside the
#: deadline) rather than waited on.
_ATTEMPT_TIMEOUT = 1.0


@attrs.frozen
class DnsTarget:
    """One nameserver to ask."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class DnsStrategy:
    """Resolve ``<svc>.<ns>.svc.<zone>.`` (always fully qualified: never the ndots:5 walk).

    A/AAAA give ClusterIPs or, for headless Services, the ready endpoints; SRV
    ``_<port>._<proto>`` gives named ports and per-endpoint hostnames; a CNAME is an
    ExternalName. NXDOMAIN is a definitive "not here" and is never retried.
    """

    name = "dns"

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

    def __repr__(self) -> str:
        where = ", ".join(map(str, self._nameservers)) or self._not_applicable
        return f"DnsStrategy({where})"

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        if isinstance(query.port, str):
            return self._lookup_named_port(query, query.port, deadline)
        return self._lookup_addresses(query, deadline)

    # -- queries ---------------------------------------------------------------

    def _ask(
        self, qname: dns.name.Name | str, rdtype: dns.rdatatype.RdataType, deadline: Deadline
    ) -> dns.resolver.Answer | None:
        """One round of one question over the nameservers; None means NXDOMAIN.

        Transient failures raise TransientError. There is deliberately no retry loop
        here: dnspython's ``Resolver.resolve`` sleeps a backoff between rounds without
        looking at its lifetime, overrunning short deadlines, and retrying (with
        backoff, jitter and an injectable sleep) is the chain's job anyway.
        """
        name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        request = dns.message.make_query(name, rdtype)
        errors: list[str] = []
        for i, ns in enumerate(self._nameservers):
            # Servers not yet asked get an equal share of what is left, so one dead
            # server cannot use up the time of the next.
            share = deadline.remaining() / (len(self._nameservers) - i)
            if share <= 0:
                break
            slot = deadline.slice(min(_ATTEMPT_TIMEOUT, share))
            try:
                response = _exchange(request, ns, slot)
            except (dns.exception.Timeout, TimeoutError):
                errors.append(f"{ns}: timed out")
                continue
            except (dns.exception.DNSException, OSError, EOFError) as exc:
                errors.append(f"{ns}: {type(exc).__name__}: {exc}")
                continue
            if not isinstance(response, dns.message.QueryMessage):
                errors.append(f"{ns}: not an answer to a query")
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN and not response.answer:
                return None
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                # NXDOMAIN with an answer section is a CNAME (an ExternalName) whose
                # target does not exist: the Service itself does.
                try:
                    return dns.resolver.Answer(
                        name, rdtype, dns.rdataclass.IN, response, ns.host, ns.port
                    )
                except dns.exception.DNSException as exc:
                    errors.append(f"{ns}: malformed answer: {exc}")
                    continue
            # SERVFAIL (CoreDNS not synced yet), REFUSED, ...: maybe another server knows.
            errors.append(f"{ns}: {dns.rcode.to_text(rcode)}")
        if not errors:
            raise TransientError(f"no time left to ask {qname} {rdtype.name}")
        raise TransientError(f"{qname} {rdtype.name}: {'; '.join(errors)}")

    def _lookup_addresses(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        service = query.service
        answer_a = self._ask(service.fqdn, dns.rdatatype.A, deadline)
        if answer_a is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"NXDOMAIN for {service.fqdn} (no such Service, "
                "or a headless Service with no ready endpoints)",
            )
        external = _external_name(answer_a)
        if external is not None:
            return _external_resolution(query, external, _ttl(answer_a))
        answer_aaaa = self._ask(service.fqdn, dns.rdatatype.AAAA, deadline)
        addresses = _addresses(answer_a) + (_addresses(answer_aaaa) if answer_aaaa else [])
        if not addresses:
            return Miss(Outcome.NOT_FOUND, f"no A or AAAA records for {service.fqdn}")
        port = query.port if isinstance(query.port, int) else None
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
    ) -> Resolution | Miss:
        service = query.service
        for proto in _SRV_PROTOCOLS:
            qname = f"_{port_name}._{proto}.{service.fqdn}"
            answer = self._ask(qname, dns.rdatatype.SRV, deadline)
            if answer is None or answer.rrset is None:
                continue
            return self._srv_resolution(query, port_name, proto, answer, deadline)
        # No SRV: tell "no such Service" from "no such port" with one more question.
        answer_a = self._ask(service.fqdn, dns.rdatatype.A, deadline)
        if answer_a is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"NXDOMAIN for {service.fqdn} (no such Service, "
                "or a headless Service with no ready endpoints)",
            )
        external = _external_name(answer_a)
        if external is not None:
            target = parse_service_fqdn(external)
            if target is not None and target.cluster_domain == service.cluster_domain:
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
    ) -> Resolution:
        service = query.service
        assert answer.rrset is not None
        fqdn = dns.name.from_text(service.fqdn)
        glue = _glue(answer.response)
        endpoints: list[Endpoint] = []
        headless = False
        for srv in answer.rrset.processing_order():
            target: dns.name.Name = srv.target  # type: ignore[attr-defined]
            is_service_name = target == fqdn
            headless = headless or not is_service_name
            hostname = None
            if not is_service_name and target.is_subdomain(fqdn):
                hostname = target.relativize(fqdn).to_text()
            addresses = glue.get(target)
            if addresses is None:
                addresses = self._resolve_target(target, deadline)
            endpoints.extend(
                Endpoint(host=a, port=srv.port, hostname=hostname)  # type: ignore[attr-defined]
                for a in addresses
            )
        ports: set[int] = {srv.port for srv in answer.rrset}
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
            endpoints=_unique(endpoints),
            ports=(declared,) if declared.port else (),
            port=declared if declared.port else None,
            source=self.name,
            ttl=_ttl(answer),
        )

    def _resolve_target(self, target: dns.name.Name, deadline: Deadline) -> list[str]:
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            answer = self._ask(target, rdtype, deadline)
            if answer is not None:
                found.extend(_addresses(answer))
        return found


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
    return target.to_text(omit_final_dot=True)


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


def _unique(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    seen: set[tuple[str, int | None]] = set()
    out: list[Endpoint] = []
    for ep in endpoints:
        key = (ep.host, ep.port)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return tuple(out)


def _exchange(request: dns.message.Message, ns: DnsTarget, slot: Deadline) -> dns.message.Message:
    """UDP, then TCP when the answer was truncated (large headless Services)."""
    try:
        return dns.query.udp(
            request, ns.host, timeout=_positive(slot), port=ns.port, raise_on_truncation=True
        )
    except dns.message.Truncated:
        return dns.query.tcp(request, ns.host, timeout=_positive(slot), port=ns.port)


def _positive(slot: Deadline) -> float:
    remaining = slot.remaining()
    if remaining <= 0:
        raise TimeoutError("no time left for this server")
    return remaining
