"""Pure functions from API JSON to kdisco's values (no I/O; tested on recorded JSON).

A Service becomes a ``ServiceInfo`` (the few spec fields an answer is built from), an
EndpointSlice a ``SliceInfo`` (its ports and ready-made ``Endpoint`` objects), and
``resolve_info`` builds the answer from them. Raw JSON dicts of a 10,000-endpoint
Service take ~12 MB; these take a fraction of it, and building them is the hot loop
of every list and watch event.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from kdisco._attempts import Outcome
from kdisco._models import Endpoint, Resolution, ServiceKind, ServicePort, choose_port, port_labels
from kdisco._names import Query, in_cluster_target
from kdisco._strategies.base import Miss

Json = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_KINDS = {
    "ClusterIP": ServiceKind.CLUSTER_IP,
    "NodePort": ServiceKind.NODE_PORT,
    "LoadBalancer": ServiceKind.LOAD_BALANCER,
    "ExternalName": ServiceKind.EXTERNAL_NAME,
}

#: Strings repeated across thousands of endpoints (node and zone names) are stored once.
_intern = sys.intern


def service_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def services_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services"


def slices_path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


@attrs.frozen(kw_only=True)
class ServiceInfo:
    """What kdisco keeps of a Service: the few spec fields an answer is built from."""

    type: str = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()
    external_name: str = ""
    publish_not_ready: bool = False

    @classmethod
    def from_json(cls, svc: Json) -> ServiceInfo:
        spec = svc.get("spec") or {}
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        return cls(
            type=spec.get("type") or "ClusterIP",
            ports=service_ports(spec),
            cluster_ips=tuple(str(ip) for ip in ips if ip),
            external_name=str(spec.get("externalName") or "").removesuffix("."),
            publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        )

    def slice_port_name(self, wanted: int | str | None) -> str | None:
        """The slice port name a query will read, so slices can be built for it directly."""
        chosen, _ = choose_port(self.ports, wanted)
        return (chosen.name or "") if chosen else None


def service_ports(spec: Json) -> tuple[ServicePort, ...]:
    return tuple(
        ServicePort(
            port=int(p["port"]),
            name=p.get("name") or None,
            protocol=p.get("protocol") or "TCP",
            app_protocol=p.get("appProtocol") or None,
        )
        for p in spec.get("ports") or []
    )


class SliceInfo:
    """One EndpointSlice as kdisco keeps it: its ports and ready-made ``Endpoint`` objects.

    The endpoints are built once, when the slice is read, for one target port (the one
    asked for, else the slice's first); other ports get evolved copies, made on first
    use and kept.
    """

    __slots__ = ("_by_port", "address_type", "name", "ports", "resource_version", "service")

    def __init__(
        self,
        *,
        name: str,
        service: str,
        address_type: str,
        ports: tuple[tuple[str, int | None], ...],
        endpoints: tuple[Endpoint, ...],
        port: int | None,
        resource_version: str = "",
    ) -> None:
        self.name = name
        self.service = service
        self.address_type = address_type
        self.ports = ports
        self.resource_version = resource_version
        self._by_port: dict[int | None, tuple[Endpoint, ...]] = {port: endpoints}

    @classmethod
    def from_json(cls, sl: Json, prefer: str | None = None) -> SliceInfo:
        """Build from API JSON; ``prefer`` names the port the endpoints are built for."""
        meta = sl.get("metadata") or {}
        ports = tuple(
            (str(p.get("name") or ""), int(p["port"]) if p.get("port") is not None else None)
            for p in sl.get("ports") or []
        )
        port: int | None = None
        if ports:
            port = ports[0][1]
            for pname, number in ports:
                if pname == prefer:
                    port = number
                    break
        return cls(
            name=str(meta.get("name", "")),
            service=str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")),
            address_type=str(sl.get("addressType") or ""),
            ports=ports,
            endpoints=_endpoints(sl.get("endpoints") or (), port),
            port=port,
            resource_version=str(meta.get("resourceVersion", "")),
        )

    def port_for(self, wanted_name: str | None) -> tuple[bool, int | None]:
        """(whether the slice serves the wanted port, its target port if known)."""
        if wanted_name is None or not self.ports:
            return True, None
        for pname, number in self.ports:
            if pname == wanted_name:
                return True, number
        return False, None

    def endpoints(self, port: int | None) -> tuple[Endpoint, ...]:
        found = self._by_port.get(port)
        if found is None:
            base = next(iter(self._by_port.values()))
            found = tuple(attrs.evolve(ep, port=port) for ep in base)
            # A racing reader may build the same tuple: both are equal, either may stay.
            self._by_port[port] = found
        return found

    def __len__(self) -> int:
        return len(next(iter(self._by_port.values())))


def resolve_info(
    query: Query, info: ServiceInfo, get_slices: Callable[[], list[SliceInfo]]
) -> Resolution | Miss:
    """Build the answer from kdisco's own Service and slice objects.

    ``get_slices`` is called only when the answer needs them (a headless Service).
    """
    service = query.service
    ports = info.ports
    chosen, ok = choose_port(ports, query.port)

    if info.type == "ExternalName":
        external = info.external_name
        if isinstance(query.port, int) and chosen is None:
            port: int | None = query.port  # ExternalName ports are advisory only
        elif not ok:
            if in_cluster_target(external, service.cluster_domain) is None:
                return _no_port(query, ports)
            # An alias of another Service: the chain follows it, and that Service's
            # own ports answer the port name.
            port = None
        else:
            port = chosen.port if chosen else None
        return Resolution(
            service=service,
            kind=ServiceKind.EXTERNAL_NAME,
            endpoints=(Endpoint(host=external, port=port),),
            ports=ports,
            port=chosen,
            external_name=external,
            source="api",
        )
    if not ok:
        return _no_port(query, ports)

    if info.cluster_ips and info.cluster_ips != ("None",):
        return Resolution(
            service=service,
            kind=_KINDS.get(info.type, ServiceKind.UNKNOWN),
            endpoints=tuple(
                Endpoint(host=ip, port=chosen.port if chosen else None) for ip in info.cluster_ips
            ),
            ports=ports,
            port=chosen,
            source="api",
        )

    slices = get_slices()
    everything = merge_slices(slices, chosen)
    if query.include_not_ready or info.publish_not_ready:
        endpoints = everything
    else:
        endpoints = tuple(ep for ep in everything if ep.ready)
    if not endpoints:
        detail = (
            f"{len(everything)} endpoints in {len(slices)} EndpointSlices, none ready"
            if everything
            else f"{len(slices)} EndpointSlices with no endpoints"
            if slices
            else "no EndpointSlices"
        )
        return Miss(Outcome.NO_READY_ENDPOINTS, f"headless Service {service}: {detail}")
    return Resolution(
        service=service,
        kind=ServiceKind.HEADLESS,
        endpoints=endpoints,
        ports=ports,
        port=chosen,
        source="api",
    )


def _no_port(query: Query, ports: tuple[ServicePort, ...]) -> Miss:
    return Miss(
        Outcome.NO_SUCH_PORT,
        f"Service {query.service} declares no {query.describe_port()} "
        f"(ports: {port_labels(ports)})",
    )


def merge_slices(slices: Iterable[SliceInfo], chosen: ServicePort | None) -> tuple[Endpoint, ...]:
    """All endpoints of all slices (IPv4 and IPv6), de-duplicated, in a stable order.

    The same endpoint can sit in two slices while the controller moves it; the copy
    that is ready wins, so a move never hides a ready endpoint. A slice that lists
    ports but not the chosen one does not serve it (kube-proxy would not route that
    port to its endpoints), so its endpoints are left out; a slice without ports, or
    with the port's number unset, gives endpoints whose port is unknown (None).
    """
    wanted_name = (chosen.name or "") if chosen else None
    merged: dict[tuple[str, int | None], Endpoint] = {}
    for sl in sorted(slices, key=lambda s: s.name):
        if sl.address_type == "FQDN":
            continue  # deprecated, and never written by the controller
        serves, port = sl.port_for(wanted_name)
        if not serves:
            continue
        for ep in sl.endpoints(port):
            key = (ep.host, port)
            old = merged.get(key)
            if old is None or (ep.ready and not old.ready):
                merged[key] = ep
    return tuple(merged.values())


#: Endpoint's fields in order, and the slot setters the ingest loop fills them with.
#: ``Endpoint(host=..., ...)`` goes through attrs' keyword ``__init__`` and frozen
#: ``__setattr__``; a list of 10,000 endpoints spends more time there than in
#: ``json.loads`` (measured: 26 ms against 11 ms this way). Endpoint has no
#: validators or converters to skip; tests/test_api.py checks both ways agree, and
#: a new field fails that test until it is added here.
ENDPOINT_FIELDS = (
    "host",
    "port",
    "ready",
    "serving",
    "terminating",
    "hostname",
    "pod",
    "node",
    "zone",
)
_SETTERS = tuple(Endpoint.__dict__[name].__set__ for name in ENDPOINT_FIELDS)


def _endpoints(raws: Iterable[Json], port: int | None) -> tuple[Endpoint, ...]:
    """Endpoint objects for a slice's endpoints, one per address (the hot loop of ingest)."""
    out: list[Endpoint] = []
    append = out.append
    new = object.__new__
    s_host, s_port, s_ready, s_serving, s_term, s_hostname, s_pod, s_node, s_zone = _SETTERS
    for raw in raws:
        cond = raw.get("conditions") or {}
        # discovery/v1: ready nil means true; serving nil means "same as ready";
        # terminating nil means false.
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        terminating = bool(cond.get("terminating") or False)
        ref = raw.get("targetRef")
        pod = ref.get("name") if ref and ref.get("kind", "Pod") == "Pod" else None
        hostname = raw.get("hostname") or None
        if pod is not None and pod == hostname:
            pod = hostname  # one string object for both (StatefulSets)
        node = raw.get("nodeName")
        zone = raw.get("zone")
        node = _intern(node) if node else None
        zone = _intern(zone) if zone else None
        for address in raw.get("addresses") or ():
            ep = new(Endpoint)
            s_host(ep, address)
            s_port(ep, port)
            s_ready(ep, ready)
            s_serving(ep, serving)
            s_term(ep, terminating)
            s_hostname(ep, hostname)
            s_pod(ep, pod)
            s_node(ep, node)
            s_zone(ep, zone)
            append(ep)
    return tuple(out)
