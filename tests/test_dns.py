"""The ``dns`` strategy against wire-format answers shaped like CoreDNS's (FACTS.md §1).

Answers come from ``tests/_dnsserver.py``, an in-process responder on 127.0.0.1. This
tests the strategy's logic; proof against a real CoreDNS is the lab's. Every scenario
runs through both ``lookup`` and ``alookup`` (the ``driver`` fixture): they share the
logic, and must give the same answers, misses and errors. What only the asyncio path
can get wrong is in tests/test_dns_async.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import attrs
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

import kdisco
from kdisco import (
    Deadline,
    Discoverer,
    Endpoint,
    Miss,
    Outcome,
    Resolution,
    RetryPolicy,
    ServiceKind,
    ServicePort,
    Strategy,
)
from kdisco._chain import run_sync
from kdisco._names import Query, parse_query
from kdisco._settings import DnsTarget
from kdisco._strategies.dns import DnsStrategy
from tests._dnsserver import DnsResponder, Entry, rrset

ZONE = "cluster.local"
POD_RESOLV_CONF = (
    "search default.svc.cluster.local svc.cluster.local cluster.local\n"
    "nameserver 10.96.0.10\n"
    "options ndots:5\n"
)


def fqdn(svc: str, ns: str = "default", zone: str = ZONE) -> str:
    return f"{svc}.{ns}.svc.{zone}."


def srv_name(port: str, proto: str, svc: str, ns: str = "default") -> str:
    return f"_{port}._{proto}.{fqdn(svc, ns)}"


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> Iterator[DnsResponder]:
    with DnsResponder(zone=ZONE) as responder:
        yield responder


def strategy_for(server: DnsResponder) -> DnsStrategy:
    return DnsStrategy([DnsTarget("127.0.0.1", server.port)])


def query(name: str, port: int | str | None = None) -> Query:
    return parse_query(
        name, namespace=None, default_namespace="default", cluster_domain=ZONE, port=port
    )


#: Which method a scenario goes through: every scenario runs through both.
Driver = Literal["lookup", "alookup"]


@pytest.fixture(params=["lookup", "alookup"])
def driver(request: pytest.FixtureRequest) -> Driver:
    name: Driver = request.param
    return name


def resolve(
    strategy: DnsStrategy, query: Query, deadline: Deadline, driver: Driver
) -> kdisco.Resolution | Miss:
    """``strategy.lookup(query, deadline)``, or the same through ``alookup`` on a fresh loop."""
    if driver == "alookup":
        return asyncio.run(strategy.alookup(query, deadline))
    return strategy.lookup(query, deadline)


def lookup(
    driver: Driver, server: DnsResponder, name: str, port: int | str | None = None
) -> kdisco.Resolution:
    result = resolve(strategy_for(server), query(name, port), Deadline(3.0), driver)
    assert isinstance(result, kdisco.Resolution), result
    return result


# -- CoreDNS-shaped records --------------------------------------------------------


def add_cluster_ip(
    server: DnsResponder,
    svc: str,
    *,
    ipv4: str | None = None,
    ipv6: str | None = None,
    ports: tuple[tuple[str, str, int], ...] = (),
    ns: str = "default",
) -> None:
    """A ClusterIP Service: A/AAAA = the ClusterIP(s), SRV per named port -> the service."""
    name = fqdn(svc, ns)
    addresses = []
    for qtype, ip in (("A", ipv4), ("AAAA", ipv6)):
        if ip is None:
            server.nodata(name, qtype)
        else:
            addresses.append(rrset(name, qtype, ip))
            server.answer(name, qtype, rrset(name, qtype, ip))
    for port_name, proto, number in ports:
        srv = srv_name(port_name, proto, svc, ns)
        # CoreDNS puts the target's addresses in the additional section.
        server.answer(srv, "SRV", rrset(srv, "SRV", f"0 100 {number} {name}"), additional=addresses)


def add_headless(
    server: DnsResponder,
    svc: str,
    endpoints: dict[str, str],
    *,
    ports: tuple[tuple[str, str, int], ...] = (),
    glue: bool = True,
    ns: str = "default",
) -> None:
    """A headless Service: one A per ready endpoint, per-endpoint names, SRV N x M."""
    name = fqdn(svc, ns)
    server.answer(name, "A", rrset(name, "A", *endpoints.values()))
    server.nodata(name, "AAAA")
    for hostname, ip in endpoints.items():
        target = f"{hostname}.{name}"
        server.answer(target, "A", rrset(target, "A", ip))
        server.nodata(target, "AAAA")
    weight = 100 // max(1, len(endpoints))
    for port_name, proto, number in ports:
        srv = srv_name(port_name, proto, svc, ns)
        records = [f"0 {weight} {number} {h}.{name}" for h in endpoints]
        additional = [rrset(f"{h}.{name}", "A", ip) for h, ip in endpoints.items()] if glue else []
        server.answer(srv, "SRV", rrset(srv, "SRV", *records), additional=additional)


# -- addresses -----------------------------------------------------------------------


def test_cluster_ip_a_record_gives_one_endpoint_with_the_asked_port_number(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    res = lookup(driver, server, "web", 8080)
    # One address could be a ClusterIP or a one-pod headless Service: DNS cannot tell.
    assert res.kind is ServiceKind.UNKNOWN
    assert res.endpoints == (Endpoint(host="10.96.0.20", port=8080),)
    assert res.source == "dns"
    assert res.service.fqdn == "web.default.svc.cluster.local."
    assert res.ports == ()
    assert res.port is None
    assert res.snapshot is False


def test_without_a_port_the_endpoint_port_is_unknown(server: DnsResponder, driver: Driver) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    res = lookup(driver, server, "web")
    assert [(ep.host, ep.port) for ep in res] == [("10.96.0.20", None)]


def test_dual_stack_cluster_ip_gives_both_families(server: DnsResponder, driver: Driver) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20", ipv6="fd00:10:96::20")
    res = lookup(driver, server, "web", 443)
    assert [ep.host for ep in res] == ["10.96.0.20", "fd00:10:96::20"]
    # One address per family is still what a ClusterIP Service looks like.
    assert res.kind is ServiceKind.UNKNOWN
    assert res.endpoints[1].address == "[fd00:10:96::20]:443"
    # With a port number, the bare-name SRV (declared ports) goes in the same round.
    assert server.asked() == [fqdn("web"), fqdn("web"), fqdn("web")]
    assert [q.qtype for q in server.queries] == ["A", "AAAA", "SRV"]


def test_a_port_number_the_service_does_not_declare_is_no_such_port(
    server: DnsResponder, driver: Driver
) -> None:
    # CoreDNS lists one SRV record per declared port on the bare Service name; 8080
    # (say, the targetPort) is not one of them (issue 10, item 17).
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    name = fqdn("web")
    server.answer(name, "SRV", rrset(name, "SRV", f"0 50 80 {name}", f"0 50 9090 {name}"))
    result = resolve(strategy_for(server), query("web", 8080), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert "80, 9090" in result.reason
    assert lookup(driver, server, "web", 9090).endpoints == (
        Endpoint(host="10.96.0.20", port=9090),
    )


def test_srv_targets_without_addresses_are_no_answer(server: DnsResponder, driver: Driver) -> None:
    # SRV records whose targets have no A/AAAA (or are ".") must not become a
    # "found, no endpoints" answer that is cached and keeps the api strategy away.
    name = fqdn("db")
    srv = srv_name("pg", "tcp", "db", "default")
    server.answer(srv, "SRV", rrset(srv, "SRV", f"0 50 5432 db-0.{name}", "0 50 5432 ."))
    server.nodata(f"db-0.{name}", "A")
    server.nodata(f"db-0.{name}", "AAAA")
    result = resolve(strategy_for(server), query("db", "pg"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND
    assert "no target with an address" in result.reason


def test_ipv6_only_service_answers_from_aaaa(server: DnsResponder, driver: Driver) -> None:
    add_cluster_ip(server, "web", ipv6="fd00:10:96::20")
    res = lookup(driver, server, "web", 80)
    assert res.endpoints == (Endpoint(host="fd00:10:96::20", port=80),)


def test_several_a_records_are_a_headless_service(server: DnsResponder, driver: Driver) -> None:
    add_headless(server, "db", {"db-0": "10.1.0.5", "db-1": "10.1.0.6", "db-2": "10.1.0.7"})
    res = lookup(driver, server, "db", 5432)
    assert res.kind is ServiceKind.HEADLESS
    assert sorted(ep.host for ep in res) == ["10.1.0.5", "10.1.0.6", "10.1.0.7"]
    assert {ep.port for ep in res} == {5432}


def test_name_with_no_a_or_aaaa_records_is_not_found(server: DnsResponder, driver: Driver) -> None:
    server.nodata(fqdn("web"), "A")
    server.nodata(fqdn("web"), "AAAA")
    result = resolve(strategy_for(server), query("web"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND


def test_nxdomain_is_not_found(server: DnsResponder, driver: Driver) -> None:
    server.nxdomain(fqdn("ghost"), "A")
    result = resolve(strategy_for(server), query("ghost"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND
    assert "ghost.default.svc.cluster.local." in result.reason
    # A and AAAA go out together (one round trip); A's NXDOMAIN settles it, and
    # neither question is asked again.
    assert [(q.qname, q.qtype) for q in server.queries] == [
        (fqdn("ghost"), "A"),
        (fqdn("ghost"), "AAAA"),
    ]


# -- named ports (SRV) ---------------------------------------------------------------


def test_named_port_of_a_cluster_ip_service_comes_from_srv(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20", ports=(("http", "tcp", 80),))
    res = lookup(driver, server, "web", "http")
    assert res.kind is ServiceKind.CLUSTER_IP
    assert res.endpoints == (Endpoint(host="10.96.0.20", port=80),)
    http = ServicePort(name="http", port=80, protocol="TCP")
    assert res.port == http
    assert res.ports == (http,)
    assert res.url() == "http://10.96.0.20:80"
    # The glue in the additional section saves a second question.
    assert [(q.qname, q.qtype) for q in server.queries] == [(srv_name("http", "tcp", "web"), "SRV")]


def test_named_port_of_a_headless_service_gives_each_endpoint_and_hostname(
    server: DnsResponder, driver: Driver
) -> None:
    add_headless(
        server,
        "db",
        {"db-0": "10.1.0.5", "db-1": "10.1.0.6"},
        ports=(("postgres", "tcp", 5432),),
    )
    res = lookup(driver, server, "db", "postgres")
    assert res.kind is ServiceKind.HEADLESS
    assert sorted((ep.hostname, ep.host, ep.port) for ep in res) == [
        ("db-0", "10.1.0.5", 5432),
        ("db-1", "10.1.0.6", 5432),
    ]
    # Headless SRV ports are each endpoint's target port, not the Service's own port.
    assert res.port is None
    assert res.ports == ()
    assert server.asked() == [srv_name("postgres", "tcp", "db")]


def test_srv_targets_without_glue_are_resolved_with_extra_questions(
    server: DnsResponder, driver: Driver
) -> None:
    add_headless(
        server,
        "db",
        {"db-0": "10.1.0.5", "db-1": "10.1.0.6"},
        ports=(("postgres", "tcp", 5432),),
        glue=False,
    )
    res = lookup(driver, server, "db", "postgres")
    assert sorted((ep.hostname, ep.host) for ep in res) == [
        ("db-0", "10.1.0.5"),
        ("db-1", "10.1.0.6"),
    ]
    asked = {(q.qname, q.qtype) for q in server.queries}
    assert asked == {
        (srv_name("postgres", "tcp", "db"), "SRV"),
        (f"db-0.{fqdn('db')}", "A"),
        (f"db-0.{fqdn('db')}", "AAAA"),
        (f"db-1.{fqdn('db')}", "A"),
        (f"db-1.{fqdn('db')}", "AAAA"),
    }


def test_dashed_ip_hostnames_are_reported_as_hostnames(
    server: DnsResponder, driver: Driver
) -> None:
    # Endpoints without a hostname field get their dashed IP as the per-endpoint name.
    add_headless(server, "api", {"10-1-0-9": "10.1.0.9"}, ports=(("grpc", "tcp", 9000),))
    res = lookup(driver, server, "api", "grpc")
    assert res.kind is ServiceKind.HEADLESS
    assert res.endpoints == (Endpoint(host="10.1.0.9", port=9000, hostname="10-1-0-9"),)


def test_udp_srv_is_asked_when_there_is_no_tcp_one(server: DnsResponder, driver: Driver) -> None:
    add_cluster_ip(server, "dns", ipv4="10.96.0.10", ports=(("dns", "udp", 53),))
    res = lookup(driver, server, "dns", "dns")
    assert res.port == ServicePort(name="dns", port=53, protocol="UDP")
    assert res.endpoints == (Endpoint(host="10.96.0.10", port=53),)
    assert server.asked() == [srv_name("dns", "tcp", "dns"), srv_name("dns", "udp", "dns")]


def test_missing_srv_with_an_existing_service_is_no_such_port(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20", ports=(("http", "tcp", 80),))
    result = resolve(strategy_for(server), query("web", "metrics"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert "metrics" in result.reason
    assert [(q.qname, q.qtype) for q in server.queries] == [
        (srv_name("metrics", "tcp", "web"), "SRV"),
        (srv_name("metrics", "udp", "web"), "SRV"),
        (fqdn("web"), "A"),
    ]


def test_missing_srv_and_missing_service_is_not_found(server: DnsResponder, driver: Driver) -> None:
    result = resolve(strategy_for(server), query("ghost", "http"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND


# -- ExternalName (CNAME) --------------------------------------------------------------


def test_cname_is_an_external_name(server: DnsResponder, driver: Driver) -> None:
    name = fqdn("billing")
    server.answer(name, "A", rrset(name, "CNAME", "billing.example.com."))
    res = lookup(driver, server, "billing", 443)
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert res.external_name == "billing.example.com"
    assert res.endpoints == (Endpoint(host="billing.example.com", port=443),)
    assert res.url("https") == "https://billing.example.com:443"


def test_cname_with_resolved_target_still_reports_the_external_name(
    server: DnsResponder, driver: Driver
) -> None:
    # CoreDNS follows the CNAME when it can and adds the target's A record.
    name = fqdn("billing")
    server.answer(
        name,
        "A",
        rrset(name, "CNAME", "billing.example.com."),
        rrset("billing.example.com.", "A", "192.0.2.44"),
    )
    res = lookup(driver, server, "billing")
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert [ep.host for ep in res] == ["billing.example.com"]


def test_named_port_of_an_external_name_is_not_applicable(
    server: DnsResponder, driver: Driver
) -> None:
    name = fqdn("billing")
    server.answer(name, "A", rrset(name, "CNAME", "billing.example.com."))
    result = resolve(strategy_for(server), query("billing", "https"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "billing.example.com" in result.reason


def test_external_name_into_the_cluster_is_followed_by_the_chain(server: DnsResponder) -> None:
    name = fqdn("alias")
    server.answer(name, "A", rrset(name, "CNAME", fqdn("web", "shop")))
    add_cluster_ip(server, "web", ns="shop", ipv4="10.96.3.3")
    clock = FakeClock()
    res = run_sync(
        [strategy_for(server)],
        query("alias", 8080),
        Deadline(3.0),
        RetryPolicy(sleep=clock.sleep),
    )
    assert str(res.service) == "web.shop"
    assert [str(s) for s in res.via] == ["alias.default"]
    assert res.endpoints == (Endpoint(host="10.96.3.3", port=8080),)


def test_cname_to_a_missing_name_is_still_an_external_name(
    server: DnsResponder, driver: Driver
) -> None:
    # A forwarder that follows the CNAME to a name that does not exist says NXDOMAIN
    # but keeps the CNAME: the Service exists, its target does not.
    name = fqdn("billing")
    server.set(
        name,
        "A",
        Entry(
            rcode=dns.rcode.NXDOMAIN,
            answer=(rrset(name, "CNAME", "gone.example.com."),),
            soa=True,
        ),
    )
    res = lookup(driver, server, "billing")
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert res.external_name == "gone.example.com"


# -- large answers --------------------------------------------------------------------


def test_truncated_udp_answer_is_retried_over_tcp(server: DnsResponder, driver: Driver) -> None:
    endpoints = {f"w-{i}": f"10.1.{i // 200}.{i % 200 + 1}" for i in range(60)}
    add_headless(server, "big", endpoints)
    res = lookup(driver, server, "big", 80)
    assert len(res) == 60
    assert sorted(ep.host for ep in res) == sorted(endpoints.values())
    a_transports = [q.transport for q in server.queries if q.qtype == "A"]
    assert a_transports == ["udp", "tcp"]


# -- failures, retries, deadlines -------------------------------------------------------


def test_servfail_is_transient(server: DnsResponder, driver: Driver) -> None:
    server.servfail(fqdn("web"), "A")
    with pytest.raises(kdisco.TransientError, match="SERVFAIL"):
        resolve(strategy_for(server), query("web"), Deadline(3.0), driver)


def test_servfail_is_retried_with_backoff_until_the_deadline(server: DnsResponder) -> None:
    server.servfail(fqdn("web"), "A")
    clock = FakeClock()
    retry = RetryPolicy(initial=0.05, maximum=1.0, sleep=clock.sleep, rng=lambda: 1.0)
    with pytest.raises(kdisco.DiscoveryError) as info:
        run_sync([strategy_for(server)], query("web"), Deadline(2.0, clock=clock), retry)
    # Waits double from 0.05 s; the 1.0 s wait after 1.55 s would pass the 2 s deadline.
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8])
    assert server.asked("A") == [fqdn("web")] * 6
    (attempt,) = info.value.attempts
    assert attempt.strategy == "dns"
    assert attempt.tries == 6
    assert "SERVFAIL" in attempt.reason


def test_servfail_then_answer_succeeds_on_retry(server: DnsResponder) -> None:
    name = fqdn("web")
    servfail = Entry(rcode=dns.rcode.SERVFAIL)
    server.set(name, "A", servfail, servfail, Entry(answer=(rrset(name, "A", "10.96.0.20"),)))
    server.nodata(name, "AAAA")
    clock = FakeClock()
    retry = RetryPolicy(sleep=clock.sleep, rng=lambda: 0.5)
    res = run_sync([strategy_for(server)], query("web"), Deadline(5.0, clock=clock), retry)
    assert [ep.host for ep in res] == ["10.96.0.20"]
    assert len(clock.sleeps) == 2
    assert server.asked("A") == [name] * 3


def test_nxdomain_is_never_retried(server: DnsResponder, tmp_path: Path) -> None:
    server.nxdomain(fqdn("ghost"), "A")
    slept: list[float] = []
    discoverer = Discoverer(
        strategies=["dns"],
        environ={"KDISCO_DNS_SERVER": f"127.0.0.1:{server.port}", "KDISCO_NAMESPACE": "default"},
        resolv_conf=tmp_path / "missing",
        serviceaccount_dir=tmp_path,
        sleep=slept.append,
    )
    with pytest.raises(kdisco.ServiceNotFound) as info:
        discoverer.discover("ghost")
    # One round: A and AAAA once each, sent together.
    assert server.asked() == [fqdn("ghost"), fqdn("ghost")]
    assert slept == []
    (attempt,) = info.value.attempts
    assert (attempt.outcome, attempt.tries) == (Outcome.NOT_FOUND, 1)


def test_no_reply_is_bounded_by_the_deadline(server: DnsResponder, driver: Driver) -> None:
    server.drop(fqdn("web"), "A")
    started = time.monotonic()
    with pytest.raises(kdisco.TransientError, match="timed out"):
        resolve(strategy_for(server), query("web"), Deadline(0.1), driver)
    # Without the deadline dnspython would wait its own 5 s lifetime (1 s per packet).
    assert time.monotonic() - started < 0.9
    assert server.asked("A")[0] == fqdn("web")


def test_no_reply_does_not_overrun_the_deadline(server: DnsResponder, driver: Driver) -> None:
    # dnspython's Resolver sleeps a backoff (0.1 s, doubling) between rounds without
    # looking at the lifetime, which overran a 0.1 s deadline by 0.1 s; retrying is the
    # chain's job, so one lookup must be one round that ends at the deadline.
    server.drop(fqdn("web"), "A")
    deadline = Deadline(0.1)
    with pytest.raises(kdisco.TransientError, match="timed out"):
        resolve(strategy_for(server), query("web"), deadline, driver)
    assert time.monotonic() - deadline.expires_at < 0.07
    # One round (A and AAAA sent together), not a second one after the timeout.
    assert [(q.qname, q.qtype) for q in server.queries] == [
        (fqdn("web"), "A"),
        (fqdn("web"), "AAAA"),
    ]


def test_dead_dns_leaves_the_next_strategy_its_turn(server: DnsResponder) -> None:
    server.drop(fqdn("web"), "A")

    class Fallback:
        name = "fallback"

        def lookup(self, query: Query, deadline: Deadline) -> kdisco.Resolution | Miss:
            # The chain must hand this strategy time of its own.
            assert deadline.remaining() > 0.05
            return kdisco.Resolution(
                service=query.service,
                kind=ServiceKind.CLUSTER_IP,
                endpoints=(Endpoint(host="192.0.2.7", port=80),),
                source=self.name,
            )

    slept: list[float] = []
    res = run_sync(
        [strategy_for(server), Fallback()],
        query("web"),
        Deadline(0.3),
        RetryPolicy(sleep=slept.append),
    )
    assert res.source == "fallback"
    (dns_attempt,) = res.attempts
    assert dns_attempt.strategy == "dns"
    assert dns_attempt.outcome in (Outcome.TIMED_OUT, Outcome.FAILED)
    assert "timed out" in dns_attempt.reason


def test_a_dead_nameserver_is_skipped_for_the_next_one(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    with DnsResponder(zone=ZONE) as dead:
        dead.drop(fqdn("web"), "A")
        dead.drop(fqdn("web"), "AAAA")
        strategy = DnsStrategy(
            [DnsTarget("127.0.0.1", dead.port), DnsTarget("127.0.0.1", server.port)]
        )
        # Each server gets an equal share of what is left (0.15 s for the dead one on
        # A, half the rest on AAAA), so the live one is still asked in time.
        res = resolve(strategy, query("web"), Deadline(0.3), driver)
    assert isinstance(res, kdisco.Resolution), res
    assert [ep.host for ep in res] == ["10.96.0.20"]
    assert dead.asked() == [fqdn("web"), fqdn("web")]


def test_servfail_from_one_nameserver_asks_the_next(server: DnsResponder, driver: Driver) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    with DnsResponder(zone=ZONE) as syncing:
        syncing.servfail(fqdn("web"), "A")
        strategy = DnsStrategy(
            [DnsTarget("127.0.0.1", syncing.port), DnsTarget("127.0.0.1", server.port)]
        )
        res = resolve(strategy, query("web", 80), Deadline(3.0), driver)
    assert isinstance(res, kdisco.Resolution), res
    assert res.endpoints == (Endpoint(host="10.96.0.20", port=80),)


def test_every_nameserver_failing_names_each_failure(server: DnsResponder, driver: Driver) -> None:
    server.servfail(fqdn("web"), "A")
    with DnsResponder(zone=ZONE) as other:
        other.set(fqdn("web"), "A", Entry(rcode=dns.rcode.REFUSED))
        strategy = DnsStrategy(
            [DnsTarget("127.0.0.1", server.port), DnsTarget("127.0.0.1", other.port)]
        )
        with pytest.raises(kdisco.TransientError) as info:
            resolve(strategy, query("web"), Deadline(3.0), driver)
    assert f"127.0.0.1:{server.port}: SERVFAIL" in str(info.value)
    assert f"127.0.0.1:{other.port}: REFUSED" in str(info.value)


def test_an_expired_deadline_sends_nothing(server: DnsResponder, driver: Driver) -> None:
    clock = FakeClock()
    deadline = Deadline(1.0, clock=clock)
    clock.now += 2.0
    with pytest.raises(kdisco.TransientError, match="no time left"):
        resolve(strategy_for(server), query("web"), deadline, driver)
    assert server.queries == []


def test_not_applicable_strategy_sends_nothing(server: DnsResponder, driver: Driver) -> None:
    strategy = DnsStrategy([DnsTarget("127.0.0.1", server.port)], not_applicable="outside")
    result = resolve(strategy, query("web", "http"), Deadline(3.0), driver)
    assert result == Miss(Outcome.NOT_APPLICABLE, "outside")
    assert server.queries == []


def test_include_not_ready_is_not_applicable_and_sends_nothing(
    server: DnsResponder, driver: Driver
) -> None:
    asked = parse_query(
        "web",
        namespace=None,
        default_namespace="default",
        cluster_domain=ZONE,
        include_not_ready=True,
    )
    result = resolve(strategy_for(server), asked, Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "publishes only ready endpoints" in result.reason
    assert server.queries == []


def test_strategy_without_nameservers_is_not_applicable(driver: Driver) -> None:
    result = resolve(DnsStrategy(), query("web"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "nameserver" in result.reason


def test_dns_strategy_meets_the_strategy_contract() -> None:
    assert isinstance(DnsStrategy(), Strategy)
    assert DnsStrategy().name == "dns"


# -- fully-qualified questions --------------------------------------------------------


def write_resolv_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    return path


def test_short_names_are_asked_fully_qualified_never_through_the_search_list(
    server: DnsResponder, tmp_path: Path
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20", ports=(("http", "tcp", 80),))
    discoverer = Discoverer(
        strategies=["dns"],
        environ={"KDISCO_DNS_SERVER": f"127.0.0.1:{server.port}", "KDISCO_NAMESPACE": "default"},
        resolv_conf=write_resolv_conf(tmp_path, POD_RESOLV_CONF),
        serviceaccount_dir=tmp_path,
    )
    discoverer.discover("web")
    discoverer.discover("web", port="http")
    # Exactly the FQDN: with ndots:5 a search walk would ask web.default.svc.cluster.local.
    # followed by search suffixes, or plain "web.".
    assert server.asked() == [fqdn("web"), fqdn("web"), srv_name("http", "tcp", "web")]


def test_custom_zone_from_resolv_conf_is_used_in_questions(
    server: DnsResponder, tmp_path: Path
) -> None:
    name = "web.team-a.svc.corp.example."
    server.answer(name, "A", rrset(name, "A", "10.100.0.5"))
    server.nodata(name, "AAAA")
    discoverer = Discoverer(
        strategies=["dns"],
        environ={"KDISCO_DNS_SERVER": f"127.0.0.1:{server.port}", "KDISCO_NAMESPACE": "team-a"},
        resolv_conf=write_resolv_conf(
            tmp_path,
            "search team-a.svc.corp.example svc.corp.example corp.example\n"
            "nameserver 10.100.0.10\noptions ndots:5\n",
        ),
        serviceaccount_dir=tmp_path,
    )
    assert discoverer.cluster_domain == "corp.example"
    res = discoverer.discover("web")
    assert [ep.host for ep in res] == ["10.100.0.5"]
    assert server.asked() == [name, name]


# -- detection from the environment ---------------------------------------------------


def dns_strategy_of(discoverer: Discoverer) -> DnsStrategy:
    (strategy,) = discoverer.strategies
    assert isinstance(strategy, DnsStrategy)
    return strategy


def is_applicable(strategy: DnsStrategy) -> bool:
    """Probe without I/O: an applicable strategy finds no time left on an expired
    deadline (and sends nothing); a not-applicable one says so before looking."""
    clock = FakeClock()
    expired = Deadline(0.0, clock=clock)
    try:
        result = strategy.lookup(query("web"), expired)
    except kdisco.TransientError:
        return True
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_APPLICABLE
    return False


def detect(tmp_path: Path, resolv: str | None, **environ: str) -> Discoverer:
    path = tmp_path / "resolv.conf"
    if resolv is not None:
        path.write_text(resolv)
    return Discoverer(
        strategies=["dns"],
        environ={"KDISCO_NAMESPACE": "default", **environ},
        resolv_conf=path,
        serviceaccount_dir=tmp_path,
    )


def test_pod_resolv_conf_makes_dns_applicable(tmp_path: Path) -> None:
    discoverer = detect(tmp_path, POD_RESOLV_CONF)
    strategy = dns_strategy_of(discoverer)
    assert strategy.nameservers == (DnsTarget("10.96.0.10", 53),)
    assert discoverer.cluster_domain == "cluster.local"
    assert is_applicable(strategy)


def test_custom_cluster_domain_is_detected(tmp_path: Path) -> None:
    discoverer = detect(
        tmp_path,
        "nameserver 10.0.0.10\nsearch prod.svc.k8s.example.org svc.k8s.example.org "
        "k8s.example.org us-east-1.compute.internal\noptions ndots:5\n",
    )
    assert discoverer.cluster_domain == "k8s.example.org"
    assert is_applicable(dns_strategy_of(discoverer))


def test_namespace_named_svc_does_not_confuse_domain_detection(tmp_path: Path) -> None:
    # BUG (kdisco/_config.py, ResolvConf.cluster_domain): "svc" is a valid namespace
    # name, and a pod in it gets "svc.svc.cluster.local" first in its search list. The
    # first "svc" label is taken as the marker, so the zone comes out as
    # "svc.cluster.local" and every question goes to <svc>.<ns>.svc.svc.cluster.local.
    discoverer = detect(
        tmp_path,
        "search svc.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n",
    )
    assert discoverer.cluster_domain == "cluster.local"


def test_kdisco_cluster_domain_overrides_resolv_conf(tmp_path: Path) -> None:
    discoverer = detect(tmp_path, POD_RESOLV_CONF, KDISCO_CLUSTER_DOMAIN="k8s.example.org")
    assert discoverer.cluster_domain == "k8s.example.org"


@pytest.mark.parametrize(
    "resolv",
    [
        pytest.param("nameserver 192.0.2.53\nsearch example.com corp.example\n", id="laptop"),
        pytest.param("nameserver 192.0.2.53\n", id="no-search"),
        pytest.param(None, id="no-resolv-conf"),
    ],
)
def test_outside_a_cluster_dns_is_not_applicable_at_once(
    tmp_path: Path, resolv: str | None, driver: Driver
) -> None:
    discoverer = detect(tmp_path, resolv)
    assert discoverer.cluster_domain == "cluster.local"
    strategy = dns_strategy_of(discoverer)
    assert not is_applicable(strategy)
    result = resolve(strategy, query("web"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert "not in a cluster" in result.reason


def test_pod_resolv_conf_without_nameserver_is_not_applicable(tmp_path: Path) -> None:
    discoverer = detect(tmp_path, "search default.svc.cluster.local svc.cluster.local\n")
    assert not is_applicable(dns_strategy_of(discoverer))


def test_ipv6_nameserver_in_resolv_conf(tmp_path: Path) -> None:
    discoverer = detect(
        tmp_path,
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver dns.example\nnameserver fd00:10:96::a\n",
    )
    # A nameserver that is not an IP literal is skipped, not fatal: the next one works.
    assert dns_strategy_of(discoverer).nameservers == (DnsTarget("fd00:10:96::a", 53),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5353", (DnsTarget("127.0.0.1", 5353),)),
        ("10.96.0.10", (DnsTarget("10.96.0.10", 53),)),
        ("[fd00:10:96::a]:5353", (DnsTarget("fd00:10:96::a", 5353),)),
        ("fd00:10:96::a", (DnsTarget("fd00:10:96::a", 53),)),
        (
            "10.96.0.10:53,[fd00::a]:1053",
            (DnsTarget("10.96.0.10", 53), DnsTarget("fd00::a", 1053)),
        ),
    ],
)
def test_kdisco_dns_server(tmp_path: Path, value: str, expected: tuple[DnsTarget, ...]) -> None:
    # Configured explicitly, DNS applies even without a cluster search domain.
    strategy = dns_strategy_of(detect(tmp_path, None, KDISCO_DNS_SERVER=value))
    assert strategy.nameservers == expected
    assert is_applicable(strategy)


def test_dns_server_argument_wins_over_the_environment(tmp_path: Path) -> None:
    discoverer = Discoverer(
        strategies=["dns"],
        dns_server="[::1]:5353",
        environ={"KDISCO_DNS_SERVER": "192.0.2.1:53", "KDISCO_NAMESPACE": "default"},
        resolv_conf=tmp_path / "missing",
        serviceaccount_dir=tmp_path,
    )
    assert dns_strategy_of(discoverer).nameservers == (DnsTarget("::1", 5353),)


@pytest.mark.parametrize(
    "value",
    [
        "dns.example.com:53",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:",
        "127.0.0.1:dns",
        "[fd00::a",
        "[fd00::a]53",
        "[fd00::a]:",
        "[not-an-ip]:53",
    ],
)
def test_malformed_kdisco_dns_server_is_a_configuration_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(kdisco.ConfigurationError, match="KDISCO_DNS_SERVER"):
        detect(tmp_path, POD_RESOLV_CONF, KDISCO_DNS_SERVER=value)


# -- A and AAAA in one round trip --------------------------------------------------


class TwoQuestionServer:
    """A UDP server that replies only once it holds two questions, then answers the
    second first, plus a forged reply from another port before the real ones.

    A client that waits for A before sending AAAA never gets an answer; one that
    matches replies by arrival order, or accepts a reply from anywhere, gets a
    wrong one.
    """

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses  # qtype -> address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held: list[tuple[dns.message.Message, tuple[str, int]]] = []
        try:
            while len(held) < 2:
                wire, peer = self.sock.recvfrom(65535)
                held.append((dns.message.from_wire(wire), peer))
        except OSError:
            return
        replies = []
        for request, peer in held:
            reply = dns.message.make_response(request)
            question = request.question[0]
            qtype = dns.rdatatype.to_text(question.rdtype)
            reply.answer.append(rrset(question.name.to_text(), qtype, self.addresses[qtype]))
            replies.append((reply, peer))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forged = dns.message.make_response(held[0][0])
            forged.answer.append(rrset(held[0][0].question[0].name.to_text(), "A", "192.0.2.66"))
            forger.sendto(forged.to_wire(), held[0][1])
        for reply, peer in reversed(replies):
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.sock.close()


def test_a_and_aaaa_are_sent_together_and_matched_to_their_replies(driver: Driver) -> None:
    server = TwoQuestionServer({"A": "10.96.0.20", "AAAA": "fd00:10:96::20"})
    try:
        strategy = DnsStrategy([DnsTarget("127.0.0.1", server.port)])
        res = resolve(strategy, query("web", 80), Deadline(2.0), driver)
    finally:
        server.close()
    assert isinstance(res, kdisco.Resolution), res
    # The forged 192.0.2.66 came from another port and was ignored.
    assert [ep.host for ep in res] == ["10.96.0.20", "fd00:10:96::20"]


def test_a_failure_of_aaaa_does_not_matter_when_a_is_nxdomain(
    server: DnsResponder, driver: Driver
) -> None:
    server.nxdomain(fqdn("ghost"), "A")
    server.servfail(fqdn("ghost"), "AAAA")
    result = resolve(strategy_for(server), query("ghost"), Deadline(3.0), driver)
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND


def test_a_failure_of_aaaa_is_transient_when_a_answered(
    server: DnsResponder, driver: Driver
) -> None:
    name = fqdn("web")
    server.answer(name, "A", rrset(name, "A", "10.96.0.20"))
    server.servfail(name, "AAAA")
    with pytest.raises(kdisco.TransientError, match=r"AAAA.*SERVFAIL"):
        resolve(strategy_for(server), query("web"), Deadline(3.0), driver)


def test_aaaa_failing_on_one_server_is_asked_of_the_next_alone(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20", ipv6="fd00:10:96::20")
    with DnsResponder(zone=ZONE) as first:
        first.answer(fqdn("web"), "A", rrset(fqdn("web"), "A", "10.96.0.20"))
        first.servfail(fqdn("web"), "AAAA")
        strategy = DnsStrategy(
            [DnsTarget("127.0.0.1", first.port), DnsTarget("127.0.0.1", server.port)]
        )
        res = resolve(strategy, query("web"), Deadline(3.0), driver)
    assert isinstance(res, kdisco.Resolution), res
    assert [ep.host for ep in res] == ["10.96.0.20", "fd00:10:96::20"]
    # A was answered by the first server, so only AAAA went on to the second.
    assert [q.qtype for q in server.queries] == ["AAAA"]


# -- replies that are no answer ---------------------------------------------------------


class ScriptedServer:
    """A UDP server that answers each query with the datagrams ``script(query)`` makes."""

    def __init__(self, script: Callable[[dns.message.Message], list[bytes]]) -> None:
        self.script = script
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(65535)
            except OSError:
                continue
            for datagram in self.script(dns.message.from_wire(wire)):
                self.sock.sendto(datagram, peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def reply_with(request: dns.message.Message, address: str) -> bytes:
    reply = dns.message.make_response(request)
    question = request.question[0]
    qtype = dns.rdatatype.to_text(question.rdtype)
    if qtype in ("A", "AAAA"):
        ip = address if qtype == "A" else f"fd00::{address.rsplit('.', 1)[1]}"
        reply.answer.append(rrset(question.name.to_text(), qtype, ip))
    return reply.to_wire()


def test_replies_with_another_id_or_question_are_ignored(driver: Driver) -> None:
    def script(request: dns.message.Message) -> list[bytes]:
        wrong_id = bytearray(reply_with(request, "192.0.2.66"))
        wrong_id[1] ^= 0xFF
        other = dns.message.make_query("other.example.", request.question[0].rdtype)
        other.id = request.id  # the right id, for another question
        return [bytes(wrong_id), reply_with(other, "192.0.2.67"), reply_with(request, "10.96.0.20")]

    server = ScriptedServer(script)
    try:
        strategy = DnsStrategy([DnsTarget("127.0.0.1", server.port)])
        res = resolve(strategy, query("web"), Deadline(2.0), driver)
    finally:
        server.close()
    assert isinstance(res, kdisco.Resolution), res
    assert [ep.host for ep in res] == ["10.96.0.20", "fd00::20"]


def test_a_malformed_reply_is_a_failure_of_that_server(
    server: DnsResponder, driver: Driver
) -> None:
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    # Bytes behind the query's id that are no DNS message.
    junk = b"\x81\x80 that is no DNS message"
    garbage = ScriptedServer(lambda request: [request.id.to_bytes(2, "big") + junk])
    try:
        alone = DnsStrategy([DnsTarget("127.0.0.1", garbage.port)])
        malformed = f"127.0.0.1:{garbage.port}: FormError: DNS message is malformed"
        with pytest.raises(kdisco.TransientError, match=malformed):
            resolve(alone, query("web"), Deadline(2.0), driver)
        # ... so the next server is asked.
        both = DnsStrategy(
            [DnsTarget("127.0.0.1", garbage.port), DnsTarget("127.0.0.1", server.port)]
        )
        res = resolve(both, query("web"), Deadline(2.0), driver)
    finally:
        garbage.close()
    assert isinstance(res, kdisco.Resolution), res
    assert [ep.host for ep in res] == ["10.96.0.20"]


def test_backends_only_from_records_that_are_pods(server: DnsResponder, driver: Driver) -> None:
    # backends=True wants pods: a headless Service's records are; one address could be
    # a ClusterIP's virtual IP, so DNS leaves the question to the api strategy.
    add_cluster_ip(server, "web", ipv4="10.96.0.20")
    add_headless(server, "db", {"db-0": "10.1.0.5", "db-1": "10.1.0.6"})
    strategy = strategy_for(server)
    web = attrs.evolve(query("web", 80), backends=True)
    db = attrs.evolve(query("db", 5432), backends=True)
    refused = resolve(strategy, web, Deadline(3.0), driver)
    assert isinstance(refused, Miss)
    assert refused.outcome is Outcome.NOT_APPLICABLE
    assert "not its pods" in refused.reason
    pods = resolve(strategy, db, Deadline(3.0), driver)
    assert isinstance(pods, Resolution)
    assert sorted(ep.host for ep in pods) == ["10.1.0.5", "10.1.0.6"]
