"""``kdisco.testing`` and the ``kdisco_fake`` pytest fixture, as users meet them.

docs/testing.md is itself doctested (pytest collects docs/*.md); here are the parts a
doctest cannot show: the fixture, its pytest entry point, and clean-up after a test.
"""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import attrs
import dns.rrset
import pytest

import kdisco
from kdisco import Deadline, Discoverer, Endpoint, Miss, Outcome, Resolution
from kdisco._discoverer import _override, get_default_discoverer
from kdisco._names import Query, parse_query
from kdisco._settings import DnsTarget
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.dns import DnsStrategy
from kdisco._strategies.env import EnvStrategy
from kdisco.testing import FakeResolver, override
from tests._dnsserver import DnsResponder, rrset
from tests._helpers_api import client_for, fake_apiserver
from tests._helpers_env import Port as EnvPort
from tests._helpers_env import Service as EnvService
from tests._helpers_env import pod_environ

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def hermetic(*strategies: object) -> Discoverer:
    return Discoverer(
        strategies=list(strategies),  # type: ignore[arg-type]
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )


# -- FakeResolver ------------------------------------------------------------------------


def test_fake_resolver_answers_from_its_mapping() -> None:
    fake = FakeResolver({"payments": ["192.0.2.10:5432", "[2001:db8::1]:443"]})
    res = hermetic(fake).discover("payments")
    assert res.source == "fake"
    assert res.endpoints == (
        Endpoint(host="192.0.2.10", port=5432),
        Endpoint(host="2001:db8::1", port=443),
    )


def test_fake_resolver_is_a_strategy() -> None:
    fake = FakeResolver(name="mine")
    assert isinstance(fake, kdisco.Strategy)
    assert fake.name == "mine"
    assert FakeResolver().name == "fake"


def test_add_replace_remove() -> None:
    fake = FakeResolver({"db": ["192.0.2.1:5432"]})
    d = hermetic(fake)
    fake.add("db", ["192.0.2.2:5432"])  # replaces
    fake.add("cache.team", ["192.0.2.3:6379"])
    assert d.discover("db").first().host == "192.0.2.2"
    assert d.discover("cache.team").first().host == "192.0.2.3"
    fake.remove("db")
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("db")
    fake.remove("db")  # forgetting what is not there is fine: teardown code stays simple


def test_add_validates_like_the_constructor() -> None:
    fake = FakeResolver()
    with pytest.raises(kdisco.ConfigurationError, match="static entry 'db'"):
        fake.add("db", ["192.0.2.1:0"])
    with pytest.raises(kdisco.ConfigurationError, match="static key 'bad_name'"):
        fake.add("bad_name", ["192.0.2.1:1"])
    assert isinstance(fake.lookup(_query("db"), Deadline(1.0)), Miss)  # nothing half-added


def _query(name: str) -> Query:
    from kdisco._names import parse_query

    return parse_query(name, namespace=None, default_namespace="default", cluster_domain="c")


def test_fake_in_a_chain_falls_through_to_the_next_strategy() -> None:
    first = FakeResolver({"db": ["192.0.2.1:5432"]}, name="first")
    second = FakeResolver({"cache": ["192.0.2.2:6379"]}, name="second")
    d = hermetic(first, second)
    assert d.discover("db").source == "first"
    res = d.discover("cache")
    assert res.source == "second"
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("first", Outcome.NOT_FOUND)]


def test_fake_in_front_of_the_env_strategy() -> None:
    pod_env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "POD_NAMESPACE": "shop",
        "PAYMENTS_SERVICE_HOST": "10.96.0.12",
        "PAYMENTS_SERVICE_PORT": "5432",
    }
    d = Discoverer(
        strategies=[FakeResolver({"cache": ["127.0.0.1:6379"]}), "env"],
        namespace="shop",
        environ=pod_env,
        resolv_conf="/nonexistent",
    )
    assert (d.discover("cache").source, d.discover("payments").source) == ("fake", "env")
    assert d.discover("payments").first().address == "10.96.0.12:5432"


# -- override ----------------------------------------------------------------------------


def test_override_makes_module_discover_use_the_fake() -> None:
    fake = FakeResolver({"payments": ["192.0.2.10:5432"]})
    with override(fake) as d:
        assert get_default_discoverer() is d
        assert [s.name for s in d.strategies] == ["fake"]
        res = kdisco.discover("payments")
        assert (res.source, res.first().address) == ("fake", "192.0.2.10:5432")
        assert res.service.namespace == "default"
    assert _override.get() is None


def test_override_is_hermetic_even_with_kdisco_variables_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Settings meant for the real app must not leak into a faked test.
    static = tmp_path / "static.toml"
    static.write_text('[services]\npayments = ["192.0.2.99:1"]\n')
    monkeypatch.setenv("KDISCO_STATIC", str(static))
    monkeypatch.setenv("KDISCO_NAMESPACE", "prod")
    monkeypatch.setenv("KDISCO_CLUSTER_DOMAIN", "corp.example")
    with override(FakeResolver({"payments": ["192.0.2.10:5432"]})) as d:
        res = kdisco.discover("payments")
    assert res.first().host == "192.0.2.10"
    assert res.service.fqdn == "payments.default.svc.cluster.local."
    assert d.namespace == "default"


def test_override_namespace_and_timeout() -> None:
    fake = FakeResolver({"db.billing": ["192.0.2.1:5432"]})
    with override(fake, namespace="billing", timeout=0.5) as d:
        assert kdisco.discover("db").first().host == "192.0.2.1"
        assert d.timeout == 0.5


def test_overrides_nest_and_unwind_on_error() -> None:
    outer = FakeResolver({"api": ["192.0.2.1:80"]})
    inner = FakeResolver({"api": ["192.0.2.2:80"]})
    seen: list[str] = []

    def failing_test_body() -> None:
        with override(inner):
            seen.append(kdisco.discover("api").first().host)
            raise RuntimeError("the test failed inside the block")

    with override(outer):
        with pytest.raises(RuntimeError):
            failing_test_body()
        seen.append(kdisco.discover("api").first().host)
    assert seen == ["192.0.2.2", "192.0.2.1"]
    assert _override.get() is None


def test_overrides_in_concurrent_threads_do_not_see_each_other() -> None:
    # Two tests running at once in threads (pytest-xdist's thread mode, or a test
    # that fans out) each see their own fake, never the other's.
    barrier = threading.Barrier(2, timeout=5)
    seen: dict[str, str] = {}

    def body(name: str, address: str) -> None:
        with override(FakeResolver({"api": [f"{address}:80"]})):
            barrier.wait()  # both overrides are active now
            seen[name] = kdisco.discover("api").first().host
            barrier.wait()

    threads = [
        threading.Thread(target=body, args=("one", "192.0.2.1")),
        threading.Thread(target=body, args=("two", "192.0.2.2")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert seen == {"one": "192.0.2.1", "two": "192.0.2.2"}
    assert _override.get() is None


def test_overrides_in_concurrent_asyncio_tasks_do_not_see_each_other() -> None:
    async def body(address: str, started: asyncio.Event, other: asyncio.Event) -> str:
        with override(FakeResolver({"api": [f"{address}:80"]})):
            started.set()
            await other.wait()  # the other task's override is active now too
            return kdisco.discover("api").first().host

    async def main() -> list[str]:
        a, b = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(body("192.0.2.1", a, b), body("192.0.2.2", b, a)))

    assert asyncio.run(main()) == ["192.0.2.1", "192.0.2.2"]


def test_override_accepts_any_strategy() -> None:
    class Fixed:
        name = "fixed"

        def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
            return Resolution(
                service=query.service,
                kind=kdisco.ServiceKind.CLUSTER_IP,
                endpoints=(Endpoint(host="192.0.2.77", port=1),),
                source=self.name,
            )

    with override(Fixed()):
        assert kdisco.discover("anything").source == "fixed"


def test_unknown_service_under_override_says_what_was_tried() -> None:
    with override(FakeResolver()), pytest.raises(kdisco.ServiceNotFound) as info:
        kdisco.discover("orders")
    assert [(a.strategy, a.outcome, a.reason) for a in info.value.attempts] == [
        ("fake", Outcome.NOT_FOUND, "no static entry for orders.default")
    ]


# -- the pytest fixture ------------------------------------------------------------------


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "kdisco"]
    assert [ep.value for ep in eps] == ["kdisco._pytest_plugin"]
    module = eps[0].load()
    assert hasattr(module, "kdisco_fake")


def test_plugin_is_loaded_in_this_session(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("kdisco")
    assert plugin is not None
    assert plugin.__name__ == "kdisco._pytest_plugin"


def test_fixture_directly(kdisco_fake: FakeResolver) -> None:
    assert isinstance(kdisco_fake, FakeResolver)
    with pytest.raises(kdisco.ServiceNotFound):
        kdisco.discover("search.shop")  # starts empty
    kdisco_fake.add("search.shop", {"endpoints": ["192.0.2.30"], "ports": {"http": 9200}})
    assert kdisco.discover("search.shop", port="http").url() == "http://192.0.2.30:9200"
    assert get_default_discoverer().strategies == (kdisco_fake,)


def test_fixture_override_ends_with_the_test(kdisco_fake: FakeResolver) -> None:
    # The fixture's override is the one active during the test...
    assert get_default_discoverer().strategies == (kdisco_fake,)
    # ...and a Service added by the test above is not here: each test gets a fresh fake.
    with pytest.raises(kdisco.ServiceNotFound):
        kdisco.discover("search.shop")


#: pytest-asyncio (a test dependency) warns in any project that does not set this.
ASYNC_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def _doc_blocks(title: str, having: str | None = None) -> dict[str, str]:
    """The files of the (first, or the first ``having`` that file) ```python block
    under ``title`` in docs/testing.md, split on their ``# <filename>`` header comments."""
    text = DOCS.read_text()
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        names = re.findall(r"^# (\S+\.py)\n", block, flags=re.MULTILINE)
        if names and (having is None or having in names):
            bodies = re.split(r"^# \S+\.py\n", block, flags=re.MULTILINE)[1:]
            return dict(zip(names, bodies, strict=True))
    raise AssertionError(f"no block of files under {title!r}")


def test_the_fixture_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("The `kdisco_fake` pytest fixture")
    assert sorted(files) == ["app.py", "test_app.py"]
    for name, body in files.items():
        pytester.makepyfile(**{name.removesuffix(".py"): body})
    pytester.makeini(ASYNC_INI)
    # The inner run finds the fixture only through the pytest11 entry point: no
    # conftest, no -p option.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_fixture_example_would_catch_a_wrong_url(pytester: pytest.Pytester) -> None:
    # The control for the test above: the same example fails when the code is wrong.
    files = _doc_blocks("The `kdisco_fake` pytest fixture")
    pytester.makepyfile(
        app=files["app.py"].replace('port="http").url()', 'port="http").url("https")'),
        test_app=files["test_app.py"],
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)


def test_the_async_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("Async code")
    assert sorted(files) == ["async_app.py", "test_async_app.py"]
    for name, body in files.items():
        pytester.makepyfile(**{name.removesuffix(".py"): body})
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_async_example_would_catch_a_wrong_url(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("Async code")
    pytester.makepyfile(
        async_app=files["async_app.py"].replace(
            'port="http")).url()', 'port="http")).url("https")'
        ),
        test_async_app=files["test_async_app.py"],
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)


def test_fixture_in_a_fresh_project_without_kdisco_imports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bare=textwrap.dedent(
            """
            def test_it(kdisco_fake):
                kdisco_fake.add("db", ["192.0.2.1:5432"])
                import kdisco
                assert kdisco.discover("db").first().address == "192.0.2.1:5432"
            """
        )
    )
    pytester.makeini(ASYNC_INI)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- modes: the fake answers as the source it stands for ---------------------------------
#
# Each scenario is one Service, written twice: as a FakeResolver entry, and as what
# the cluster publishes for it (CoreDNS's records on tests/_dnsserver.py, the kubelet's
# variables from tests/_helpers_env.py, the Service and EndpointSlice JSON on
# tests/_helpers_api.py's server). The fake in mode X must answer every question as the
# real strategy X does from the published form.


@attrs.frozen
class Svc:
    """A Service as the cluster has it: its ClusterIPs (none: headless), its ports
    (name or None, number) and its pods (an endpoint's own port is its target port)."""

    name: str
    cluster_ips: tuple[str, ...]
    ports: tuple[tuple[str | None, int], ...]
    pods: tuple[Endpoint, ...]

    def target(self, pod: Endpoint, number: int) -> int:
        return pod.port or number


def ep(host: str, **fields: Any) -> Endpoint:
    return Endpoint(host=host, **fields)


#: (fake entry, the Service it stands for)
SCENARIOS: dict[str, tuple[object, Svc]] = {
    # The issue's case: a list of one address is a ClusterIP Service at that address.
    "payments": (
        ["10.96.0.12:5432"],
        Svc("payments", ("10.96.0.12",), ((None, 5432),), (ep("10.96.0.12", port=5432),)),
    ),
    "web": (
        {
            "cluster_ip": "10.96.0.20",
            "ports": {"http": 80, "grpc": 9090},
            "endpoints": ["10.1.0.5", ep("10.1.0.6", ready=False, serving=False)],
        },
        Svc(
            "web",
            ("10.96.0.20",),
            (("http", 80), ("grpc", 9090)),
            (ep("10.1.0.5"), ep("10.1.0.6", ready=False, serving=False)),
        ),
    ),
    "web-down": (
        {
            "cluster_ip": "10.96.0.21",
            "ports": {"http": 80},
            "endpoints": [ep("10.1.0.7", ready=False)],
        },
        Svc("web-down", ("10.96.0.21",), (("http", 80),), (ep("10.1.0.7", ready=False),)),
    ),
    # Nothing ready, nothing serving (terminating) either.
    "web-gone": (
        {
            "cluster_ip": "10.96.0.23",
            "ports": {"http": 80},
            "endpoints": [ep("10.1.0.8", ready=False, serving=False, terminating=True)],
        },
        Svc(
            "web-gone",
            ("10.96.0.23",),
            (("http", 80),),
            (ep("10.1.0.8", ready=False, serving=False, terminating=True),),
        ),
    ),
    "no-pods": (
        {"cluster_ip": "10.96.0.22", "ports": {"http": 80}},
        Svc("no-pods", ("10.96.0.22",), (("http", 80),), ()),
    ),
    "dual": (
        {
            "cluster_ip": ["10.96.0.30", "fd00:10:96::30"],
            "ports": {"https": 443},
            "endpoints": ["10.1.0.9"],
        },
        Svc("dual", ("10.96.0.30", "fd00:10:96::30"), (("https", 443),), (ep("10.1.0.9"),)),
    ),
    "db": (
        {
            "headless": True,
            "ports": {"postgres": 5432},
            "endpoints": [
                ep("10.1.1.5", hostname="db-0", pod="db-0", zone="zone-a"),
                ep("10.1.1.6", hostname="db-1", pod="db-1"),
                ep("10.1.1.7", hostname="db-2", ready=False, serving=False),
            ],
        },
        Svc(
            "db",
            (),
            (("postgres", 5432),),
            (
                ep("10.1.1.5", hostname="db-0", pod="db-0", zone="zone-a"),
                ep("10.1.1.6", hostname="db-1", pod="db-1"),
                ep("10.1.1.7", hostname="db-2", ready=False, serving=False),
            ),
        ),
    ),
    "db-down": (
        {"headless": True, "ports": {"postgres": 5432}, "endpoints": [ep("10.1.1.8", ready=False)]},
        Svc("db-down", (), (("postgres", 5432),), (ep("10.1.1.8", ready=False),)),
    ),
    # One pod with its own target port and no hostname (CoreDNS names it by its IP).
    "grpc": (
        {"headless": True, "ports": {"grpc": 9000}, "endpoints": ["10.1.2.9:9001"]},
        Svc("grpc", (), (("grpc", 9000),), (ep("10.1.2.9", port=9001),)),
    ),
}

#: Every question asked of every scenario: (port, include_not_ready, backends).
QUESTIONS: list[tuple[int | str | None, bool, bool]] = [
    (None, False, False),
    ("http", False, False),
    ("grpc", False, False),
    ("postgres", False, False),
    ("https", False, False),
    ("nope", False, False),
    (80, False, False),
    (5432, False, False),
    (7777, False, False),
    (None, True, False),
    (None, False, True),
    ("postgres", False, True),
]


def ask(
    name: str,
    port: int | str | None,
    include_not_ready: bool,
    backends: bool,
    namespace: str = "default",
) -> Query:
    q = parse_query(
        name, namespace=namespace, default_namespace="default", cluster_domain="cluster.local"
    )
    return attrs.evolve(q, port=port, include_not_ready=include_not_ready, backends=backends)


def same_answer(fake: Resolution | Miss, real: Resolution | Miss, *, order: bool = True) -> bool:
    """Misses by their outcome (the fake words its reasons itself); answers by every
    field but the TTL (the fake's answers hold until the map changes)."""
    if isinstance(fake, Miss) or isinstance(real, Miss):
        return isinstance(fake, Miss) and isinstance(real, Miss) and fake.outcome == real.outcome

    def norm(res: Resolution) -> Resolution:
        eps = res.endpoints if order else tuple(sorted(res.endpoints, key=repr))
        return attrs.evolve(res, ttl=None, endpoints=eps)

    return norm(fake) == norm(real)


def publish_dns(server: DnsResponder, svc: Svc) -> None:
    """What CoreDNS's kubernetes plugin serves for ``svc`` (FACTS.md §1, §8)."""
    name = f"{svc.name}.default.svc.cluster.local."

    def addresses(owner: str, hosts: list[str]) -> list[dns.rrset.RRset]:
        found = []
        for qtype, family in (("A", False), ("AAAA", True)):
            of_family = [h for h in hosts if (":" in h) == family]
            if of_family:
                found.append(rrset(owner, qtype, *of_family))
                server.answer(owner, qtype, found[-1])
            else:
                server.nodata(owner, qtype)
        return found

    if svc.cluster_ips:
        glue = addresses(name, list(svc.cluster_ips))
        # SRV on the bare name: one record per declared port, named or not.
        if svc.ports:
            server.answer(
                name, "SRV", rrset(name, "SRV", *(f"0 100 {n} {name}" for _, n in svc.ports))
            )
        for port_name, number in svc.ports:
            if port_name:
                srv = f"_{port_name}._tcp.{name}"
                server.answer(
                    srv, "SRV", rrset(srv, "SRV", f"0 100 {number} {name}"), additional=glue
                )
        return
    ready = [p for p in svc.pods if p.ready]
    if not ready:
        return  # no records at all: NXDOMAIN
    addresses(name, [p.host for p in ready])
    targets = {p.host: f"{p.hostname or p.host.replace('.', '-')}.{name}" for p in ready}
    for host, target in targets.items():
        addresses(target, [host])
    bare = [f"0 50 {svc.target(p, n)} {targets[p.host]}" for p in ready for _, n in svc.ports]
    if bare:
        server.answer(name, "SRV", rrset(name, "SRV", *bare))
    for port_name, number in svc.ports:
        if port_name:
            srv = f"_{port_name}._tcp.{name}"
            records = [f"0 50 {svc.target(p, number)} {targets[p.host]}" for p in ready]
            glue = [rrset(targets[p.host], "A", p.host) for p in ready]
            server.answer(srv, "SRV", rrset(srv, "SRV", *records), additional=glue)


def service_json(svc: Svc) -> dict[str, Any]:
    return {
        "metadata": {"name": svc.name, "namespace": "default"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": svc.cluster_ips[0] if svc.cluster_ips else "None",
            "clusterIPs": list(svc.cluster_ips) or ["None"],
            "ports": [
                {"port": n, "protocol": "TCP", **({"name": pn} if pn else {})}
                for pn, n in svc.ports
            ],
        },
    }


def slices_json(svc: Svc) -> dict[str, Any]:
    """The EndpointSlice controller's slices: one per address family and target port."""
    groups: dict[tuple[str, int | None], list[Endpoint]] = {}
    for pod in svc.pods:
        groups.setdefault(("IPv6" if ":" in pod.host else "IPv4", pod.port), []).append(pod)
    items = []
    for i, ((family, own), pods) in enumerate(groups.items()):
        endpoints = []
        for p in pods:
            raw: dict[str, Any] = {
                "addresses": [p.host],
                "conditions": {
                    "ready": p.ready,
                    "serving": p.serving,
                    "terminating": p.terminating,
                },
            }
            if p.hostname:
                raw["hostname"] = p.hostname
            if p.pod:
                raw["targetRef"] = {"kind": "Pod", "name": p.pod}
            if p.zone:
                raw["zone"] = p.zone
            endpoints.append(raw)
        items.append(
            {
                "metadata": {
                    "name": f"{svc.name}-{i}",
                    "labels": {"kubernetes.io/service-name": svc.name},
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": [{"name": pn or "", "port": own or n} for pn, n in svc.ports],
            }
        )
    return {"metadata": {"resourceVersion": "1"}, "items": items}


def fake_for(mode: str, scenario: str) -> FakeResolver:
    return FakeResolver({scenario: SCENARIOS[scenario][0]}, mode=mode)  # type: ignore[dict-item]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_mode_dns_answers_as_the_dns_strategy(scenario: str) -> None:
    svc = SCENARIOS[scenario][1]
    fake = fake_for("dns", scenario)
    with DnsResponder(zone="cluster.local") as server:
        publish_dns(server, svc)
        real = DnsStrategy([DnsTarget("127.0.0.1", server.port)])
        for question in [*QUESTIONS, (None, False, False)]:
            q = ask(svc.name, *question)
            got, want = fake.lookup(q, Deadline(3.0)), real.lookup(q, Deadline(3.0))
            # SRV answers come in RFC 2782 order (random by weight): compare as sets.
            assert same_answer(got, want, order=False), (question, got, want)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_mode_env_answers_as_the_env_strategy(scenario: str) -> None:
    svc = SCENARIOS[scenario][1]
    fake = fake_for("env", scenario)
    service = EnvService(
        svc.name,
        svc.cluster_ips[0] if svc.cluster_ips else "None",
        tuple(EnvPort(n, pn or "") for pn, n in svc.ports),
    )
    real = EnvStrategy(
        pod_environ(service, extra=[("POD_NAMESPACE", "default")]), namespace="default"
    )
    for question in QUESTIONS:
        q = ask(svc.name, *question)
        got, want = fake.lookup(q, Deadline(3.0)), real.lookup(q, Deadline(3.0))
        assert same_answer(got, want), (question, got, want)
    # The variables are the pod's namespace's only.
    other = attrs.evolve(q, service=kdisco.ServiceRef(name=svc.name, namespace="shop"))
    assert same_answer(fake.lookup(other, Deadline(3.0)), real.lookup(other, Deadline(3.0)))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_mode_api_answers_as_the_api_strategy(scenario: str) -> None:
    svc = SCENARIOS[scenario][1]
    fake = fake_for("api", scenario)
    with fake_apiserver() as server:
        server.serve_service(service_json(svc))
        server.serve_slices("default", svc.name, slices_json(svc))
        real = ApiStrategy(client_factory=lambda: client_for(server.url))
        try:
            for question in QUESTIONS:
                q = ask(svc.name, *question)
                got, want = fake.lookup(q, Deadline(3.0)), real.lookup(q, Deadline(3.0))
                assert same_answer(got, want), (question, got, want)
        finally:
            real.close()


#: The entries a test writer would write for Services the lab's kube-apiserver served
#: (lab/record.py made them; tests/data/api/recorded holds its raw responses).
RECORDED_ENTRIES: dict[str, object] = {
    "web": {
        "cluster_ip": "10.96.77.10",
        "ports": {"http": 80},
        "endpoints": [ep("192.0.2.70", port=8080, pod="web-0")],
    },
    "idle": {
        "cluster_ip": "10.96.77.17",
        "ports": {"http": 80},
        "endpoints": [ep("192.0.2.77", port=8080, ready=False, serving=False, pod="idle-0")],
    },
    "empty": {"headless": True, "ports": {"http": 80}},
    "no-slices": {"headless": True, "ports": {"http": 80}},
    "dual": {
        "cluster_ip": ["10.96.77.13", "fd00:10:96::4d0d"],
        "endpoints": [ep("192.0.2.73", port=8443, pod="dual-0")],
    },
    "dual-v6-first": {
        "cluster_ip": ["fd00:10:96::4d0e", "10.96.77.14"],
        "ports": {"https": 443},
        "endpoints": [ep("192.0.2.74", port=8443, pod="dual-v6-first-0")],
    },
}


@pytest.mark.parametrize("name", sorted(RECORDED_ENTRIES))
def test_mode_api_answers_as_the_api_strategy_on_recorded_responses(name: str) -> None:
    recorded = Path(__file__).parent / "data" / "api" / "recorded"
    service = json.loads((recorded / f"service-{name}.json").read_text())
    slices = json.loads((recorded / f"endpointslices-{name}.json").read_text())
    namespace = service["metadata"]["namespace"]
    fake = FakeResolver({f"{name}.{namespace}": RECORDED_ENTRIES[name]}, mode="api")  # type: ignore[dict-item]
    with fake_apiserver() as server:
        server.serve_service(service)
        server.serve_slices(namespace, name, slices)
        real = ApiStrategy(client_factory=lambda: client_for(server.url))
        try:
            for question in QUESTIONS:
                q = ask(name, *question, namespace=namespace)
                got, want = fake.lookup(q, Deadline(3.0)), real.lookup(q, Deadline(3.0))
                assert same_answer(got, want), (question, got, want)
        finally:
            real.close()


@pytest.mark.parametrize("mode", ["dns", "env", "api"])
def test_a_name_not_in_the_map_is_missed_as_the_source_would(mode: str) -> None:
    fake = FakeResolver({"web": ["10.96.0.20:80"]}, mode=mode)
    result = fake.lookup(_query("ghost"), Deadline(1.0))
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_FOUND


def test_mode_api_says_no_ready_endpoints_for_a_cluster_ip_with_nothing_ready() -> None:
    # The quickstart tells users to catch NoReadyEndpoints for a Service whose pods
    # are down; in mode "api" the fake raises it for a ClusterIP Service too.
    down = ep("10.1.0.7", ready=False, serving=False)
    fake = FakeResolver({"web": {"cluster_ip": "10.96.0.21", "endpoints": [down]}}, mode="api")
    with override(fake), pytest.raises(kdisco.NoReadyEndpoints):
        kdisco.discover("web")
    with override(FakeResolver({"web": ["10.96.0.21:80"]}, mode="api")):
        assert kdisco.discover("web").first().address == "10.96.0.21:80"


# -- modes, as a test meets them ---------------------------------------------------------


def test_the_issue_case_port_none_in_mode_dns_as_in_the_cluster() -> None:
    # The static default answers with the port in the address; DNS, which the
    # default chain asks first, gives a ClusterIP and no port unless one is asked.
    entry = {"payments": ["192.0.2.10:5432"]}
    with override(FakeResolver(entry)):
        assert kdisco.discover("payments").first().port == 5432
    with override(FakeResolver(entry, mode="dns")):
        res = kdisco.discover("payments")
        assert (res.source, res.first().host, res.first().port) == ("dns", "192.0.2.10", None)
        assert kdisco.discover("payments", port=5432).first().address == "192.0.2.10:5432"
        with pytest.raises(kdisco.PortNotFound):
            kdisco.discover("payments", port="postgres")  # no name: no SRV record
        with pytest.raises(kdisco.PortNotFound):
            kdisco.discover("payments", port=5433)  # not declared (the bare-name SRV)


def test_mode_env_answers_in_the_pods_namespace_only() -> None:
    fake = FakeResolver(
        {"cart": ["10.96.0.7:80"], "db.billing": ["10.96.0.8:5432"]},
        mode="env",
        pod_namespace="shop",
    )
    with override(fake, namespace="shop"):
        res = kdisco.discover("cart")
        assert (res.first().address, res.snapshot, res.source) == ("10.96.0.7:80", True, "env")
        with pytest.raises(kdisco.DiscoveryError) as info:
            kdisco.discover("db.billing")
    assert info.value.attempts[0].outcome is Outcome.NOT_APPLICABLE
    assert "'shop'" in info.value.attempts[0].reason


def test_mode_answers_carry_the_fakes_name_and_follow_its_changes() -> None:
    fake = FakeResolver({"web": ["10.96.0.20:80"]}, mode="dns", name="cluster-dns")
    d = hermetic(fake)
    res = d.discover("web")
    assert (res.source, res.first().host) == ("cluster-dns", "10.96.0.20")
    fake.add("web", {"headless": True, "endpoints": ["10.1.0.5:80", "10.1.0.6:80"]})
    assert [e.host for e in d.discover("web")] == ["10.1.0.5", "10.1.0.6"]  # not the cached one
    fake.remove("web")
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("web")


@pytest.mark.parametrize("mode", ["dns", "env", "api"])
def test_modes_answer_async_callers_the_same(mode: str) -> None:
    import kdisco.aio

    entry = {"cluster_ip": "10.96.0.20", "ports": {"http": 80}, "endpoints": ["10.1.0.5"]}
    with override(FakeResolver({"web": entry}, mode=mode)):
        sync = kdisco.discover("web", port="http")
        got = asyncio.run(kdisco.aio.discover("web", port="http"))
    assert (got, got.source) == (sync, mode)
    assert got.first().address == "10.96.0.20:80"


def test_default_names_and_repr() -> None:
    assert [FakeResolver(mode=m).name for m in ("static", "dns", "env", "api")] == [
        "fake",
        "dns",
        "env",
        "api",
    ]
    assert (
        repr(FakeResolver({"a": ["10.0.0.1"]}, mode="dns"))
        == "FakeResolver(1 services, mode='dns')"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "coredns"}, "mode 'coredns': expected one of 'static', 'dns', 'env', 'api'"),
        (
            {"mode": "dns", "pod_namespace": "shop"},
            "pod_namespace='shop' is read only in mode 'env'",
        ),
        ({"mode": "env", "pod_namespace": "Not A Namespace"}, "is not a namespace name"),
    ],
)
def test_bad_mode_arguments_fail_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(kdisco.ConfigurationError) as info:
        FakeResolver(**kwargs)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"headless": "yes", "endpoints": ["10.1.0.5"]}, "'headless' must be true or false"),
        ({"cluster_ip": "10.96.0.300"}, "'cluster_ip' '10.96.0.300' is not an IP address"),
        ({"cluster_ip": ["10.96.0.1", "10.96.0.2"]}, "one ClusterIP per address family"),
        ({"cluster_ip": "10.96.0.1", "headless": True}, "'cluster_ip' and 'headless'"),
        ({"clusterIP": "10.96.0.1"}, "unknown keys ['clusterIP']"),
        (["web-0.example:80"], "'endpoints': 'web-0.example' is not an IP address"),
        ({"endpoints": ["10.1.0.5:80", "10.1.0.6:81"], "headless": True}, "'ports'"),
        ({"headless": False, "endpoints": ["10.1.0.5", "10.1.0.6"]}, "needs a 'cluster_ip'"),
    ],
)
def test_entries_are_checked_when_the_fake_is_built(entry: object, message: str) -> None:
    with pytest.raises(kdisco.ConfigurationError) as info:
        FakeResolver({"web": entry}, mode="dns")  # type: ignore[dict-item]
    assert info.value.message.startswith("static entry 'web': ")
    assert message in info.value.message
    fake = FakeResolver(mode="api")
    with pytest.raises(kdisco.ConfigurationError) as info:
        fake.add("web", entry)  # type: ignore[arg-type]
    assert message in info.value.message


def test_static_mode_refuses_what_only_the_other_modes_read() -> None:
    with pytest.raises(kdisco.ConfigurationError) as info:
        FakeResolver({"db": {"headless": True, "endpoints": ["10.1.0.5"]}})
    assert "static entry 'db': 'headless' is read only by" in info.value.message
    with pytest.raises(kdisco.ConfigurationError) as info:
        kdisco.Discoverer(
            strategies=["static"], static={"db": {"cluster_ip": "10.96.0.9"}}, environ={}
        )
    assert "static entry 'db': 'cluster_ip' is read only by" in info.value.message


# -- the fixture's mode: an ini option for the project, a marker for a test ---------------

FIXTURE_MODES = textwrap.dedent(
    """
    import kdisco
    import pytest


    def test_default(kdisco_fake):
        kdisco_fake.add("payments", ["192.0.2.10:5432"])
        assert kdisco.discover("payments").first().port == EXPECTED_DEFAULT


    @pytest.mark.kdisco_fake(mode="dns")
    def test_marker_dns(kdisco_fake):
        kdisco_fake.add("payments", ["192.0.2.10:5432"])
        assert kdisco.discover("payments").first().port is None
        assert kdisco.discover("payments").source == "dns"


    @pytest.mark.kdisco_fake(mode="env", namespace="shop")
    def test_marker_env(kdisco_fake):
        kdisco_fake.add("cart", ["10.96.0.7:80"])
        assert kdisco.discover("cart").snapshot
        assert str(kdisco.discover("cart").service) == "cart.shop"
    """
)


@pytest.mark.parametrize(
    ("ini", "default_port"), [("", "5432"), ("kdisco_fake_mode = dns\n", "None")]
)
def test_fixture_mode_from_the_ini_option_and_the_marker(
    pytester: pytest.Pytester, ini: str, default_port: str
) -> None:
    pytester.makepyfile(test_modes=FIXTURE_MODES.replace("EXPECTED_DEFAULT", default_port))
    pytester.makeini(ASYNC_INI + ini)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=3)


def test_fixture_marker_with_a_bad_mode_or_argument_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad=textwrap.dedent(
            """
            import pytest

            @pytest.mark.kdisco_fake(mode="coredns")
            def test_mode(kdisco_fake):
                pass

            @pytest.mark.kdisco_fake(mdoe="dns")
            def test_typo(kdisco_fake):
                pass
            """
        )
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*ConfigurationError*mode 'coredns'*", "*unexpected keyword*mdoe*"]
    )


def test_the_fixture_mode_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    section = DOCS.read_text().split("## The `kdisco_fake` pytest fixture", 1)[1]
    assert '# kdisco_fake_mode = "dns"' in section  # the ini line the page tells users to write
    files = _doc_blocks("The `kdisco_fake` pytest fixture", having="test_modes.py")
    pytester.makepyfile(test_modes=files["test_modes.py"])
    pytester.makeini(ASYNC_INI + "kdisco_fake_mode = dns\n")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_fixture_mode_example_fails_with_the_static_default(
    pytester: pytest.Pytester,
) -> None:
    # The control: without the ini option the fake gives the port DNS would not.
    files = _doc_blocks("The `kdisco_fake` pytest fixture", having="test_modes.py")
    pytester.makepyfile(test_modes=files["test_modes.py"])
    pytester.makeini(ASYNC_INI)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)
