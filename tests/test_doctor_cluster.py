"""The doctor's cluster checks, their pure parts: the port-vs-targetPort hint, endpoint
counts, DNS-vs-API agreement, Pod readiness reasons, the permissions kdisco needs, the
NetworkPolicy summary; and the checks' behaviour without credentials or against a
fake API server that refuses a read (tests/integration/test_doctor_cluster_lab.py
runs them against the lab)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kdisco import AccessDenied, Deadline
from kdisco._doctor.cluster import (
    NAMES,
    agreement_check,
    checks,
    count_endpoints,
    needed_permissions,
    netpol_check,
    pod_state,
    pod_target,
    port_hint,
    rbac_hint,
)
from kdisco._doctor.context import Context
from kdisco._doctor.report import Check, Status
from kdisco._k8s import netpol
from kdisco._k8s.client import KubeClient
from kdisco._k8s.objects import SliceInfo
from kdisco._names import parse_query
from kdisco._settings import Settings

from ._helpers_api import Reply, fake_apiserver, service_path, write_kubeconfig

Json = dict[str, Any]


def forbidden(message: str) -> Json:
    return {
        "kind": "Status",
        "status": "Failure",
        "reason": "Forbidden",
        "code": 403,
        "message": message,
    }


WEB_PORTS = [
    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
    {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
]


# -- ports ---------------------------------------------------------------------------


def test_a_target_port_asked_for_is_named_as_such() -> None:
    assert port_hint(WEB_PORTS, 8080) == (
        "8080 is the targetPort of port 'http' (80); clients connect to the Service port 80"
    )


def test_an_unnamed_port_s_target_port() -> None:
    hint = port_hint([{"port": 5432, "targetPort": 15432}], 15432)
    assert hint == (
        "15432 is the targetPort of port 5432; clients connect to the Service port 5432"
    )


def test_a_misspelt_port_name_gets_the_closest() -> None:
    assert port_hint(WEB_PORTS, "htp") == "did you mean port 'http'?"


def test_any_other_port_lists_the_declared_ones() -> None:
    assert port_hint(WEB_PORTS, 7000) == (
        "ask for one of the declared ports: http=80→8080, metrics=9090"
    )


# -- endpoint counts -----------------------------------------------------------------


def ep(address: str, ready: bool | None = True, **conditions: bool) -> Json:
    cond: Json = dict(conditions)
    if ready is not None:
        cond["ready"] = ready
    return {"addresses": [address], "conditions": cond}


def eps_slice(name: str, endpoints: list[Json], ports: list[Json] | None = None) -> SliceInfo:
    return SliceInfo.from_json(
        {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080}] if ports is None else ports,
        }
    )


def test_counts_merge_an_endpoint_listed_in_two_slices() -> None:
    a = eps_slice("a", [ep("192.0.2.1"), ep("192.0.2.2", ready=False)])
    # 192.0.2.2 moving between slices: ready in the second, so ready once.
    b = eps_slice("b", [ep("192.0.2.2")])
    c = eps_slice(
        "c", [ep("192.0.2.3", ready=False, serving=True, terminating=True), ep("192.0.2.4", None)]
    )
    counts = count_endpoints([a, b, c], "http")
    assert (counts.slices, counts.total, counts.ready) == (3, 4, 3)
    assert (counts.serving, counts.terminating, counts.unserved) == (4, 1, 0)
    assert counts.describe() == (
        "3 ready of 4 endpoint(s) in 3 EndpointSlice(s); 4 serving, 1 terminating"
    )


def test_slices_without_the_port_serve_none_of_it() -> None:
    portless = eps_slice("p", [ep("192.0.2.9")], ports=[])
    counts = count_endpoints([portless], "http")
    assert (counts.total, counts.ready, counts.unserved) == (0, 0, 1)
    assert count_endpoints([], "http").describe() == "no EndpointSlices for the Service"


# -- agreement -------------------------------------------------------------------------


def test_dns_and_api_agree() -> None:
    check = agreement_check({"10.96.0.7"}, {"10.96.0.7"}, "ClusterIPs")
    assert check.status is Status.PASSED
    assert "10.96.0.7" in check.summary


def test_a_disagreement_is_a_warning_naming_each_side() -> None:
    check = agreement_check(
        {"192.0.2.1", "192.0.2.2"}, {"192.0.2.2", "192.0.2.3"}, "ready pod addresses"
    )
    assert check.status is Status.FAILED
    assert not check.blocking
    assert check.details == ("only the API has: 192.0.2.3", "only DNS has: 192.0.2.1")
    assert check.hint is not None
    assert "CoreDNS" in check.hint


# -- pods --------------------------------------------------------------------------------


def test_a_crash_looping_pod_says_why() -> None:
    pod = {
        "metadata": {"name": "web-1"},
        "spec": {"nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": "192.0.2.5",
            "conditions": [
                # Said once, with Ready (it is why Ready is False).
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "main",
                    "ready": False,
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
                }
            ],
        },
    }
    state = pod_state(pod)
    assert not state.ready
    assert state.describe() == (
        "web-1: Running, not ready, IP 192.0.2.5: Ready=False (ContainersNotReady); "
        "container 'main' waiting (CrashLoopBackOff: back-off); "
        "container 'main' restarted 4 time(s), last exit Error (1)"
    )


def test_a_ready_pod_has_no_reasons_and_a_pending_one_is_unscheduled() -> None:
    ready = {
        "metadata": {"name": "a"},
        "spec": {"nodeName": "n"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_state(ready).describe() == "a: Running, ready, IP none yet"
    pending = {"metadata": {"name": "b"}, "spec": {}, "status": {"phase": "Pending"}}
    assert pod_state(pending).reasons == ("not scheduled to a node",)


def test_a_deleted_pod_is_not_ready_even_while_ready() -> None:
    pod = {
        "metadata": {"name": "a", "deletionTimestamp": "2026-11-30T00:00:00Z"},
        "spec": {"nodeName": "n"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    state = pod_state(pod)
    assert not state.ready
    assert state.reasons == ("terminating (being deleted)",)


# -- rbac --------------------------------------------------------------------------------


def test_kdisco_needs_each_verb_once() -> None:
    needs = needed_permissions("shop", watch=True, reach="cluster", outside=False)
    assert [(n.verb, n.qualified, n.blocking) for n in needs] == [
        ("get", "services", True),
        ("list", "endpointslices.discovery.k8s.io", True),
        ("list", "services", False),
        ("watch", "services", False),
        ("watch", "endpointslices.discovery.k8s.io", False),
    ]
    assert {n.namespace for n in needs} == {"shop"}
    bare = needed_permissions("shop", watch=False, reach="cluster", outside=True)
    assert [n.short() for n in bare] == ["get services", "list endpointslices.discovery.k8s.io"]


def test_the_external_view_needs_ingresses_and_nodes() -> None:
    needs = needed_permissions("shop", watch=False, reach="external", outside=False)
    extra = [(n.short(), n.namespace, n.blocking) for n in needs[2:]]
    assert extra == [
        ("list ingresses.networking.k8s.io", "shop", True),
        ("get nodes", "", True),
        ("list nodes", "", True),
    ]
    # Under auto outside the cluster, the cluster view is the fallback.
    auto = needed_permissions("shop", watch=False, reach="auto", outside=True)
    assert [n.blocking for n in auto[2:]] == [False, False, False]
    assert needed_permissions("shop", watch=False, reach="auto", outside=False)[2:] == []


def test_the_hint_writes_the_missing_rules() -> None:
    needs = needed_permissions("shop", watch=True, reach="external", outside=False)
    missing = [n for n in needs if n.resource in ("endpointslices", "nodes")]
    assert rbac_hint(missing) == (
        "add to the Role in namespace 'shop' (docs/in-a-pod.md has it whole): Role rule "
        "apiGroups ['discovery.k8s.io'], resources ['endpointslices'], verbs ['list', "
        "'watch']; ClusterRole rule apiGroups [''], resources ['nodes'], verbs ['get', 'list']"
    )


# -- networkpolicy ---------------------------------------------------------------------


def web_pod(container_ports: list[Json]) -> Json:
    return {
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "ports": container_ports}]},
    }


def test_a_named_target_port_is_the_pods_container_port() -> None:
    svc_port = {"name": "pg", "port": 5432, "targetPort": "postgres", "protocol": "TCP"}
    pod = web_pod([{"name": "postgres", "containerPort": 5433}])
    target = pod_target(pod, "shop", svc_port)
    assert target is not None
    assert (target.port, target.port_name, dict(target.pod_labels)) == (
        5433,
        "postgres",
        {"app": "web"},
    )
    assert pod_target(web_pod([]), "shop", svc_port) is None
    numeric = pod_target(web_pod([]), "shop", WEB_PORTS[0])
    assert numeric is not None
    assert (numeric.port, numeric.port_name) == (8080, None)


DENY_ALL = {
    "metadata": {"name": "deny-all", "namespace": "shop"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


def verdicts(policies: list[Json], peer: netpol.Peer) -> list[tuple[str, netpol.Verdict]]:
    target = netpol.Target(namespace="shop", pod_labels={"app": "web"}, port=8080)
    return [("web-1", netpol.ingress_verdict(policies, target, peer))]


def test_a_deny_all_policy_fails_and_says_which_rule_is_needed() -> None:
    peer = netpol.Peer(namespace="front", pod_labels={"app": "ui"})
    check = netpol_check(verdicts([DENY_ALL], peer), 1, peer, [], "port 8080/TCP")
    assert check.status is Status.FAILED
    assert check.blocking
    assert "deny-all" in check.summary
    assert check.hint == (
        "add to policy 'deny-all' an ingress rule from namespaceSelector "
        "{kubernetes.io/metadata.name: front} with podSelector {app=ui} on port 8080/TCP"
    )


def test_no_policy_passes_and_an_unknown_caller_is_could_not_check() -> None:
    peer = netpol.Peer(namespace="front")
    assert netpol_check(verdicts([], peer), 0, peer, []).status is Status.PASSED
    by_labels = {
        "metadata": {"name": "from-ui", "namespace": "shop"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "ui"}}}]}
            ],
        },
    }
    check = netpol_check(verdicts([by_labels], peer), 1, peer, [])
    assert check.status is Status.UNKNOWN
    assert "labels" in check.summary


def test_a_namespace_whose_labels_could_not_be_read_is_not_guessed_to_be_denied() -> None:
    # The caller's namespace could not be read (no 'get' on namespaces): a rule that
    # selects namespaces by another label than their name is unknown, not a denial...
    peer = netpol.Peer(namespace="front", pod_labels={"app": "ui"})  # labels left None
    by_team = {
        "metadata": {"name": "from-team-front", "namespace": "shop"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "front"}}}]}],
        },
    }
    check = netpol_check(verdicts([by_team], peer), 1, peer, [])
    assert check.status is Status.UNKNOWN
    # ... while one by the name label every namespace has is still decided.
    by_name = {
        "metadata": {"name": "from-front", "namespace": "shop"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "front"}
                            }
                        }
                    ]
                }
            ],
        },
    }
    assert netpol_check(verdicts([by_name], peer), 1, peer, []).status is Status.PASSED


# -- the checks as a whole -------------------------------------------------------------


def context(settings: Settings, name: str = "web.shop:http") -> Context:
    query = parse_query(
        name, namespace=None, default_namespace="shop", cluster_domain="cluster.local"
    )
    return Context(settings=settings, query=query, raw_name=name, namespace_source="the name")


def test_without_credentials_every_check_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    settings = Settings.load(environ={}, serviceaccount_dir=tmp_path / "sa")
    found = list(checks(context(settings)))
    assert [c.name for c in found] == list(NAMES)
    for c in found:
        assert c.status is Status.UNKNOWN
        assert c.summary.startswith("no credentials: not in a cluster")
        assert c.hint is not None
        assert "--kubeconfig" in c.hint


def test_an_invalid_name_is_could_not_check(tmp_path: Path) -> None:
    settings = Settings.load(environ={}, serviceaccount_dir=tmp_path)
    ctx = Context(settings=settings, query=None, raw_name="Not_A_Name", namespace_source="?")
    assert {c.status for c in checks(ctx)} == {Status.UNKNOWN}


def by_name(found: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in found}


def test_a_refused_read_is_could_not_check_naming_the_permission(tmp_path: Path) -> None:
    svc = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.7", "ports": WEB_PORTS, "selector": {"app": "web"}},
    }
    with fake_apiserver() as server:
        server.serve_service(svc)
        server.route("/api/v1/namespaces/shop/pods", Reply(403, forbidden("pods is forbidden")))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        settings = Settings.load(
            environ={}, kubeconfig=str(kubeconfig), serviceaccount_dir=tmp_path
        )
        ctx = context(settings)
        found = by_name(list(checks(ctx)))
    assert [r for r in server.paths() if r == service_path("shop", "web")]
    assert found["service"].status is Status.PASSED
    assert found["ports"].status is Status.PASSED
    assert found["pods"].status is Status.UNKNOWN
    assert found["pods"].summary == "needs 'list' on 'pods' in namespace 'shop'"
    assert found["networkpolicy"].status is Status.UNKNOWN
    assert ctx.findings["service"] == svc


# -- the POST -----------------------------------------------------------------------------


@pytest.fixture
def review_server() -> Iterator[tuple[str, list[Json]]]:
    """Answers POSTed reviews: allowed unless the verb is ``delete``; a 403 for ``/deny``."""
    seen: list[Json] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
            if self.path == "/deny":
                status, reply = 403, forbidden("no")
            else:
                verb = body["spec"]["resourceAttributes"]["verb"]
                status, reply = 201, {**body, "status": {"allowed": verb != "delete"}}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_post_json_sends_and_parses(review_server: tuple[str, list[Json]]) -> None:
    url, seen = review_server
    client = KubeClient.for_url(url)
    review = {"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}
    what = ("create", "selfsubjectaccessreviews.authorization.k8s.io", "")
    got = client.post_json("/review", review, Deadline(5), what)
    assert got is not None
    assert got["status"] == {"allowed": True}
    assert seen == [{"path": "/review", "type": "application/json", "body": review}]
    with pytest.raises(AccessDenied) as info:
        client.post_json("/deny", review, Deadline(5), what)
    assert info.value.verb == "create"
    client.close()


def test_an_unloadable_kubeconfig_is_said_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    settings = Settings.load(environ={}, kubeconfig=str(broken), serviceaccount_dir=tmp_path)
    first = next(iter(checks(context(settings))))
    assert first.status is Status.UNKNOWN
    assert first.summary.startswith("cannot load the API credentials: cannot load kubeconfig")
    assert "\n" not in first.summary


def test_rejected_credentials_say_so_with_a_hint(tmp_path: Path) -> None:
    unauthorized = {"kind": "Status", "code": 401, "message": "Unauthorized"}
    with fake_apiserver() as server:
        server.route(service_path("shop", "web"), Reply(401, unauthorized))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        settings = Settings.load(
            environ={}, kubeconfig=str(kubeconfig), serviceaccount_dir=tmp_path
        )
        service = next(iter(checks(context(settings))))
    assert service.status is Status.UNKNOWN
    assert service.summary == "the API rejected the credentials (401 Unauthorized)"
    assert service.hint is not None
    assert "renew" in service.hint
