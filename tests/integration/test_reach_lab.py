"""``reach``: ways in from outside the cluster, against the lab's real kube-apiserver.

The lab stands in for what a cloud has: Nodes with ExternalIP/InternalIP addresses
(status written as their kubelets would), a load balancer's address written into a
LoadBalancer Service's status (as a cloud controller would), and Ingresses with an
address in their status (as an ingress controller would). The EndpointSlice that
tells which node runs a pod (``externalTrafficPolicy: Local``) is the real
controller's, made from a real Pod. Every address is from TEST-NET ranges: resolved
and compared, never connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kdisco
from kdisco import AccessDenied, NotReachable, Outcome
from kdisco._cli import main
from kdisco.aio import AsyncDiscoverer
from lab.kube import incluster_env
from lab.objects import Cluster, ingress_path, ingress_rule, port
from tests.integration.conftest import converged, eventually

#: Nodes of this module's own (Nodes are cluster-wide: other modules have theirs).
N1, N2, N3 = "reach-n1", "reach-n2", "reach-n3"
N1_EXTERNAL, N2_INTERNAL = "203.0.113.201", "192.0.2.202"
LB_IP, LB_HOST = "203.0.113.50", "lb.example.test"
INGRESS_IP = "198.51.100.80"
#: Services with one ready pod behind them (192.0.2.32 on).
BACKED = ("lb", "pending", "np", "web", "internal")


@pytest.fixture(scope="module")
def outside(cluster: Cluster) -> Iterator[str]:
    """A namespace with a Service for each way in (and one without any)."""
    cluster.node(N1, internal_ip="192.0.2.201", external_ip=N1_EXTERNAL, zone="zone-a")
    cluster.node(N2, internal_ip=N2_INTERNAL, zone="zone-b")
    cluster.node(N3, internal_ip="192.0.2.203", ready=False)
    ns = cluster.namespace("reach")

    cluster.service(
        ns, "lb", type="LoadBalancer", ports=[port(443, "https")], selector={"app": "lb"}
    )
    cluster.set_load_balancer_ingress(ns, "lb", [{"ip": LB_IP}, {"hostname": LB_HOST}])
    cluster.service(
        ns, "pending", type="LoadBalancer", ports=[port(443, "https")], selector={"app": "pending"}
    )
    cluster.service(ns, "np", type="NodePort", ports=[port(80, "http")], selector={"app": "np"})
    cluster.service(
        ns,
        "local",
        type="NodePort",
        ports=[port(80, "http", target=8080)],
        selector={"app": "local"},
        external_traffic_policy="Local",
    )
    cluster.pod(ns, "local-0", labels={"app": "local"}, node=N2, ip="192.0.2.31")

    cluster.service(
        ns, "web", ports=[port(80, "http"), port(9090, "metrics")], selector={"app": "web"}
    )
    cluster.ingress(
        ns,
        "shop",
        [
            ingress_rule("shop.example.test", ingress_path("web", "http", "/api")),
            ingress_rule(None, ingress_path("web", 80, "/web")),
        ],
        tls=[{"hosts": ["shop.example.test"], "secretName": "shop-tls"}],
    )
    cluster.set_ingress_status(ns, "shop", [{"ip": INGRESS_IP}])
    cluster.service(ns, "internal", ports=[port(5432, "pg")], selector={"app": "internal"})
    # One ready pod behind each (the api strategy reads whether anything is ready).
    for i, name in enumerate(BACKED):
        cluster.pod(ns, f"{name}-0", labels={"app": name}, node=N1, ip=f"192.0.2.3{i + 2}")
    for i, name in enumerate(BACKED):
        converged(cluster, ns, name, [f"192.0.2.3{i + 2}"])
    yield ns
    cluster.delete_namespace(ns)
    for name in (N1, N2, N3):
        cluster.delete_node(name)


def outside_discoverer(lab_info: Any, **kw: Any) -> kdisco.Discoverer:
    """The api strategy as a laptop or CI runner has it: a kubeconfig, no pod."""
    return kdisco.Discoverer(
        strategies=["api"], kubeconfig=str(lab_info.kubeconfig), environ={}, **kw
    )


def node_port(cluster: Cluster, ns: str, name: str) -> int:
    return int(cluster.read_service(ns, name)["spec"]["ports"][0]["nodePort"])


def test_a_load_balancer_answers_with_its_addresses(lab_info: Any, outside: str) -> None:
    with outside_discoverer(lab_info) as d:
        res = d.discover(f"lb.{outside}", reach="external")
    assert [ep.address for ep in res] == [f"{LB_IP}:443", f"{LB_HOST}:443"]
    assert res.reach == "external"
    assert res.kind is kdisco.ServiceKind.LOAD_BALANCER
    assert res.attempts == ()


def test_node_ports_answer_with_each_ready_node_external_else_internal_ip(
    lab_info: Any, cluster: Cluster, outside: str
) -> None:
    for name in ("np", "pending"):
        declared = node_port(cluster, outside, name)
        with outside_discoverer(lab_info) as d:
            res = d.discover(f"{name}.{outside}", reach="external")
        assert res.port is not None
        assert res.port.node_port == declared  # the node port is part of ServicePort
        by_node = {ep.node: ep for ep in res}
        # Other modules' Nodes are in the answer too (any node serves a node port).
        assert by_node[N1].address == f"{N1_EXTERNAL}:{declared}"
        assert by_node[N1].zone == "zone-a"
        assert by_node[N2].address == f"{N2_INTERNAL}:{declared}"
        assert N3 not in by_node  # NotReady
        assert all(ep.port == declared and ep.ready for ep in res)


def test_local_traffic_policy_answers_with_the_nodes_running_its_pods(
    lab_info: Any, cluster: Cluster, outside: str
) -> None:
    declared = node_port(cluster, outside, "local")
    # The EndpointSlice controller has to place the pod's endpoint first.
    found = eventually(
        lambda: _is(_local_nodes(lab_info, outside), [(N2, f"{N2_INTERNAL}:{declared}")])
    )
    assert found == [(N2, f"{N2_INTERNAL}:{declared}")]


def _local_nodes(lab_info: Any, ns: str) -> list[tuple[str | None, str]]:
    with outside_discoverer(lab_info) as d:
        res = d.discover(f"local.{ns}", reach="external")
    return [(ep.node, ep.address) for ep in res]


def _is(got: Any, want: Any) -> Any:
    assert got == want
    return got


def test_an_ingress_answers_with_its_urls(lab_info: Any, outside: str) -> None:
    with outside_discoverer(lab_info) as d:
        res = d.discover(f"web.{outside}", port="http", reach="external")
        urls = [_only(res, ep).url() for ep in res]
        assert urls == ["https://shop.example.test/api", f"http://{INGRESS_IP}/web"]
        assert res.url() == "https://shop.example.test/api"
        # No Ingress leads to the metrics port.
        with pytest.raises(NotReachable) as caught:
            d.discover(f"web.{outside}", port="metrics", reach="external")
    assert "no Ingress leads to it" in str(caught.value)


def _only(res: kdisco.Resolution, ep: kdisco.Endpoint) -> kdisco.Resolution:
    import attrs

    return attrs.evolve(res, endpoints=(ep,))


def test_without_a_way_in_external_raises_and_auto_warns(lab_info: Any, outside: str) -> None:
    name = f"internal.{outside}"
    with outside_discoverer(lab_info) as d:
        with pytest.raises(NotReachable) as caught:
            d.discover(name, reach="external")
        assert "ClusterIP Service" in str(caught.value)
        res = d.discover(name)  # auto, outside a cluster: the cluster's answer, warned
    assert res.reach == "cluster"
    assert [ep.port for ep in res] == [5432]
    assert [a.outcome for a in res.attempts] == [Outcome.NO_EXTERNAL_ROUTE, Outcome.WARNING]
    assert "runs outside the cluster" in res.attempts[-1].reason


def test_auto_outside_a_cluster_takes_the_way_in(lab_info: Any, outside: str) -> None:
    with outside_discoverer(lab_info) as d:
        assert d.settings.outside
        res = d.discover(f"lb.{outside}")
    assert res.reach == "external"
    assert res.endpoints[0].host == LB_IP


def test_reach_cluster_outside_a_cluster_warns(lab_info: Any, outside: str) -> None:
    with outside_discoverer(lab_info, reach="cluster") as d:
        res = d.discover(f"lb.{outside}")
    assert res.reach == "cluster"
    assert res.endpoints[0].host.startswith("10.")  # the ClusterIP, compared only
    assert [a.outcome for a in res.attempts] == [Outcome.WARNING]


def test_the_async_api_gives_the_same_external_answers(
    lab_info: Any, cluster: Cluster, outside: str
) -> None:
    # The Local Service's slice is the controller's: wait for it first.
    declared = node_port(cluster, outside, "local")
    eventually(lambda: _is(_local_nodes(lab_info, outside), [(N2, f"{N2_INTERNAL}:{declared}")]))

    async def both() -> list[kdisco.Resolution]:
        async with AsyncDiscoverer(
            strategies=["api"], kubeconfig=str(lab_info.kubeconfig), environ={}
        ) as d:
            return [
                await d.discover(f"{name}.{outside}", reach="external")
                for name in ("lb", "web", "np", "local")
            ]

    found = asyncio.run(both())
    with outside_discoverer(lab_info) as d:
        for got, name in zip(found, ("lb", "web", "np", "local"), strict=True):
            # Nodes listed (np) and read one by one (local) through aiohttp too.
            assert got == d.discover(f"{name}.{outside}", reach="external"), name


def test_without_rbac_for_ingresses_and_nodes_the_denial_names_them(
    lab_info: Any, cluster: Cluster, outside: str, tmp_path: Path
) -> None:
    base = [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
    ]
    narrow = cluster.serviceaccount_credentials(
        outside, tmp_path / "narrow", str(lab_info.ca_path), name="narrow", rules=base
    )
    ingresses = {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses"],
        "verbs": ["list"],
    }
    wide = cluster.serviceaccount_credentials(
        outside, tmp_path / "wide", str(lab_info.ca_path), name="wide", rules=[*base, ingresses]
    )

    def in_pod(sa_dir: Path) -> kdisco.Discoverer:
        return kdisco.Discoverer(
            strategies=["api"], environ=incluster_env(lab_info), serviceaccount_dir=sa_dir
        )

    with in_pod(narrow) as d:
        assert not d.settings.outside
        with pytest.raises(AccessDenied) as caught:
            d.discover(f"np.{outside}", reach="external")
        # In a pod, auto is the cluster view: nothing more is read.
        assert d.discover(f"np.{outside}").reach == "cluster"
    denied = caught.value
    assert (denied.verb, denied.resource) == ("list", "ingresses.networking.k8s.io")
    assert "reach='external'" in denied.message
    assert "Permissions" in denied.message

    with in_pod(wide) as d:
        with pytest.raises(AccessDenied) as caught:
            d.discover(f"np.{outside}", reach="external")
        assert (caught.value.verb, caught.value.resource) == ("list", "nodes")
        assert "ClusterRole" in caught.value.message
        cluster.grant_cluster_read(
            outside,
            "wide",
            [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
            name=f"kdisco-reach-{outside}",
        )
        d.clear_cache()
        res = eventually(lambda: _answered(d, f"np.{outside}"))
    assert {ep.node for ep in res} >= {N1, N2}


def _answered(d: kdisco.Discoverer, name: str) -> kdisco.Resolution:
    try:
        return d.discover(name, reach="external")
    except AccessDenied as exc:  # RBAC takes a moment to see the new binding
        raise AssertionError(str(exc)) from exc


def test_the_cli_shows_the_outside_view_and_warns_on_the_inside_one(
    lab_info: Any,
    outside: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for key in ("KUBERNETES_SERVICE_HOST", "KDISCO_REACH", "KDISCO_STRATEGIES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(lab_info.kubeconfig))
    monkeypatch.setenv("KDISCO_SERVICEACCOUNT_DIR", str(tmp_path))
    assert main(["resolve", f"web.{outside}", "-p", "http", "--strategies", "api"]) == 0
    out = capsys.readouterr().out
    assert "[from outside the cluster]" in out
    assert "https://shop.example.test/api" in out
    assert main(["resolve", f"internal.{outside}", "--strategies", "api"]) == 0
    out = capsys.readouterr().out
    assert "[cluster-internal]" in out
    assert out.strip().splitlines()[-1].startswith("WARNING: cluster-internal addresses")
