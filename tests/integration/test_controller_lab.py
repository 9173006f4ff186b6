"""What the real EndpointSlice controllers make of Pods, and how kdisco reads it.

The lab runs kube-controller-manager (EndpointSlice, EndpointSlice mirroring,
namespace, ServiceAccount and garbage-collector controllers); no kubelet runs, so
the tests write each Pod's status (IPs, Ready condition) as a kubelet would, and put
Pods on Nodes that exist. Every address is TEST-NET: resolved and compared, never
connected to. The controller works from watch events, so each check polls with
``eventually`` until it has converged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest

import kdisco
from kdisco import ServiceKind
from lab import kube
from lab._runner import CONTROLLER_MANAGED_BY
from lab.objects import Cluster, port

from .conftest import (
    BIG_ENDPOINTS,
    DB_NOT_READY,
    DB_READY,
    HOLD,
    NODES,
    converged,
    eventually,
    slice_endpoints,
)
from .test_lab import api
from .test_lab import dns as dns_discoverer

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MIRRORED_BY = "endpointslicemirroring-controller.k8s.io"


@pytest.fixture
def ns(cluster: Cluster, nodes: Any) -> Iterator[str]:
    name = cluster.namespace("ctl")
    yield name
    cluster.delete_namespace(name)


def hosts(res: kdisco.Resolution) -> set[str]:
    return {ep.host for ep in res}


def _equal(got: Any, want: Any) -> Any:
    assert got == want
    return got


# -- the slices themselves -------------------------------------------------------------


def test_the_controller_owns_one_slice_per_family(cluster: Cluster, app: str) -> None:
    svc = cluster.read_service(app, "db")
    slices = cluster.slices(app, "db")
    assert sorted(s["addressType"] for s in slices) == ["IPv4", "IPv6"]
    for s in slices:
        meta = s["metadata"]
        assert meta["labels"][MANAGED_BY] == CONTROLLER_MANAGED_BY
        assert meta["name"].startswith("db-")  # generateName: the Service's name and a dash
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Service",
            "db",
            svc["metadata"]["uid"],
        )
        # The port is the Pods' container port the Service's named targetPort names.
        assert s["ports"] == [{"name": "postgres", "port": 5433, "protocol": "TCP"}]
    eps = slice_endpoints(cluster, app, "db")
    db0 = eps["192.0.2.11"]
    assert db0["hostname"] == "db-0"  # spec.hostname, as spec.subdomain names the Service
    assert db0["nodeName"] == "node-1"
    assert db0["zone"] == NODES["node-1"][2]  # the Node's topology label
    assert db0["targetRef"]["kind"] == "Pod"
    assert (db0["targetRef"]["name"], db0["targetRef"]["namespace"]) == ("db-0", app)
    # Every condition is written out, never left nil.
    assert db0["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["2001:db8::11"]["targetRef"]["name"] == "db-0"
    assert eps[DB_NOT_READY[0]]["conditions"] == {
        "ready": False,
        "serving": False,
        "terminating": True,
    }


def test_more_than_100_pods_are_split_across_slices(
    lab_info: Any, cluster: Cluster, app: str
) -> None:
    sizes = sorted(len(s.get("endpoints") or []) for s in cluster.slices(app, "big"))
    assert sizes == [BIG_ENDPOINTS - 100, 100]
    with api(lab_info, app) as a:
        assert len(a.discover("big", port="http")) == BIG_ENDPOINTS


def test_a_deleted_service_takes_its_slices_along(cluster: Cluster, ns: str) -> None:
    # The garbage collector follows the slices' ownerReference to the Service.
    cluster.service(ns, "brief", headless=True, ports=[port(80)], selector={"app": "brief"})
    cluster.pod(ns, "brief-0", labels={"app": "brief"}, node="node-1", ip="192.0.2.94")
    converged(cluster, ns, "brief", ["192.0.2.94"])
    cluster.core.delete_namespaced_service("brief", ns)
    eventually(lambda: _equal(cluster.slices(ns, "brief"), []))


def test_a_new_namespace_gets_its_default_serviceaccount(cluster: Cluster, ns: str) -> None:
    def names() -> list[str]:
        page = cluster.core.list_namespaced_service_account(ns, _preload_content=False)
        return [sa["metadata"]["name"] for sa in cluster._raw(page)["items"]]

    eventually(lambda: _equal(names(), ["default"]))


# -- readiness, terminating, publishNotReadyAddresses --------------------------------------


def test_readiness_follows_the_pods_ready_condition(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    cluster.service(ns, "api", ports=[port(80, "http", target=8080)], selector={"app": "api"})
    for i in (1, 2):
        cluster.pod(ns, f"api-{i}", labels={"app": "api"}, node="node-1", ip=f"192.0.2.9{i}")
    converged(cluster, ns, "api", ["192.0.2.91", "192.0.2.92"])
    with api(lab_info, ns, cache=False) as a:

        def ready() -> set[str]:
            try:
                return hosts(a.discover("api", backends=True))
            except kdisco.NoReadyEndpoints:
                return set()

        assert ready() == {"192.0.2.91", "192.0.2.92"}
        cluster.set_pod_ready(ns, "api-2", False)
        eventually(lambda: _equal(ready(), {"192.0.2.91"}))
        every = {ep.host: ep for ep in a.discover("api", backends=True, include_not_ready=True)}
        assert (every["192.0.2.92"].ready, every["192.0.2.92"].serving) == (False, False)
        cluster.set_pod_ready(ns, "api-1", False)
        eventually(lambda: _equal(ready(), set()))
        cluster.set_pod_ready(ns, "api-2", True)
        eventually(lambda: _equal(ready(), {"192.0.2.92"}))


def test_a_terminating_pod_is_serving_but_not_ready(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    cluster.service(ns, "w", headless=True, ports=[port(80, "http")], selector={"app": "w"})
    cluster.pod(ns, "w-0", labels={"app": "w"}, node="node-2", ip="192.0.2.95")
    cluster.pod(ns, "w-1", labels={"app": "w"}, node="node-2", ip="192.0.2.96", finalizers=[HOLD])
    converged(cluster, ns, "w", ["192.0.2.95", "192.0.2.96"])
    cluster.terminate_pod(ns, "w-1")  # still Ready: it was serving when deleted

    def terminating() -> dict[str, Any]:
        conditions = slice_endpoints(cluster, ns, "w")["192.0.2.96"]["conditions"]
        assert conditions["terminating"] is True
        return dict(conditions)

    assert eventually(terminating) == {"ready": False, "serving": True, "terminating": True}
    with api(lab_info, ns, cache=False) as a:
        assert hosts(a.discover("w")) == {"192.0.2.95"}
        by_host = {ep.host: ep for ep in a.discover("w", include_not_ready=True)}
        w1 = by_host["192.0.2.96"]
        assert (w1.ready, w1.serving, w1.terminating) == (False, True, True)
        cluster.release_pod(ns, "w-1")  # the Pod goes; so does its endpoint
        eventually(lambda: _equal(hosts(a.discover("w", include_not_ready=True)), {"192.0.2.95"}))


def test_publish_not_ready_addresses(lab_info: Any, cluster: Cluster, ns: str) -> None:
    cluster.service(
        ns,
        "peers",
        headless=True,
        ports=[port(7000, "gossip")],
        selector={"app": "peers"},
        publish_not_ready=True,
    )
    cluster.pod(
        ns,
        "peers-0",
        labels={"app": "peers"},
        node="node-3",
        ip="192.0.2.97",
        ready=False,
        hostname="peers-0",
        subdomain="peers",
    )
    eps = converged(cluster, ns, "peers", ["192.0.2.97"])
    # The controller reports it ready (the Service asks for it), though not serving.
    assert eps["192.0.2.97"]["conditions"] == {
        "ready": True,
        "serving": False,
        "terminating": False,
    }
    with api(lab_info, ns) as a:
        res = a.discover("peers", port="gossip")
    assert [(ep.host, ep.hostname, ep.ready) for ep in res] == [("192.0.2.97", "peers-0", True)]
    with dns_discoverer(lab_info, ns) as d:
        from_dns = eventually(lambda: d.discover("peers", port="gossip"))
    assert [(ep.host, ep.port) for ep in from_dns] == [("192.0.2.97", 7000)]


def test_a_pod_on_a_missing_node_is_left_out(lab_info: Any, cluster: Cluster, ns: str) -> None:
    cluster.service(ns, "lost", headless=True, ports=[port(80, "http")], selector={"app": "lost"})
    cluster.pod(ns, "lost-0", labels={"app": "lost"}, node="node-1", ip="192.0.2.98")
    cluster.pod(ns, "lost-1", labels={"app": "lost"}, node="no-such-node", ip="192.0.2.99")
    converged(cluster, ns, "lost", ["192.0.2.98"])
    with api(lab_info, ns) as a:
        assert hosts(a.discover("lost")) == {"192.0.2.98"}


# -- hostnames and families in DNS ---------------------------------------------------------


def _records(lab_info: Any, name: str, rdtype: str) -> set[str]:
    query = dns.message.make_query(name, rdtype)
    answer = dns.query.udp(query, lab_info.dns_host, port=lab_info.dns_port, timeout=2.0)
    return {
        item.to_text()
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.from_text(rdtype)
        for item in rrset
    }


def test_a_pods_hostname_and_subdomain_make_its_dns_name(lab_info: Any, app: str) -> None:
    name = f"db-0.db.{app}.svc.{lab_info.cluster_domain}."
    eventually(lambda: _equal(_records(lab_info, name, "A"), {"192.0.2.11"}))
    assert _records(lab_info, name, "AAAA") == {"2001:db8::11"}
    # A Pod without a hostname has no such name.
    assert _records(lab_info, f"web-1.web.{app}.svc.{lab_info.cluster_domain}.", "A") == set()


def test_a_dual_stack_headless_service_answers_both_families(lab_info: Any, app: str) -> None:
    with dns_discoverer(lab_info, app) as d:
        res = eventually(lambda: _sized(d.discover("db"), len(DB_READY)))
    assert hosts(res) == {host for host, _ in DB_READY}
    with api(lab_info, app) as a:
        assert a.discover("db").kind is ServiceKind.HEADLESS
        assert hosts(a.discover("db")) == hosts(res)


def _sized(res: kdisco.Resolution, n: int) -> kdisco.Resolution:
    assert len(res) == n, sorted(ep.host for ep in res)
    return res


# -- mirroring of custom Endpoints ---------------------------------------------------------


def test_custom_endpoints_are_mirrored_into_a_slice(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    # A Service without a selector and a v1 Endpoints object of the same name: the
    # mirroring controller copies it into an EndpointSlice (the v1 Endpoints API itself
    # is deprecated, so kdisco reads only the slice).
    cluster.service(ns, "legacy", ports=[port(3306, "mysql")], headless=True)
    kube.request(
        lab_info,
        "POST",
        f"/api/v1/namespaces/{ns}/endpoints",
        {
            "metadata": {"name": "legacy"},
            "subsets": [
                {
                    "addresses": [{"ip": "203.0.113.21", "hostname": "legacy-0"}],
                    "notReadyAddresses": [{"ip": "203.0.113.22"}],
                    "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}],
                }
            ],
        },
    )
    eps = converged(cluster, ns, "legacy", ["203.0.113.21", "203.0.113.22"])
    (mirrored,) = cluster.slices(ns, "legacy")
    assert mirrored["metadata"]["labels"][MANAGED_BY] == MIRRORED_BY
    assert mirrored["ports"] == [{"name": "mysql", "port": 3306, "protocol": "TCP"}]
    assert eps["203.0.113.21"]["conditions"] == {"ready": True}
    assert eps["203.0.113.22"]["conditions"] == {"ready": False}
    assert eps["203.0.113.21"]["hostname"] == "legacy-0"
    with api(lab_info, ns) as a:
        res = a.discover("legacy", port="mysql")
        everything = a.discover("legacy", include_not_ready=True)
    assert [(ep.host, ep.port, ep.hostname) for ep in res] == [("203.0.113.21", 3306, "legacy-0")]
    assert hosts(everything) == {"203.0.113.21", "203.0.113.22"}


# -- namespaces ----------------------------------------------------------------------------


def test_a_deleted_namespace_goes_away(cluster: Cluster, nodes: Any) -> None:
    ns = cluster.namespace("gone")
    cluster.service(ns, "db", headless=True, ports=[port(5432)], selector={"app": "db"})
    cluster.pod(
        ns, "db-0", labels={"app": "db"}, node="node-1", ip="192.0.2.101", finalizers=[HOLD]
    )
    converged(cluster, ns, "db", ["192.0.2.101"])
    cluster.delete_namespace(ns)
    # The namespace controller waits 5 s before it empties a namespace (#36891).
    eventually(lambda: _equal(cluster.namespace_exists(ns), False), timeout=30)


# -- topology --------------------------------------------------------------------------------


def test_prefer_same_zone_hints_each_endpoint_its_own_zone(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    cluster.service(ns, "near", ports=[port(80, "http")], selector={"app": "near"})
    cluster.core.patch_namespaced_service(
        "near", ns, {"spec": {"trafficDistribution": "PreferSameZone"}}
    )
    for i, node in enumerate(NODES, start=1):
        cluster.pod(ns, f"near-{i}", labels={"app": "near"}, node=node, ip=f"192.0.2.10{i}")
    addresses = [f"192.0.2.10{i}" for i in range(1, len(NODES) + 1)]
    converged(cluster, ns, "near", addresses)

    def hinted() -> dict[str, Any]:
        eps = slice_endpoints(cluster, ns, "near")
        assert all("hints" in ep for ep in eps.values()), eps
        return {a: ep["hints"] for a, ep in eps.items()}

    hints = eventually(hinted)
    zones = {f"192.0.2.10{i}": z for i, (_, _, z) in enumerate(NODES.values(), start=1)}
    assert hints == {a: {"forZones": [{"name": z}]} for a, z in zones.items()}
    with api(lab_info, ns) as a:
        res = a.discover("near", port="http", backends=True)
    assert res.traffic_distribution == "PreferSameZone"
    assert {ep.host: ep.zone_hints for ep in res} == {a: (z,) for a, z in zones.items()}
    lb = kdisco.Balancer(zone="zone-b")
    assert {lb.pick(res).host for _ in range(20)} == {"192.0.2.102"}


# -- named target ports ------------------------------------------------------------------


def test_a_pod_without_the_named_target_port_is_not_an_endpoint_of_it(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    # The controller groups endpoints by their resolved ports: a Pod that has no
    # container port of the targetPort's name lands in a slice with no ports at all
    # (a shape the hand-written slices had only as "slices without ports").
    cluster.service(
        ns, "split", headless=True, ports=[port(80, "http", target="web")], selector={"app": "s"}
    )
    web = [{"containerPort": 8080, "name": "web", "protocol": "TCP"}]
    cluster.pod(ns, "s-0", labels={"app": "s"}, node="node-1", ip="192.0.2.111", ports=web)
    cluster.pod(ns, "s-1", labels={"app": "s"}, node="node-1", ip="192.0.2.112")
    converged(cluster, ns, "split", ["192.0.2.111", "192.0.2.112"])
    by_ports = {
        str(s.get("ports")): [ep["addresses"][0] for ep in s["endpoints"]]
        for s in cluster.slices(ns, "split")
    }
    assert by_ports == {
        str([{"name": "http", "protocol": "TCP", "port": 8080}]): ["192.0.2.111"],
        "None": ["192.0.2.112"],
    }
    with dns_discoverer(lab_info, ns) as d:
        from_dns = eventually(lambda: d.discover("split", port="http"))
    assert {(ep.host, ep.port) for ep in from_dns} == {("192.0.2.111", 8080)}
    with api(lab_info, ns) as a:
        from_api = a.discover("split", port="http")
    assert {(ep.host, ep.port) for ep in from_api} == {("192.0.2.111", 8080)}
