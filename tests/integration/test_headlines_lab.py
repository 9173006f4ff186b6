"""Error headlines against the real lab: the first line states the most decisive finding.

Each case is one the seed article's FAQ (and issue 12) names, reproduced as a user
meets it: a typo made in a pod without API permissions, the wrong namespace, a
ClusterIP with nothing ready behind it, and a missing Role rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kdisco
from lab.objects import Cluster, port
from tests.integration.conftest import converged
from tests.integration.test_lab import api, api_port


@pytest.fixture(scope="module")
def billing(cluster: Cluster) -> Iterator[str]:
    """A namespace with 'payments': a ClusterIP whose one Pod is not ready."""
    ns = cluster.namespace("billing")
    cluster.service(
        ns, "payments", ports=[port(80, "http", target=8080)], selector={"app": "payments"}
    )
    cluster.pod(
        ns, "payments-0", labels={"app": "payments"}, node="node-1", ip="192.0.2.90", ready=False
    )
    converged(cluster, ns, "payments", ["192.0.2.90"])
    yield ns
    cluster.delete_namespace(ns)


@pytest.fixture(scope="module")
def shop_pod(
    lab_info: Any, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """What a pod in namespace 'shop' sees: the lab's CoreDNS and a ServiceAccount
    allowed to read nothing outside its own namespace."""
    ns = cluster.namespace("shop")
    sa = cluster.serviceaccount_credentials(
        ns,
        tmp_path_factory.mktemp("shop-sa"),
        str(lab_info.ca_path),
        rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    )
    yield {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": api_port(lab_info),
        "KDISCO_SERVICEACCOUNT_DIR": str(sa),
        "KDISCO_DNS_SERVER": lab_info.dns_server,
        "KDISCO_CLUSTER_DOMAIN": lab_info.cluster_domain,
    }
    cluster.delete_namespace(ns)


def in_pod(environ: dict[str, str], **kw: Any) -> kdisco.Discoverer:
    return kdisco.Discoverer(environ=environ, resolv_conf=Path("/nonexistent"), **kw)


def test_a_typo_in_a_pod_without_api_permissions_is_not_found(
    shop_pod: dict[str, str], billing: str
) -> None:
    # Before: AccessDenied ("needs 'get' on 'services'"), and the user went to write
    # RBAC rules for a typo. Cluster DNS's NXDOMAIN is decisive.
    with in_pod(shop_pod) as d, pytest.raises(kdisco.ServiceNotFound) as info:
        d.discover(f"paymnets.{billing}")
    err = info.value
    assert err.message == (
        f"paymnets.{billing} (paymnets.{billing}.svc.cluster.local.) not found (dns says "
        f"so; the API could not check: needs 'get' on 'services' in namespace '{billing}')"
    )
    assert [(a.strategy, a.outcome) for a in err.attempts] == [
        ("dns", kdisco.Outcome.NOT_FOUND),
        ("env", kdisco.Outcome.NOT_APPLICABLE),
        ("api", kdisco.Outcome.DENIED),
    ]


def test_the_same_name_in_a_real_service_of_that_pod_is_access_denied(
    shop_pod: dict[str, str], billing: str
) -> None:
    # The control: the name exists, DNS answers it, the API refuses. With the api
    # strategy alone the refusal is the finding, named once.
    with in_pod(shop_pod, strategies=["api"]) as d, pytest.raises(kdisco.AccessDenied) as info:
        d.discover(f"payments.{billing}")
    err = info.value
    # The permission and the rule that grants it; the API's own words only below.
    assert err.message == (
        f"payments.{billing} (payments.{billing}.svc.cluster.local.): forbidden: needs "
        f"'get' on 'services' in namespace '{billing}' (a Role rule: apiGroups [''], "
        "resources ['services'], verbs ['get'])"
    )
    assert (err.verb, err.resource, err.namespace) == ("get", "services", billing)
    text = str(err)
    assert text.count("cannot get resource") == 1  # the API's words, once
    assert "'list'" not in text
    assert "'watch'" not in text


def test_the_wrong_namespace_names_the_right_one_where_it_may_look(
    lab_info: Any, cluster: Cluster, billing: str
) -> None:
    # The lab's kubeconfig may list Services cluster-wide: the API says where it is.
    elsewhere = cluster.namespace("default-like")
    try:
        with api(lab_info, elsewhere) as d, pytest.raises(kdisco.ServiceNotFound) as info:
            d.discover("payments")
        message = info.value.message
        # (Other tests' namespaces may hold a 'payments' too: they are named as well.)
        assert message.startswith(
            f"payments.{elsewhere} (payments.{elsewhere}.svc.cluster.local.) not found in "
            f"namespace '{elsewhere}', but a Service 'payments' exists in namespace "
        )
        assert f"'{billing}'" in message.split(": ask for ")[0]
    finally:
        cluster.delete_namespace(elsewhere)


def test_the_wrong_namespace_without_cluster_wide_reads_is_plain_not_found(
    lab_info: Any, cluster: Cluster, billing: str, tmp_path: Path
) -> None:
    ns = cluster.namespace("narrow")
    try:
        sa = cluster.serviceaccount_credentials(ns, tmp_path / "sa", str(lab_info.ca_path))
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port(lab_info),
            "KDISCO_SERVICEACCOUNT_DIR": str(sa),
        }
        with in_pod(environ, strategies=["api"]) as d:
            with pytest.raises(kdisco.ServiceNotFound) as info:
                d.discover("payments")
            assert info.value.message == (
                f"payments.{ns} (payments.{ns}.svc.cluster.local.) not found"
            )
    finally:
        cluster.delete_namespace(ns)


def test_a_cluster_ip_with_nothing_ready_behind_it(lab_info: Any, billing: str) -> None:
    # The api strategy reads the slices: 0 of 1 ready is NoReadyEndpoints, as the
    # README's quickstart tells users to expect.
    with api(lab_info, billing) as d:
        with pytest.raises(kdisco.NoReadyEndpoints) as info:
            d.discover("payments")
        assert info.value.message == (
            f"payments.{billing} (payments.{billing}.svc.cluster.local.) exists but has "
            "no ready endpoints"
        )
        assert info.value.attempts[0].reason == (
            f"ClusterIP Service payments.{billing}: 1 endpoints in 1 EndpointSlices, none ready"
        )
        # Not asking about readiness, the ClusterIP answers.
        res = d.discover("payments", include_not_ready=True)
        assert res.kind is kdisco.ServiceKind.CLUSTER_IP
        assert [ep.port for ep in res] == [80]


def test_dns_cannot_see_readiness_behind_a_cluster_ip_and_does_not_pretend(
    lab_info: Any, billing: str
) -> None:
    with kdisco.Discoverer(
        strategies=["dns"],
        dns_server=lab_info.dns_server,
        cluster_domain=lab_info.cluster_domain,
        environ={},
        reach="cluster",
    ) as d:
        res = d.discover(f"payments.{billing}")
    # The ClusterIP (from the Service CIDR), not the unready Pod's address.
    assert res.source == "dns"
    assert [ep.host for ep in res] == [res.first().host]
    assert res.first().host.startswith("10.96.")


def test_a_role_without_list_on_slices_still_gets_the_cluster_ip(
    lab_info: Any, cluster: Cluster, tmp_path: Path
) -> None:
    # 'get' on services only: readiness cannot be read, and the ClusterIP answers as
    # it would from DNS, instead of failing on a permission most lookups never needed.
    ns = cluster.namespace("getonly")
    try:
        cluster.service(ns, "web", ports=[port(80, "http")], selector={"app": "web"})
        sa = cluster.serviceaccount_credentials(
            ns,
            tmp_path / "sa",
            str(lab_info.ca_path),
            rules=[{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
        )
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port(lab_info),
            "KDISCO_SERVICEACCOUNT_DIR": str(sa),
        }
        with in_pod(environ, strategies=["api"], api_watch=False) as d:
            res = d.discover("web")
        assert res.kind is kdisco.ServiceKind.CLUSTER_IP
        assert [ep.port for ep in res] == [80]
    finally:
        cluster.delete_namespace(ns)
