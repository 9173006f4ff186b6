"""Topology-aware balancing: trafficDistribution, EndpointSlice hints, the caller's
zone and node (kube-proxy's rules), from the API's JSON to the Balancer's pick."""

from __future__ import annotations

import collections

import attrs
import pytest

import kdisco
from kdisco import Balancer, Endpoint, Resolution, ServiceKind, ServiceRef
from kdisco._settings import caller_topology
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import FakeApiServer, FakeNamespace, client_for, eps_slice, svc


def answer(*endpoints: Endpoint, traffic: str | None = None) -> Resolution:
    return Resolution(
        service=ServiceRef(name="web", namespace="shop"),
        kind=ServiceKind.HEADLESS,
        endpoints=endpoints,
        source="test",
        traffic_distribution=traffic,
    )


A1 = Endpoint(host="10.0.0.1", port=80, zone="zone-a", node="node-1")
A2 = Endpoint(host="10.0.0.2", port=80, zone="zone-a", node="node-2")
B1 = Endpoint(host="10.0.0.3", port=80, zone="zone-b", node="node-3")


def spread(lb: Balancer, res: Resolution, n: int = 60) -> collections.Counter[str]:
    return collections.Counter(lb.pick(res).host for _ in range(n))


def test_the_services_traffic_distribution_keeps_traffic_in_the_callers_zone() -> None:
    lb = Balancer(zone="zone-a")
    assert set(spread(lb, answer(A1, A2, B1))) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert set(spread(lb, answer(A1, A2, B1, traffic="PreferSameZone"))) == {
        "10.0.0.1",
        "10.0.0.2",
    }
    # PreferClose is the older name of the same thing.
    assert set(spread(lb, answer(A1, A2, B1, traffic="PreferClose"))) == {"10.0.0.1", "10.0.0.2"}


def test_prefer_same_node_then_zone_then_all() -> None:
    res = answer(A1, A2, B1, traffic="PreferSameNode")
    assert set(spread(Balancer(zone="zone-a", node="node-2"), res)) == {"10.0.0.2"}
    assert set(spread(Balancer(zone="zone-a", node="node-9"), res)) == {"10.0.0.1", "10.0.0.2"}
    assert len(spread(Balancer(zone="zone-c", node="node-9"), res)) == 3


def test_hints_decide_when_every_endpoint_has_them() -> None:
    # The EndpointSlice controller hinted B1 for zone-a (zone-a has few endpoints of
    # its own): the hints, not the endpoints' own zones, say what is near.
    hinted = [
        attrs.evolve(A1, zone_hints=("zone-a",)),
        attrs.evolve(A2, zone_hints=("zone-b",)),
        attrs.evolve(B1, zone_hints=("zone-a", "zone-b")),
    ]
    res = answer(*hinted, traffic="PreferSameZone")
    assert set(spread(Balancer(zone="zone-a"), res)) == {"10.0.0.1", "10.0.0.3"}
    # One endpoint without hints: hints are ignored, as kube-proxy ignores them.
    partly = answer(hinted[0], hinted[1], B1, traffic="PreferSameZone")
    assert set(spread(Balancer(zone="zone-a"), partly)) == {"10.0.0.1", "10.0.0.2"}


def test_nothing_local_ready_falls_back_to_all() -> None:
    res = answer(attrs.evolve(A1, ready=False), B1, traffic="PreferSameZone")
    assert set(spread(Balancer(zone="zone-a"), res)) == {"10.0.0.3"}


def test_the_callers_zone_and_node_from_the_environment() -> None:
    assert caller_topology({}) == ((None, None), {})
    assert caller_topology({"KDISCO_ZONE": "zone-a", "NODE_NAME": "node-1"}) == (
        ("zone-a", "node-1"),
        {"zone": "KDISCO_ZONE", "node": "NODE_NAME"},
    )
    assert caller_topology({"KDISCO_NODE": "n2", "NODE_NAME": "node-1"})[0] == (None, "n2")
    d = kdisco.Discoverer(
        strategies=["static"], static={}, environ={"KDISCO_ZONE": "zone-b"}, namespace="x"
    )
    assert (d.settings.zone, d.settings.sources["zone"]) == ("zone-b", "KDISCO_ZONE")


def test_the_api_reads_traffic_distribution_and_hints(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    service = svc("web", headless=True)
    service["spec"]["trafficDistribution"] = "PreferSameZone"
    ns.put("services", service)
    sl = eps_slice("web-a", "web", ["10.1.0.1", "10.1.0.2"])
    sl["endpoints"][0]["hints"] = {"forZones": [{"name": "z"}], "forNodes": [{"name": "node-1"}]}
    ns.put("endpointslices", sl)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url))
    with kdisco.Discoverer(strategies=[strategy], namespace="billing", environ={}) as d:
        res = d.discover("web")
    assert res.traffic_distribution == "PreferSameZone"
    by_host = {ep.host: ep for ep in res}
    assert by_host["10.1.0.1"].zone_hints == ("z",)
    assert by_host["10.1.0.1"].node_hints == ("node-1",)
    assert by_host["10.1.0.2"].zone_hints == ()


@pytest.mark.parametrize(
    "hints", [[], {"forZones": "z"}, {"forZones": [{"nom": "z"}]}, {"forNodes": [{"name": 3}]}]
)
def test_malformed_hints_are_refused_naming_the_field(server: FakeApiServer, hints: object) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("web", headless=True))
    sl = eps_slice("web-a", "web", ["10.1.0.1"])
    sl["endpoints"][0]["hints"] = hints
    ns.put("endpointslices", sl)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url))
    d = kdisco.Discoverer(strategies=[strategy], namespace="billing", environ={})
    with d, pytest.raises(kdisco.DiscoveryError) as info:
        d.discover("web")
    assert "hints" in str(info.value)
