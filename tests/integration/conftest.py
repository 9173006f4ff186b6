"""The lab for integration tests: a real kube-apiserver, etcd and CoreDNS.

One lab per test session (reused when `nox -s lab -- up` already runs one), and one
namespace of Services of every kind, created once and read by many tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
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


#: TEST-NET addresses and hostnames of the headless "db" Service's endpoints.
DB_READY = {("192.0.2.11", "db-0"), ("192.0.2.12", "db-1"), ("2001:db8::13", "db-2")}
DB_NOT_READY = ("192.0.2.14", "db-3")
BIG_ENDPOINTS = 120


@pytest.fixture(scope="session")
def app(cluster: Cluster) -> str:
    """A namespace holding one Service of every kind the tests read."""
    ns = cluster.namespace("app")
    cluster.service(
        ns, "web", ports=[port(80, "http", target=8080, app_protocol="http"), port(9090, "metrics")]
    )
    cluster.service(ns, "single", ports=[port(5432)])
    cluster.service(ns, "dns-like", ports=[port(53, "dns", protocol="UDP"), port(53, "dns-tcp")])
    cluster.service(ns, "np", type="NodePort", ports=[port(8443, "https")])
    cluster.service(ns, "lb", type="LoadBalancer", ports=[port(443, "https")])
    cluster.set_load_balancer_ip(ns, "lb", "203.0.113.7")
    cluster.service(
        ns,
        "dual",
        ports=[port(80, "http")],
        ip_family_policy="RequireDualStack",
        ip_families=["IPv4", "IPv6"],
    )

    cluster.service(ns, "db", headless=True, ports=[port(5432, "postgres", target=5433)])
    pg = [port(5433, "postgres")]
    cluster.endpoint_slice(
        ns,
        "db",
        "db-a",
        [
            endpoint(
                "192.0.2.11",
                hostname="db-0",
                pod="db-0",
                node="node-1",
                zone="zone-a",
                namespace=ns,
            ),
            endpoint(
                "192.0.2.12",
                hostname="db-1",
                pod="db-1",
                node="node-2",
                zone="zone-b",
                namespace=ns,
            ),
        ],
        ports=pg,
    )
    cluster.endpoint_slice(
        ns,
        "db",
        "db-b",
        [
            # Overlaps db-a while "moving": must appear once.
            endpoint(
                "192.0.2.12",
                hostname="db-1",
                pod="db-1",
                node="node-2",
                zone="zone-b",
                namespace=ns,
            ),
            endpoint(
                DB_NOT_READY[0],
                ready=False,
                serving=False,
                terminating=True,
                hostname=DB_NOT_READY[1],
            ),
        ],
        ports=pg,
    )
    cluster.endpoint_slice(
        ns,
        "db",
        "db-v6",
        [
            endpoint("2001:db8::13", hostname="db-2", node="node-3"),  # no targetRef
        ],
        ports=pg,
        address_type="IPv6",
    )

    cluster.service(ns, "idle", headless=True, ports=[port(80, "http")])
    cluster.endpoint_slice(
        ns,
        "idle",
        "idle-a",
        [endpoint("192.0.2.21", ready=False, hostname="idle-0")],
        ports=[port(80, "http")],
    )

    cluster.service(ns, "big", headless=True, ports=[port(80, "http")])
    cluster.endpoint_slice(
        ns,
        "big",
        "big-a",
        [endpoint(f"198.51.100.{i}", hostname=f"big-{i}") for i in range(1, BIG_ENDPOINTS + 1)],
        ports=[port(80, "http")],
    )

    cluster.service(ns, "outside", external_name="db.example.test", ports=[port(5432, "pg")])
    cluster.service(ns, "alias", external_name=f"web.{ns}.svc.cluster.local")
    cluster.service(ns, "loop-a", external_name=f"loop-b.{ns}.svc.cluster.local")
    cluster.service(ns, "loop-b", external_name=f"loop-a.{ns}.svc.cluster.local")
    return ns


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
