"""``backends=True``: the pods behind a ClusterIP Service instead of its virtual IP.

The api strategy against the in-process fake apiserver (direct reads and the watch
cache, sync and async); DNS and env say they cannot tell. The lab test is in
tests/integration/test_lab_backends.py.
"""

from __future__ import annotations

import asyncio

import pytest

import kdisco
from kdisco import Outcome, ServiceKind, WatchCachePolicy
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.env import EnvStrategy
from kdisco.aio import AsyncDiscoverer
from tests._helpers_api import FakeApiServer, FakeNamespace, client_for, eps_slice, svc

FAST = WatchCachePolicy(backoff_initial=0.05, backoff_max=0.5)


def cluster_ip_with_pods(server: FakeApiServer) -> FakeNamespace:
    ns = FakeNamespace(server)
    ns.put("services", svc("payments", headless=False, port=80))
    ns.put("endpointslices", eps_slice("payments-a", "payments", ["10.1.0.1", "10.1.0.2"]))
    ns.put("endpointslices", eps_slice("payments-b", "payments", ["10.1.0.3"], port=8080))
    return ns


@pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
def test_backends_are_the_ready_pods_with_their_target_ports(
    server: FakeApiServer, watch: bool
) -> None:
    cluster_ip_with_pods(server)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=watch and FAST)
    with kdisco.Discoverer(strategies=[strategy], namespace="billing", environ={}) as d:
        plain = d.discover("payments", port="http")
        pods = d.discover("payments", port="http", backends=True)
        again = asyncio.run(AsyncDiscoverer.wrap(d).discover("payments", backends=True))
    assert [(ep.host, ep.port) for ep in plain] == [("10.96.0.10", 80)]
    assert sorted((ep.host, ep.port) for ep in pods) == [
        ("10.1.0.1", 8080),
        ("10.1.0.2", 8080),
        ("10.1.0.3", 8080),
    ]
    assert pods.kind is ServiceKind.CLUSTER_IP
    assert pods.port is not None
    assert pods.port.port == 80  # the Service's port; the endpoints carry the target
    assert {ep.node for ep in pods} == {"node-1"}
    assert sorted(ep.host for ep in again) == ["10.1.0.1", "10.1.0.2", "10.1.0.3"]


def test_backends_with_no_pods_is_no_ready_endpoints(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("idle", headless=False))
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url))
    with kdisco.Discoverer(strategies=[strategy], namespace="billing", environ={}) as d:
        # Nothing behind the ClusterIP is ready, and the api strategy can see it.
        with pytest.raises(kdisco.NoReadyEndpoints, match=r"ClusterIP Service idle\.billing"):
            d.discover("idle", reach="cluster")
        # Not asking about readiness, the answer is the ClusterIP itself.
        assert len(d.discover("idle", reach="cluster", include_not_ready=True)) == 1
        with pytest.raises(kdisco.NoReadyEndpoints, match="its pods"):
            d.discover("idle", backends=True)


def test_env_cannot_tell_and_says_so() -> None:
    env = EnvStrategy(
        {
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
            "POD_NAMESPACE": "billing",
            "PAYMENTS_SERVICE_HOST": "10.96.0.10",
            "PAYMENTS_SERVICE_PORT": "80",
        },
        namespace="billing",
    )
    d = kdisco.Discoverer(strategies=[env], environ={}, namespace="billing")
    assert d.discover("payments").first().host == "10.96.0.10"
    with pytest.raises(kdisco.DiscoveryUnavailable) as info:
        d.discover("payments", backends=True)
    (attempt,) = info.value.attempts
    assert attempt.outcome is Outcome.NOT_APPLICABLE
    assert "backends" in attempt.reason


def test_backends_is_part_of_the_cache_key_and_checked(server: FakeApiServer) -> None:
    cluster_ip_with_pods(server)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url))
    with kdisco.Discoverer(strategies=[strategy], namespace="billing", environ={}) as d:
        assert len(d.discover("payments")) == 1
        assert len(d.discover("payments", backends=True)) == 3
        with pytest.raises(kdisco.InvalidServiceName, match="backends"):
            d.discover("payments", backends=1)  # type: ignore[arg-type]
