"""Public value types are plain values: equality, hashing, pickle and copy see data only.

A ``Resolution`` travels: into multiprocessing pools, caches such as Redis, a test's
snapshot. Whatever strategy made it, it must pickle, and come back equal.
"""

from __future__ import annotations

import copy
import pickle

import attrs
import pytest

import kdisco
from kdisco import (
    Attempt,
    CachePolicy,
    Deadline,
    Discoverer,
    Endpoint,
    Freshness,
    Outcome,
    Resolution,
    RetryPolicy,
    ServiceKind,
    ServicePort,
    ServiceRef,
    WatchCachePolicy,
)
from kdisco._names import parse_query
from kdisco._settings import DnsTarget
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.dns import DnsStrategy
from kdisco._strategies.env import EnvStrategy
from kdisco.testing import FakeResolver
from tests._dnsserver import DnsResponder, rrset
from tests._helpers_api import (
    FakeApiServer,
    FakeNamespace,
    client_for,
    eps_slice,
    svc,
)

from ._helpers_env import Port, Service, pod_environ

REF = ServiceRef(name="web", namespace="shop")
ENDPOINT = Endpoint(host="192.0.2.1", port=80, hostname="web-0", pod="web-0", zone="z1")
PORT = ServicePort(port=80, name="http", app_protocol="http")
ATTEMPT = Attempt(strategy="dns", outcome=Outcome.NOT_FOUND, reason="NXDOMAIN")


def resolution(**kw: object) -> Resolution:
    fields: dict[str, object] = {
        "service": REF,
        "kind": ServiceKind.HEADLESS,
        "endpoints": (ENDPOINT,),
        "source": "api",
        "ports": (PORT,),
        "port": PORT,
        "attempts": (ATTEMPT,),
        "via": (ServiceRef(name="alias", namespace="shop"),),
        "ttl": 5.0,
    }
    fields.update(kw)
    return Resolution(**fields)  # type: ignore[arg-type]


VALUES = [
    REF,
    ENDPOINT,
    PORT,
    ATTEMPT,
    Outcome.DENIED,
    ServiceKind.NODE_PORT,
    CachePolicy(max_ttl=10),
    WatchCachePolicy(page_size=7),
    resolution(),
    kdisco.Miss(Outcome.NOT_FOUND, "no"),
    kdisco.Query(service=REF, port="http"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_pickle_and_copy_round_trip(value: object) -> None:
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value


def test_retry_policy_pickles_with_its_default_callables() -> None:
    assert pickle.loads(pickle.dumps(RetryPolicy(initial=0.1))) == RetryPolicy(initial=0.1)


def test_equality_and_hash_ignore_freshness() -> None:
    checks: list[bool] = [True]
    a = resolution(freshness=Freshness(clock=lambda: 5.0, fetched_at=1.0))
    b = resolution(freshness=Freshness(valid=lambda: checks[0], fetched_at=9.0))
    assert a == b
    assert hash(a) == hash(b)
    assert "freshness" not in repr(a).lower()
    assert {a, b} == {a}


def test_a_pickled_answer_keeps_its_age_but_not_its_live_checks() -> None:
    now = [100.0]
    res = resolution(
        freshness=Freshness(clock=lambda: now[0], fetched_at=90.0, valid=lambda: False)
    )
    assert res.age == 10.0
    back = pickle.loads(pickle.dumps(res))
    assert back == res
    assert back.freshness is not None
    assert back.freshness.valid is None  # nothing in this process vouches for it
    assert 10.0 <= back.age < 11.0  # the age goes on counting on the local clock


def test_errors_pickle_with_their_attempts() -> None:
    err = kdisco.ServiceNotFound("gone", service=REF, attempts=(ATTEMPT,))
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back)) == (kdisco.ServiceNotFound, str(err))


# -- a Resolution from every strategy pickles --------------------------------------------


def roundtrip(res: Resolution) -> None:
    back = pickle.loads(pickle.dumps(res))
    assert back == res
    assert copy.deepcopy(res) == res
    assert attrs.evolve(back, stale=True) != res


def test_from_the_fake_resolver_and_the_static_strategy() -> None:
    fake = FakeResolver({"web": {"endpoints": ["192.0.2.1"], "ports": {"http": 80}}})
    with Discoverer(strategies=[fake], environ={}) as d:
        res = d.discover("web")
    assert res.freshness is not None
    assert res.freshness.valid is not None  # a live check, which must not travel
    roundtrip(res)
    with Discoverer(strategies=["static"], static={"db": ["192.0.2.9:5432"]}, environ={}) as d:
        roundtrip(d.discover("db"))


def test_from_the_env_strategy() -> None:
    environ = pod_environ(Service("web", "10.96.0.10", (Port(80, "http"),)))
    strategy = EnvStrategy(environ, namespace="default")
    q = parse_query("web", namespace=None, default_namespace="default", cluster_domain="c.l")
    res = strategy.lookup(q, Deadline(1.0))
    assert isinstance(res, Resolution)
    roundtrip(res)


def test_from_the_dns_strategy() -> None:
    with DnsResponder(zone="cluster.local") as server:
        name = "web.default.svc.cluster.local."
        server.answer(name, "A", rrset(name, "A", "10.96.0.10"))
        server.nodata(name, "AAAA")
        strategy = DnsStrategy([DnsTarget("127.0.0.1", server.port)])
        with Discoverer(strategies=[strategy], environ={}) as d:
            roundtrip(d.discover("web"))


@pytest.fixture
def api_namespace(server: FakeApiServer) -> FakeNamespace:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    return ns


@pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
def test_from_the_api_strategy(api_namespace: FakeNamespace, watch: bool) -> None:
    url = api_namespace.server.url
    strategy = ApiStrategy(client_factory=lambda: client_for(url), watch=watch)
    with Discoverer(strategies=[strategy], namespace="billing", environ={}) as d:
        res = d.discover("db")
        assert {ep.host for ep in res} == {"192.0.2.1", "192.0.2.2"}
        roundtrip(res)


def test_url_never_names_no_port_for_a_scheme_without_a_default() -> None:
    # A DNS answer asked without a port name knows no port: "tcp://10.96.179.46" is
    # rejected by HTTP clients (issue 9), so no such URL is made.
    svc = ServiceRef(name="payments", namespace="billing")
    res = Resolution(
        service=svc,
        kind=ServiceKind.CLUSTER_IP,
        endpoints=(Endpoint(host="10.96.179.46", port=None),),
        source="dns",
    )
    with pytest.raises(kdisco.PortNotFound, match="no port is known"):
        res.url()
    with pytest.raises(kdisco.PortNotFound):
        res.url("grpc")
    assert res.url("http") == "http://10.96.179.46"
    assert res.url("https") == "https://10.96.179.46"
    with_port = attrs.evolve(res, endpoints=(Endpoint(host="10.96.179.46", port=5432),))
    assert with_port.url() == "tcp://10.96.179.46:5432"
