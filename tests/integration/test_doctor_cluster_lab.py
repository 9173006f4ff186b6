"""``kdisco doctor``'s cluster checks against the lab: a passing and a failing case
for each (service, ports, pods, endpointslices, agreement, rbac, networkpolicy).

Services select Pods whose status the lab writes as a kubelet would; the
EndpointSlice controller makes the slices. The lab runs no network plugin, so
NetworkPolicies are stored and evaluated, never enforced. Addresses are TEST-NET:
read and compared, never connected to (no check here probes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdisco._doctor import cluster as doctor_cluster
from kdisco._doctor import local
from kdisco._doctor.context import Context
from kdisco._doctor.report import Check, Report, Status
from kdisco._k8s.netpol import Peer
from kdisco._names import parse_query
from kdisco._settings import Settings
from lab import kube
from lab.objects import Cluster, port

from .conftest import converged, eventually, slice_endpoints

#: The Role of docs/in-a-pod.md.
GUIDE_RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]
WEB = "192.0.2.141"
BROKEN = "192.0.2.142"
DB = ("192.0.2.143", "192.0.2.144")


def container_port(number: int, name: str) -> dict[str, Any]:
    return {"containerPort": number, "name": name, "protocol": "TCP"}


def web_service(cluster: Cluster, ns: str, address: str = WEB) -> None:
    """``web``: port http 80 → targetPort 8080, one ready Pod serving 8080 as ``http``."""
    cluster.service(ns, "web", ports=[port(80, "http", target=8080)], selector={"app": "web"})
    cluster.pod(
        ns,
        "web-1",
        labels={"app": "web"},
        node="node-1",
        ip=address,
        ports=[container_port(8080, "http")],
    )
    converged(cluster, ns, "web", [address])


@pytest.fixture(scope="module")
def shop(cluster: Cluster, nodes: Any) -> Iterator[str]:
    """Services that each pass or fail one check: ``web`` (all well), ``broken`` (its
    only Pod crash-loops), ``nomatch`` (a selector no Pod has), ``db`` (headless)."""
    ns = cluster.namespace("shop")
    web_service(cluster, ns)
    cluster.service(ns, "broken", ports=[port(80, "http", target=8080)], selector={"app": "broken"})
    cluster.pod(ns, "broken-0", labels={"app": "broken"}, node="node-2", ip=BROKEN, ready=False)
    cluster.set_pod_waiting(ns, "broken-0", reason="CrashLoopBackOff")
    cluster.service(ns, "nomatch", ports=[port(80, "http")], selector={"app": "nomatch"})
    cluster.service(
        ns, "db", headless=True, ports=[port(5432, "pg", target=5432)], selector={"app": "db"}
    )
    for i, address in enumerate(DB):
        cluster.pod(ns, f"db-{i}", labels={"app": "db"}, node="node-1", ip=address)
    converged(cluster, ns, "broken", [BROKEN])
    converged(cluster, ns, "db", DB)
    yield ns
    cluster.delete_namespace(ns)


#: A name no other test's Service has (the look elsewhere is cluster-wide).
ELSEWHERE = f"ledger-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def billing(cluster: Cluster) -> Iterator[str]:
    ns = cluster.namespace("billing")
    cluster.service(ns, ELSEWHERE, ports=[port(443, "https")])
    yield ns
    cluster.delete_namespace(ns)


@pytest.fixture
def ns(cluster: Cluster, nodes: Any) -> Iterator[str]:
    """A namespace of the test's own (its objects change during the test)."""
    name = cluster.namespace("doc")
    yield name
    cluster.delete_namespace(name)


def admin(lab_info: Any, namespace: str) -> Settings:
    """Settings from the lab's kubeconfig (an admin, outside the cluster)."""
    return Settings.load(
        kubeconfig=str(lab_info.kubeconfig),
        namespace=namespace,
        dns_server=lab_info.dns_server,
        cluster_domain=lab_info.cluster_domain,
        environ={},
    )


def in_pod(lab_info: Any, sa_dir: Path, **environ: str) -> Settings:
    """Settings as a pod with the ServiceAccount of ``sa_dir`` sees them."""
    return Settings.load(
        serviceaccount_dir=sa_dir,
        dns_server=lab_info.dns_server,
        cluster_domain=lab_info.cluster_domain,
        environ={**kube.incluster_env(lab_info), **environ},
    )


def diagnose(
    settings: Settings,
    name: str,
    *,
    caller: Peer | None = None,
    dns: bool = False,
    discover: bool = False,
) -> tuple[Context, dict[str, Check]]:
    """The cluster checks for ``name`` (after the local dns answer check, with ``dns``,
    and kdisco's own answer, with ``discover``)."""
    query = parse_query(
        name,
        namespace=None,
        default_namespace=settings.namespace,
        cluster_domain=settings.cluster_domain,
    )
    ctx = Context(
        settings=settings,
        query=query,
        raw_name=name,
        namespace_source="--namespace",
        caller=caller,
    )
    if dns:
        local.dns_answer_check(ctx)
    if discover:
        local.discover_check(ctx)
    found = list(doctor_cluster.checks(ctx))
    assert [c.name for c in found] == list(doctor_cluster.NAMES)
    print(Report(target=name, checks=tuple(found)).text())  # shown when a test fails
    return ctx, {c.name: c for c in found}


# -- service ---------------------------------------------------------------------------


def test_the_service_exists(lab_info: Any, cluster: Cluster, shop: str) -> None:
    ctx, found = diagnose(admin(lab_info, shop), "web:http")
    cluster_ip = cluster.read_service(shop, "web")["spec"]["clusterIP"]
    assert found["service"].status is Status.PASSED
    assert found["service"].summary == (
        f"Service 'web' in namespace '{shop}': ClusterIP {cluster_ip}, ports http=80→8080"
    )
    assert ctx.findings["service"]["metadata"]["name"] == "web"
    # The api strategy's own answer, and where a probe would go.
    assert {ep.host for ep in ctx.findings["api_answer"]} == {cluster_ip}
    assert ctx.findings["probe_targets"] == [(cluster_ip, 80)]


def test_a_typo_names_the_closest_service(lab_info: Any, shop: str) -> None:
    ctx, found = diagnose(admin(lab_info, shop), "wbe")
    check = found["service"]
    assert check.status is Status.FAILED
    assert check.summary == f"no Service 'wbe' in namespace '{shop}'"
    assert f"closest names in '{shop}': web" in check.details
    assert "no Service 'wbe' in any other namespace either" in check.details
    assert check.hint == "did you mean 'web'?"
    assert ctx.findings["service"] is None
    assert found["ports"].status is Status.UNKNOWN


def test_the_wrong_namespace_names_the_right_one(lab_info: Any, shop: str, billing: str) -> None:
    _, found = diagnose(admin(lab_info, shop), ELSEWHERE)
    check = found["service"]
    assert check.status is Status.FAILED
    assert f"a Service '{ELSEWHERE}' exists in namespace '{billing}'" in check.details
    assert check.hint == (
        f"use {ELSEWHERE}.{billing} (or --namespace {billing}): the namespace came from --namespace"
    )


# -- ports ------------------------------------------------------------------------------


def test_the_port_is_declared(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "web:http")
    assert found["ports"].status is Status.PASSED
    assert found["ports"].summary == "port 'http' is declared: http=80 (targetPort 8080)"


def test_the_target_port_is_not_the_service_port(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "web:8080")
    check = found["ports"]
    assert check.status is Status.FAILED
    assert check.hint == (
        "8080 is the targetPort of port 'http' (80); clients connect to the Service port 80"
    )


# -- pods --------------------------------------------------------------------------------


def test_the_pods_are_ready(lab_info: Any, shop: str) -> None:
    ctx, found = diagnose(admin(lab_info, shop), "web")
    assert found["pods"].status is Status.PASSED
    assert found["pods"].summary == "1 of 1 Pods ready (selector app=web)"
    assert found["pods"].details == (f"web-1: Running, ready, IP {WEB}",)
    assert [p["metadata"]["name"] for p in ctx.findings["pods"]] == ["web-1"]


def test_a_crash_looping_pod_says_why(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "broken")
    check = found["pods"]
    assert check.status is Status.FAILED
    assert check.summary == "0 of 1 Pods ready (selector app=broken)"
    (detail,) = check.details
    assert detail.startswith(f"broken-0: Running, not ready, IP {BROKEN}: ")
    assert "Ready=False (ContainersNotReady: containers with unready status: [main])" in detail
    assert "container 'main' waiting (CrashLoopBackOff: back-off" in detail
    assert "restarted 3 time(s), last exit Error (1)" in detail


def test_a_selector_no_pod_matches(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "nomatch")
    check = found["pods"]
    assert check.status is Status.FAILED
    assert check.summary == f"no Pod in namespace '{shop}' matches the selector app=nomatch"
    assert check.hint is not None
    assert "--show-labels" in check.hint
    assert found["endpointslices"].status is Status.FAILED
    assert found["endpointslices"].hint == (
        "no Pod matches the Service's selector (see the pods check)"
    )


# -- endpointslices --------------------------------------------------------------------


def test_the_slices_have_a_ready_endpoint(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "web")
    check = found["endpointslices"]
    assert check.status is Status.PASSED
    assert check.summary == (
        "1 ready of 1 endpoint(s) in 1 EndpointSlice(s); 1 serving, 0 terminating"
    )


def test_no_ready_endpoint(lab_info: Any, shop: str) -> None:
    _, found = diagnose(admin(lab_info, shop), "broken")
    check = found["endpointslices"]
    assert check.status is Status.FAILED
    assert check.blocking
    assert check.summary.startswith("0 ready of 1 endpoint(s)")
    assert check.hint == "no Pod behind the Service is ready (see the pods check)"


# -- agreement --------------------------------------------------------------------------


def test_dns_and_the_api_agree(lab_info: Any, shop: str) -> None:
    def agreed() -> dict[str, Check]:
        _, found = diagnose(admin(lab_info, shop), "db", dns=True)
        assert found["agreement"].status is Status.PASSED, found["agreement"]
        return found

    found = eventually(agreed)  # CoreDNS sees new Pods through its watch
    assert found["agreement"].summary == (
        f"DNS and the API agree on the ready pod addresses: {', '.join(sorted(DB))}"
    )


def test_a_dns_answer_from_before_a_pod_went_unready_disagrees(
    lab_info: Any, cluster: Cluster, ns: str
) -> None:
    # What a cache holds until its TTL runs out: DNS's answer taken while both Pods
    # were ready, the API's after one of them stopped being ready.
    cluster.service(ns, "db", headless=True, ports=[port(5432, "pg")], selector={"app": "db"})
    for i, address in enumerate(DB):
        cluster.pod(ns, f"db-{i}", labels={"app": "db"}, node="node-1", ip=address)
    converged(cluster, ns, "db", DB)
    settings = admin(lab_info, ns)

    def both_in_dns() -> Context:
        ctx, _ = diagnose(settings, "db", dns=True)
        assert {ep.host for ep in ctx.findings["dns_answer"] or ()} == set(DB)
        return ctx

    earlier = eventually(both_in_dns)
    cluster.set_pod_ready(ns, "db-1", False)
    eventually(lambda: _not_ready(cluster, ns, "db", DB[1]))
    ctx = Context(
        settings=settings,
        query=earlier.query,
        raw_name="db",
        namespace_source="--namespace",
        findings={"dns_answer": earlier.findings["dns_answer"]},
    )
    found = {c.name: c for c in doctor_cluster.checks(ctx)}
    check = found["agreement"]
    assert check.status is Status.FAILED
    assert not check.blocking
    assert check.details == (f"only DNS has: {DB[1]}",)


def _not_ready(cluster: Cluster, ns: str, service: str, address: str) -> None:
    assert slice_endpoints(cluster, ns, service)[address]["conditions"]["ready"] is False


# -- rbac -------------------------------------------------------------------------------


def account(
    lab_info: Any, cluster: Cluster, ns: str, name: str, rules: list[dict[str, Any]], tmp: Path
) -> Path:
    return cluster.serviceaccount_credentials(
        ns, tmp / name, str(lab_info.ca_path), name=name, rules=rules
    )


def test_the_guides_role_grants_all_kdisco_needs(
    lab_info: Any, cluster: Cluster, shop: str, tmp_path: Path
) -> None:
    sa_dir = account(lab_info, cluster, shop, "full", GUIDE_RULES, tmp_path)

    def granted() -> Check:
        _, found = diagnose(in_pod(lab_info, sa_dir), "web")
        assert found["rbac"].status is Status.PASSED, found["rbac"]  # RBAC catches up
        return found["rbac"]

    check = eventually(granted)
    assert check.summary == (
        f"kdisco may read what it needs as system:serviceaccount:{shop}:full: get services, "
        "list endpointslices.discovery.k8s.io, list services, watch services, watch "
        "endpointslices.discovery.k8s.io"
    )


def test_a_role_without_list_on_endpointslices(
    lab_info: Any, cluster: Cluster, shop: str, tmp_path: Path
) -> None:
    rules = [
        GUIDE_RULES[0],
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["watch"]},
    ]
    sa_dir = account(lab_info, cluster, shop, "nolist", rules, tmp_path)

    def service_readable() -> dict[str, Check]:
        _, found = diagnose(in_pod(lab_info, sa_dir), "web")
        assert found["service"].status is Status.PASSED, found["service"]  # RBAC catches up
        return found

    found = eventually(service_readable)
    check = found["rbac"]
    assert check.status is Status.FAILED
    assert check.blocking
    assert check.summary == (
        f"missing as system:serviceaccount:{shop}:nolist: list endpointslices.discovery.k8s.io"
    )
    assert check.hint is not None
    # When kdisco answers anyway (here DNS does), it is a warning, not a stop.
    ctx, found = diagnose(in_pod(lab_info, sa_dir), "web", discover=True)
    assert ctx.findings["answer"] is not None
    check = found["rbac"]
    assert check.status is Status.FAILED
    assert not check.blocking
    assert check.details[0].startswith("kdisco answers anyway (from ")
    assert check.hint is not None
    assert "docs/in-a-pod.md" in check.hint
    assert "resources ['endpointslices'], verbs ['list']" in check.hint
    # Each read that was refused is could-not-check, naming the permission.
    assert found["endpointslices"].status is Status.UNKNOWN
    assert found["endpointslices"].summary == (
        f"needs 'list' on 'endpointslices.discovery.k8s.io' in namespace '{shop}'"
    )
    assert found["pods"].status is Status.UNKNOWN
    assert found["pods"].summary == f"needs 'list' on 'pods' in namespace '{shop}'"


# -- networkpolicy -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def front(cluster: Cluster) -> Iterator[str]:
    """The caller's namespace."""
    name = cluster.namespace("front")
    yield name
    cluster.delete_namespace(name)


def from_namespace(namespace: str, pods: dict[str, str] | None = None) -> dict[str, Any]:
    peer: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    if pods is not None:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


DENY_ALL: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_no_policy_admits_anyone(lab_info: Any, cluster: Cluster, ns: str, front: str) -> None:
    web_service(cluster, ns)
    caller = Peer(namespace=front, pod_labels={"app": "ui"})
    _, found = diagnose(admin(lab_info, ns), "web", caller=caller)
    check = found["networkpolicy"]
    assert check.status is Status.PASSED
    assert check.summary == "no NetworkPolicy isolates the target Pods (0 in the namespace)"


def test_a_deny_all_policy_denies(lab_info: Any, cluster: Cluster, ns: str, front: str) -> None:
    web_service(cluster, ns)
    cluster.network_policy(ns, "deny-all", DENY_ALL)
    caller = Peer(namespace=front, pod_labels={"app": "ui"})
    _, found = diagnose(admin(lab_info, ns), "web", caller=caller)
    check = found["networkpolicy"]
    assert check.status is Status.FAILED
    assert check.blocking
    assert check.summary.startswith("NetworkPolicy deny-all denies ")
    assert check.summary.endswith(" on 1 of 1 target Pods")
    assert check.hint == (
        "add to policy 'deny-all' an ingress rule from namespaceSelector "
        f"{{kubernetes.io/metadata.name: {front}}} with podSelector {{app=ui}} on port 8080/TCP"
    )


def test_a_rule_for_the_callers_namespace_admits(
    lab_info: Any, cluster: Cluster, ns: str, front: str
) -> None:
    web_service(cluster, ns)
    cluster.network_policy(ns, "deny-all", DENY_ALL)
    cluster.network_policy(
        ns,
        "from-front",
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [from_namespace(front)], "ports": [{"port": "http"}]}],
        },
    )
    caller = Peer(namespace=front, pod_labels={"app": "ui"})
    _, found = diagnose(admin(lab_info, ns), "web", caller=caller)
    check = found["networkpolicy"]
    assert check.status is Status.PASSED
    assert check.summary.endswith("is admitted to all 1 target Pods")
    assert any("policy 'from-front' admits" in d for d in check.details)


def test_a_rule_for_other_pods_denies(lab_info: Any, cluster: Cluster, ns: str, front: str) -> None:
    web_service(cluster, ns)
    cluster.network_policy(
        ns,
        "admins-only",
        {
            "podSelector": {},
            "ingress": [{"from": [from_namespace(front, {"role": "admin"})]}],
        },
    )
    caller = Peer(namespace=front, pod_labels={"app": "ui"})
    _, found = diagnose(admin(lab_info, ns), "web", caller=caller)
    check = found["networkpolicy"]
    assert check.status is Status.FAILED
    assert check.summary.startswith("NetworkPolicy admins-only denies ")


def test_in_a_pod_the_caller_is_its_own_pod(
    lab_info: Any, cluster: Cluster, ns: str, front: str, tmp_path: Path
) -> None:
    # The doctor runs in ui-0 (namespace front, labels app=ui): it reads its own Pod
    # by HOSTNAME; it may not read Namespaces, so their labels are assumed.
    web_service(cluster, ns)
    cluster.network_policy(
        ns,
        "ui-only",
        {"podSelector": {}, "ingress": [{"from": [from_namespace(front, {"app": "ui"})]}]},
    )
    cluster.pod(front, "ui-0", labels={"app": "ui"}, node="node-1", ip="192.0.2.149")
    sa_dir = cluster.serviceaccount_credentials(
        front,
        tmp_path / "ui",
        str(lab_info.ca_path),
        name="ui",
        rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    )
    reads = [
        *GUIDE_RULES,
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list"]},
    ]
    cluster.grant(ns, "ui-reads", reads, serviceaccount="ui", serviceaccount_namespace=front)
    settings = in_pod(lab_info, sa_dir, HOSTNAME="ui-0")

    def evaluated() -> Check:
        _, found = diagnose(settings, f"web.{ns}")
        assert found["networkpolicy"].status is Status.PASSED, found["networkpolicy"]
        return found["networkpolicy"]

    check = eventually(evaluated)  # RBAC catches up with the bindings
    assert any(f"the labels of namespace {front!r} are unknown" in d for d in check.details)
    assert any("policy 'ui-only' admits" in d for d in check.details)


def test_an_external_name_has_no_pods_and_dns_agrees(
    lab_info: Any, cluster: Cluster, shop: str
) -> None:
    cluster.service(shop, "outside", external_name="db.example.test", ports=[port(5432, "pg")])

    def agreed() -> dict[str, Check]:
        _, found = diagnose(admin(lab_info, shop), "outside", dns=True)
        assert found["agreement"].status is Status.PASSED, found["agreement"]
        return found

    found = eventually(agreed)  # CoreDNS sees the new Service through its watch
    assert found["service"].summary == (
        f"Service 'outside' in namespace '{shop}': ExternalName for db.example.test, ports pg=5432"
    )
    assert found["agreement"].summary == (
        "DNS and the API agree on the external name: db.example.test"
    )
    for name in ("pods", "endpointslices", "networkpolicy"):
        assert found[name].status is Status.PASSED
        assert found[name].summary.startswith("does not apply: an ExternalName Service")
