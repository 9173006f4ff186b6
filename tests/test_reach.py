"""``reach``: answers that work from outside the cluster (LoadBalancer addresses, node
ports, Ingress URLs), ``auto``, and the warning on cluster-internal answers.

The logic is tested here on JSON shaped like the API's (the external read is a
sans-I/O plan, driven below from a dict of paths); ``tests/integration/
test_reach_lab.py`` runs the same paths against the lab's real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

import kdisco
from kdisco import (
    AccessDenied,
    ConfigurationError,
    Deadline,
    Endpoint,
    Miss,
    NotReachable,
    Outcome,
    Query,
    Resolution,
    RetryPolicy,
    ServiceKind,
    ServicePort,
    Strategy,
)
from kdisco._chain import CLUSTER_ONLY, run_async, run_sync, turns
from kdisco._cli import main, summary, to_json
from kdisco._k8s import routes
from kdisco._k8s.client import raise_for_status
from kdisco._k8s.objects import MalformedObject, ServiceInfo
from kdisco._names import parse_query
from kdisco._strategies.api import PAUSE, direct_read
from tests._helpers_chain import FakeClock, Scripted, answer_for

Json = dict[str, Any]
NS = "shop"


def query(name: str = "web", *, port: int | str | None = None, **kw: Any) -> Query:
    q = parse_query(
        name, namespace=NS, default_namespace=NS, cluster_domain="cluster.local", port=port
    )
    return Query(service=q.service, port=q.port, reach=kw.pop("reach", "external"), **kw)


def service(
    name: str = "web",
    *,
    type: str = "ClusterIP",
    ports: Sequence[Json] = ({"name": "http", "port": 80, "protocol": "TCP"},),
    ingress: Sequence[Json] = (),
    external_ips: Sequence[str] = (),
    policy: str | None = None,
    headless: bool = False,
) -> Json:
    spec: Json = {
        "type": type,
        "ports": list(ports),
        "clusterIP": "None" if headless else "10.96.0.10",
        "clusterIPs": ["None"] if headless else ["10.96.0.10"],
    }
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    if policy:
        spec["externalTrafficPolicy"] = policy
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": list(ingress)} if ingress else {}},
    }


def node(
    name: str,
    *,
    internal: str | None = "192.0.2.101",
    external: str | None = None,
    zone: str | None = None,
    ready: bool = True,
) -> Json:
    addresses = [{"type": "Hostname", "address": name}]
    if internal:
        addresses.append({"type": "InternalIP", "address": internal})
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    labels = {routes.ZONE_LABEL: zone} if zone else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def path(service: str, port: int | str, text: str = "/") -> Json:
    number = {"number": port} if isinstance(port, int) else {"name": port}
    return {
        "path": text,
        "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": number}},
    }


def ingress(
    name: str,
    rules: Sequence[Json],
    *,
    tls: Sequence[Json] = (),
    status: Sequence[Json] = (),
    default: Json | None = None,
) -> Json:
    spec: Json = {"rules": list(rules)}
    if tls:
        spec["tls"] = list(tls)
    if default is not None:
        spec["defaultBackend"] = default
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": list(status)}},
    }


def listing(kind: str, items: Sequence[Json]) -> Json:
    return {"kind": kind, "metadata": {}, "items": list(items)}


class Api:
    """Answers the plan's GETs from a dict of path -> JSON (absent: a 404)."""

    def __init__(self, objects: Mapping[str, Json]) -> None:
        self.objects = dict(objects)
        self.asked: list[str] = []

    def read(self, q: Query) -> Resolution | Miss:
        plan = direct_read(q, 500)
        step = next(plan)
        try:
            while True:
                body = None
                if step is not PAUSE:
                    self.asked.append(step.path)
                    found = self.objects.get(step.path)
                    body = None if found is None else json.dumps(found).encode()
                step = plan.send(body)
        except StopIteration as done:
            result: Resolution | Miss = done.value
            return result


SVC = f"/api/v1/namespaces/{NS}/services"
INGRESSES = routes.ingresses_path(NS)
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"


def objects(svc: Json, *, ingresses: Sequence[Json] = (), nodes: Sequence[Json] = ()) -> Api:
    found = {
        f"{SVC}/{svc['metadata']['name']}": svc,
        INGRESSES: listing("IngressList", ingresses),
        routes.NODES_PATH: listing("NodeList", nodes),
    }
    for n in nodes:
        found[routes.node_path(n["metadata"]["name"])] = n
    return Api(found)


def answered(result: Resolution | Miss) -> Resolution:
    assert isinstance(result, Resolution), result
    assert result.reach == "external"
    assert result.source == "api"
    # Read directly, with no watch to say when it changes: kept for a while.
    assert result.ttl == routes.EXTERNAL_TTL
    return result


# -- the Service's own addresses ------------------------------------------------------


def test_a_load_balancer_answers_with_its_addresses_and_the_service_port() -> None:
    svc = service(
        type="LoadBalancer",
        ports=[{"name": "https", "port": 443, "nodePort": 30443}],
        ingress=[{"ip": "203.0.113.7"}, {"hostname": "lb.example.test."}],
    )
    api = objects(svc)
    res = answered(api.read(query()))
    assert [(ep.host, ep.port) for ep in res] == [("203.0.113.7", 443), ("lb.example.test", 443)]
    assert res.kind is ServiceKind.LOAD_BALANCER
    assert res.port == ServicePort(port=443, name="https", node_port=30443)
    # Nothing else is read: the Service's status says it all.
    assert api.asked == [f"{SVC}/web"]


def test_external_ips_are_a_way_in_with_the_service_port() -> None:
    api = objects(service(external_ips=["198.51.100.9"]))
    res = answered(api.read(query()))
    assert [ep.address for ep in res] == ["198.51.100.9:80"]


# -- Ingress ---------------------------------------------------------------------------


def test_an_ingress_route_answers_with_its_url_https_when_its_host_has_tls() -> None:
    ing = ingress(
        "shop",
        [
            {"host": "shop.example.test", "http": {"paths": [path("web", 80, "/api")]}},
            {"host": "plain.example.test", "http": {"paths": [path("web", "http")]}},
            {"host": "other.example.test", "http": {"paths": [path("other", 80)]}},
        ],
        tls=[{"hosts": ["shop.example.test"], "secretName": "shop-tls"}],
        status=[{"ip": "198.51.100.80"}],
    )
    res = answered(objects(service(), ingresses=[ing]).read(query()))
    assert [(ep.scheme, ep.host, ep.port, ep.path) for ep in res] == [
        ("https", "shop.example.test", 443, "/api"),
        ("http", "plain.example.test", 80, "/"),
    ]
    assert res.url() == "https://shop.example.test/api"
    assert res.port == ServicePort(port=80, name="http")


def test_a_hostless_rule_and_the_default_backend_use_the_ingress_own_address() -> None:
    ing = ingress(
        "edge",
        [{"http": {"paths": [path("web", 80, "/shop")]}}],
        status=[{"hostname": "edge.example.test"}],
        default={"service": {"name": "web", "port": {"number": 80}}},
        tls=[{"secretName": "default-cert"}],  # no hosts: the controller's default
    )
    res = answered(objects(service(), ingresses=[ing]).read(query()))
    assert [(ep.scheme, ep.host, ep.path) for ep in res] == [
        ("https", "edge.example.test", "/"),
        ("https", "edge.example.test", "/shop"),
    ]


def test_a_hostless_rule_without_an_address_is_no_way_in_yet() -> None:
    # No ingress controller has taken the Ingress: it has no address to reach it at.
    ing = ingress("new", [{"http": {"paths": [path("web", 80)]}}])
    result = objects(service(), ingresses=[ing]).read(query())
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NO_EXTERNAL_ROUTE


def test_wildcard_tls_hosts_cover_one_label() -> None:
    ing = ingress(
        "w",
        [
            {"host": "a.example.test", "http": {"paths": [path("web", 80)]}},
            {"host": "b.c.example.test", "http": {"paths": [path("web", 80, "/b")]}},
        ],
        tls=[{"hosts": ["*.example.test"]}],
    )
    res = answered(objects(service(), ingresses=[ing]).read(query()))
    assert [ep.scheme for ep in res] == ["https", "http"]


def test_an_ingress_to_another_port_does_not_answer_for_the_port_asked() -> None:
    svc = service(ports=[{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}])
    ing = ingress(
        "m", [{"host": "metrics.example.test", "http": {"paths": [path("web", "metrics")]}}]
    )
    api = objects(svc, ingresses=[ing])
    miss = api.read(query(port="http"))
    assert isinstance(miss, Miss)
    assert miss.outcome is Outcome.NO_EXTERNAL_ROUTE
    # Asked for no port, any port an Ingress leads to will do, and the answer says which.
    res = answered(api.read(query()))
    assert res.port == ServicePort(port=9090, name="metrics")
    assert res.url() == "http://metrics.example.test"


# -- node ports ------------------------------------------------------------------------


def test_a_node_port_answers_with_each_ready_node_external_ip_else_internal_ip() -> None:
    svc = service(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    nodes = [
        node("n1", internal="192.0.2.101", external="203.0.113.101", zone="zone-a"),
        node("n2", internal="192.0.2.102", zone="zone-b"),
        node("n3", internal="192.0.2.103", ready=False),
        node("n4", internal=None),  # no address to reach it at
    ]
    api = objects(svc, nodes=nodes)
    res = answered(api.read(query()))
    assert [(ep.host, ep.port, ep.node, ep.zone) for ep in res] == [
        ("203.0.113.101", 30080, "n1", "zone-a"),
        ("192.0.2.102", 30080, "n2", "zone-b"),
    ]
    assert res.kind is ServiceKind.NODE_PORT
    assert res.port is not None
    assert res.port.node_port == 30080
    assert api.asked == [f"{SVC}/web", INGRESSES, routes.NODES_PATH]
    with_not_ready = answered(api.read(query(include_not_ready=True)))
    assert [ep.node for ep in with_not_ready] == ["n1", "n2", "n3"]
    assert not with_not_ready.endpoints[2].ready


def test_a_pending_load_balancer_falls_back_to_its_node_ports() -> None:
    svc = service(type="LoadBalancer", ports=[{"port": 443, "nodePort": 31443}])
    res = answered(objects(svc, nodes=[node("n1")]).read(query()))
    assert [ep.address for ep in res] == ["192.0.2.101:31443"]
    assert res.kind is ServiceKind.LOAD_BALANCER


def test_local_traffic_policy_answers_only_with_nodes_running_a_ready_pod() -> None:
    svc = service(
        type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}], policy="Local"
    )
    api = objects(svc, nodes=[node("n1"), node("n2", internal="192.0.2.102"), node("n3")])
    api.objects[SLICES] = listing(
        "EndpointSliceList",
        [
            {
                "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["192.0.2.11"], "conditions": {"ready": True}, "nodeName": "n2"},
                    {"addresses": ["192.0.2.12"], "conditions": {"ready": False}, "nodeName": "n3"},
                ],
            }
        ],
    )
    res = answered(api.read(query()))
    assert [(ep.node, ep.address) for ep in res] == [("n2", "192.0.2.102:30080")]
    # The nodes were read one by one, not listed.
    assert routes.NODES_PATH not in api.asked
    assert routes.node_path("n2") in api.asked


def test_a_cluster_ip_service_without_an_ingress_has_no_way_in() -> None:
    miss = objects(service()).read(query())
    assert isinstance(miss, Miss)
    assert miss.outcome is Outcome.NO_EXTERNAL_ROUTE
    assert "no Ingress leads to it" in miss.reason


def test_an_unknown_port_is_no_such_port_before_anything_else_is_read() -> None:
    api = objects(service(type="LoadBalancer", ingress=[{"ip": "203.0.113.7"}]))
    miss = api.read(query(port="grpc"))
    assert isinstance(miss, Miss)
    assert miss.outcome is Outcome.NO_SUCH_PORT
    assert api.asked == [f"{SVC}/web"]


def test_an_external_name_answers_as_it_does_inside() -> None:
    svc = {"metadata": {"name": "web"}, "spec": {"type": "ExternalName", "externalName": "x.test"}}
    result = Api({f"{SVC}/web": svc}).read(query())
    assert isinstance(result, Resolution)
    assert result.kind is ServiceKind.EXTERNAL_NAME


# -- parsing ---------------------------------------------------------------------------


def test_node_ports_are_parsed_into_service_ports() -> None:
    info = ServiceInfo.from_json(
        service(type="NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    )
    assert info.ports == (ServicePort(port=80, name="http", node_port=30080),)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (service(ingress=[{"ip": "not-an-ip"}]), "ingress[0].ip"),
        (service(ingress=[{"hostname": "bad_host!"}]), "ingress[0].hostname"),
        (service(external_ips=["300.1.1.1"]), "externalIPs[0]"),
        (service(ports=[{"port": 80, "nodePort": 70000}]), "nodePort"),
    ],
)
def test_malformed_external_fields_are_refused_by_name(doc: Json, field: str) -> None:
    with pytest.raises(MalformedObject, match=field.replace("[", r"\[").replace("]", r"\]")):
        ServiceInfo.from_json(doc)


def test_a_malformed_node_is_refused_by_name() -> None:
    with pytest.raises(MalformedObject, match="addresses"):
        routes.NodeInfo.from_json({"metadata": {"name": "n"}, "status": {"addresses": "x"}})


# -- URLs ------------------------------------------------------------------------------


def test_route_urls_leave_default_ports_out_and_keep_others() -> None:
    ref = query().service
    ep = Endpoint(host="shop.example.test", port=8443, scheme="https", path="/api/")
    res = Resolution(service=ref, kind=ServiceKind.CLUSTER_IP, endpoints=(ep,), source="api")
    assert res.url() == "https://shop.example.test:8443/api"
    plain = Endpoint(host="10.96.0.10", port=80)
    assert Resolution(
        service=ref, kind=ServiceKind.CLUSTER_IP, endpoints=(plain,), source="api"
    ).url("http") == ("http://10.96.0.10:80")


# -- the chain -------------------------------------------------------------------------


class Viewed(Scripted):
    def __init__(self, name: str, *script: object, views: tuple[str, ...]) -> None:
        super().__init__(name, *script)
        self.views = views


def cluster_answer(q: Query, source: str) -> Resolution:
    return answer_for(q, source)


def test_turns_follow_the_reach() -> None:
    static = Scripted("static")
    dns = Viewed("dns", views=("cluster",))
    api = Viewed("api", views=("cluster", "external"))
    chain: list[Strategy] = [static, dns, api]
    shown = {
        reach: [(t.strategy.name, t.reach, t.view) for t in turns(chain, reach)]
        for reach in ("cluster", "external", "auto")
    }
    assert shown == {
        "cluster": [
            ("static", "cluster", None),
            ("dns", "cluster", "cluster"),
            ("api", "cluster", "cluster"),
        ],
        "external": [
            ("static", "external", None),
            ("dns", "external", "skip"),
            ("api", "external", "external"),
        ],
        "auto": [
            ("static", "external", None),
            ("api", "external", "external"),
            ("dns", "cluster", "cluster"),
            ("api", "cluster", "cluster"),
        ],
    }


def test_a_strategy_that_cannot_apply_is_in_the_auto_order_once() -> None:
    api = Viewed("api", views=("cluster", "external"))
    api.not_applicable = "no credentials"  # type: ignore[attr-defined]
    dns = Viewed("dns", views=("cluster",))
    chain: list[Strategy] = [dns, api]
    assert [(t.strategy.name, t.reach) for t in turns(chain, "auto")] == [
        ("api", "external"),
        ("dns", "cluster"),
    ]


@pytest.fixture(params=["sync", "async"])
def drive(request: pytest.FixtureRequest) -> Any:
    def go(chain: list[Strategy], q: Query, *, outside: bool) -> Resolution:
        clock = FakeClock()
        policy = RetryPolicy(sleep=clock.sleep)
        deadline = Deadline(5.0, clock=clock)
        if request.param == "sync":
            return run_sync(chain, q, deadline, policy, outside=outside)
        return asyncio.run(run_async(chain, q, deadline, policy, outside=outside))

    return go


def test_outside_a_cluster_a_cluster_answer_carries_a_warning(drive: Any) -> None:
    q = query(reach="cluster")
    dns = Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))
    res = drive([dns], q, outside=True)
    assert res.reach == "cluster"
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("dns", Outcome.WARNING)]
    assert "outside the cluster" in res.attempts[0].reason
    assert "reach='external'" in res.attempts[0].reason
    # Inside, the same answer is just an answer.
    inside = drive([Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))], q, outside=False)
    assert inside.attempts == ()
    assert inside.reach == "cluster"


def test_answers_of_strategies_that_do_not_say_their_view_carry_no_warning(drive: Any) -> None:
    q = query(reach="cluster")
    res = drive([Scripted("static", cluster_answer(q, "static"))], q, outside=True)
    assert res.attempts == ()
    assert res.reach is None


def test_external_skips_cluster_only_strategies_and_says_so(drive: Any) -> None:
    q = query(reach="external")
    dns = Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))
    external = answer_for(q, "api")
    api = Viewed("api", external, views=("cluster", "external"))
    res = drive([dns, api], q, outside=True)
    assert dns.calls == []
    assert [c.query.reach for c in api.calls] == ["external"]
    assert [(a.strategy, a.outcome, a.reason) for a in res.attempts] == [
        ("dns", Outcome.NOT_APPLICABLE, CLUSTER_ONLY)
    ]


def test_external_without_a_way_in_raises_not_reachable(drive: Any) -> None:
    q = query(reach="external")
    api = Viewed(
        "api", Miss(Outcome.NO_EXTERNAL_ROUTE, "no Ingress"), views=("cluster", "external")
    )
    with pytest.raises(NotReachable) as caught:
        drive([api], q, outside=True)
    assert "nothing routes to it from outside the cluster" in str(caught.value)
    assert "no Ingress" in str(caught.value)


def test_auto_prefers_a_way_in_and_falls_back_to_the_cluster_answer_with_a_warning(
    drive: Any,
) -> None:
    q = query(reach="auto")
    external = Resolution(
        service=q.service,
        kind=ServiceKind.LOAD_BALANCER,
        endpoints=(Endpoint(host="203.0.113.7", port=443),),
        source="api",
        reach="external",
    )
    dns = Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))
    api = Viewed("api", external, views=("cluster", "external"))
    res = drive([dns, api], q, outside=True)
    assert res.reach == "external"
    assert res.attempts == ()
    assert dns.calls == []

    dns = Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))
    api = Viewed(
        "api",
        Miss(Outcome.NO_EXTERNAL_ROUTE, "ClusterIP, no Ingress"),
        views=("cluster", "external"),
    )
    res = drive([dns, api], q, outside=True)
    assert res.source == "dns"
    assert res.reach == "cluster"
    assert [(a.strategy, a.outcome) for a in res.attempts] == [
        ("api", Outcome.NO_EXTERNAL_ROUTE),
        ("dns", Outcome.WARNING),
    ]


def test_a_strategy_asked_for_both_views_says_which_each_attempt_was(drive: Any) -> None:
    # Outside the cluster with reach "auto", the api strategy is asked twice: the two
    # attempts would otherwise read as the same one repeated.
    q = query(reach="auto")
    api = Viewed("api", Miss(Outcome.NO_SUCH_PORT, "no port 8080"), views=("cluster", "external"))
    dns = Viewed("dns", Miss(Outcome.NO_SUCH_PORT, "SRV lists 80"), views=("cluster",))
    with pytest.raises(kdisco.PortNotFound) as info:
        drive([dns, api], q, outside=True)
    assert [(a.strategy, a.reason) for a in info.value.attempts] == [
        ("api", "no port 8080; looking for a way in from outside the cluster"),
        ("dns", "SRV lists 80"),  # asked once: nothing to tell apart
        ("api", "no port 8080; the cluster-internal view"),
    ]


# -- Discoverer and settings ------------------------------------------------------------


def discoverer(tmp_path: Path, **kw: Any) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=kw.pop("strategies", ["env"]),
        serviceaccount_dir=tmp_path,
        resolv_conf=tmp_path / "none",
        kubeconfig=tmp_path / "none",
        **kw,
    )


def test_a_bad_reach_is_refused_before_any_lookup(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="KDISCO_REACH must be 'cluster', 'external' or"):
        discoverer(tmp_path, environ={"KDISCO_REACH": "outside"})
    with pytest.raises(ConfigurationError, match="reach must be"):
        discoverer(tmp_path, environ={}, reach="everywhere")
    d = discoverer(tmp_path, environ={})
    with pytest.raises(ConfigurationError, match="reach must be"):
        d.discover("web", reach="far")
    with pytest.raises(ConfigurationError, match="backends=True asks for pod addresses"):
        d.discover("web", backends=True, reach="external")


def test_auto_is_cluster_in_a_pod_and_external_first_outside(tmp_path: Path) -> None:
    env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "WEB_SERVICE_HOST": "10.96.0.10",
        "WEB_SERVICE_PORT": "80",
    }
    (tmp_path / "token").write_text("t")
    (tmp_path / "namespace").write_text(NS)
    inside = discoverer(tmp_path, environ=env)
    assert inside.settings.outside is False
    assert inside.settings.reach == "auto"
    res = inside.discover("web")
    assert res.reach == "cluster"
    assert res.attempts == ()

    (tmp_path / "token").unlink()
    outside = discoverer(tmp_path, environ={k: v for k, v in env.items() if "KUBERNETES" not in k})
    assert outside.settings.outside is True
    assert outside.settings.sources["reach"] == "default"


def test_reach_is_part_of_the_cache_key(tmp_path: Path) -> None:
    d = discoverer(tmp_path, environ={"KDISCO_REACH": "cluster"}, strategies=[_Counting()])
    d.discover("web")
    d.discover("web")
    d.discover("web", reach="external")
    assert d.strategies[0].calls == ["cluster", "external"]  # type: ignore[attr-defined]
    assert d.settings.sources["reach"] == "KDISCO_REACH"


class _Counting:
    name = "count"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def lookup(self, q: Query, deadline: Deadline) -> Resolution:
        self.calls.append(q.reach)
        return attrs.evolve(answer_for(q, "count"), ttl=30.0)


# -- errors and the CLI -------------------------------------------------------------------


def test_a_refused_node_list_names_a_cluster_role() -> None:
    with pytest.raises(AccessDenied) as caught:
        raise_for_status(403, b'{"message": "nodes is forbidden"}', ("list", "nodes", ""))
    assert "cluster-wide (a ClusterRole rule" in caught.value.message
    assert "in namespace" not in caught.value.message


def test_the_cli_prints_the_warning_and_the_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("KUBERNETES_SERVICE_HOST", "KDISCO_REACH"):
        monkeypatch.delenv(key, raising=False)
    static = tmp_path / "hosts.toml"
    static.write_text('[services."web.shop"]\nendpoints = ["127.0.0.1:8080"]\n')
    monkeypatch.setenv("KDISCO_STATIC", str(static))
    monkeypatch.setenv("KDISCO_SERVICEACCOUNT_DIR", str(tmp_path))
    assert (
        main(["resolve", "web.shop", "--strategies", "static", "--reach", "external", "--json"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["reach"] is None  # a static map's addresses are what you wrote
    assert main(["resolve", "web.shop", "--reach", "nowhere"]) == 2
    assert "reach must be" in capsys.readouterr().err


def test_the_cli_ends_a_cluster_answer_outside_with_its_warning() -> None:
    # (End to end against the lab: tests/integration/test_reach_lab.py.)
    q = query(reach="cluster")
    dns = Viewed("dns", cluster_answer(q, "dns"), views=("cluster",))
    res = run_sync([dns], q, Deadline(5.0), RetryPolicy(), outside=True)
    shown = summary(res)
    assert "[cluster-internal]" in shown.splitlines()[0]
    assert shown.splitlines()[-1].startswith("WARNING: cluster-internal addresses")
    assert to_json(res)["attempts"][-1]["outcome"] == "warning"


assert sys.version_info >= (3, 11)
