"""``backends=True`` against the real servers: a ClusterIP Service's pods from its
EndpointSlices (made by the real EndpointSlice controller from Pods), and CoreDNS's
records, which cannot tell them.

Addresses are TEST-NET: resolved and compared, never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

import kdisco
from kdisco import Outcome, ServiceKind
from kdisco._http import default_balancer
from kdisco.aio import AsyncDiscoverer
from lab.objects import Cluster, endpoint, port

from .conftest import converged, eventually


@pytest.fixture(scope="module")
def pay(cluster: Cluster, nodes: Any) -> Iterator[str]:
    ns = cluster.namespace("backends")
    cluster.service(ns, "pay", ports=[port(80, "http", target=8080)], selector={"app": "pay"})
    for i, (node, ready) in enumerate([("node-1", True), ("node-2", True), ("node-3", False)]):
        cluster.pod(
            ns, f"pay-{i}", labels={"app": "pay"}, node=node, ip=f"192.0.2.3{i + 1}", ready=ready
        )
    converged(cluster, ns, "pay", ["192.0.2.31", "192.0.2.32", "192.0.2.33"])
    yield ns
    cluster.delete_namespace(ns)


@pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
def test_the_pods_behind_a_cluster_ip(
    lab_info: Any, cluster: Cluster, pay: str, watch: bool
) -> None:
    cluster_ip = cluster.read_service(pay, "pay")["spec"]["clusterIP"]
    with kdisco.Discoverer(
        strategies=["api"],
        kubeconfig=str(lab_info.kubeconfig),
        namespace=pay,
        environ={},
        api_watch=watch,
    ) as d:
        plain = d.discover("pay", port="http")
        pods = d.discover("pay", port="http", backends=True)
        from_async = asyncio.run(AsyncDiscoverer.wrap(d).discover("pay", backends=True))
    assert [(ep.host, ep.port) for ep in plain] == [(cluster_ip, 80)]
    assert pods.kind is ServiceKind.CLUSTER_IP
    assert sorted((ep.host, ep.port, ep.pod, ep.zone) for ep in pods) == [
        ("192.0.2.31", 8080, "pay-0", "zone-a"),
        ("192.0.2.32", 8080, "pay-1", "zone-b"),
    ]
    assert sorted(ep.host for ep in from_async) == ["192.0.2.31", "192.0.2.32"]


def test_the_chain_skips_dns_for_backends(lab_info: Any, pay: str) -> None:
    with kdisco.Discoverer(
        strategies=["dns", "api"],
        dns_server=f"{lab_info.dns_host}:{lab_info.dns_port}",
        kubeconfig=str(lab_info.kubeconfig),
        namespace=pay,
        environ={},
    ) as d:
        eventually(lambda: d.discover("pay", port="http"))  # CoreDNS has the Service
        res = d.discover("pay", port="http", backends=True)
    assert res.source == "api"
    # Past the warning that pod IPs work only inside the cluster (this test runs outside).
    (dns_attempt,) = [a for a in res.attempts if a.outcome is not Outcome.WARNING]
    assert (dns_attempt.strategy, dns_attempt.outcome) == ("dns", Outcome.NOT_APPLICABLE)
    assert sorted(ep.host for ep in res) == ["192.0.2.31", "192.0.2.32"]


def test_traffic_distribution_and_hints_reach_the_balancer(lab_info: Any, cluster: Cluster) -> None:
    # kube-apiserver 1.35 keeps trafficDistribution and both kinds of hints; the
    # balancer then keeps a zone-a caller on what the hints give zone-a. The slice is
    # hand-written: the controller gives each endpoint its own zone (and node) only,
    # never a second zone as 192.0.2.42 has here (test_controller_lab has its hints).
    ns = cluster.namespace("topology")
    cluster.service(ns, "near", headless=True, ports=[port(80, "http")])
    cluster.core.patch_namespaced_service(
        "near", ns, {"spec": {"trafficDistribution": "PreferSameZone"}}
    )
    a, b, c = (
        endpoint("192.0.2.41", zone="zone-a", node="node-1"),
        endpoint("192.0.2.42", zone="zone-b", node="node-2"),
        endpoint("192.0.2.43", zone="zone-b", node="node-3"),
    )
    a["hints"] = {"forZones": [{"name": "zone-a"}], "forNodes": [{"name": "node-1"}]}
    b["hints"] = {"forZones": [{"name": "zone-a"}, {"name": "zone-b"}]}
    c["hints"] = {"forZones": [{"name": "zone-b"}]}
    cluster.endpoint_slice(ns, "near", "near-a", [a, b, c], ports=[port(80, "http")])
    with kdisco.Discoverer(
        strategies=["api"], kubeconfig=str(lab_info.kubeconfig), namespace=ns, environ={}
    ) as d:
        res = d.discover("near", port="http")
    assert res.traffic_distribution == "PreferSameZone"
    hints = {ep.host: (ep.zone_hints, ep.node_hints) for ep in res}
    assert hints == {
        "192.0.2.41": (("zone-a",), ("node-1",)),
        "192.0.2.42": (("zone-a", "zone-b"), ()),
        "192.0.2.43": (("zone-b",), ()),
    }
    lb = kdisco.Balancer(zone="zone-a")
    assert {lb.pick(res).host for _ in range(40)} == {"192.0.2.41", "192.0.2.42"}


def test_the_callers_zone_from_its_nodes_label(lab_info: Any, nodes: Any, creds: Any) -> None:
    # NODE_NAME (the downward API) names the node; the api strategy reads its zone
    # label when it may. A ServiceAccount without a ClusterRole for nodes may not.
    name = "node-1"
    assert nodes[name][2] == "zone-a"
    admin = kdisco.Discoverer(
        strategies=["api"],
        kubeconfig=str(lab_info.kubeconfig),
        namespace="default",
        environ={"NODE_NAME": name},
    )
    in_pod = kdisco.Discoverer(
        strategies=["api"],
        environ={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(urlsplit(lab_info.apiserver_url).port),
            "KDISCO_SERVICEACCOUNT_DIR": str(creds),
            "NODE_NAME": name,
        },
    )
    with admin, in_pod:
        assert default_balancer(admin.settings, admin.strategies).topology.zone == "zone-a"
        # 403 on nodes: no zone, and no error either.
        assert default_balancer(in_pod.settings, in_pod.strategies).topology.zone is None
        assert default_balancer(in_pod.settings, in_pod.strategies).topology.node == name
