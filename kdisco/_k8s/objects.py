"""Pure functions from API JSON to kdisco's values (no I/O; tested on recorded JSON).

A Service becomes a ``ServiceInfo`` (the few spec fields an answer is built from), an
EndpointSlice a ``SliceInfo`` (its ports and ready-made ``Endpoint`` objects), and
``resolve_info`` builds the answer from them. Raw JSON dicts of a 10,000-endpoint
Service take ~12 MB; these take a fraction of it, and building them is the hot loop
of every list and watch event.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import attrs

from kdisco._attempts import Outcome
from kdisco._models import Endpoint, Resolution, ServiceKind, ServicePort, choose_port, port_labels
from kdisco._names import Query, in_cluster_target, is_dns_name
from kdisco._strategies.base import Miss

Json = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
KINDS = {
    "ClusterIP": ServiceKind.CLUSTER_IP,
    "NodePort": ServiceKind.NODE_PORT,
    "LoadBalancer": ServiceKind.LOAD_BALANCER,
    "ExternalName": ServiceKind.EXTERNAL_NAME,
}

#: Strings repeated across thousands of endpoints (node and zone names) are stored once.
_intern = sys.intern


class MalformedObject(ValueError):
    """An API object with a field kdisco cannot trust; the message names the field.

    The API server validates what it stores, so this means a proxy, a broken or
    hostile server, or a version skew: the object is refused rather than guessed at
    (``"ready": "false"`` is not ready, ``clusterIPs: "10.96.0.9"`` is not nine hosts).
    """


def bad_field(where: str, value: object, expected: str) -> MalformedObject:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return MalformedObject(f"{where} is {shown}, not {expected}")


def get_str(obj: Json, key: str, where: str, *, default: str | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_field(f"{where}.{key}", value, "a string")
    return value


def _bool(obj: Json, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise bad_field(f"{where}.{key}", value, "true, false or null")


def _port(obj: Json, key: str, where: str, *, required: bool) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise bad_field(f"{where}.{key}", value, "a port number 1-65535")
    return value


def get_object(obj: Json, key: str, where: str) -> Json:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_field(f"{where}.{key}", value, "an object")
    return value


def get_list(obj: Json, key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_field(f"{where}.{key}", value, "a list")
    return value


def _ip(value: object, where: str, family: int | None = None) -> str:
    """An IP literal (of ``family`` when given); inet_pton is C and cheap per endpoint."""
    families = [socket.AF_INET, socket.AF_INET6]
    if family is not None and family in families:
        families = [socket.AddressFamily(family)]
    if isinstance(value, str):
        for fam in families:
            try:
                socket.inet_pton(fam, value)
            except (OSError, ValueError):
                continue
            return value
    expected = (
        "an IP address"
        if len(families) > 1
        else ("an IPv4 address" if families[0] == socket.AF_INET else "an IPv6 address")
    )
    raise bad_field(where, value, expected)


def list_items(page: Json, what: str) -> list[Json]:
    """A list response's ``items``, each an object; MalformedObject otherwise."""
    items = page.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_field(f"{what}.items", items, "a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad_field(f"{what}.items[{i}]", item, "an object")
    return items


def object_name(obj: object) -> str:
    """``metadata.name`` (empty when missing or not a string, or ``obj`` no object)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def service_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def services_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services"


#: Services of every namespace (a cluster-wide LIST: a ClusterRole grants it).
ALL_SERVICES_PATH = "/api/v1/services"


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
    traffic_distribution: str | None = None
    #: What reaches the Service from outside the cluster (``reach="external"``): its
    #: load balancer's addresses (``status.loadBalancer.ingress``: IPs or hostnames),
    #: ``spec.externalIPs``, and ``spec.externalTrafficPolicy`` (``Local``: only nodes
    #: running one of its pods answer on the node port).
    load_balancer: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    external_traffic_policy: str = "Cluster"

    @property
    def headless(self) -> bool:
        """No ClusterIP (``clusterIP: None``): its answer is its endpoints."""
        return not self.cluster_ips or self.cluster_ips == ("None",)

    @property
    def kind(self) -> ServiceKind:
        """What kind of Service it is, as an answer reports it."""
        if self.type != "ExternalName" and self.headless:
            return ServiceKind.HEADLESS
        return KINDS.get(self.type, ServiceKind.UNKNOWN)

    @classmethod
    def from_json(cls, svc: Json) -> ServiceInfo:
        """Raises ``MalformedObject`` naming the first field that is not as the API
        defines it."""
        given: object = svc  # JSON from a server: checked, whatever the annotation says
        if not isinstance(given, dict):
            raise bad_field("Service", given, "an object")
        service = f"Service {object_name(svc)!r}"
        spec = get_object(svc, "spec", service)
        where = f"{service}.spec"
        ips = get_list(spec, "clusterIPs", where)
        if not ips:
            single = get_str(spec, "clusterIP", where)
            ips = [single] if single else []
        if "None" in ips and len(ips) > 1:
            raise bad_field(f"{where}.clusterIPs", ips, '"None" alone (headless) or addresses')
        cluster_ips = tuple(
            ip if ip == "None" else _ip(ip, f"{where}.clusterIPs[{i}]") for i, ip in enumerate(ips)
        )
        kind = get_str(spec, "type", where, default="ClusterIP") or "ClusterIP"
        external = (get_str(spec, "externalName", where) or "").removesuffix(".")
        if kind == "ExternalName" and not is_dns_name(external):
            raise bad_field(f"{where}.externalName", external, "a DNS name")
        external_ips = tuple(
            _ip(ip, f"{where}.externalIPs[{i}]")
            for i, ip in enumerate(get_list(spec, "externalIPs", where))
        )
        status = get_object(svc, "status", service)
        lb = get_object(status, "loadBalancer", f"{service}.status")
        return cls(
            type=kind,
            ports=service_ports(spec, where),
            cluster_ips=cluster_ips,
            external_name=external,
            publish_not_ready=bool(_bool(spec, "publishNotReadyAddresses", where)),
            traffic_distribution=get_str(spec, "trafficDistribution", where) or None,
            load_balancer=load_balancer_addresses(lb, f"{service}.status.loadBalancer"),
            external_ips=external_ips,
            external_traffic_policy=get_str(spec, "externalTrafficPolicy", where) or "Cluster",
        )

    def slice_port_name(self, wanted: int | str | None) -> str | None:
        """The slice port name a query will read, so slices can be built for it directly."""
        chosen, _ = choose_port(self.ports, wanted)
        return (chosen.name or "") if chosen else None


def service_ports(spec: Json, where: str = "spec") -> tuple[ServicePort, ...]:
    ports: list[ServicePort] = []
    for i, p in enumerate(get_list(spec, "ports", where)):
        at = f"{where}.ports[{i}]"
        if not isinstance(p, dict):
            raise bad_field(at, p, "an object")
        number = _port(p, "port", at, required=True)
        assert number is not None
        ports.append(
            ServicePort(
                port=number,
                name=get_str(p, "name", at) or None,
                protocol=get_str(p, "protocol", at) or "TCP",
                app_protocol=get_str(p, "appProtocol", at) or None,
                node_port=_port(p, "nodePort", at, required=False),
            )
        )
    return tuple(ports)


def load_balancer_addresses(status: Json, where: str) -> tuple[str, ...]:
    """A ``LoadBalancerStatus``'s addresses: each ingress's ``ip``, else its
    ``hostname`` (a Service's and an Ingress's status have the same shape)."""
    found: list[str] = []
    for i, entry in enumerate(get_list(status, "ingress", where)):
        at = f"{where}.ingress[{i}]"
        if not isinstance(entry, dict):
            raise bad_field(at, entry, "an object")
        ip = get_str(entry, "ip", at)
        if ip:
            found.append(_ip(ip, f"{at}.ip"))
            continue
        hostname = (get_str(entry, "hostname", at) or "").removesuffix(".")
        if hostname:
            if not is_dns_name(hostname):
                raise bad_field(f"{at}.hostname", hostname, "a DNS name")
            found.append(hostname)
    return tuple(found)


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
        """Build from API JSON; ``prefer`` names the port the endpoints are built for.

        Raises ``MalformedObject`` naming the first field that is not as the API
        defines it.
        """
        given: object = sl  # JSON from a server: checked, whatever the annotation says
        if not isinstance(given, dict):
            raise bad_field("EndpointSlice", given, "an object")
        where = f"EndpointSlice {object_name(sl)!r}"
        meta = get_object(sl, "metadata", where)
        labels = get_object(meta, "labels", f"{where}.metadata")
        port_list: list[tuple[str, int | None]] = []
        for i, p in enumerate(get_list(sl, "ports", where)):
            at = f"{where}.ports[{i}]"
            if not isinstance(p, dict):
                raise bad_field(at, p, "an object")
            port_list.append((get_str(p, "name", at) or "", _port(p, "port", at, required=False)))
        ports = tuple(port_list)
        address_type = get_str(sl, "addressType", where) or ""
        port: int | None = None
        if ports:
            port = ports[0][1]
            for pname, number in ports:
                if pname == prefer:
                    port = number
                    break
        return cls(
            name=get_str(meta, "name", where) or "",
            service=get_str(labels, SERVICE_NAME_LABEL, f"{where}.metadata.labels") or "",
            address_type=address_type,
            ports=ports,
            endpoints=_endpoints(get_list(sl, "endpoints", where), port, address_type, where),
            port=port,
            resource_version=get_str(meta, "resourceVersion", where) or "",
        )

    def port_for(self, wanted_name: str | None) -> tuple[bool, int | None]:
        """(whether the slice serves the wanted port, its target port if known).

        A slice with no ports serves none of a Service's ports (discovery/v1: empty
        ``ports`` means no ports): the controller puts there the Pods that lack the
        named ``targetPort``, and neither kube-proxy nor CoreDNS sends them traffic.
        It serves only a Service that declares no ports (``wanted_name`` None).
        """
        if wanted_name is None:
            return True, None
        if not self.ports:
            return False, None
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
    return finish(resolve_steps(query, info, get_slices))


#: Endpoints merged between two pauses of ``resolve_steps`` (about a millisecond).
MERGE_STEP = 2000

_T = TypeVar("_T")


def resolve_steps(
    query: Query, info: ServiceInfo, get_slices: Callable[[], list[SliceInfo]]
) -> Generator[None, None, Resolution | Miss]:
    """``resolve_info`` in steps: it pauses (yields None) every ``MERGE_STEP``
    endpoints merged, so that an asyncio caller can let the event loop run while a
    Service of 10,000 endpoints is merged. ``finish`` runs it without pausing."""
    early = answer_without_slices(query, info)
    if early is not None:
        return early
    slices = get_slices()
    merge = SliceMerge(chosen_port(query, info))
    since = 0
    for sl in merge_order(slices):
        merge.add(sl)
        since += len(sl)
        if since >= MERGE_STEP:
            since = 0
            yield
    return answer_from_merged(query, info, merge.endpoints(), len(slices), merge.unserved)


def finish(steps: Generator[None, None, _T]) -> _T:
    """Run a computation that pauses (``resolve_steps``) to its end, straight through."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result


def answer_without_slices(query: Query, info: ServiceInfo) -> Resolution | Miss | None:
    """The answer when the Service alone gives it (ExternalName, a port it does not
    declare, a ClusterIP when readiness is not asked about); None when it takes the
    slices (a headless Service, the pods behind a ClusterIP for ``backends``, and
    whether anything behind a ClusterIP is ready).

    A reader that must fetch the slices first (the direct reads) asks this whether
    to, so that the rule is written once.
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
                return no_port(query, ports)
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
            traffic_distribution=info.traffic_distribution,
        )
    if not ok:
        return no_port(query, ports)

    if (
        not info.headless
        and not query.backends
        and (query.include_not_ready or info.publish_not_ready)
    ):
        # Whether anything behind the ClusterIP is ready is not asked: the answer
        # is the ClusterIP alone. Otherwise the slices tell (``answer_from_merged``).
        return cluster_ip_answer(query, info)
    return None


def cluster_ip_answer(query: Query, info: ServiceInfo) -> Resolution:
    """A ClusterIP (NodePort, LoadBalancer) Service's answer: its ClusterIPs with the
    Service port. Also the answer when its slices could not be read (a Role without
    ``list`` on EndpointSlices): then, as with DNS, readiness is not known."""
    chosen = chosen_port(query, info)
    return Resolution(
        service=query.service,
        kind=info.kind,
        endpoints=tuple(
            Endpoint(host=ip, port=chosen.port if chosen else None) for ip in info.cluster_ips
        ),
        ports=info.ports,
        port=chosen,
        source="api",
        traffic_distribution=info.traffic_distribution,
    )


def chosen_port(query: Query, info: ServiceInfo) -> ServicePort | None:
    """The Service port a query reads (None: the Service declares none)."""
    return choose_port(info.ports, query.port)[0]


def answer_from_merged(
    query: Query,
    info: ServiceInfo,
    everything: tuple[Endpoint, ...],
    slice_count: int,
    unserved: int = 0,
) -> Resolution | Miss:
    """A headless Service's answer (a ClusterIP Service's pods, or its ClusterIP when
    something behind it is ready) from its slices, merged (``SliceMerge``), when
    ``answer_without_slices`` gave None. ``unserved``: endpoints left out because
    their slice does not serve the port."""
    service = query.service
    behind_ip = not info.headless and not query.backends
    what = (
        "headless Service"
        if info.headless
        else f"{info.kind.value} Service"
        if behind_ip
        else "Service (its pods)"
    )
    chosen = chosen_port(query, info)
    if query.include_not_ready or info.publish_not_ready:
        endpoints = everything
    elif behind_ip:
        # kube-proxy sends ClusterIP traffic to ready endpoints, and to serving
        # (terminating) ones when none is ready.
        endpoints = tuple(ep for ep in everything if ep.ready or ep.serving)
    else:
        endpoints = tuple(ep for ep in everything if ep.ready)
    if endpoints and behind_ip:
        return cluster_ip_answer(query, info)
    if not endpoints:
        label = chosen.label if chosen else "its port"
        detail = (
            f"{len(everything)} endpoints in {slice_count} EndpointSlices, none ready"
            if everything
            else f"{unserved} endpoints in {slice_count} EndpointSlices, none serving {label}"
            if unserved
            else f"{slice_count} EndpointSlices with no endpoints"
            if slice_count
            else "no EndpointSlices"
        )
        return Miss(Outcome.NO_READY_ENDPOINTS, f"{what} {service}: {detail}")
    return Resolution(
        service=service,
        kind=info.kind,
        endpoints=endpoints,
        ports=info.ports,
        port=chosen,
        source="api",
        traffic_distribution=info.traffic_distribution,
    )


def no_port(query: Query, ports: tuple[ServicePort, ...]) -> Miss:
    return Miss(
        Outcome.NO_SUCH_PORT,
        f"Service {query.service} declares no {query.describe_port()} "
        f"(ports: {port_labels(ports)})",
    )


def merge_slices(slices: Iterable[SliceInfo], chosen: ServicePort | None) -> tuple[Endpoint, ...]:
    """All endpoints of all slices (IPv4 and IPv6), de-duplicated, in a stable order.

    The same endpoint can sit in two slices while the controller moves it; the copy
    that is ready wins, so a move never hides a ready endpoint. A slice that does not
    list the chosen port does not serve it (kube-proxy would not route that port to
    its endpoints), so its endpoints are left out, and so are a slice's without ports
    (the controller's place for Pods lacking a named targetPort); a slice listing the
    port with its number unset gives endpoints whose port is unknown (None).
    """
    merge = SliceMerge(chosen)
    for sl in merge_order(slices):
        merge.add(sl)
    return merge.endpoints()


def merge_order(slices: Iterable[SliceInfo]) -> list[SliceInfo]:
    """The order slices are merged in (by name: the same answer whatever order the
    API listed them in)."""
    return sorted(slices, key=lambda s: s.name)


class SliceMerge:
    """``merge_slices`` one slice at a time (in ``merge_order``), so that an asyncio
    caller can let the event loop run between slices of a big Service."""

    __slots__ = ("_merged", "_wanted_name", "unserved")

    def __init__(self, chosen: ServicePort | None) -> None:
        self._wanted_name = (chosen.name or "") if chosen else None
        self._merged: dict[tuple[str, int | None], Endpoint] = {}
        #: Endpoints left out because their slice does not serve the port.
        self.unserved = 0

    def add(self, sl: SliceInfo) -> None:
        if sl.address_type == "FQDN":
            return  # deprecated, and never written by the controller
        serves, port = sl.port_for(self._wanted_name)
        if not serves:
            self.unserved += len(sl)
            return
        merged = self._merged
        for ep in sl.endpoints(port):
            key = (ep.host, port)
            old = merged.get(key)
            if old is None or (ep.ready and not old.ready):
                merged[key] = ep

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._merged.values())


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
    "zone_hints",
    "node_hints",
    "scheme",
    "path",
)
_SETTERS = tuple(Endpoint.__dict__[name].__set__ for name in ENDPOINT_FIELDS)


_NO_HINTS: tuple[str, ...] = ()
#: Hint tuples, one object per distinct value (thousands of endpoints share a few).
_HINT_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _hints(hints: object, key: str, where: str) -> tuple[str, ...]:
    """``hints.forZones`` / ``hints.forNodes`` as a tuple of names."""
    if not isinstance(hints, dict):
        raise bad_field(where, hints, "an object")
    entries = hints.get(key)
    if entries is None:
        return _NO_HINTS
    if not isinstance(entries, list):
        raise bad_field(f"{where}.{key}", entries, "a list")
    names = []
    for j, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_field(f"{where}.{key}[{j}]", entry, 'an object with a "name"')
        names.append(name)
    found = tuple(names)
    if len(_HINT_TUPLES) < 4096:
        found = _HINT_TUPLES.setdefault(found, found)
    return found


_FAMILIES = {"IPv4": socket.AF_INET, "IPv6": socket.AF_INET6}
#: A slice with no (or an unknown) addressType: addresses may be of either family.
_EITHER = -1


def _endpoints(
    raws: list[Any], port: int | None, address_type: str, where: str
) -> tuple[Endpoint, ...]:
    """Endpoint objects for a slice's endpoints, one per address (the hot loop of ingest).

    Every field is checked as it is read; anything unexpected raises MalformedObject
    naming it. (FQDN slices, deprecated and never written by the controller, are
    skipped by ``merge_slices`` and not checked for IP addresses.)
    """
    out: list[Endpoint] = []
    append = out.append
    new = object.__new__
    family = _FAMILIES.get(address_type, _EITHER)
    check_ips = address_type != "FQDN"
    pton = socket.inet_pton
    (
        s_host,
        s_port,
        s_ready,
        s_serving,
        s_term,
        s_hostname,
        s_pod,
        s_node,
        s_zone,
        s_zone_hints,
        s_node_hints,
        s_scheme,
        s_path,
    ) = _SETTERS
    for i, raw in enumerate(raws):
        if not isinstance(raw, dict):
            raise bad_field(f"{where}.endpoints[{i}]", raw, "an object")
        cond = raw.get("conditions") or {}
        if not isinstance(cond, dict):
            raise bad_field(f"{where}.endpoints[{i}].conditions", cond, "an object")
        # discovery/v1: ready nil means true; serving nil means "same as ready";
        # terminating nil means false.
        ready = cond.get("ready")
        serving = cond.get("serving")
        terminating = cond.get("terminating")
        if not (
            (ready is None or ready is True or ready is False)
            and (serving is None or serving is True or serving is False)
            and (terminating is None or terminating is True or terminating is False)
        ):
            for key in ("ready", "serving", "terminating"):
                _bool(cond, key, f"{where}.endpoints[{i}].conditions")
        ready = True if ready is None else ready
        serving = ready if serving is None else serving
        terminating = terminating is True
        ref = raw.get("targetRef")
        pod = None
        if ref is not None:
            if not isinstance(ref, dict):
                raise bad_field(f"{where}.endpoints[{i}].targetRef", ref, "an object")
            if ref.get("kind", "Pod") == "Pod":
                pod = ref.get("name")
                if pod is not None and not isinstance(pod, str):
                    raise bad_field(f"{where}.endpoints[{i}].targetRef.name", pod, "a string")
        hostname = raw.get("hostname") or None
        node = raw.get("nodeName") or None
        zone = raw.get("zone") or None
        if not (
            (hostname is None or isinstance(hostname, str))
            and (node is None or isinstance(node, str))
            and (zone is None or isinstance(zone, str))
        ):
            for key in ("hostname", "nodeName", "zone"):
                get_str(raw, key, f"{where}.endpoints[{i}]")
        if pod is not None and pod == hostname:
            pod = hostname  # one string object for both (StatefulSets)
        node = _intern(node) if node else None
        zone = _intern(zone) if zone else None
        hints = raw.get("hints")
        zone_hints = node_hints = _NO_HINTS
        if hints is not None:
            zone_hints = _hints(hints, "forZones", f"{where}.endpoints[{i}].hints")
            node_hints = _hints(hints, "forNodes", f"{where}.endpoints[{i}].hints")
        addresses = raw.get("addresses")
        if not isinstance(addresses, list):
            raise bad_field(f"{where}.endpoints[{i}].addresses", addresses, "a list")
        for address in addresses:
            if check_ips:
                try:
                    pton(family, address)
                except (OSError, TypeError, ValueError):
                    _ip(address, f"{where}.endpoints[{i}].addresses", family)
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
            s_zone_hints(ep, zone_hints)
            s_node_hints(ep, node_hints)
            s_scheme(ep, None)
            s_path(ep, None)
            append(ep)
    return tuple(out)
