"""Building Kubernetes objects in the lab for tests and the demo.

Writes go through the kubernetes client with plain-dict bodies (the same JSON a
manifest holds). Addresses handed out are from TEST-NET ranges and the lab's service
CIDR: they are resolved and compared, never connected to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Json = dict[str, Any]

#: The label CoreDNS and kdisco use to find a Service's slices.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Slices we write are ours, not the EndpointSlice controller's.
MANAGED_BY = {"endpointslice.kubernetes.io/managed-by": "kdisco-lab"}


def port(
    port: int,
    name: str | None = None,
    *,
    protocol: str = "TCP",
    target: int | None = None,
    app_protocol: str | None = None,
) -> Json:
    p: Json = {"port": port, "protocol": protocol}
    if name:
        p["name"] = name
    if target is not None:
        p["targetPort"] = target
    if app_protocol:
        p["appProtocol"] = app_protocol
    return p


def endpoint(
    address: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    hostname: str | None = None,
    pod: str | None = None,
    node: str | None = None,
    zone: str | None = None,
    namespace: str | None = None,
) -> Json:
    """One EndpointSlice endpoint; a None condition is left out (the API's nil)."""
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    ep: Json = {"addresses": [address], "conditions": conditions}
    if hostname:
        ep["hostname"] = hostname
    if pod:
        ref: Json = {"kind": "Pod", "name": pod}
        if namespace:
            ref["namespace"] = namespace
        ep["targetRef"] = ref
    if node:
        ep["nodeName"] = node
    if zone:
        ep["zone"] = zone
    return ep


class Cluster:
    """A thin writer of lab objects, over an explicit ApiClient (never the global one)."""

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        cfg = type.__call__(client.Configuration)
        config.load_kube_config(
            config_file=kubeconfig, client_configuration=cfg, persist_config=False
        )
        self.kubeconfig = kubeconfig
        self.api_client = client.ApiClient(configuration=cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.discovery = client.DiscoveryV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    # -- namespaces --------------------------------------------------------------

    def namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> None:
        self.core.delete_namespace(name)

    # -- services ----------------------------------------------------------------

    def service(
        self,
        namespace: str,
        name: str,
        *,
        ports: Sequence[Json] = (),
        type: str = "ClusterIP",
        headless: bool = False,
        external_name: str | None = None,
        publish_not_ready: bool = False,
        ip_family_policy: str | None = None,
        ip_families: Sequence[str] | None = None,
    ) -> Json:
        spec: Json = {"type": type}
        if ports:
            spec["ports"] = list(ports)
        if headless:
            spec["clusterIP"] = "None"
        if external_name is not None:
            spec = {"type": "ExternalName", "externalName": external_name}
            if ports:
                spec["ports"] = list(ports)
        if publish_not_ready:
            spec["publishNotReadyAddresses"] = True
        if ip_family_policy:
            spec["ipFamilyPolicy"] = ip_family_policy
        if ip_families:
            spec["ipFamilies"] = list(ip_families)
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self._raw(
            self.core.create_namespaced_service(namespace, body, _preload_content=False)
        )

    def read_service(self, namespace: str, name: str) -> Json:
        return self._raw(self.core.read_namespaced_service(name, namespace, _preload_content=False))

    def services(self, namespace: str) -> list[Json]:
        page = self._raw(self.core.list_namespaced_service(namespace, _preload_content=False))
        return list(page.get("items") or [])

    def set_load_balancer_ip(self, namespace: str, name: str, ip: str) -> Json:
        body = {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
        return self._raw(
            self.core.patch_namespaced_service_status(name, namespace, body, _preload_content=False)
        )

    # -- endpoint slices -------------------------------------------------------------

    def endpoint_slice(
        self,
        namespace: str,
        service: str,
        name: str,
        endpoints: Iterable[Json],
        *,
        ports: Sequence[Json] = (),
        address_type: str = "IPv4",
    ) -> Json:
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {SERVICE_NAME_LABEL: service, **MANAGED_BY},
            },
            "addressType": address_type,
            "endpoints": list(endpoints),
            "ports": [
                {k: v for k, v in p.items() if k in ("name", "port", "protocol", "appProtocol")}
                for p in ports
            ],
        }
        return self._raw(
            self.discovery.create_namespaced_endpoint_slice(namespace, body, _preload_content=False)
        )

    def replace_endpoints(self, namespace: str, name: str, endpoints: Iterable[Json]) -> Json:
        body = [{"op": "replace", "path": "/endpoints", "value": list(endpoints)}]
        return self._raw(
            self.discovery.patch_namespaced_endpoint_slice(
                name,
                namespace,
                body,
                _preload_content=False,
                _content_type="application/json-patch+json",
            )
        )

    # -- in-cluster credentials ---------------------------------------------------

    def serviceaccount_credentials(
        self,
        namespace: str,
        dest: Path,
        ca_file: str,
        *,
        name: str = "kdisco",
        rules: Sequence[Json] | None = None,
        expiration_seconds: int = 3600,
    ) -> Path:
        """A ServiceAccount bound to a namespaced Role, with a real TokenRequest token,
        written as an in-cluster credentials directory (token, ca.crt, namespace)."""
        if rules is None:
            rules = [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list"],
                },
            ]
        self.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        self.rbac.create_namespaced_role(
            namespace, {"metadata": {"name": name}, "rules": list(rules)}
        )
        self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "token").write_text(self.token(namespace, name, expiration_seconds))
        (dest / "ca.crt").write_bytes(Path(ca_file).read_bytes())
        (dest / "namespace").write_text(namespace)
        return dest

    def token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        body = {"spec": {"expirationSeconds": expiration_seconds}}
        raw = self._raw(
            self.core.create_namespaced_service_account_token(
                name, namespace, body, _preload_content=False
            )
        )
        return str(raw["status"]["token"])

    @staticmethod
    def _raw(response: Any) -> Json:
        data = json.loads(response.data)
        assert isinstance(data, dict)
        return data


# -- kubelet's service environment variables --------------------------------------


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def kubelet_env(services: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The variables kubelet writes for ``services`` (pkg/kubelet/envvars FromServices).

    Callers pass the Services of the pod's namespace (kubelet adds the master
    ``kubernetes`` Service of ``default``). Services without a ClusterIP (headless,
    ExternalName) get nothing.
    """
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        cluster_ip = spec.get("clusterIP") or ""
        if cluster_ip in ("", "None"):
            continue
        ports = spec.get("ports") or []
        if not ports:
            continue
        prefix = _env_name(svc["metadata"]["name"])
        env[f"{prefix}_SERVICE_HOST"] = cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_env_name(p['name'])}"] = str(p["port"])
        for i, p in enumerate(ports):
            proto = p.get("protocol") or "TCP"
            hostport = _join_host_port(cluster_ip, int(p["port"]))
            url = f"{proto.lower()}://{hostport}"
            if i == 0:
                env[f"{prefix}_PORT"] = url
            pp = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            env[pp] = url
            env[f"{pp}_PROTO"] = proto.lower()
            env[f"{pp}_PORT"] = str(p["port"])
            env[f"{pp}_ADDR"] = cluster_ip
    return env
