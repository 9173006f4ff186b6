"""Building Kubernetes objects in the lab for tests and the demo.

Writes go through the kubernetes client with plain-dict bodies (the same JSON a
manifest holds). Addresses handed out are from TEST-NET ranges and the lab's service
CIDR: they are resolved and compared, never connected to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Json = dict[str, Any]

#: The label CoreDNS and kdisco use to find a Service's slices.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Slices we write are ours, not the EndpointSlice controller's.
MANAGED_BY = {"endpointslice.kubernetes.io/managed-by": "kdisco-lab"}
#: The Node label the EndpointSlice controller copies into an endpoint's ``zone``.
ZONE_LABEL = "topology.kubernetes.io/zone"


def port(
    port: int,
    name: str | None = None,
    *,
    protocol: str = "TCP",
    target: int | str | None = None,
    app_protocol: str | None = None,
    node_port: int | None = None,
) -> Json:
    p: Json = {"port": port, "protocol": protocol}
    if name:
        p["name"] = name
    if target is not None:
        p["targetPort"] = target
    if app_protocol:
        p["appProtocol"] = app_protocol
    if node_port is not None:
        p["nodePort"] = node_port
    return p


def ingress_path(service: str, port: int | str, path: str = "/", path_type: str = "Prefix") -> Json:
    """One HTTP path of an Ingress rule, sending ``path`` to a Service's port (number or name)."""
    svc_port: Json = {"name": port} if isinstance(port, str) else {"number": port}
    return {
        "path": path,
        "pathType": path_type,
        "backend": {"service": {"name": service, "port": svc_port}},
    }


def ingress_rule(host: str | None, *paths: Json) -> Json:
    """An Ingress rule: ``host`` (None for any host) with its HTTP ``paths``."""
    rule: Json = {"http": {"paths": list(paths)}}
    if host is not None:
        rule["host"] = host
    return rule


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
        self.networking = client.NetworkingV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    # -- namespaces --------------------------------------------------------------

    def namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace; the lab's namespace controller then empties and removes it
        (about 5 s later: it waits that long on purpose, kubernetes#36891).

        Its Pods are deleted first with a grace period of 0 and their finalizers
        dropped, as their kubelets would: a Pod bound to a node otherwise waits for
        a kubelet that never comes, and the namespace stays Terminating.
        """
        for pod in self.pods(name):
            if pod["metadata"].get("finalizers"):
                self.release_pod(name, pod["metadata"]["name"])
        self.core.delete_collection_namespaced_pod(
            name, grace_period_seconds=0, _preload_content=False
        )
        self.core.delete_namespace(name)

    def label_namespace(self, name: str, labels: Mapping[str, str]) -> Json:
        """Add ``labels`` to a namespace (what a namespaceSelector matches)."""
        body = {"metadata": {"labels": dict(labels)}}
        return self._raw(self.core.patch_namespace(name, body, _preload_content=False))

    def namespace_exists(self, name: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self.core.read_namespace(name, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

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
        selector: Mapping[str, str] | None = None,
        external_traffic_policy: str | None = None,
    ) -> Json:
        spec: Json = {"type": type}
        if selector is not None:
            spec["selector"] = dict(selector)
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
        if external_traffic_policy:
            spec["externalTrafficPolicy"] = external_traffic_policy
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
        return self.set_load_balancer_ingress(namespace, name, [{"ip": ip}])

    def set_load_balancer_ingress(self, namespace: str, name: str, ingress: Sequence[Json]) -> Json:
        """Write ``status.loadBalancer.ingress`` (items like ``{"ip": ...}`` or
        ``{"hostname": ...}``) through the status subresource, as a cloud controller would."""
        body = {"status": {"loadBalancer": {"ingress": [dict(i) for i in ingress]}}}
        return self._raw(
            self.core.patch_namespaced_service_status(name, namespace, body, _preload_content=False)
        )

    # -- nodes -------------------------------------------------------------------------

    def node(
        self,
        name: str,
        *,
        internal_ip: str | None = None,
        external_ip: str | None = None,
        zone: str | None = None,
        ready: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> Json:
        """A Node (cluster-wide, shared by the session: an existing one is reused and its
        status rewritten), with addresses and a Ready condition written through
        ``/status`` as its kubelet would. ``zone`` becomes the topology zone label."""
        from kubernetes.client.rest import ApiException

        node_labels = {"kubernetes.io/hostname": name, **(labels or {})}
        if zone is not None:
            node_labels[ZONE_LABEL] = zone
        body = {"metadata": {"name": name, "labels": node_labels}}
        try:
            self.core.create_node(body, _preload_content=False)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(name, body, _preload_content=False)
        addresses = [{"type": "Hostname", "address": name}]
        if internal_ip:
            addresses.insert(0, {"type": "InternalIP", "address": internal_ip})
        if external_ip:
            addresses.insert(0, {"type": "ExternalIP", "address": external_ip})
        now = _now()
        status = {
            "status": {
                "addresses": addresses,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        return self._raw(self.core.patch_node_status(name, status, _preload_content=False))

    def delete_node(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_node(name, _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                raise

    # -- pods --------------------------------------------------------------------------

    def pod(
        self,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        node: str | None = None,
        ip: str | None = None,
        ips: Sequence[str] = (),
        ready: bool = True,
        hostname: str | None = None,
        subdomain: str | None = None,
        ports: Sequence[Json] = (),
        finalizers: Sequence[str] = (),
        image: str = "registry.invalid/kdisco-lab:none",
    ) -> Json:
        """A Pod (no kubelet runs: the image is never pulled) whose status (phase Running,
        podIP/podIPs, Ready condition) is written through ``/status`` as a kubelet would.
        ``ips`` are all the Pod's IPs (dual-stack); ``ip`` alone means ``ips=[ip]``."""
        metadata: Json = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
        if finalizers:
            metadata["finalizers"] = list(finalizers)
        container: Json = {"name": "main", "image": image}
        if ports:
            container["ports"] = list(ports)
        spec: Json = {"containers": [container]}
        if node is not None:
            spec["nodeName"] = node
        if hostname is not None:
            spec["hostname"] = hostname
        if subdomain is not None:
            spec["subdomain"] = subdomain
        self.core.create_namespaced_pod(
            namespace, {"metadata": metadata, "spec": spec}, _preload_content=False
        )
        all_ips = list(ips) or ([ip] if ip else [])
        status: Json = {"phase": "Running", "startTime": _now(), **_pod_conditions(ready)}
        if all_ips:
            status["podIP"] = all_ips[0]
            status["podIPs"] = [{"ip": a} for a in all_ips]
        if node is not None:
            status["hostIP"] = self._node_ip(node)
        return self._raw(
            self.core.patch_namespaced_pod_status(
                name, namespace, {"status": status}, _preload_content=False
            )
        )

    def pods(self, namespace: str, selector: str | None = None) -> list[Json]:
        """The Pods of a namespace (``selector``: a label selector such as ``app=db``)."""
        page = self._raw(
            self.core.list_namespaced_pod(
                namespace, label_selector=selector or "", _preload_content=False
            )
        )
        return list(page.get("items") or [])

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> Json:
        body = {"status": _pod_conditions(ready)}
        return self._raw(
            self.core.patch_namespaced_pod_status(name, namespace, body, _preload_content=False)
        )

    def set_pod_waiting(
        self,
        namespace: str,
        name: str,
        *,
        reason: str = "CrashLoopBackOff",
        message: str = "back-off 5m0s restarting failed container",
        restarts: int = 3,
        exit_code: int = 1,
    ) -> Json:
        """Write what a kubelet writes for a Pod whose container keeps failing: not
        Ready (``ContainersNotReady``), its container waiting with ``reason``, and the
        last run's exit."""
        now = _now()
        unready = "containers with unready status: [main]"
        conditions = _pod_conditions(False)["conditions"]
        for c in conditions:
            if c["status"] == "False":
                c.update(reason="ContainersNotReady", message=unready)
        status = {
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": "main",
                    "image": "registry.invalid/kdisco-lab:none",
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": restarts,
                    "state": {"waiting": {"reason": reason, "message": message}},
                    "lastState": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
        return self._raw(
            self.core.patch_namespaced_pod_status(
                name, namespace, {"status": status}, _preload_content=False
            )
        )

    def terminate_pod(self, namespace: str, name: str) -> None:
        """Delete a Pod that holds a finalizer: it stays, with ``deletionTimestamp`` set
        (terminating), until :meth:`release_pod`.

        The grace period is 0: with a longer one a Pod bound to a node waits for its
        kubelet to confirm, and none runs here, so it would never go away.
        """
        self.delete_pod(namespace, name)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a Pod at once (grace period 0: no kubelet would confirm a longer one)."""
        self.core.delete_namespaced_pod(
            name, namespace, grace_period_seconds=0, _preload_content=False
        )

    def release_pod(self, namespace: str, name: str) -> None:
        """Remove a Pod's finalizers (a terminating Pod then goes away)."""
        body = [{"op": "replace", "path": "/metadata/finalizers", "value": []}]
        self.core.patch_namespaced_pod(
            name,
            namespace,
            body,
            _preload_content=False,
            _content_type="application/json-patch+json",
        )

    def _node_ip(self, node: str) -> str | None:
        from kubernetes.client.rest import ApiException

        try:
            raw = self._raw(self.core.read_node(node, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        for a in (raw.get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP":
                return str(a["address"])
        return None

    # -- ingresses ---------------------------------------------------------------------

    def ingress(
        self,
        namespace: str,
        name: str,
        rules: Sequence[Json],
        *,
        tls: Sequence[Json] = (),
        ingress_class: str | None = None,
        default_backend: Json | None = None,
    ) -> Json:
        """A networking.k8s.io/v1 Ingress; ``rules`` from :func:`ingress_rule`, ``tls``
        items like ``{"hosts": [...], "secretName": ...}``."""
        spec: Json = {"rules": list(rules)}
        if tls:
            spec["tls"] = list(tls)
        if ingress_class is not None:
            spec["ingressClassName"] = ingress_class
        if default_backend is not None:
            spec["defaultBackend"] = default_backend
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self._raw(
            self.networking.create_namespaced_ingress(namespace, body, _preload_content=False)
        )

    def set_ingress_status(self, namespace: str, name: str, ingress: Sequence[Json]) -> Json:
        """Write ``status.loadBalancer.ingress`` of an Ingress (``[{"ip": ...}]`` or
        ``[{"hostname": ...}]``) through its status subresource, as an ingress controller would."""
        body = {"status": {"loadBalancer": {"ingress": [dict(i) for i in ingress]}}}
        return self._raw(
            self.networking.patch_namespaced_ingress_status(
                name, namespace, body, _preload_content=False
            )
        )

    # -- network policies ------------------------------------------------------------

    def network_policy(self, namespace: str, name: str, spec: Json) -> Json:
        """A networking.k8s.io/v1 NetworkPolicy (``spec`` as a manifest holds it). The
        lab runs no network plugin: policies are stored and read, never enforced."""
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self._raw(
            self.networking.create_namespaced_network_policy(
                namespace, body, _preload_content=False
            )
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

    def slices(self, namespace: str, service: str) -> list[Json]:
        """The EndpointSlices of a Service (by the service-name label), whoever made them."""
        page = self._raw(
            self.discovery.list_namespaced_endpoint_slice(
                namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={service}",
                _preload_content=False,
            )
        )
        return list(page.get("items") or [])

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
        self.grant(namespace, name, rules, serviceaccount=name, serviceaccount_namespace=namespace)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "token").write_text(self.token(namespace, name, expiration_seconds))
        (dest / "ca.crt").write_bytes(Path(ca_file).read_bytes())
        (dest / "namespace").write_text(namespace)
        return dest

    def grant(
        self,
        namespace: str,
        name: str,
        rules: Sequence[Json],
        *,
        serviceaccount: str,
        serviceaccount_namespace: str,
    ) -> None:
        """A Role ``name`` with ``rules`` in ``namespace``, bound to a ServiceAccount
        (of any namespace: a Role reaches a namespace's objects, not only its own
        accounts)."""
        self.rbac.create_namespaced_role(
            namespace, {"metadata": {"name": name}, "rules": list(rules)}
        )
        self.rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": serviceaccount,
                        "namespace": serviceaccount_namespace,
                    }
                ],
            },
        )

    def grant_cluster_read(
        self, namespace: str, serviceaccount: str, rules: Sequence[Json], name: str
    ) -> None:
        """A ClusterRole ``name`` with ``rules`` bound to a ServiceAccount (for
        cluster-scoped reads such as ``nodes``)."""
        self.rbac.create_cluster_role({"metadata": {"name": name}, "rules": list(rules)})
        self.rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": serviceaccount, "namespace": namespace}
                ],
            }
        )

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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_conditions(ready: bool) -> Json:
    """The conditions a kubelet reports for a started Pod, Ready and ContainersReady
    following ``ready`` (the EndpointSlice controller reads Ready)."""
    now = _now()
    flag = "True" if ready else "False"
    return {
        "conditions": [
            {"type": t, "status": v, "lastTransitionTime": now}
            for t, v in (
                ("Initialized", "True"),
                ("PodScheduled", "True"),
                ("ContainersReady", flag),
                ("Ready", flag),
            )
        ]
    }


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
