"""The API watch cache and ``watch()`` against the real kube-apiserver.

Requests are counted at the transport (the ApiClient's ``call_api``), which sees
exactly what kdisco sends, whatever else talks to a shared lab. The tests that
restart kube-apiserver or compact etcd run on a private lab with the apiserver's own
watch cache off, so old resourceVersions expire with etcd and a shared lab is never
disturbed.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import V1ConfigMap, V1ObjectMeta

import kdisco
from kdisco import WatchCachePolicy
from kdisco._k8s.client import KubeClient
from kdisco._strategies.api import ApiStrategy
from lab.objects import Cluster, port

from .conftest import converged, eventually, make_nodes
from .conftest import private_lab as start_private_lab

FAST = WatchCachePolicy(backoff_initial=0.05, backoff_max=0.5)
LIMIT = 15.0


class Counted:
    """An api strategy whose every request is recorded as (method, path, query)."""

    def __init__(self, kubeconfig: str, policy: WatchCachePolicy = FAST) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []

        def factory() -> KubeClient:
            client = KubeClient.from_kubeconfig([kubeconfig], None)
            original = client.open

            def open_(path: str, query: Any = (), **kwargs: Any) -> Any:
                self.calls.append(("GET", path, dict(query)))
                return original(path, query, **kwargs)

            client.open = open_  # type: ignore[method-assign]
            return client

        self.strategy = ApiStrategy(client_factory=factory, watch=policy)

    def watches(self) -> int:
        return sum(1 for _, _, q in self.calls if q.get("watch"))

    def lists(self, resource: str) -> int:
        return sum(1 for _, p, q in self.calls if p.endswith(f"/{resource}") and not q.get("watch"))

    def direct(self) -> list[str]:
        return [
            p
            for _, p, q in self.calls
            if not p.endswith(("/services", "/endpointslices")) or "=" in q.get("labelSelector", "")
        ]


def discoverer(counted: Counted, ns: str) -> kdisco.Discoverer:
    # The cluster's view: these tests count the requests the watch cache saves.
    return kdisco.Discoverer(
        strategies=[counted.strategy], namespace=ns, environ={}, reach="cluster"
    )


def headless(cluster: Cluster, prefix: str, name: str = "db", n: int = 2) -> str:
    """A namespace with a headless Service whose slice the EndpointSlice controller
    made from ``n`` Pods (192.0.2.1, ...), returned once it holds them all."""
    make_nodes(cluster)
    ns = cluster.namespace(prefix)
    cluster.service(ns, name, headless=True, ports=[port(5432, "pg")], selector={"app": name})
    replace(cluster, ns, [f"192.0.2.{i}" for i in range(1, n + 1)], name)
    return ns


def hosts(res: kdisco.Resolution) -> set[str]:
    return {ep.host for ep in res}


def replace(cluster: Cluster, ns: str, addresses: list[str], name: str = "db") -> None:
    """Make ``addresses`` the Service's Pods: the new Pods are started (Ready) before
    the others are deleted, so the slice never goes through an empty set."""
    pods = {f"{name}-{a.rsplit('.', 1)[1]}": a for a in addresses}
    existing = {p["metadata"]["name"] for p in cluster.pods(ns, f"app={name}")}
    for pod, address in pods.items():
        if pod not in existing:
            cluster.pod(ns, pod, labels={"app": name}, node="node-1", ip=address)
    for pod in existing - set(pods):
        cluster.delete_pod(ns, pod)
    converged(cluster, ns, name, addresses)


def until(got: queue.Queue[kdisco.Resolution], expected: set[str]) -> None:
    """Take watch answers until one shows ``expected`` (the controller may show the
    way there too: the new Pods before the old ones are gone)."""
    deadline = time.monotonic() + LIMIT
    seen = []
    while hosts(res := got.get(timeout=max(0.01, deadline - time.monotonic()))) != expected:
        seen.append(hosts(res))
        assert time.monotonic() < deadline, seen


def seen_by(d: kdisco.Discoverer, expected: set[str]) -> Callable[[], None]:
    def check() -> None:
        assert hosts(d.discover("db")) == expected

    return check


# -- on the shared lab ------------------------------------------------------------------


def test_slice_updates_reach_discover_and_watch(lab_info: Any, cluster: Cluster) -> None:
    ns = headless(cluster, "watch")
    counted = Counted(str(lab_info.kubeconfig))
    got: queue.Queue[kdisco.Resolution] = queue.Queue()
    try:
        with discoverer(counted, ns) as d, d.watch("db", callback=got.put):
            assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.1", "192.0.2.2"}
            for i in range(3, 6):
                replace(cluster, ns, [f"192.0.2.{i}"])
                until(got, {f"192.0.2.{i}"})
                eventually(seen_by(d, {f"192.0.2.{i}"}))
            assert counted.direct() == []
    finally:
        cluster.delete_namespace(ns)


def test_repeated_discovers_send_no_requests(lab_info: Any, cluster: Cluster) -> None:
    make_nodes(cluster)
    ns = cluster.namespace("load")
    names = [f"svc-{i}" for i in range(10)]
    for name in names:  # ten Services of one Pod
        cluster.service(
            ns, name, headless=True, ports=[port(80, "http")], selector={"tier": "load"}
        )
    cluster.pod(ns, "load-0", labels={"tier": "load"}, node="node-1", ip="192.0.2.1")
    for name in names:
        converged(cluster, ns, name, ["192.0.2.1"])
    counted = Counted(str(lab_info.kubeconfig))
    try:
        with discoverer(counted, ns) as d:
            for name in names:
                d.discover(name)
            eventually(lambda: _at_least(counted.watches(), 2))
            before = list(counted.calls)
            for i in range(2000):
                if i % 2:
                    d.clear_cache()  # half the calls reach the strategy's memory
                assert d.discover(names[i % len(names)]).first().host == "192.0.2.1"
            assert counted.calls == before
        assert (counted.lists("services"), counted.lists("endpointslices")) == (1, 1)
        assert counted.watches() == 2
        assert counted.direct() == []
    finally:
        cluster.delete_namespace(ns)


def test_a_program_that_never_closes_its_discoverer_exits_cleanly(
    lab_info: Any, cluster: Cluster
) -> None:
    # Watch threads block in socket reads; left running into interpreter shutdown they
    # used to abort the process (SIGABRT, exit -6) after its work was done.
    ns = headless(cluster, "exit")
    code = (
        "import kdisco\n"
        f"d = kdisco.Discoverer(strategies=['api'], kubeconfig={str(lab_info.kubeconfig)!r},"
        f" namespace={ns!r})\n"
        "print(len(d.discover('db')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert (out.returncode, out.stdout.strip()) == (0, "2"), out.stderr


def _at_least(value: int, wanted: int) -> None:
    assert value >= wanted


# -- on a private lab: restarts and compaction ----------------------------------------------


@pytest.fixture(scope="module")
def private_lab() -> Iterator[Any]:
    with start_private_lab(watch_cache=False) as info:
        yield info


@pytest.fixture(scope="module")
def private_cluster(private_lab: Any) -> Iterator[Cluster]:
    c = Cluster(str(private_lab.kubeconfig))
    yield c
    c.close()


def slice_informer(counted: Counted, ns: str) -> Any:
    cache = counted.strategy.watch_cache
    assert cache is not None
    namespace = cache.namespace(ns)
    assert namespace is not None
    return next(t for t in namespace.threads if t.resource == "endpointslices")


def test_compaction_gives_410_and_a_re_list(private_lab: Any, private_cluster: Cluster) -> None:
    cluster = private_cluster
    ns = headless(cluster, "gone")
    counted = Counted(str(private_lab.kubeconfig))
    with discoverer(counted, ns) as d:
        assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2"}
        informer = slice_informer(counted, ns)
        eventually(lambda: _at_least(informer.watches, 1))
        # Move etcd on past the informer's resourceVersion, then compact it away.
        for i in range(3):
            bump = V1ConfigMap(metadata=V1ObjectMeta(name=f"bump-{i}"))
            cluster.core.create_namespaced_config_map(ns, bump)
        private_lab.compact_etcd()
        # Force a re-watch from the (now compacted) resourceVersion.
        informer.reconnect()
        eventually(lambda: _at_least(informer.lists, 2))
        assert counted.lists("endpointslices") == 2
        replace(cluster, ns, ["192.0.2.9"])
        eventually(seen_by(d, {"192.0.2.9"}))


def test_apiserver_restart_recovers(private_lab: Any, private_cluster: Cluster) -> None:
    cluster = private_cluster
    ns = headless(cluster, "restart")
    counted = Counted(str(private_lab.kubeconfig))
    got: queue.Queue[kdisco.Resolution] = queue.Queue()
    with discoverer(counted, ns) as d, d.watch("db", callback=got.put):
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.1", "192.0.2.2"}
        watches = counted.watches()
        private_lab.restart_apiserver()
        replace(cluster, ns, ["192.0.2.7"])  # the controller's watches come back too
        until(got, {"192.0.2.7"})
        eventually(seen_by(d, {"192.0.2.7"}))
        assert counted.watches() > watches  # the watches were re-opened
