"""docs/in-a-pod.md's manifests, applied to the lab's real kube-apiserver.

Every manifest of the guide is created as written, with its namespaces ``shop`` and
``billing`` (and its cluster-wide names) made unique to this run. Then kdisco runs as
the guide's pod would: the api strategy, with a real token of the guide's
ServiceAccount, the in-cluster address of the API, and the environment the guide's
Deployment gives its container. That the discoveries succeed, through the watch
cache, shows the guide's Role is enough; that a ServiceAccount bound in ``shop`` only
is refused in ``billing``, with the message the guide quotes, shows the test can
tell. No kubelet runs, so the Deployment's pods never start: creating it checks the
manifest.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import kdisco
import kdisco.httpx
from lab.kube import incluster_env
from lab.objects import Cluster, port
from tests.integration.conftest import converged, eventually
from tests.test_guides import manifests

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "in-a-pod.md"
#: The Node the guide's pod runs on here (the session's ``nodes`` fixture), and its zone.
NODE, ZONE = "node-1", "zone-a"
#: The pod behind cart (an address only, never connected to).
CART_POD = "192.0.2.96"
PAYMENTS_POD = "192.0.2.71"


@dataclass(frozen=True)
class Applied:
    shop: str
    billing: str
    account: str
    deployment: dict[str, Any]


def _renamed(doc: dict[str, Any], namespaces: dict[str, str], suffix: str) -> dict[str, Any]:
    """The manifest with the guide's namespaces replaced by this run's, and a suffix on
    the names of cluster-wide objects (they outlive a namespace)."""
    doc = copy.deepcopy(doc)
    meta = doc["metadata"]
    if "namespace" in meta:
        meta["namespace"] = namespaces[meta["namespace"]]
    else:
        meta["name"] = f"{meta['name']}-{suffix}"
    ref = doc.get("roleRef")
    if ref is not None and ref["kind"] == "ClusterRole":
        ref["name"] = f"{ref['name']}-{suffix}"
    for subject in doc.get("subjects", []):
        subject["namespace"] = namespaces[subject["namespace"]]
    return doc


def _create(cluster: Cluster, doc: dict[str, Any]) -> None:
    """Create ``doc`` as ``kubectl create -f`` would (namespaced objects in the namespace
    their metadata names)."""
    from kubernetes import utils

    create: Any = utils.create_from_dict  # untyped in the kubernetes package
    create(cluster.api_client, doc)


@pytest.fixture(scope="module")
def applied(cluster: Cluster, nodes: dict[str, tuple[str, str, str]]) -> Iterator[Applied]:
    assert nodes[NODE][2] == ZONE
    shop, billing = cluster.namespace("shop"), cluster.namespace("billing")
    suffix = shop.rsplit("-", 1)[1]
    docs = [_renamed(d, {"shop": shop, "billing": billing}, suffix) for d in manifests(GUIDE)]
    cluster_wide = [d for d in docs if "namespace" not in d["metadata"]]
    try:
        for doc in docs:
            _create(cluster, doc)
        # The Services the guide's application looks up: cart in its own namespace,
        # payments in billing, each with a ready pod behind it.
        cluster.service(
            shop, "cart", ports=[port(80, "http", target=8080)], selector={"app": "cart"}
        )
        cluster.pod(shop, "cart-0", labels={"app": "cart"}, node=NODE, ip=CART_POD)
        converged(cluster, shop, "cart", [CART_POD])
        cluster.service(
            billing,
            "payments",
            ports=[port(80, "http", target=8080)],
            selector={"app": "payments"},
        )
        cluster.pod(billing, "payments-0", labels={"app": "payments"}, node=NODE, ip=PAYMENTS_POD)
        converged(cluster, billing, "payments", [PAYMENTS_POD])
        (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        yield Applied(shop, billing, account["metadata"]["name"], deployment)
    finally:
        for doc in cluster_wide:
            name = doc["metadata"]["name"]
            if doc["kind"] == "ClusterRole":
                cluster.rbac.delete_cluster_role(name)
            else:
                cluster.rbac.delete_cluster_role_binding(name)
        cluster.delete_namespace(shop)
        cluster.delete_namespace(billing)


def serviceaccount_dir(
    cluster: Cluster, lab_info: Any, namespace: str, account: str, dest: Path
) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "token").write_text(cluster.token(namespace, account))
    (dest / "ca.crt").write_bytes(Path(lab_info.ca_path).read_bytes())
    (dest / "namespace").write_text(namespace)
    return dest


def container_env(applied: Applied, lab_info: Any) -> dict[str, str]:
    """The container's environment: the kubelet's API address, and the variables the
    guide's Deployment sets, its downward-API fields filled in as the kubelet would."""
    fields = {"metadata.namespace": applied.shop, "spec.nodeName": NODE}
    env = dict(incluster_env(lab_info))
    (container,) = applied.deployment["spec"]["template"]["spec"]["containers"]
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def granted(fn: Any) -> Any:
    """``fn()``, retried while RBAC has not caught up with the bindings just made (the
    apiserver's authorizer learns of them through its own watch)."""

    def attempt() -> Any:
        try:
            return fn()
        except kdisco.AccessDenied as exc:
            raise AssertionError(f"not granted yet: {exc}") from exc

    return eventually(attempt)


def in_pod(applied: Applied, lab_info: Any, sa_dir: Path) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=["api"], environ=container_env(applied, lab_info), serviceaccount_dir=sa_dir
    )


def test_the_manifests_apply(cluster: Cluster, applied: Applied) -> None:
    from kubernetes import client

    apps: Any = client.AppsV1Api(cluster.api_client)
    name = applied.deployment["metadata"]["name"]
    raw = apps.read_namespaced_deployment(name, applied.shop, _preload_content=False)
    stored = json.loads(raw.data)
    assert stored["spec"]["template"]["spec"]["serviceAccountName"] == applied.account


def test_the_guides_role_is_enough(
    cluster: Cluster,
    lab_info: Any,
    applied: Applied,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sa_dir = serviceaccount_dir(cluster, lab_info, applied.shop, applied.account, tmp_path)
    caplog.set_level(logging.WARNING, logger="kdisco")
    with in_pod(applied, lab_info, sa_dir) as d:
        settings = d.settings
        assert (settings.namespace, settings.node, settings.timeout) == (applied.shop, NODE, 2.0)
        assert not settings.outside

        def from_the_watch_cache(name: str, **kw: Any) -> kdisco.Resolution:
            d.clear_cache()
            res = d.discover(name, port="http", **kw)
            # Answers built from the synced list+watch cache carry its validity check.
            assert res.freshness is not None, res
            assert res.freshness.valid is not None, res
            return res

        cart = granted(lambda: from_the_watch_cache("cart"))
        assert (cart.source, cart.kind, cart.reach) == (
            "api",
            kdisco.ServiceKind.CLUSTER_IP,
            "cluster",
        )
        assert cart.service.namespace == applied.shop  # POD_NAMESPACE, from the downward API
        payments = granted(
            lambda: from_the_watch_cache(f"payments.{applied.billing}", backends=True)
        )
        assert [(ep.host, ep.port, ep.node, ep.zone) for ep in payments] == [
            (PAYMENTS_POD, 8080, NODE, ZONE)
        ]
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("kdisco")]
    assert not warned, "kdisco warned (a permission the watch cache lacks?)"


def test_the_optional_cluster_role_gives_balancing_the_zone(
    cluster: Cluster, lab_info: Any, applied: Applied, tmp_path: Path
) -> None:
    sa_dir = serviceaccount_dir(cluster, lab_info, applied.shop, applied.account, tmp_path)
    with in_pod(applied, lab_info, sa_dir) as d:
        topology = kdisco.httpx.Transport(d).balancer.topology
    assert (topology.node, topology.zone) == (NODE, ZONE)


def test_a_role_in_one_namespace_does_not_reach_another(
    cluster: Cluster, lab_info: Any, applied: Applied, tmp_path: Path
) -> None:
    # The control: bound to the guide's Role in shop only, the guide's message for
    # payments.billing is what comes back.
    name = "shop-only"
    meta = {"name": name, "namespace": applied.shop}
    _create(cluster, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    _create(
        cluster,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kdisco"},
            "subjects": [{"kind": "ServiceAccount", **meta}],
        },
    )
    sa_dir = serviceaccount_dir(cluster, lab_info, applied.shop, name, tmp_path)
    with in_pod(applied, lab_info, sa_dir) as d:
        assert granted(lambda: d.discover("cart", port="http")).source == "api"
        with pytest.raises(kdisco.AccessDenied) as caught:
            d.discover(f"payments.{applied.billing}", port="http")
    quoted = re.search(r"\*\*`(AccessDenied: [^`]*)`\.\*\*", GUIDE.read_text())
    assert quoted is not None, "the guide no longer quotes the message"
    expected = (
        quoted[1]
        .split("...")[0]
        .replace("'billing'", repr(applied.billing))
        .replace("payments.billing", f"payments.{applied.billing}")
    )
    assert f"AccessDenied: {caught.value.message}".startswith(expected)
