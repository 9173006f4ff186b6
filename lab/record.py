"""Record real kube-apiserver responses for the api strategy's unit tests.

``python -m lab.record`` starts (or reuses) the lab, creates one namespace holding a
Service of every kind the api strategy distinguishes (and the EndpointSlices a
controller would write for the headless ones), then GETs each object the way kdisco
does and writes the raw bodies to ``tests/data/api/recorded/``. The module-level
constants below describe what is created; ``tests/test_api_recorded.py`` imports them,
so a recording and the assertions made on it cannot drift apart.

Only the lab's own 127.0.0.1 apiserver is ever contacted. Addresses in the objects are
from the lab's service CIDR and TEST-NET ranges: data only, never connected to.

Recordings are made stable before they are written: the random namespace becomes
``recorded``, uids become numbered placeholders, resourceVersions are renumbered
keeping their order, and timestamps are fixed. Everything else is what the apiserver
sent, re-indented.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

Json = dict[str, Any]

#: The namespace every recording shows (the real one is random, and replaced).
NAMESPACE = "recorded"
CLUSTER_DOMAIN = "cluster.local"
#: What the timestamps in recordings are set to.
FIXED_TIME = "2025-01-01T00:00:00Z"
#: kdisco lists a Service's slices with this label and page size (kdisco/_strategies/api.py).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_PAGE = 500
OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "api" / "recorded"


# -- what the recording creates ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Port:
    """A Service port; ``name`` "" is an unnamed port (the API omits the field)."""

    port: int
    name: str = ""
    target: int | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None
    node_port: int | None = None

    def to_json(self) -> Json:
        p: Json = {"port": self.port, "protocol": self.protocol}
        if self.name:
            p["name"] = self.name
        if self.target is not None:
            p["targetPort"] = self.target
        if self.app_protocol:
            p["appProtocol"] = self.app_protocol
        if self.node_port is not None:
            p["nodePort"] = self.node_port
        return p


@dataclasses.dataclass(frozen=True)
class SlicePort:
    """An EndpointSlice port: the Service port's name and its *target* port."""

    name: str
    port: int
    protocol: str = "TCP"

    def to_json(self) -> Json:
        return {"name": self.name, "port": self.port, "protocol": self.protocol}


@dataclasses.dataclass(frozen=True)
class Ep:
    """One EndpointSlice endpoint. A None condition is left out (the API's nil)."""

    address: str
    ready: bool | None = True
    serving: bool | None = None
    terminating: bool | None = None
    hostname: str | None = None
    pod: str | None = None
    node: str | None = None
    zone: str | None = None

    def to_json(self, namespace: str) -> Json:
        conditions = {
            k: v
            for k, v in (
                ("ready", self.ready),
                ("serving", self.serving),
                ("terminating", self.terminating),
            )
            if v is not None
        }
        ep: Json = {"addresses": [self.address], "conditions": conditions}
        if self.hostname:
            ep["hostname"] = self.hostname
        if self.pod:
            ep["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": self.pod}
        if self.node:
            ep["nodeName"] = self.node
        if self.zone:
            ep["zone"] = self.zone
        return ep


@dataclasses.dataclass(frozen=True)
class Slice:
    """An EndpointSlice; ``ports`` None leaves the field out entirely."""

    name: str
    endpoints: tuple[Ep, ...]
    ports: tuple[SlicePort, ...] | None
    address_type: str = "IPv4"

    def to_json(self, namespace: str, service: str) -> Json:
        body: Json = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {
                    SERVICE_NAME_LABEL: service,
                    "endpointslice.kubernetes.io/managed-by": "kdisco-lab",
                },
            },
            "addressType": self.address_type,
            "endpoints": [ep.to_json(namespace) for ep in self.endpoints],
        }
        if self.ports is not None:
            body["ports"] = [p.to_json() for p in self.ports]
        return body


@dataclasses.dataclass(frozen=True)
class Svc:
    """A Service and, for headless ones, the slices written for it.

    ``cluster_ips`` are requested explicitly (not allocated) so recordings are stable;
    ``external_name`` may contain ``{namespace}``.
    """

    name: str
    type: str = "ClusterIP"
    ports: tuple[Port, ...] = ()
    cluster_ips: tuple[str, ...] = ()
    headless: bool = False
    external_name: str | None = None
    publish_not_ready: bool = False
    ip_family_policy: str | None = None
    ip_families: tuple[str, ...] = ()
    lb_ingress: tuple[Json, ...] = ()
    slices: tuple[Slice, ...] = ()

    def external_name_in(self, namespace: str) -> str:
        assert self.external_name is not None
        return self.external_name.format(namespace=namespace)

    @property
    def lists_slices(self) -> bool:
        """kdisco lists slices for every Service but an ExternalName: a headless
        Service's are its answer, a ClusterIP's say whether anything is ready."""
        return self.type != "ExternalName"

    def to_json(self, namespace: str) -> Json:
        spec: Json = {"type": self.type}
        if self.ports:
            spec["ports"] = [p.to_json() for p in self.ports]
        if self.external_name is not None:
            spec["externalName"] = self.external_name_in(namespace)
        if self.headless:
            spec["clusterIP"] = "None"
        elif self.cluster_ips:
            spec["clusterIP"] = self.cluster_ips[0]
            spec["clusterIPs"] = list(self.cluster_ips)
        if self.publish_not_ready:
            spec["publishNotReadyAddresses"] = True
        if self.ip_family_policy:
            spec["ipFamilyPolicy"] = self.ip_family_policy
        if self.ip_families:
            spec["ipFamilies"] = list(self.ip_families)
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": spec,
        }


# ClusterIP and friends: fixed IPs from the lab's service CIDRs (10.96.0.0/16,
# fd00:10:96::/112) and fixed node ports, so a re-recording diffs cleanly. Each has one
# ready pod behind it (a slice as the controller would write it), so that its
# ClusterIP answers.


def backed(name: str, ports: tuple[Port, ...], address: str, *, ready: bool = True) -> Slice:
    """One slice with one pod serving every port of a Service (on its target port)."""
    slice_ports = tuple(SlicePort(p.name, p.target or p.port, protocol=p.protocol) for p in ports)
    ep = Ep(address, ready=ready, serving=ready, terminating=False, pod=f"{name}-0")
    return Slice(f"{name}-1", (ep,), slice_ports)


HTTP = Port(80, "http", target=8080)
WEB = Svc(
    "web",
    ports=(HTTP,),
    cluster_ips=("10.96.77.10",),
    slices=(backed("web", (HTTP,), "192.0.2.70"),),
)
#: A ClusterIP whose only pod is not ready: the api strategy says so.
IDLE = Svc(
    "idle",
    ports=(HTTP,),
    cluster_ips=("10.96.77.17",),
    slices=(backed("idle", (HTTP,), "192.0.2.77", ready=False),),
)

MULTI_PORTS = (
    Port(80, "http", target=8080),
    Port(9090, "grpc", target=9090, app_protocol="grpc"),
    Port(5353, "dns-udp", target=53, protocol="UDP"),
)
MULTI = Svc(
    "multi",
    ports=MULTI_PORTS,
    cluster_ips=("10.96.77.11",),
    slices=(backed("multi", MULTI_PORTS, "192.0.2.71"),),
)

UNNAMED_PORTS = (Port(6379, target=16379),)
UNNAMED = Svc(
    "unnamed",
    ports=UNNAMED_PORTS,
    cluster_ips=("10.96.77.12",),
    slices=(backed("unnamed", UNNAMED_PORTS, "192.0.2.72"),),
)

DUAL_PORTS = (Port(8443, target=8443),)
DUAL = Svc(
    "dual",
    ports=DUAL_PORTS,
    slices=(backed("dual", DUAL_PORTS, "192.0.2.73"),),
    cluster_ips=("10.96.77.13", "fd00:10:96::4d0d"),
    ip_family_policy="RequireDualStack",
    ip_families=("IPv4", "IPv6"),
)
#: IPv6 first: clusterIPs keep the family order asked for.
DUAL_V6_FIRST_PORTS = (Port(443, "https", target=8443),)
DUAL_V6_FIRST = Svc(
    "dual-v6-first",
    ports=DUAL_V6_FIRST_PORTS,
    slices=(backed("dual-v6-first", DUAL_V6_FIRST_PORTS, "192.0.2.74"),),
    cluster_ips=("fd00:10:96::4d0e", "10.96.77.14"),
    ip_family_policy="PreferDualStack",
    ip_families=("IPv6", "IPv4"),
)

NODE_PORT_PORTS = (Port(80, "http", target=8080, node_port=30080),)
NODE_PORT = Svc(
    "nodeport",
    type="NodePort",
    ports=NODE_PORT_PORTS,
    slices=(backed("nodeport", NODE_PORT_PORTS, "192.0.2.75"),),
    cluster_ips=("10.96.77.15",),
)
LB_INGRESS: tuple[Json, ...] = ({"ip": "203.0.113.50"}, {"hostname": "lb.example.com"})
LOAD_BALANCER_PORTS = (
    Port(443, "https", target=8443, node_port=30443),
    Port(80, "http", target=8080, node_port=30081),
)
LOAD_BALANCER = Svc(
    "lb",
    type="LoadBalancer",
    ports=LOAD_BALANCER_PORTS,
    slices=(backed("lb", LOAD_BALANCER_PORTS, "192.0.2.76"),),
    cluster_ips=("10.96.77.16",),
    lb_ingress=LB_INGRESS,
)

EXTERNAL = Svc("ext", type="ExternalName", external_name="db.example.com")
#: A trailing dot (valid in the API) and an advisory port.
EXTERNAL_WITH_PORT = Svc(
    "ext-port",
    type="ExternalName",
    external_name="pg.example.com.",
    ports=(Port(5432, "pg"),),
)
#: An alias of another Service of this namespace.
ALIAS = Svc(
    "alias",
    type="ExternalName",
    external_name="web.{namespace}.svc." + CLUSTER_DOMAIN,
)

# Headless: what the EndpointSlice controller would write, written by hand (the lab
# has no controller-manager).

BROKER = Port(9092, "broker", target=19092)
METRICS = Port(9308, "metrics", target=9308)
KAFKA_SLICE_PORTS = (SlicePort("broker", 19092), SlicePort("metrics", 9308))

KAFKA_0 = Ep(
    "192.0.2.10",
    ready=True,
    serving=True,
    terminating=False,
    hostname="kafka-0",
    pod="kafka-0",
    node="node-a",
    zone="zone-a",
)
#: Every condition nil: ready (nil = true), serving (nil = ready), not terminating.
KAFKA_1 = Ep("192.0.2.11", ready=None, hostname="kafka-1", pod="kafka-1", node="node-b")
KAFKA_2_NOT_READY = Ep(
    "192.0.2.12",
    ready=False,
    serving=False,
    terminating=False,
    hostname="kafka-2",
    pod="kafka-2",
    node="node-c",
    zone="zone-c",
)
KAFKA_3_TERMINATING = Ep(
    "192.0.2.13",
    ready=False,
    serving=True,
    terminating=True,
    hostname="kafka-3",
    pod="kafka-3",
    node="node-a",
    zone="zone-a",
)
#: kafka-4 is being moved between slices: not ready in the old one, ready in the new.
KAFKA_4_OLD = Ep(
    "192.0.2.14",
    ready=False,
    serving=False,
    terminating=False,
    hostname="kafka-4",
    pod="kafka-4",
    node="node-b",
    zone="zone-b",
)
KAFKA_4 = Ep(
    "192.0.2.14",
    ready=True,
    serving=True,
    terminating=False,
    hostname="kafka-4",
    pod="kafka-4",
    node="node-b",
    zone="zone-b",
)
#: Added by hand: no targetRef, hostname, node or zone.
KAFKA_MANUAL = Ep("198.51.100.20", ready=True)
KAFKA_0_V6 = Ep(
    "2001:db8::10",
    ready=True,
    serving=True,
    terminating=False,
    hostname="kafka-0",
    pod="kafka-0",
    node="node-a",
    zone="zone-a",
)
#: In a slice that serves only the metrics port.
EXPORTER = Ep("192.0.2.30", ready=True, pod="exporter-0", node="node-c", zone="zone-c")

KAFKA_SLICE_A = Slice(
    "kafka-v4-a",
    (KAFKA_0, KAFKA_1, KAFKA_2_NOT_READY, KAFKA_3_TERMINATING, KAFKA_4_OLD),
    KAFKA_SLICE_PORTS,
)
KAFKA_SLICE_B = Slice("kafka-v4-b", (KAFKA_4, KAFKA_MANUAL), KAFKA_SLICE_PORTS)
KAFKA_SLICE_V6 = Slice("kafka-v6", (KAFKA_0_V6,), KAFKA_SLICE_PORTS, address_type="IPv6")
KAFKA_SLICE_METRICS = Slice("kafka-metrics-only", (EXPORTER,), (SlicePort("metrics", 9308),))
KAFKA = Svc(
    "kafka",
    ports=(BROKER, METRICS),
    headless=True,
    slices=(KAFKA_SLICE_A, KAFKA_SLICE_B, KAFKA_SLICE_V6, KAFKA_SLICE_METRICS),
)

PORTLESS_EP = Ep("192.0.2.40", ready=True, hostname="cache-0", pod="cache-0")
#: The Service declares a port; its slice has no ports field at all.
PORTLESS = Svc(
    "portless-slice",
    ports=(HTTP,),
    headless=True,
    slices=(Slice("portless-slice-1", (PORTLESS_EP,), None),),
)

PNR_READY = Ep("192.0.2.50", ready=True, pod="pnr-0")
PNR_NOT_READY = Ep("192.0.2.51", ready=False, serving=False, pod="pnr-1")
PUBLISH_NOT_READY = Svc(
    "publish-not-ready",
    ports=(HTTP,),
    headless=True,
    publish_not_ready=True,
    slices=(Slice("publish-not-ready-1", (PNR_READY, PNR_NOT_READY), (SlicePort("http", 8080),)),),
)

NOT_READY_EP = Ep("192.0.2.60", ready=False, serving=False, terminating=False, pod="db-0")
#: Only not-ready endpoints; one unnamed port (its slice port name is "").
NOT_READY = Svc(
    "not-ready",
    ports=(Port(5432, target=15432),),
    headless=True,
    slices=(Slice("not-ready-1", (NOT_READY_EP,), (SlicePort("", 15432),)),),
)
EMPTY = Svc(
    "empty",
    ports=(HTTP,),
    headless=True,
    slices=(Slice("empty-1", (), (SlicePort("http", 8080),)),),
)
NO_SLICES = Svc("no-slices", ports=(HTTP,), headless=True)

SERVICES: tuple[Svc, ...] = (
    WEB,
    IDLE,
    MULTI,
    UNNAMED,
    DUAL,
    DUAL_V6_FIRST,
    NODE_PORT,
    LOAD_BALANCER,
    EXTERNAL,
    EXTERNAL_WITH_PORT,
    ALIAS,
    KAFKA,
    PORTLESS,
    PUBLISH_NOT_READY,
    NOT_READY,
    EMPTY,
    NO_SLICES,
)

#: A ServiceAccount that may get Services but not list EndpointSlices, and one with
#: no permissions at all: their 403 bodies are recorded.
SA_SERVICES_ONLY = "services-only"
SA_NOTHING = "nothing"
MISSING_SERVICE = "missing"
#: A namespace that does not exist (the list of its slices is recorded).
MISSING_NAMESPACE = NAMESPACE + "-gone"


def service_file(svc: Svc | str) -> str:
    return f"service-{svc if isinstance(svc, str) else svc.name}.json"


def slices_file(svc: Svc | str) -> str:
    return f"endpointslices-{svc if isinstance(svc, str) else svc.name}.json"


STATUS_403_GET_SERVICES = "status-403-get-services.json"
STATUS_403_LIST_SLICES = "status-403-list-endpointslices.json"
STATUS_404_SERVICE = "status-404-service.json"
STATUS_401 = "status-401.json"
SLICES_MISSING_NAMESPACE = "endpointslices-missing-namespace.json"


def expected_files() -> list[str]:
    names = [service_file(s) for s in SERVICES]
    names += [slices_file(s) for s in SERVICES if s.lists_slices]
    names += [
        STATUS_403_GET_SERVICES,
        STATUS_403_LIST_SLICES,
        STATUS_404_SERVICE,
        STATUS_401,
        SLICES_MISSING_NAMESPACE,
    ]
    return names


# -- recording ---------------------------------------------------------------------------


@dataclasses.dataclass
class Recording:
    file: str
    request: str  # "GET /path?query" as sent
    status: int
    body: Json


class _Recorder:
    """GETs through the kubernetes client, as kdisco does, keeping the raw bodies."""

    def __init__(self, info: Any, api_client: Any, sink: list[Recording]) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.recordings = sink
        self._last_url = ""
        rest = api_client.rest_client
        original: Callable[..., Any] = rest.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            _check_loopback(url)
            self._last_url = f"{method} {url.removeprefix(info.apiserver_url)}"
            return original(method, url, *args, **kwargs)

        rest.request = request

    def _record(self, file: str, call: Callable[..., Any], **kwargs: Any) -> Recording:
        from kubernetes.client.exceptions import ApiException

        try:
            response = call(_preload_content=False, **kwargs)
            status, raw = int(response.status), response.data
        except ApiException as exc:
            status, raw = int(exc.status), exc.body
        body = json.loads(raw)
        assert isinstance(body, dict), body
        rec = Recording(file, self._last_url, status, body)
        self.recordings.append(rec)
        return rec

    def service(self, file: str, namespace: str, name: str) -> Recording:
        # As kdisco/_strategies/api.py ApiStrategy._direct.
        return self._record(file, self.core.read_namespaced_service, name=name, namespace=namespace)

    def slices(self, file: str, namespace: str, service: str) -> Recording:
        # As kdisco/_strategies/api.py _list_slices (first page).
        return self._record(
            file,
            self.discovery.list_namespaced_endpoint_slice,
            namespace=namespace,
            label_selector=f"{SERVICE_NAME_LABEL}={service}",
            limit=SLICE_PAGE,
        )


def _expect(rec: Recording, status: int) -> None:
    if rec.status != status:
        raise RuntimeError(f"{rec.request}: expected HTTP {status}, got {rec.status}: {rec.body}")


def _check_loopback(url: str) -> None:
    if not url.startswith("https://127.0.0.1:"):
        raise RuntimeError(f"refusing to contact {url}: only the lab's 127.0.0.1 apiserver")


def _client_with_token(info: Any, token: str) -> Any:
    from kubernetes import client

    _check_loopback(info.apiserver_url)
    cfg = type.__call__(client.Configuration)
    cfg.host = info.apiserver_url
    cfg.ssl_ca_cert = str(info.ca_path)
    cfg.api_key["BearerToken"] = token
    cfg.api_key_prefix["BearerToken"] = "Bearer"
    cfg.retries = 0
    return client.ApiClient(configuration=cfg)


def create_objects(cluster: Any, namespace: str) -> None:
    for svc in SERVICES:
        cluster.core.create_namespaced_service(namespace, svc.to_json(namespace))
        if svc.lb_ingress:
            body = {"status": {"loadBalancer": {"ingress": list(svc.lb_ingress)}}}
            cluster.core.patch_namespaced_service_status(svc.name, namespace, body)
        for sl in svc.slices:
            cluster.discovery.create_namespaced_endpoint_slice(
                namespace, sl.to_json(namespace, svc.name)
            )


def record_all(info: Any, cluster: Any, namespace: str, workdir: Path) -> list[Recording]:
    recordings: list[Recording] = []
    admin = _Recorder(info, cluster.api_client, recordings)
    for svc in SERVICES:
        rec = admin.service(service_file(svc), namespace, svc.name)
        _expect(rec, 200)
        if svc.lists_slices:
            rec = admin.slices(slices_file(svc), namespace, svc.name)
            _expect(rec, 200)
    rec = admin.service(STATUS_404_SERVICE, namespace, MISSING_SERVICE)
    _expect(rec, 404)
    missing_ns = MISSING_NAMESPACE.replace(NAMESPACE, namespace, 1)
    rec = admin.slices(SLICES_MISSING_NAMESPACE, missing_ns, KAFKA.name)
    _expect(rec, 200)

    services_only = cluster.serviceaccount_credentials(
        namespace,
        workdir / SA_SERVICES_ONLY,
        str(info.ca_path),
        name=SA_SERVICES_ONLY,
        rules=[{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}],
    )
    nothing = cluster.serviceaccount_credentials(
        namespace, workdir / SA_NOTHING, str(info.ca_path), name=SA_NOTHING, rules=[]
    )
    with ExitStack() as stack:
        c1 = _client_with_token(info, (services_only / "token").read_text())
        stack.callback(c1.close)
        rec = _Recorder(info, c1, recordings).slices(STATUS_403_LIST_SLICES, namespace, KAFKA.name)
        _expect(rec, 403)
        c2 = _client_with_token(info, (nothing / "token").read_text())
        stack.callback(c2.close)
        rec = _Recorder(info, c2, recordings).service(STATUS_403_GET_SERVICES, namespace, WEB.name)
        _expect(rec, 403)
        c3 = _client_with_token(info, "not-a-valid-token")
        stack.callback(c3.close)
        rec = _Recorder(info, c3, recordings).service(STATUS_401, namespace, WEB.name)
        _expect(rec, 401)
    return recordings


# -- making recordings stable ----------------------------------------------------------


class _Scrubber:
    """The namespace, uids, resourceVersions and timestamps made reproducible."""

    def __init__(self, namespace: str, recordings: Sequence[Recording]) -> None:
        self.namespace = namespace
        self.uids: dict[str, str] = {}
        versions: set[int] = set()
        for rec in recordings:
            for key, value in _walk(rec.body):
                if key == "resourceVersion" and isinstance(value, str) and value.isdigit():
                    versions.add(int(value))
        # Renumbered in their real order, so "newer than" still holds between files.
        self.versions = {v: str(1000 + i) for i, v in enumerate(sorted(versions))}

    def text(self, s: str) -> str:
        return s.replace(self.namespace, NAMESPACE)

    def __call__(self, doc: Any, key: str = "") -> Any:
        if isinstance(doc, dict):
            return {self.text(k): self(v, k) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self(v, key) for v in doc]
        if isinstance(doc, str):
            if key == "uid":
                placeholder = f"00000000-0000-4000-8000-{len(self.uids) + 1:012d}"
                return self.uids.setdefault(doc, placeholder)
            if key == "resourceVersion" and doc.isdigit():
                return self.versions[int(doc)]
            if key in ("creationTimestamp", "time"):
                return FIXED_TIME
            return self.text(doc)
        return doc


def _walk(doc: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _walk(v)


def write(
    recordings: Sequence[Recording], namespace: str, out: Path, apiserver_version: str
) -> None:
    scrub = _Scrubber(namespace, recordings)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {rec.file for rec in recordings}
    assert wanted == set(expected_files()), sorted(wanted ^ set(expected_files()))
    for stale in out.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for rec in recordings:
        (out / rec.file).write_text(json.dumps(scrub(rec.body), indent=2) + "\n")
    (out / "README.md").write_text(_readme(recordings, scrub, apiserver_version))


def _readme(recordings: Sequence[Recording], scrub: _Scrubber, version: str) -> str:
    from lab.versions import VERSIONS

    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    rows = "\n".join(
        f"| `{rec.file}` | {rec.status} | `{scrub.text(rec.request)}` |"
        for rec in sorted(recordings, key=lambda r: r.file)
    )
    return f"""# Recorded API responses

Raw kube-apiserver response bodies, recorded by

```sh
python -m lab.record
```

against the lab's kube-apiserver {version} (etcd {VERSIONS["etcd"]}) on 127.0.0.1,
on {today}. `lab/record.py` creates the objects (its constants say exactly what:
`tests/test_api_recorded.py` imports them) and GETs them through the `kubernetes`
client as kdisco does: `read_namespaced_service` and `list_namespaced_endpoint_slice`
with `labelSelector=kubernetes.io/service-name=<name>` and `limit={SLICE_PAGE}`, raw
(`_preload_content=False`). The 403 bodies come from ServiceAccount tokens (TokenRequest
API) bound to a Role that allows only `get services` (`{SA_SERVICES_ONLY}`) or nothing
(`{SA_NOTHING}`); the 401 from an invalid bearer token.

EndpointSlices are written by the script (managed-by `kdisco-lab`; the Services have no
selector, so the lab's EndpointSlice controller leaves them alone), shaped like the
controller's. Addresses are data only.

Made stable before writing (nothing else is changed, only re-indented): the random
namespace is replaced by `{NAMESPACE}` (also inside messages, usernames and
`externalName`), uids by numbered placeholders, resourceVersions renumbered from 1000
in their real order, `creationTimestamp` and managedFields `time` set to
`{FIXED_TIME}`. Re-record after changing `lab/record.py`; never edit these by hand.

| file | HTTP status | request (namespace placeholder applied) |
| --- | --- | --- |
{rows}
"""


def _apiserver_version(api_client: Any) -> str:
    from kubernetes import client

    response: Any = client.VersionApi(api_client).get_code(_preload_content=False)
    raw = response.data
    return str(json.loads(raw).get("gitVersion", "unknown"))


# -- entry point ---------------------------------------------------------------------------


@contextmanager
def _lab(fresh: bool) -> Iterator[Any]:
    from lab import ensure_lab

    with ensure_lab(reuse=not fresh) as info:
        yield info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.record", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="default: %(default)s")
    parser.add_argument(
        "--fresh", action="store_true", help="start a private lab instead of reusing one"
    )
    args = parser.parse_args(argv)
    # The recordings must come from the lab's 127.0.0.1 apiserver, never via a proxy.
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)

    from lab.objects import Cluster

    with _lab(args.fresh) as info, tempfile.TemporaryDirectory() as tmp:
        _check_loopback(info.apiserver_url)
        cluster = Cluster(str(info.kubeconfig))
        namespace = cluster.namespace("rec")
        try:
            create_objects(cluster, namespace)
            recordings = record_all(info, cluster, namespace, Path(tmp))
            version = _apiserver_version(cluster.api_client)
        finally:
            # Services go first: the lab has no namespace controller, so the namespace
            # stays Terminating and only deleting the Services frees their fixed IPs and
            # node ports for the next recording.
            for svc in SERVICES:
                try:
                    cluster.core.delete_namespaced_service(svc.name, namespace)
                except Exception as exc:  # report and go on: cleanup must not mask errors
                    print(f"cleanup: {svc.name}: {exc}", file=sys.stderr)
            cluster.delete_namespace(namespace)
            cluster.close()
    write(recordings, namespace, args.out, version)
    print(f"wrote {len(recordings)} recordings to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
