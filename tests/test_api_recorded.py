"""The api strategy's JSON logic on responses recorded from a real kube-apiserver.

``python -m lab.record`` created the objects described by ``lab/record.py``'s constants
in the lab and wrote the apiserver's raw responses to tests/data/api/recorded. Every
expected value here is derived from those same constants, so a recording and these
assertions cannot drift apart; re-record after changing them. No lab is needed here:
the files are read from disk (and, in the last tests, served from 127.0.0.1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from kdisco import (
    AccessDenied,
    Deadline,
    Endpoint,
    Miss,
    Outcome,
    Query,
    Resolution,
    ServiceKind,
    ServicePort,
    ServiceRef,
)
from kdisco._k8s.client import raise_for_status
from kdisco._k8s.objects import ALL_SERVICES_PATH, service_path
from kdisco._strategies.api import ApiStrategy
from lab.record import (
    ALIAS,
    CLUSTER_DOMAIN,
    DUAL,
    DUAL_V6_FIRST,
    EMPTY,
    EXPORTER,
    EXTERNAL,
    EXTERNAL_WITH_PORT,
    IDLE,
    KAFKA,
    KAFKA_0,
    KAFKA_0_V6,
    KAFKA_1,
    KAFKA_2_NOT_READY,
    KAFKA_3_TERMINATING,
    KAFKA_4,
    KAFKA_4_OLD,
    KAFKA_MANUAL,
    LB_INGRESS,
    LOAD_BALANCER,
    MISSING_SERVICE,
    MULTI,
    NAMESPACE,
    NO_SLICES,
    NODE_PORT,
    NOT_READY,
    NOT_READY_EP,
    PNR_NOT_READY,
    PNR_READY,
    PORTLESS,
    PORTLESS_EP,
    PUBLISH_NOT_READY,
    SA_NOTHING,
    SA_SERVICES_ONLY,
    SERVICES,
    SLICES_MISSING_NAMESPACE,
    STATUS_401,
    STATUS_403_GET_SERVICES,
    STATUS_403_LIST_SLICES,
    STATUS_404_SERVICE,
    UNNAMED,
    WEB,
    Ep,
    Port,
    Svc,
    expected_files,
    service_file,
    slices_file,
)
from tests._helpers_api import (
    FakeApiServer,
    Reply,
    Request,
    client_for,
    merge_slices,
    resolve_service,
    slices_path,
)

RECORDED = Path(__file__).parent / "data" / "api" / "recorded"

Json = dict[str, Any]

#: Services that have a ClusterIP, and the kind kdisco reports for each type.
WITH_CLUSTER_IP = (WEB, MULTI, UNNAMED, DUAL, DUAL_V6_FIRST, NODE_PORT, LOAD_BALANCER)
KIND = {
    "ClusterIP": ServiceKind.CLUSTER_IP,
    "NodePort": ServiceKind.NODE_PORT,
    "LoadBalancer": ServiceKind.LOAD_BALANCER,
}


def load(name: str) -> Json:
    doc = json.loads((RECORDED / name).read_text())
    assert isinstance(doc, dict)
    return doc


def slice_items(svc: Svc) -> list[Json]:
    items = load(slices_file(svc))["items"]
    assert isinstance(items, list)
    return items


def query(
    svc: Svc | str, port: int | str | None = None, *, include_not_ready: bool = False
) -> Query:
    return Query(
        service=ServiceRef(name=svc if isinstance(svc, str) else svc.name, namespace=NAMESPACE),
        port=port,
        include_not_ready=include_not_ready,
    )


def resolve(
    svc: Svc, port: int | str | None = None, *, include_not_ready: bool = False
) -> Resolution | Miss:
    def list_slices() -> list[Json]:
        # kdisco reads slices only for headless Services, and only those were recorded.
        assert svc.lists_slices, f"{svc.name}: slices listed for a non-headless Service"
        return slice_items(svc)

    return resolve_service(
        query(svc, port, include_not_ready=include_not_ready),
        load(service_file(svc)),
        list_slices,
    )


def answer(result: Resolution | Miss) -> Resolution:
    assert isinstance(result, Resolution), result
    return result


def miss(result: Resolution | Miss) -> Miss:
    assert isinstance(result, Miss), result
    return result


def api_port(p: Port) -> ServicePort:
    return ServicePort(
        port=p.port,
        name=p.name or None,
        protocol=p.protocol,
        app_protocol=p.app_protocol,
        node_port=p.node_port,
    )


def expected(ep: Ep, port: int | None) -> Endpoint:
    """What the recording script wrote, read with discovery/v1's nil rules: ready nil
    is true, serving nil is "as ready", terminating nil is false."""
    ready = True if ep.ready is None else ep.ready
    return Endpoint(
        host=ep.address,
        port=port,
        ready=ready,
        serving=ready if ep.serving is None else ep.serving,
        terminating=bool(ep.terminating),
        hostname=ep.hostname,
        pod=ep.pod,
        node=ep.node,
        zone=ep.zone,
    )


def same_endpoints(got: Iterable[Endpoint], want: Iterable[Endpoint]) -> None:
    got, want = list(got), list(want)
    assert len({(ep.host, ep.port) for ep in got}) == len(got), f"duplicates in {got}"
    assert set(got) == set(want)
    assert len(got) == len(want)


def by_host(res: Resolution) -> dict[str, Endpoint]:
    return {ep.host: ep for ep in res.endpoints}


# -- the recordings themselves -----------------------------------------------------------


def test_every_recording_the_script_makes_is_there_and_nothing_else() -> None:
    assert sorted(p.name for p in RECORDED.glob("*.json")) == sorted(expected_files())
    readme = (RECORDED / "README.md").read_text()
    assert "python -m lab.record" in readme
    assert "kube-apiserver v1." in readme


@pytest.mark.parametrize("name", expected_files())
def test_recordings_show_only_the_placeholder_namespace(name: str) -> None:
    text = (RECORDED / name).read_text()
    # The lab namespace is "rec-<random hex>"; the script must have replaced it.
    assert "rec-" not in text
    doc = json.loads(text)
    for item in [doc] if doc["kind"] == "Service" else doc.get("items") or []:
        assert item["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_recorded_service_spec_is_what_the_script_asked_for(svc: Svc) -> None:
    spec = load(service_file(svc))["spec"]
    assert spec["type"] == svc.type
    assert [p["port"] for p in spec.get("ports") or []] == [p.port for p in svc.ports]
    if svc.headless:
        assert spec["clusterIPs"] == ["None"]
    elif svc.cluster_ips:
        assert spec["clusterIPs"] == list(svc.cluster_ips)
    if svc.lists_slices:
        names = [item["metadata"]["name"] for item in slice_items(svc)]
        assert sorted(names) == sorted(sl.name for sl in svc.slices)


# -- ClusterIP, NodePort, LoadBalancer --------------------------------------------------


@pytest.mark.parametrize("svc", WITH_CLUSTER_IP, ids=lambda s: s.name)
def test_cluster_ip_answers_with_every_cluster_ip_and_the_first_port(svc: Svc) -> None:
    res = answer(resolve(svc))
    first = svc.ports[0]
    assert res.kind is KIND[svc.type]
    assert res.source == "api"
    assert res.service == ServiceRef(name=svc.name, namespace=NAMESPACE)
    assert res.endpoints == tuple(Endpoint(host=ip, port=first.port) for ip in svc.cluster_ips)
    assert res.ports == tuple(api_port(p) for p in svc.ports)
    assert res.port == api_port(first)


@pytest.mark.parametrize(
    ("svc", "p"),
    [(s, p) for s in WITH_CLUSTER_IP for p in s.ports],
    ids=lambda v: v.name if isinstance(v, Svc) else str(v.port),
)
def test_cluster_ip_each_declared_port_by_number_and_name(svc: Svc, p: Port) -> None:
    wanted: list[int | str] = [p.port, p.name] if p.name else [p.port]
    for port in wanted:
        res = answer(resolve(svc, port))
        assert res.endpoints == tuple(Endpoint(host=ip, port=p.port) for ip in svc.cluster_ips)
        assert res.port == api_port(p)


#: Services whose first target port differs from every Service port.
TARGET_DIFFERS = [
    s
    for s in WITH_CLUSTER_IP
    if s.ports[0].target is not None and all(p.port != s.ports[0].target for p in s.ports)
]


@pytest.mark.parametrize("svc", TARGET_DIFFERS, ids=lambda s: s.name)
def test_cluster_ip_target_port_is_not_a_service_port(svc: Svc) -> None:
    # Clients of a ClusterIP connect to the Service port; the target port is the pod's.
    target = svc.ports[0].target
    assert target is not None
    result = miss(resolve(svc, target))
    assert result.outcome is Outcome.NO_SUCH_PORT
    assert f"{svc.name}.{NAMESPACE}" in result.reason


def test_multi_port_protocols_and_app_protocol() -> None:
    grpc = answer(resolve(MULTI, "grpc"))
    assert grpc.url() == f"grpc://{MULTI.cluster_ips[0]}:{MULTI.ports[1].port}"
    dns = answer(resolve(MULTI, "dns-udp"))
    assert dns.port is not None
    assert dns.port.protocol == "UDP"


def test_unnamed_port_is_none_not_empty_string() -> None:
    # The apiserver omits "name" for an unnamed port (recorded), kdisco reports None.
    assert "name" not in load(service_file(UNNAMED))["spec"]["ports"][0]
    res = answer(resolve(UNNAMED))
    assert res.port == ServicePort(port=UNNAMED.ports[0].port, name=None)


def test_dual_stack_cluster_ips_keep_the_family_order() -> None:
    v4_first = answer(resolve(DUAL))
    assert [ep.host for ep in v4_first.endpoints] == list(DUAL.cluster_ips)
    assert load(service_file(DUAL))["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    v6_first = answer(resolve(DUAL_V6_FIRST))
    assert [ep.host for ep in v6_first.endpoints] == list(DUAL_V6_FIRST.cluster_ips)
    assert v6_first.url("https") == f"https://[{DUAL_V6_FIRST.cluster_ips[0]}]:443"


def test_load_balancer_ingress_is_not_an_endpoint() -> None:
    status = load(service_file(LOAD_BALANCER))["status"]["loadBalancer"]["ingress"]
    assert [i.get("ip") or i.get("hostname") for i in status] == [
        i.get("ip") or i.get("hostname") for i in LB_INGRESS
    ]
    res = answer(resolve(LOAD_BALANCER))
    ingress = {str(i.get("ip") or i.get("hostname")) for i in LB_INGRESS}
    assert {ep.host for ep in res.endpoints}.isdisjoint(ingress)
    assert res.endpoints == (Endpoint(host=LOAD_BALANCER.cluster_ips[0], port=443),)


def test_node_port_answers_with_the_service_port_not_the_node_port() -> None:
    res = answer(resolve(NODE_PORT))
    node_port = NODE_PORT.ports[0].node_port
    assert load(service_file(NODE_PORT))["spec"]["ports"][0]["nodePort"] == node_port
    assert [ep.port for ep in res.endpoints] == [NODE_PORT.ports[0].port]
    assert miss(resolve(NODE_PORT, node_port)).outcome is Outcome.NO_SUCH_PORT


# -- ExternalName -------------------------------------------------------------------------


def test_external_name_outside_the_cluster() -> None:
    res = answer(resolve(EXTERNAL))
    host = EXTERNAL.external_name_in(NAMESPACE)
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert res.external_name == host
    assert res.endpoints == (Endpoint(host=host, port=None),)
    assert res.ports == ()
    # A port number is advisory for ExternalName: the client connects to it.
    assert answer(resolve(EXTERNAL, 6432)).endpoints == (Endpoint(host=host, port=6432),)
    # A port name cannot be answered for a name outside the cluster.
    assert miss(resolve(EXTERNAL, "http")).outcome is Outcome.NO_SUCH_PORT


def test_external_name_trailing_dot_is_dropped_and_declared_port_used() -> None:
    raw = EXTERNAL_WITH_PORT.external_name_in(NAMESPACE)
    assert raw.endswith(".")
    assert load(service_file(EXTERNAL_WITH_PORT))["spec"]["externalName"] == raw
    host = raw.removesuffix(".")
    pg = EXTERNAL_WITH_PORT.ports[0]
    for port in (None, pg.name, pg.port):
        res = answer(resolve(EXTERNAL_WITH_PORT, port))
        assert res.endpoints == (Endpoint(host=host, port=pg.port),)
        assert res.external_name == host
        assert res.port == api_port(pg)


def test_external_name_alias_of_a_service_in_the_cluster() -> None:
    target = ALIAS.external_name_in(NAMESPACE)
    assert target == f"{WEB.name}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
    res = answer(resolve(ALIAS, "http"))
    # The alias declares no ports: the chain follows it and WEB's ports answer "http".
    assert res.endpoints == (Endpoint(host=target, port=None),)
    assert res.external_name == target
    assert res.kind is ServiceKind.EXTERNAL_NAME


# -- headless: slices merged ------------------------------------------------------------------


BROKER_TARGET = 19092
METRICS_TARGET = 9308
KAFKA_READY = (KAFKA_0, KAFKA_1, KAFKA_4, KAFKA_MANUAL, KAFKA_0_V6)
KAFKA_ALL = (*KAFKA_READY, KAFKA_2_NOT_READY, KAFKA_3_TERMINATING)


def test_headless_gives_ready_endpoints_of_every_slice_with_the_target_port() -> None:
    res = answer(resolve(KAFKA))
    assert res.kind is ServiceKind.HEADLESS
    assert res.ports == tuple(api_port(p) for p in KAFKA.ports)
    assert res.port == api_port(KAFKA.ports[0])
    same_endpoints(res.endpoints, [expected(ep, BROKER_TARGET) for ep in KAFKA_READY])
    # The metrics-only slice does not serve the broker port.
    assert EXPORTER.address not in by_host(res)


def test_headless_port_by_service_port_number_maps_to_the_target_port() -> None:
    res = answer(resolve(KAFKA, KAFKA.ports[0].port))
    assert {ep.port for ep in res.endpoints} == {BROKER_TARGET}
    # The target port itself is not a Service port.
    assert miss(resolve(KAFKA, BROKER_TARGET)).outcome is Outcome.NO_SUCH_PORT


def test_headless_include_not_ready_keeps_conditions_and_the_ready_copy_wins() -> None:
    res = answer(resolve(KAFKA, include_not_ready=True))
    same_endpoints(res.endpoints, [expected(ep, BROKER_TARGET) for ep in KAFKA_ALL])
    eps = by_host(res)
    # kafka-4 sits in two slices, not ready in one: the ready copy is kept.
    assert eps[KAFKA_4.address] == expected(KAFKA_4, BROKER_TARGET)
    assert eps[KAFKA_4.address] != expected(KAFKA_4_OLD, BROKER_TARGET)
    # An endpoint with every condition nil (recorded as {}) is ready and serving.
    assert load(slices_file(KAFKA))["items"][1]["endpoints"][1]["conditions"] == {}
    assert (eps[KAFKA_1.address].ready, eps[KAFKA_1.address].serving) == (True, True)
    terminating = eps[KAFKA_3_TERMINATING.address]
    assert (terminating.ready, terminating.serving, terminating.terminating) == (
        False,
        True,
        True,
    )
    manual = eps[KAFKA_MANUAL.address]
    assert (manual.pod, manual.hostname, manual.node, manual.zone) == (None, None, None, None)


def test_headless_ipv6_slice_is_merged_and_bracketed() -> None:
    res = answer(resolve(KAFKA))
    v6 = by_host(res)[KAFKA_0_V6.address]
    assert v6.address == f"[{KAFKA_0_V6.address}]:{BROKER_TARGET}"
    assert v6.hostname == by_host(res)[KAFKA_0.address].hostname == KAFKA_0.hostname


def test_headless_other_named_port_includes_the_slice_that_serves_only_it() -> None:
    res = answer(resolve(KAFKA, "metrics"))
    same_endpoints(res.endpoints, [expected(ep, METRICS_TARGET) for ep in (*KAFKA_READY, EXPORTER)])


def test_merge_slices_without_a_chosen_port_takes_every_slice_port_unknown() -> None:
    merged = merge_slices(slice_items(KAFKA), None)
    same_endpoints(merged, [expected(ep, None) for ep in (*KAFKA_ALL, EXPORTER)])


def test_merge_slices_with_a_chosen_port() -> None:
    metrics = api_port(KAFKA.ports[1])
    merged = merge_slices(slice_items(KAFKA), metrics)
    same_endpoints(merged, [expected(ep, METRICS_TARGET) for ep in (*KAFKA_ALL, EXPORTER)])


def test_a_slice_without_ports_serves_none_of_the_service_ports() -> None:
    # Recorded: the apiserver returns "ports": null for a slice created without ports.
    # discovery/v1: no ports means no ports (the EndpointSlice controller puts there
    # the Pods that lack a named targetPort; kube-proxy and CoreDNS leave them out).
    assert slice_items(PORTLESS)[0]["ports"] is None
    result = miss(resolve(PORTLESS, "http"))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "1 endpoints in 1 EndpointSlices, none serving http=" in result.reason
    # Merged for a Service that declares no ports, they are endpoints of unknown port.
    assert merge_slices(slice_items(PORTLESS), None) == (expected(PORTLESS_EP, None),)


def test_publish_not_ready_addresses_returns_not_ready_endpoints() -> None:
    res = answer(resolve(PUBLISH_NOT_READY))
    target = PUBLISH_NOT_READY.ports[0].target
    same_endpoints(res.endpoints, [expected(PNR_READY, target), expected(PNR_NOT_READY, target)])
    assert by_host(res)[PNR_NOT_READY.address].ready is False


def test_only_not_ready_endpoints_is_a_miss_unless_asked_for() -> None:
    result = miss(resolve(NOT_READY))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "1 endpoints in 1 EndpointSlices, none ready" in result.reason
    # The unnamed Service port matches the slice port named "" (recorded as such).
    assert slice_items(NOT_READY)[0]["ports"][0]["name"] == ""
    res = answer(resolve(NOT_READY, include_not_ready=True))
    assert res.endpoints == (expected(NOT_READY_EP, NOT_READY.ports[0].target),)


def test_slice_with_no_endpoints_is_a_miss() -> None:
    # Recorded: a slice created with "endpoints": [] comes back as "endpoints": null.
    assert slice_items(EMPTY)[0]["endpoints"] is None
    result = miss(resolve(EMPTY))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "1 EndpointSlices with no endpoints" in result.reason


def test_no_slices_is_a_miss() -> None:
    assert slice_items(NO_SLICES) == []
    result = miss(resolve(NO_SLICES))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "no EndpointSlices" in result.reason


def test_slices_of_a_missing_namespace_are_an_empty_list_not_a_404() -> None:
    doc = load(SLICES_MISSING_NAMESPACE)
    assert (doc["kind"], doc["items"]) == ("EndpointSliceList", [])
    result = miss(
        resolve_service(query(KAFKA), load(service_file(KAFKA)), lambda: list(doc["items"]))
    )
    assert "no EndpointSlices" in result.reason


# -- error Status bodies ------------------------------------------------------------------


def check_status(name: str, what: tuple[str, str, str]) -> bool:
    """What kdisco makes of a recorded error Status body (its ``code`` is the HTTP status)."""
    body = (RECORDED / name).read_bytes()
    return raise_for_status(json.loads(body)["code"], body, what)


def test_403_get_services_names_the_missing_permission() -> None:
    what = ("get", "services", NAMESPACE)
    with pytest.raises(AccessDenied) as caught:
        check_status(STATUS_403_GET_SERVICES, what)
    err = caught.value
    assert (err.verb, err.resource, err.namespace, err.status) == (*what, 403)
    text = err.message
    assert "apiGroups [''], resources ['services'], verbs ['get']" in text
    assert load(STATUS_403_GET_SERVICES)["message"] in text
    assert f"system:serviceaccount:{NAMESPACE}:{SA_NOTHING}" in text


def test_403_list_endpointslices_names_the_api_group() -> None:
    what = ("list", "endpointslices.discovery.k8s.io", NAMESPACE)
    with pytest.raises(AccessDenied) as caught:
        check_status(STATUS_403_LIST_SLICES, what)
    err = caught.value
    assert (err.verb, err.resource, err.namespace, err.status) == (*what, 403)
    text = err.message
    assert "apiGroups ['discovery.k8s.io'], resources ['endpointslices'], verbs ['list']" in text
    assert f"system:serviceaccount:{NAMESPACE}:{SA_SERVICES_ONLY}" in text


def test_401_is_access_denied_about_credentials() -> None:
    with pytest.raises(AccessDenied) as caught:
        check_status(STATUS_401, ("get", "services", NAMESPACE))
    assert caught.value.status == 401
    assert "401 Unauthorized" in str(caught.value)


def test_404_is_not_an_error() -> None:
    assert load(STATUS_404_SERVICE)["code"] == 404
    assert load(STATUS_404_SERVICE)["message"] == f'services "{MISSING_SERVICE}" not found'
    assert check_status(STATUS_404_SERVICE, ("get", "services", NAMESPACE)) is True


# -- the same recordings through the strategy over HTTP (127.0.0.1, served by this test) ---


def lookup(server: FakeApiServer, q: Query) -> Resolution | Miss:
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url))
    try:
        return strategy.lookup(q, Deadline(5.0))
    finally:
        strategy.close()


def test_strategy_over_http_on_recorded_headless_service(server: FakeApiServer) -> None:
    server.serve_service(load(service_file(KAFKA)))
    # One slice per page, so the client follows "continue" through the recording.
    server.serve_slices(NAMESPACE, KAFKA.name, load(slices_file(KAFKA)), page_size=1)
    res = answer(lookup(server, query(KAFKA)))
    same_endpoints(res.endpoints, [expected(ep, BROKER_TARGET) for ep in KAFKA_READY])


def test_strategy_over_http_on_recorded_403(server: FakeApiServer) -> None:
    server.serve_service(load(service_file(KAFKA)))
    server.route(
        slices_path(NAMESPACE), Reply(403, (RECORDED / STATUS_403_LIST_SLICES).read_bytes())
    )
    with pytest.raises(AccessDenied) as caught:
        lookup(server, query(KAFKA))
    assert caught.value.resource == "endpointslices.discovery.k8s.io"
    assert f"system:serviceaccount:{NAMESPACE}:{SA_SERVICES_ONLY}" in str(caught.value)


def test_cluster_ip_with_no_ready_pod_is_no_ready_endpoints() -> None:
    # DNS cannot see this (it answers the ClusterIP); the api strategy can, and says so.
    result = miss(resolve(IDLE))
    assert result.outcome is Outcome.NO_READY_ENDPOINTS
    assert "1 endpoints in 1 EndpointSlices, none ready" in result.reason
    # Asked to include them, it is the ClusterIP again.
    res = answer(resolve(IDLE, include_not_ready=True))
    assert res.endpoints == (Endpoint(host="10.96.77.17", port=80),)


def test_cluster_ip_without_list_on_slices_answers_as_dns_would(server: FakeApiServer) -> None:
    # A Role with 'get' on services but no 'list' on EndpointSlices: readiness cannot
    # be known, and the ClusterIP answers as it would from DNS (not an AccessDenied).
    server.serve_service(load(service_file(WEB)))
    server.route(
        slices_path(NAMESPACE), Reply(403, (RECORDED / STATUS_403_LIST_SLICES).read_bytes())
    )
    res = answer(lookup(server, query(WEB)))
    assert res.endpoints == (Endpoint(host="10.96.77.10", port=80),)
    assert server.paths() == [service_path(NAMESPACE, WEB.name), slices_path(NAMESPACE)]


def test_not_found_names_the_namespaces_where_the_name_exists(server: FakeApiServer) -> None:
    web = load(service_file(WEB))
    elsewhere = {**web, "metadata": {**web["metadata"], "namespace": "billing"}}

    def all_services(request: Request) -> Reply:
        assert request.query["fieldSelector"] == [f"metadata.name={WEB.name}"]
        return Reply(200, {"kind": "ServiceList", "metadata": {}, "items": [elsewhere]})

    server.route(ALL_SERVICES_PATH, all_services)
    result = miss(lookup(server, query(WEB)))
    assert result.outcome is Outcome.NOT_FOUND
    assert result.decisive
    assert result.elsewhere == ("billing",)
    assert "a Service 'web' exists in namespace 'billing'" in result.reason


@pytest.mark.parametrize("status", [403, 500])
def test_not_found_stays_a_miss_when_other_namespaces_cannot_be_listed(
    server: FakeApiServer, status: int
) -> None:
    server.route(ALL_SERVICES_PATH, Reply(status, load(STATUS_403_GET_SERVICES)))
    result = miss(lookup(server, query(WEB)))
    assert (result.outcome, result.elsewhere, result.decisive) == (Outcome.NOT_FOUND, (), True)
    assert result.reason == f"the API has no Service {WEB.name!r} in namespace {NAMESPACE!r}"
