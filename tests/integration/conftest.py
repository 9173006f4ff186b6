"""The lab for integration tests: a real kube-apiserver, etcd and CoreDNS.

One lab per test session (reused when `nox -s lab -- up` already runs one), and one
namespace of Services of every kind, created once and read by many tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lab.objects import Cluster, endpoint, port

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: How long CoreDNS may take to see an object the test just wrote (its watch).
PROPAGATION_TIMEOUT = 15.0


@pytest.fixture(scope="session")
def lab_info() -> Iterator[Any]:
    try:
        import lab

        manager = lab.ensure_lab()
        info = manager.__enter__()
    except Exception as exc:  # any reason the lab is missing is reported, not hidden
        if in_ci():
            pytest.fail(f"CI=true and the lab could not start: {exc!r}", pytrace=False)
        pytest.skip(
            f"the lab is not available ({exc!r}); it needs Go to build once "
            "(`python lab/build.py`), or run `nox -s lab -- up`"
        )
    try:
        yield info
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def cluster(lab_info: Any) -> Iterator[Cluster]:
    c = Cluster(str(lab_info.kubeconfig))
    yield c
    c.close()


def eventually(fn: Callable[[], T], *, timeout: float = PROPAGATION_TIMEOUT) -> T:
    """Retry ``fn`` until it stops raising AssertionError (CoreDNS watches the API, so a
    new object reaches DNS a moment after it is written)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


#: The Nodes Pods run on (cluster-wide, shared by the session and left in place):
#: name -> (InternalIP, ExternalIP, zone). The EndpointSlice controller takes an
#: endpoint's zone from its Node's label, and leaves out Pods whose Node is missing.
NODES = {
    "node-1": ("192.0.2.231", "203.0.113.231", "zone-a"),
    "node-2": ("192.0.2.232", "203.0.113.232", "zone-b"),
    "node-3": ("192.0.2.233", "203.0.113.233", "zone-c"),
}

#: The headless, dual-stack "db" Service's ready endpoints: (address, hostname). db-0
#: has an IPv4 and an IPv6 address (one endpoint in each family's slice), db-1 IPv4
#: only, db-2 IPv6 only.
DB_READY = {
    ("192.0.2.11", "db-0"),
    ("2001:db8::11", "db-0"),
    ("192.0.2.12", "db-1"),
    ("2001:db8::13", "db-2"),
}
#: db-3: not ready, and terminating (deleted while it holds a finalizer).
DB_NOT_READY = ("192.0.2.14", "db-3")
#: The ``app`` Services with a ClusterIP and one Pod behind it (192.0.2.60 on).
BACKED = ("single", "dns-like", "np", "lb", "dual")
#: More Pods than one EndpointSlice holds (100): the controller makes two slices.
BIG_ENDPOINTS = 120
#: The hand-written "moving" Service's endpoints: (address, hostname); 192.0.2.82 is
#: listed in two slices.
MOVING = {("192.0.2.81", "m-0"), ("192.0.2.82", "m-1"), ("2001:db8::83", "m-2")}
#: The finalizer that keeps a deleted Pod terminating (released when its namespace goes).
HOLD = "kdisco.test/hold"


def big_address(i: int) -> str:
    return f"198.51.100.{i}"


def make_nodes(cluster: Cluster) -> dict[str, tuple[str, str, str]]:
    """Create (or refresh) the :data:`NODES` in the lab ``cluster`` writes to."""
    for name, (internal, external, zone) in NODES.items():
        cluster.node(name, internal_ip=internal, external_ip=external, zone=zone)
    return NODES


@pytest.fixture(scope="session")
def nodes(cluster: Cluster) -> dict[str, tuple[str, str, str]]:
    return make_nodes(cluster)


def slice_endpoints(cluster: Cluster, ns: str, service: str) -> dict[str, Any]:
    """The endpoints of a Service's EndpointSlices, by address (as the API holds them)."""
    return {
        address: ep
        for s in cluster.slices(ns, service)
        for ep in s.get("endpoints") or []
        for address in ep["addresses"]
    }


def converged(
    cluster: Cluster,
    ns: str,
    service: str,
    addresses: Iterable[str],
    *,
    timeout: float = PROPAGATION_TIMEOUT,
) -> dict[str, Any]:
    """Wait until the Service's slices hold exactly ``addresses`` (the EndpointSlice
    controller works from watch events: a moment after the Pods are written)."""
    want = set(addresses)

    def check() -> dict[str, Any]:
        eps = slice_endpoints(cluster, ns, service)
        assert set(eps) == want, sorted(set(eps) ^ want)
        return eps

    return eventually(check, timeout=timeout)


@pytest.fixture(scope="session")
def app(cluster: Cluster, nodes: dict[str, tuple[str, str, str]]) -> str:
    """A namespace holding one Service of every kind the tests read.

    Services with a selector get their EndpointSlices from the real controller, made
    from Pods whose status the lab writes as a kubelet would; the fixture returns when
    every one has converged, so tests read a settled state.
    """
    ns = cluster.namespace("app")
    cluster.service(
        ns,
        "web",
        ports=[port(80, "http", target=8080, app_protocol="http"), port(9090, "metrics")],
        selector={"app": "web"},
    )
    for i in (1, 2):
        cluster.pod(ns, f"web-{i}", labels={"app": "web"}, node="node-1", ip=f"192.0.2.5{i}")
    # Services with a ClusterIP, each with one ready Pod behind it (the api strategy
    # reads their slices to tell whether anything behind the ClusterIP is ready).
    cluster.service(ns, "single", ports=[port(5432)], selector={"app": "single"})
    cluster.service(
        ns,
        "dns-like",
        ports=[port(53, "dns", protocol="UDP"), port(53, "dns-tcp")],
        selector={"app": "dns-like"},
    )
    cluster.service(ns, "np", type="NodePort", ports=[port(8443, "https")], selector={"app": "np"})
    cluster.service(
        ns, "lb", type="LoadBalancer", ports=[port(443, "https")], selector={"app": "lb"}
    )
    cluster.set_load_balancer_ip(ns, "lb", "203.0.113.7")
    cluster.service(
        ns,
        "dual",
        ports=[port(80, "http")],
        ip_family_policy="RequireDualStack",
        ip_families=["IPv4", "IPv6"],
        selector={"app": "dual"},
    )
    for i, name in enumerate(BACKED):
        cluster.pod(ns, f"{name}-0", labels={"app": name}, node="node-1", ip=f"192.0.2.6{i}")

    cluster.service(
        ns,
        "db",
        headless=True,
        ports=[port(5432, "postgres", target="postgres")],  # the Pods' named port
        selector={"app": "db"},
        ip_family_policy="RequireDualStack",
        ip_families=["IPv4", "IPv6"],
    )

    def db(name: str, node: str, ips: list[str], **kw: Any) -> None:
        labels = {"app": "db"}
        named = [_container_port(5433, "postgres")]
        cluster.pod(ns, name, labels=labels, node=node, ips=ips, ports=named, **kw)

    db("db-0", "node-1", ["192.0.2.11", "2001:db8::11"], hostname="db-0", subdomain="db")
    db("db-1", "node-2", ["192.0.2.12"], hostname="db-1", subdomain="db")
    db("db-2", "node-3", ["2001:db8::13"], hostname="db-2", subdomain="db")
    address, hostname = DB_NOT_READY
    db(
        hostname,
        "node-2",
        [address],
        hostname=hostname,
        subdomain="db",
        ready=False,
        finalizers=[HOLD],
    )
    cluster.terminate_pod(ns, hostname)

    # Hand-written slices, for shapes the EndpointSlice controller never produces: one
    # address in two slices (an endpoint moving between slices, which the controller
    # shows for an instant at most), and an endpoint with no targetRef (the controller
    # always names the Pod). Not managed by the controller: it leaves them alone.
    cluster.service(ns, "moving", headless=True, ports=[port(5432, "postgres", target=5433)])
    m0 = endpoint("192.0.2.81", hostname="m-0", pod="m-0", node="node-1", zone="zone-a")
    m1 = endpoint("192.0.2.82", hostname="m-1", pod="m-1", node="node-2", zone="zone-b")
    pg = [port(5433, "postgres")]
    cluster.endpoint_slice(ns, "moving", "moving-a", [m0, m1], ports=pg)
    cluster.endpoint_slice(ns, "moving", "moving-b", [m1], ports=pg)
    v6 = [endpoint("2001:db8::83", hostname="m-2", node="node-3")]
    cluster.endpoint_slice(ns, "moving", "moving-v6", v6, ports=pg, address_type="IPv6")

    cluster.service(ns, "idle", headless=True, ports=[port(80, "http")], selector={"app": "idle"})
    cluster.pod(
        ns,
        "idle-0",
        labels={"app": "idle"},
        node="node-1",
        ip="192.0.2.21",
        hostname="idle-0",
        subdomain="idle",
        ready=False,
    )

    cluster.service(ns, "big", headless=True, ports=[port(80, "http")], selector={"app": "big"})
    for i in range(1, BIG_ENDPOINTS + 1):
        cluster.pod(
            ns,
            f"big-{i}",
            labels={"app": "big"},
            node=f"node-{1 + i % 3}",
            ip=big_address(i),
            hostname=f"big-{i}",
            subdomain="big",
        )

    cluster.service(ns, "outside", external_name="db.example.test", ports=[port(5432, "pg")])
    cluster.service(ns, "alias", external_name=f"web.{ns}.svc.cluster.local")
    cluster.service(ns, "loop-a", external_name=f"loop-b.{ns}.svc.cluster.local")
    cluster.service(ns, "loop-b", external_name=f"loop-a.{ns}.svc.cluster.local")

    converged(cluster, ns, "web", ["192.0.2.51", "192.0.2.52"])
    for i, name in enumerate(BACKED):
        converged(cluster, ns, name, [f"192.0.2.6{i}"])
    converged(cluster, ns, "db", {a for a, _ in DB_READY} | {DB_NOT_READY[0]})
    converged(cluster, ns, "idle", ["192.0.2.21"])
    converged(cluster, ns, "big", [big_address(i) for i in range(1, BIG_ENDPOINTS + 1)])
    # db-3's endpoint shows it terminating only once the controller saw the deletion.
    eventually(lambda: _terminating(cluster, ns, "db", DB_NOT_READY[0]))
    return ns


def _container_port(number: int, name: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"containerPort": number, "protocol": "TCP"}
    if name:
        p["name"] = name
    return p


def _terminating(cluster: Cluster, ns: str, service: str, address: str) -> None:
    conditions = slice_endpoints(cluster, ns, service)[address]["conditions"]
    assert conditions.get("terminating") is True, conditions


@pytest.fixture(scope="session")
def creds(
    lab_info: Any, cluster: Cluster, app: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A ServiceAccount allowed to read Services and EndpointSlices in ``app`` only
    (one per session: it has a fixed name)."""
    return cluster.serviceaccount_credentials(
        app, tmp_path_factory.mktemp("sa"), str(lab_info.ca_path)
    )


@contextmanager
def private_lab(**options: Any) -> Iterator[Any]:
    """A lab of the test module's own (so it may stop and restart servers), started with
    ``lab.ensure_lab(**options)``; under CI=true a lab that cannot start fails."""
    try:
        import lab

        manager = lab.ensure_lab(**options)
        info = manager.__enter__()
    except Exception as exc:
        if in_ci():
            pytest.fail(f"CI=true and a private lab could not start: {exc!r}", pytrace=False)
        pytest.skip(f"a private lab is not available ({exc!r})")
    try:
        yield info
    finally:
        manager.__exit__(None, None, None)
