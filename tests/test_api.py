"""The api strategy: pure JSON -> Resolution logic, then the strategy over real HTTP.

The JSON in tests/data/api is shaped exactly like kube-apiserver's responses. The HTTP
tests point a real ``kubernetes.client.ApiClient`` at a plain-HTTP server this test
starts on 127.0.0.1, so the client's request building, paging and error mapping are
exercised for real; no other address is ever contacted.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
from kubernetes import client as k8s

from kdisco import (
    AccessDenied,
    ConfigurationError,
    Deadline,
    Discoverer,
    DiscoveryTimeout,
    DiscoveryUnavailable,
    Endpoint,
    Miss,
    Outcome,
    Query,
    Resolution,
    RetryPolicy,
    ServiceKind,
    ServicePort,
    ServiceRef,
    TransientError,
)
from kdisco._chain import run_sync
from kdisco._k8s.client import KubeClient, TokenFile
from kdisco._k8s.objects import ENDPOINT_FIELDS, service_ports
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import (
    FakeApiServer,
    Json,
    Reply,
    client_for,
    load,
    merge_slices,
    ready_pod,
    ready_pod_slices,
    resolve_service,
    service_path,
    slice_items,
    slices_path,
    write_kubeconfig,
)


def query(
    name: str, namespace: str, port: int | str | None = None, *, include_not_ready: bool = False
) -> Query:
    return Query(
        service=ServiceRef(name=name, namespace=namespace),
        port=port,
        include_not_ready=include_not_ready,
    )


def with_ready_pod(q: Query, svc: Json) -> Resolution | Miss:
    """The answer for ``svc`` with one ready pod behind it."""
    return resolve_service(q, svc, ready_pod(svc))


def no_slices() -> list[Json]:
    raise AssertionError("slices must not be listed for this Service")


def slices(name: str) -> Callable[[], list[Json]]:
    return lambda: slice_items(name)


def answer(result: Resolution | Miss) -> Resolution:
    assert isinstance(result, Resolution), result
    return result


def miss(result: Resolution | Miss) -> Miss:
    assert isinstance(result, Miss), result
    return result


def hosts(res: Resolution) -> list[str]:
    return [ep.host for ep in res.endpoints]


def by_host(res: Resolution) -> dict[str, Endpoint]:
    return {ep.host: ep for ep in res.endpoints}


# -- service_ports --------------------------------------------------------------------


def test_service_ports_reads_name_protocol_and_app_protocol() -> None:
    ports = service_ports(load("service-clusterip.json")["spec"])
    assert ports == (
        ServicePort(port=80, name="http", protocol="TCP"),
        ServicePort(port=9090, name="grpc", protocol="TCP", app_protocol="grpc"),
        ServicePort(port=5353, name="dns-udp", protocol="UDP"),
    )


def test_service_ports_defaults() -> None:
    # The apiserver defaults protocol, but a Service read from an older recording may
    # not carry it; an unnamed port is None, not "".
    assert service_ports({"ports": [{"port": 6379, "name": ""}]}) == (
        ServicePort(port=6379, name=None, protocol="TCP"),
    )
    assert service_ports({}) == ()
    assert service_ports({"ports": None}) == ()


# -- ClusterIP and friends ------------------------------------------------------------------


def test_cluster_ip_defaults_to_first_declared_port() -> None:
    res = answer(with_ready_pod(query("payments", "billing"), load("service-clusterip.json")))
    assert res.kind is ServiceKind.CLUSTER_IP
    assert res.source == "api"
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=80),)
    assert res.port == ServicePort(port=80, name="http")
    assert [p.name for p in res.ports] == ["http", "grpc", "dns-udp"]
    assert res.service == ServiceRef(name="payments", namespace="billing")


def test_cluster_ip_named_port() -> None:
    res = answer(
        with_ready_pod(query("payments", "billing", "grpc"), load("service-clusterip.json"))
    )
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=9090),)
    assert res.port is not None
    assert res.port.app_protocol == "grpc"
    assert res.url() == "grpc://10.96.12.34:9090"


def test_cluster_ip_port_by_number() -> None:
    res = answer(with_ready_pod(query("payments", "billing", 5353), load("service-clusterip.json")))
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=5353),)
    assert res.port == ServicePort(port=5353, name="dns-udp", protocol="UDP")


@pytest.mark.parametrize("port", ["admin", 8080])
def test_cluster_ip_unknown_port_is_a_miss_listing_the_declared_ports(port: int | str) -> None:
    # 8080 is the *target* port: clients of a ClusterIP connect to the Service port.
    result = miss(
        with_ready_pod(query("payments", "billing", port), load("service-clusterip.json"))
    )
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert str(port) in result.reason
    assert "payments.billing" in result.reason
    assert "http=80, grpc=9090, dns-udp=5353" in result.reason


def test_cluster_ip_dual_stack_gives_both_families_in_order() -> None:
    res = answer(with_ready_pod(query("search", "shop"), load("service-clusterip-dualstack.json")))
    assert hosts(res) == ["10.96.200.7", "fd00:10:96::c807"]
    assert [ep.port for ep in res.endpoints] == [8443, 8443]
    assert res.endpoints[1].address == "[fd00:10:96::c807]:8443"
    assert res.port == ServicePort(port=8443, name=None)


def test_cluster_ip_without_cluster_ips_list_uses_cluster_ip() -> None:
    # clusterIPs appeared with dual-stack (1.20); a Service object without it still
    # has clusterIP.
    doc = load("service-clusterip.json")
    del doc["spec"]["clusterIPs"]
    res = answer(with_ready_pod(query("payments", "billing"), doc))
    assert hosts(res) == ["10.96.12.34"]


def test_cluster_ip_without_ports_has_no_port() -> None:
    doc = load("service-clusterip.json")
    del doc["spec"]["ports"]
    res = answer(with_ready_pod(query("payments", "billing"), doc))
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=None),)
    assert res.port is None
    assert res.ports == ()


def test_node_port_answers_with_cluster_ip_and_service_port() -> None:
    res = answer(with_ready_pod(query("web", "default"), load("service-nodeport.json")))
    assert res.kind is ServiceKind.NODE_PORT
    # The nodePort (30080) is for clients outside the cluster.
    assert res.endpoints == (Endpoint(host="10.96.45.6", port=80),)


def test_load_balancer_answers_with_cluster_ip_not_the_ingress() -> None:
    res = answer(with_ready_pod(query("gateway", "edge"), load("service-loadbalancer.json")))
    assert res.kind is ServiceKind.LOAD_BALANCER
    assert res.endpoints == (Endpoint(host="10.96.77.8", port=443),)
    assert res.url() == "https://10.96.77.8:443"


def test_unknown_service_type_with_cluster_ip_is_unknown_kind() -> None:
    doc = load("service-clusterip.json")
    doc["spec"]["type"] = "SomethingNew"
    res = answer(with_ready_pod(query("payments", "billing"), doc))
    assert res.kind is ServiceKind.UNKNOWN
    assert hosts(res) == ["10.96.12.34"]


# -- ExternalName ------------------------------------------------------------------------


def test_external_name_answers_with_the_external_host() -> None:
    res = answer(
        resolve_service(query("legacy-db", "billing"), load("service-externalname.json"), no_slices)
    )
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert res.external_name == "db.example.com"
    assert res.endpoints == (Endpoint(host="db.example.com", port=5432),)
    assert res.port == ServicePort(port=5432, name="postgres")


def test_external_name_port_number_is_advisory() -> None:
    # ExternalName ports are not enforced by anything: a number the Service does not
    # declare is still a fine port to connect to on the external host.
    res = answer(
        resolve_service(
            query("legacy-db", "billing", 15432), load("service-externalname.json"), no_slices
        )
    )
    assert res.endpoints == (Endpoint(host="db.example.com", port=15432),)
    assert res.port is None


def test_external_name_unknown_port_name_is_a_miss() -> None:
    result = miss(
        resolve_service(
            query("legacy-db", "billing", "http"), load("service-externalname.json"), no_slices
        )
    )
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert "postgres=5432" in result.reason


def test_external_name_trailing_dot_dropped_and_no_ports() -> None:
    res = answer(
        resolve_service(
            query("mail", "billing"), load("service-externalname-noports.json"), no_slices
        )
    )
    assert res.external_name == "smtp.example.org"
    assert res.endpoints == (Endpoint(host="smtp.example.org", port=None),)
    assert res.ports == ()


# -- headless: merging EndpointSlices -----------------------------------------------------

KAFKA_READY = ["10.244.1.11", "10.244.2.12", "10.244.2.15", "10.0.5.20", "fd00:10:244:1::b"]
KAFKA_ALL = [
    "10.244.1.11",
    "10.244.2.12",
    "10.244.3.13",
    "10.244.1.14",
    "10.244.2.15",
    "10.0.5.20",
    "fd00:10:244:1::b",
]


def kafka(port: int | str | None = None, *, include_not_ready: bool = False) -> Resolution | Miss:
    return resolve_service(
        query("kafka", "streaming", port, include_not_ready=include_not_ready),
        load("service-headless.json"),
        slices("endpointslices-headless.json"),
    )


def test_headless_merges_every_slice_and_keeps_only_ready() -> None:
    res = answer(kafka())
    assert res.kind is ServiceKind.HEADLESS
    # Slices are merged in name order, so the answer does not depend on list order.
    assert hosts(res) == KAFKA_READY
    # Endpoints carry the target port (19092), the declared Service port stays on .port.
    assert {ep.port for ep in res.endpoints} == {19092}
    assert res.port == ServicePort(port=9092, name="broker")


def test_headless_merges_ipv4_and_ipv6_slices() -> None:
    res = answer(kafka())
    assert [ep.is_ipv6 for ep in res.endpoints] == [False, False, False, False, True]
    v6 = by_host(res)["fd00:10:244:1::b"]
    assert (v6.hostname, v6.pod, v6.node, v6.zone) == ("kafka-0", "kafka-0", "node-a", "zone-a")


def test_headless_duplicate_endpoint_across_slices_ready_copy_wins() -> None:
    res = answer(kafka(include_not_ready=True))
    assert hosts(res).count("10.244.2.15") == 1
    ep = by_host(res)["10.244.2.15"]
    assert (ep.ready, ep.serving, ep.terminating, ep.pod) == (True, True, False, "kafka-4")


def test_headless_duplicate_ready_copy_wins_whatever_the_slice_order() -> None:
    items = slice_items("endpointslices-headless.json")
    port = ServicePort(port=9092, name="broker")
    forward = merge_slices(items, port)
    backward = merge_slices(list(reversed(items)), port)
    assert forward == backward
    assert next(ep for ep in forward if ep.host == "10.244.2.15").ready is True


def test_headless_condition_nil_defaults() -> None:
    res = answer(kafka(include_not_ready=True))
    eps = by_host(res)
    # conditions: {} -> ready nil = true, serving nil = ready, terminating nil = false
    assert (eps["10.244.2.12"].ready, eps["10.244.2.12"].serving) == (True, True)
    assert eps["10.244.2.12"].terminating is False
    # only ready given: serving follows it
    assert (eps["10.0.5.20"].ready, eps["10.0.5.20"].serving) == (True, True)


def test_headless_serving_nil_follows_ready_false() -> None:
    doc: Json = {
        "metadata": {"name": "s1"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.8.1"], "conditions": {"ready": False}}],
        "ports": [{"name": "broker", "protocol": "TCP", "port": 19092}],
    }
    (ep,) = merge_slices([doc], ServicePort(port=9092, name="broker"))
    assert (ep.ready, ep.serving, ep.terminating) == (False, False, False)


def test_headless_include_not_ready_returns_every_endpoint_with_conditions() -> None:
    res = answer(kafka(include_not_ready=True))
    assert hosts(res) == KAFKA_ALL
    eps = by_host(res)
    starting = eps["10.244.3.13"]
    assert (starting.ready, starting.serving, starting.terminating) == (False, False, False)
    draining = eps["10.244.1.14"]
    assert (draining.ready, draining.serving, draining.terminating) == (False, True, True)


def test_headless_endpoint_metadata() -> None:
    ep = by_host(answer(kafka()))["10.244.1.11"]
    assert ep == Endpoint(
        host="10.244.1.11",
        port=19092,
        hostname="kafka-0",
        pod="kafka-0",
        node="node-a",
        zone="zone-a",
    )


def test_headless_endpoint_without_target_ref() -> None:
    ep = by_host(answer(kafka()))["10.0.5.20"]
    assert ep == Endpoint(host="10.0.5.20", port=19092)


def test_headless_target_ref_to_a_non_pod_is_not_a_pod_name() -> None:
    doc: Json = {
        "metadata": {"name": "s1"},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.0.7.7"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Node", "name": "node-x"},
            }
        ],
        "ports": [{"name": "", "protocol": "TCP", "port": 80}],
    }
    (ep,) = merge_slices([doc], ServicePort(port=80))
    assert ep.pod is None


def test_headless_named_port_uses_each_slices_target_port() -> None:
    res = answer(kafka("metrics"))
    assert res.port == ServicePort(port=9100, name="metrics")
    # kafka-manual-1 does not carry "metrics": its endpoint is not a backend of that
    # port (kube-proxy would not route to it), so it is left out rather than given
    # port None.
    assert hosts(res) == ["10.244.1.11", "10.244.2.12", "10.244.2.15", "fd00:10:244:1::b"]
    assert {ep.port for ep in res.endpoints} == {9308}


def test_headless_port_by_service_port_number() -> None:
    res = answer(kafka(9100))
    assert res.port == ServicePort(port=9100, name="metrics")
    assert {ep.port for ep in res.endpoints} == {9308}


def test_headless_unknown_port_is_a_miss_without_listing_slices() -> None:
    result = miss(
        resolve_service(
            query("kafka", "streaming", "jmx"), load("service-headless.json"), no_slices
        )
    )
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert "broker=9092, metrics=9100" in result.reason


def test_headless_slice_without_ports_or_port_number() -> None:
    res = answer(
        resolve_service(
            query("cache", "default"),
            load("service-headless-unnamed-port.json"),
            slices("endpointslices-ports-missing.json"),
        )
    )
    # The unnamed Service port matches the slice port named "", a slice whose port is
    # nil ("all ports") gives endpoints with an unknown port, and a slice whose ports
    # are null serves no port at all (discovery/v1), so 10.244.4.23 is left out.
    assert [(ep.host, ep.port) for ep in res.endpoints] == [
        ("10.244.4.21", 16379),
        ("10.244.4.22", None),
    ]
    assert res.endpoints[0].pod == "cache-0"


def test_headless_publish_not_ready_addresses() -> None:
    svc = load("service-headless-publish-not-ready.json")
    res = answer(
        resolve_service(
            query("zk", "streaming"), svc, slices("endpointslices-publish-not-ready.json")
        )
    )
    assert [(ep.host, ep.port, ep.serving) for ep in res.endpoints] == [
        ("10.244.5.31", 2181, False)
    ]

    # Even an endpoint the controller left not-ready is published when the Service
    # asks for it, with its conditions intact.
    items = slice_items("endpointslices-publish-not-ready.json")
    items[0]["endpoints"][0]["conditions"]["ready"] = False
    res = answer(resolve_service(query("zk", "streaming"), svc, lambda: items))
    assert [(ep.host, ep.ready) for ep in res.endpoints] == [("10.244.5.31", False)]


def test_headless_not_ready_is_hidden_without_publish_flag() -> None:
    svc = load("service-headless-publish-not-ready.json")
    svc["spec"]["publishNotReadyAddresses"] = False
    items = slice_items("endpointslices-publish-not-ready.json")
    items[0]["endpoints"][0]["conditions"]["ready"] = False
    result = miss(resolve_service(query("zk", "streaming"), svc, lambda: items))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "1 endpoints in 1 EndpointSlices, none ready" in result.reason


def test_headless_empty_slice_is_no_ready_endpoints() -> None:
    result = miss(
        resolve_service(
            query("kafka", "streaming"),
            load("service-headless.json"),
            slices("endpointslices-empty.json"),
        )
    )
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "kafka.streaming" in result.reason
    assert "1 EndpointSlices with no endpoints" in result.reason


def test_headless_without_any_slice_is_no_ready_endpoints() -> None:
    result = miss(
        resolve_service(
            query("kafka", "streaming"),
            load("service-headless.json"),
            slices("endpointslices-none.json"),
        )
    )
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "no EndpointSlices" in result.reason


def test_fqdn_slices_are_ignored() -> None:
    doc: Json = {
        "metadata": {"name": "s1"},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["db.example.com"], "conditions": {"ready": True}}],
        "ports": [{"name": "", "protocol": "TCP", "port": 80}],
    }
    assert merge_slices([doc], ServicePort(port=80)) == ()


def test_merge_without_a_chosen_port_leaves_ports_unknown() -> None:
    merged = merge_slices(slice_items("endpointslices-headless.json"), None)
    assert [ep.host for ep in merged] == KAFKA_ALL
    assert {ep.port for ep in merged} == {None}


# -- ApiStrategy over HTTP ------------------------------------------------------------------


def strategy_for(server: FakeApiServer) -> ApiStrategy:
    return ApiStrategy(client_factory=lambda: client_for(server.url))


def deadline(seconds: float = 5.0) -> Deadline:
    return Deadline(seconds)


def test_lookup_cluster_ip_reads_the_service_and_its_slices(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = strategy_for(server)
    try:
        res = answer(strategy.lookup(query("payments", "billing", "http"), deadline()))
    finally:
        strategy.close()
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=80),)
    # The slices say whether anything behind the ClusterIP is ready.
    assert server.paths() == [service_path("billing", "payments"), slices_path("billing")]


def test_lookup_headless_pages_through_every_slice(server: FakeApiServer) -> None:
    server.serve_service(load("service-headless.json"))
    # One slice per page: the strategy must follow ``continue`` to the end.
    server.serve_slices("streaming", "kafka", load("endpointslices-headless.json"), page_size=1)
    strategy = strategy_for(server)
    try:
        res = answer(strategy.lookup(query("kafka", "streaming"), deadline()))
    finally:
        strategy.close()
    assert hosts(res) == KAFKA_READY
    lists = [r for r in server.requests if r.path == slices_path("streaming")]
    assert [r.query.get("continue") for r in lists] == [None, ["1"], ["2"], ["3"]]
    assert {r.query["labelSelector"][0] for r in lists} == {"kubernetes.io/service-name=kafka"}
    assert all(r.query["limit"] == ["500"] for r in lists)


def test_lookup_missing_service_is_not_found(server: FakeApiServer) -> None:
    server.route(service_path("billing", "nope"), Reply(404, load("status-404-service.json")))
    strategy = strategy_for(server)
    try:
        result = miss(strategy.lookup(query("nope", "billing"), deadline()))
    finally:
        strategy.close()
    assert result.outcome is Outcome.NOT_FOUND
    assert "'nope'" in result.reason
    assert "'billing'" in result.reason


def test_lookup_forbidden_service_names_the_missing_permission(server: FakeApiServer) -> None:
    server.route(
        service_path("billing", "payments"), Reply(403, load("status-403-get-services.json"))
    )
    strategy = strategy_for(server)
    try:
        with pytest.raises(AccessDenied) as caught:
            strategy.lookup(query("payments", "billing"), deadline())
    finally:
        strategy.close()
    err = caught.value
    assert (err.verb, err.resource, err.namespace, err.status) == (
        "get",
        "services",
        "billing",
        403,
    )
    text = str(err)
    assert "'get'" in text
    assert "'services'" in text
    assert "'billing'" in text
    # The apiserver's own words name the identity that lacks the rule.
    assert "system:serviceaccount:billing:checkout" in text


def test_lookup_forbidden_slices_names_the_api_group(server: FakeApiServer) -> None:
    server.serve_service(load("service-headless.json"))
    server.route(slices_path("streaming"), Reply(403, load("status-403-list-endpointslices.json")))
    strategy = strategy_for(server)
    try:
        with pytest.raises(AccessDenied) as caught:
            strategy.lookup(query("kafka", "streaming"), deadline())
    finally:
        strategy.close()
    err = caught.value
    assert (err.verb, err.resource, err.namespace) == (
        "list",
        "endpointslices.discovery.k8s.io",
        "streaming",
    )
    assert "apiGroups ['discovery.k8s.io']" in str(err)
    assert "resources ['endpointslices']" in str(err)


def test_lookup_unauthorized_is_access_denied_401(server: FakeApiServer) -> None:
    server.route(service_path("billing", "payments"), Reply(401, load("status-401.json")))
    strategy = strategy_for(server)
    try:
        with pytest.raises(AccessDenied) as caught:
            strategy.lookup(query("payments", "billing"), deadline())
    finally:
        strategy.close()
    assert caught.value.status == 401
    assert "401" in str(caught.value)


@pytest.mark.parametrize("body", ["status-500.json", "status-429.json"])
def test_lookup_server_errors_are_transient(server: FakeApiServer, body: str) -> None:
    status = load(body)["code"]
    server.route(service_path("billing", "payments"), Reply(status, load(body)))
    strategy = strategy_for(server)
    try:
        with pytest.raises(TransientError, match=f"HTTP {status}"):
            strategy.lookup(query("payments", "billing"), deadline())
    finally:
        strategy.close()


@pytest.mark.parametrize("body", ["status-500.json", "status-429.json"])
def test_chain_retries_server_errors_then_answers(server: FakeApiServer, body: str) -> None:
    status = load(body)["code"]
    server.route(
        service_path("billing", "payments"),
        Reply(status, load(body), {"Retry-After": "1"}),
        Reply(status, load(body)),
        Reply(200, load("service-clusterip.json")),
    )
    server.serve_slices("billing", "payments", ready_pod_slices(load("service-clusterip.json")))
    slept: list[float] = []
    strategy = strategy_for(server)
    try:
        res = run_sync(
            [strategy],
            query("payments", "billing"),
            deadline(),
            RetryPolicy(sleep=slept.append, rng=lambda: 1.0),
        )
    finally:
        strategy.close()
    assert res.endpoints == (Endpoint(host="10.96.12.34", port=80),)
    assert server.paths() == [service_path("billing", "payments")] * 3 + [slices_path("billing")]
    assert slept == [0.05, 0.1]


def test_lookup_connection_refused_is_transient() -> None:
    # A bound socket that never listens refuses connections, and holding it keeps
    # anyone else from taking the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        strategy = ApiStrategy(client_factory=lambda: client_for(url))
        try:
            with pytest.raises(TransientError, match=r"get services"):
                strategy.lookup(query("payments", "billing"), deadline())
        finally:
            strategy.close()


def test_chain_gives_up_on_refused_connections_inside_the_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        strategy = ApiStrategy(client_factory=lambda: client_for(url))
        try:
            with pytest.raises(DiscoveryUnavailable) as caught:
                run_sync(
                    [strategy],
                    query("payments", "billing"),
                    Deadline(1.0, clock=lambda: now[0]),
                    RetryPolicy(sleep=sleep, rng=lambda: 1.0),
                )
        finally:
            strategy.close()
    (attempt,) = caught.value.attempts
    # 0.05 + 0.1 + 0.2 + 0.4 = 0.75 s slept; the next 0.8 s nap would overrun 1 s.
    assert attempt.tries == 5
    assert now[0] == pytest.approx(0.75)
    assert isinstance(caught.value.__cause__, TransientError)


def test_lookup_with_no_time_left_sends_nothing(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = strategy_for(server)
    try:
        with pytest.raises(TransientError, match="no time left"):
            strategy.lookup(query("payments", "billing"), Deadline(0.0))
    finally:
        strategy.close()
    assert server.requests == []


@pytest.mark.parametrize("body", [b"<html>gateway</html>", b"[1, 2]"])
def test_lookup_non_object_json_is_transient(server: FakeApiServer, body: bytes) -> None:
    # A proxy or load balancer in front of the apiserver can answer 200 with HTML.
    server.route(service_path("billing", "payments"), Reply(200, body))
    strategy = strategy_for(server)
    try:
        with pytest.raises(TransientError):
            strategy.lookup(query("payments", "billing"), deadline())
    finally:
        strategy.close()


def test_close_drops_the_client_and_the_next_lookup_builds_a_new_one(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    built: list[Any] = []

    def factory() -> Any:
        built.append(client_for(server.url))
        return built[-1]

    strategy = ApiStrategy(client_factory=factory)
    strategy.lookup(query("payments", "billing"), deadline())
    strategy.lookup(query("payments", "billing"), deadline())
    assert len(built) == 1
    strategy.close()
    strategy.lookup(query("payments", "billing"), deadline())
    strategy.close()
    assert len(built) == 2


# -- credentials ------------------------------------------------------------------------


def serviceaccount(tmp_path: Path, token: str) -> Path:
    """A service-account directory laid out like the kubelet's projected volume:
    the files are symlinks into ``..data``, which is swapped atomically on rotation."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    rotate(sa, token, "..2025_05_14_12_00_00.1")
    for name in ("token", "ca.crt", "namespace"):
        (sa / name).symlink_to(f"..data/{name}")
    return sa


def rotate(sa: Path, token: str, stamp: str) -> None:
    data = sa / stamp
    data.mkdir()
    (data / "token").write_text(token)
    (data / "ca.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nnot used\n-----END CERTIFICATE-----\n"
    )
    (data / "namespace").write_text("billing")
    tmp_link = sa / "..data_tmp"
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, sa / "..data")


IN_CLUSTER_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_token_file_rereads_after_kubelet_rotation(tmp_path: Path) -> None:
    sa = serviceaccount(tmp_path, "token-one")
    token = TokenFile(sa / "token")
    assert token.current() == "token-one"
    rotate(sa, "token-two", "..2025_05_14_13_00_00.2")
    assert token.current() == "token-two"


def test_token_file_rereads_after_in_place_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("short\n")
    token = TokenFile(path)
    assert token.current() == "short"
    path.write_text("a-longer-token\n")
    assert token.current() == "a-longer-token"


def test_token_file_is_cached_while_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("aaaa")
    token = TokenFile(path)
    assert token.current() == "aaaa"
    before = path.stat()
    path.write_text("bbbb")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Same inode, size and mtime: one stat, no read.
    assert token.current() == "aaaa"


def test_token_file_missing_or_empty_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read token file"):
        TokenFile(tmp_path / "absent").current()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        TokenFile(tmp_path / "empty").current()


def test_in_cluster_client_configuration(tmp_path: Path) -> None:
    sa = serviceaccount(tmp_path, "token-one")
    api_client = KubeClient.in_cluster(sa, IN_CLUSTER_ENV)
    try:
        assert api_client.base_url == "https://10.96.0.1:443"
        assert api_client.describe == "in-cluster"
    finally:
        api_client.close()


def test_in_cluster_client_brackets_ipv6_and_defaults_the_port(tmp_path: Path) -> None:
    sa = serviceaccount(tmp_path, "t")
    api_client = KubeClient.in_cluster(sa, {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1"})
    try:
        assert api_client.base_url == "https://[fd00:10:96::1]:443"
    finally:
        api_client.close()


def test_in_cluster_client_without_ca_is_a_configuration_error(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    with pytest.raises(ConfigurationError, match=r"ca\.crt"):
        KubeClient.in_cluster(sa, IN_CLUSTER_ENV)


def test_in_cluster_mode_sends_the_current_token(server: FakeApiServer, tmp_path: Path) -> None:
    sa = serviceaccount(tmp_path, "token-one")
    server.serve_service(load("service-clusterip.json"), ready_pod=True)

    def factory() -> Any:
        # The real in-cluster client, re-aimed at the plain-HTTP test server: the
        # apiserver address in the environment is data only, never contacted.
        api_client = KubeClient.in_cluster(sa, IN_CLUSTER_ENV)
        api_client.base_url = server.url
        return api_client

    strategy = ApiStrategy(client_factory=factory)
    try:
        strategy.lookup(query("payments", "billing"), deadline())
        rotate(sa, "token-two", "..2025_05_14_13_00_00.2")
        strategy.lookup(query("payments", "billing"), deadline())
    finally:
        strategy.close()
    # (Each lookup is a GET of the Service and a LIST of its slices.)
    assert [r.headers.get("authorization") for r in server.requests] == [
        "Bearer token-one",
        "Bearer token-one",
        "Bearer token-two",
        "Bearer token-two",
    ]


def test_mode_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config to fall back on
    sa = serviceaccount(tmp_path, "t")
    assert ApiStrategy(serviceaccount_dir=sa, environ=IN_CLUSTER_ENV).mode == "in-cluster"
    # KUBERNETES_SERVICE_HOST alone (e.g. automountServiceAccountToken: false) is not enough.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ApiStrategy(serviceaccount_dir=empty, environ=IN_CLUSTER_ENV).mode == "none"
    assert ApiStrategy(serviceaccount_dir=empty, kubeconfig=["/x"]).mode == "kubeconfig"
    assert ApiStrategy(client_factory=lambda: client_for("http://127.0.0.1:1")).mode == (
        "injected client"
    )


def test_no_credentials_is_not_applicable_without_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    strategy = ApiStrategy(serviceaccount_dir=tmp_path, environ={})
    result = miss(strategy.lookup(query("payments", "billing"), deadline()))
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "KUBECONFIG" in result.reason
    assert "token" in result.reason


def default_configuration_state() -> tuple[object, str]:
    return k8s.Configuration._default, k8s.Configuration.get_default_copy().host


def test_kubeconfig_mode_leaves_the_global_default_alone(
    server: FakeApiServer, tmp_path: Path
) -> None:
    before = default_configuration_state()
    kubeconfig = tmp_path / "config"
    write_kubeconfig(kubeconfig, server.url, token="kubeconfig-token")
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = ApiStrategy(kubeconfig=[str(kubeconfig)], environ={})
    assert strategy.mode == "kubeconfig"
    try:
        res = answer(strategy.lookup(query("payments", "billing"), deadline()))
    finally:
        strategy.close()
    assert hosts(res) == ["10.96.12.34"]
    assert server.requests[0].headers.get("authorization") == "Bearer kubeconfig-token"
    assert default_configuration_state() == before


def test_in_cluster_mode_leaves_the_global_default_alone(tmp_path: Path) -> None:
    before = default_configuration_state()
    sa = serviceaccount(tmp_path, "t")
    KubeClient.in_cluster(sa, IN_CLUSTER_ENV).close()
    assert default_configuration_state() == before
    assert k8s.Configuration.get_default_copy().api_key == {}


def test_bad_kubeconfig_is_a_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "config"
    bad.write_text("not: [a kubeconfig")
    strategy = ApiStrategy(kubeconfig=[str(bad)], environ={})
    with pytest.raises(ConfigurationError, match="cannot load kubeconfig"):
        strategy.lookup(query("payments", "billing"), deadline())


def test_fixtures_are_apiserver_shaped() -> None:
    # The recordings will be swapped for real ones; keep the shape the code relies on.
    for name in ("service-clusterip.json", "service-headless.json"):
        doc = load(name)
        assert (doc["kind"], doc["apiVersion"]) == ("Service", "v1")
    lst = load("endpointslices-headless.json")
    assert (lst["kind"], lst["apiVersion"]) == ("EndpointSliceList", "discovery.k8s.io/v1")
    assert all(
        item["metadata"]["labels"]["kubernetes.io/service-name"] == "kafka" for item in lst["items"]
    )


@pytest.mark.parametrize("part", ["body", "headers"])
def test_a_trickling_response_is_cut_at_the_deadline(part: str) -> None:
    # urllib3's read timeout bounds each recv(), not a response: a server that sends one
    # byte at a time would otherwise hold the caller until it is done, headers (the
    # cut-off must already be armed while they arrive) or body. Done or not, the
    # deadline ends the call: an answer arriving after it would be a bug.
    body = b'{"kind":"Service","spec":{"clusterIP":"10.96.0.9","ports":[{"port":80}]}}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if part == "body":
                conn.sendall(head)
            for byte in (head + body) if part == "headers" else body:
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = listener.accept()
                threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        api = ApiStrategy(
            client_factory=lambda: client_for(f"http://127.0.0.1:{port}"), watch=False
        )
        d = Discoverer(strategies=[api], namespace="shop", environ={}, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DiscoveryTimeout) as info:
            d.discover("web")
        # Not a speed figure: the whole response would take 5 s or more to trickle in;
        # the bound says the deadline (0.5 s), not the server, ended the call.
        assert time.monotonic() - started < 2.0
        assert "deadline" in str(info.value)
    finally:
        stop.set()
        listener.close()


def test_direct_reads_start_no_thread_per_request(
    server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each request's deadline is kept by one process-wide cut-off thread, never a
    # thread (or Timer) of its own.
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    started: list[str] = []
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        if threading.current_thread() is threading.main_thread():
            started.append(self.name)  # the server's own threads start in its thread
        original_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=False)

    def ours() -> list[threading.Thread]:
        # The test server runs a thread per connection; those are not kdisco's.
        return [t for t in threading.enumerate() if "process_request" not in t.name]

    with Discoverer(strategies=[strategy], environ={}, cache=False, reach="cluster") as d:
        d.discover("payments.billing")
        before = ours()
        started.clear()
        for _ in range(50):
            d.discover("payments.billing")
        assert started == []
        assert ours() == before
    assert len(server.requests) == 51 * 2  # the Service and its slices, each time
    assert [t.name for t in threading.enumerate() if t.name.startswith("kdisco")] == [
        "kdisco-cutoff"
    ]


def test_the_fast_endpoint_builder_agrees_with_the_constructor() -> None:
    # The ingest loop fills Endpoint's slots directly (see kdisco._k8s.objects); it must
    # know every field, and build exactly what the keyword constructor builds.
    assert tuple(a.name for a in attrs.fields(Endpoint)) == ENDPOINT_FIELDS
    raw = {
        "addresses": ["192.0.2.5"],
        "conditions": {"ready": False, "serving": True, "terminating": True},
        "hostname": "db-0",
        "targetRef": {"kind": "Pod", "name": "db-0"},
        "nodeName": "node-a",
        "zone": "z1",
    }
    sl = {"metadata": {"name": "s"}, "addressType": "IPv4", "endpoints": [raw], "ports": []}
    (built,) = merge_slices([sl], None)
    expected = Endpoint(
        host="192.0.2.5",
        port=None,
        ready=False,
        serving=True,
        terminating=True,
        hostname="db-0",
        pod="db-0",
        node="node-a",
        zone="z1",
    )
    assert built == expected
    assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.host = "192.0.2.6"


def test_close_closes_pooled_connections_even_while_a_pool_is_referenced() -> None:
    # PoolManager.clear() only forgets pools; a kept urllib3 error refers to its pool,
    # whose idle keep-alive sockets would then stay open (found by the lab fault tests).
    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = client_for(f"http://127.0.0.1:{httpd.server_address[1]}")
        response = client.open("/x", connect_timeout=1, read_timeout=1)
        response.data  # noqa: B018 - read the body so the connection goes back to the pool
        response.release_conn()
        kept = response._pool  # what a kept ReadTimeoutError holds on to
        # The queue holds a slot per pooled connection: None for the unused ones.
        (conn,) = [c for c in (kept.pool.queue if kept.pool else []) if c is not None]
        assert conn.sock is not None  # an idle keep-alive connection, open
        client.close()
        assert kept.pool is None
        assert conn.sock is None  # closed now, not when the pool is collected
    finally:
        httpd.shutdown()
        httpd.server_close()
