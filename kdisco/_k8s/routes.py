"""Ways into a Service from outside the cluster, from API JSON (no I/O).

``reach="external"`` answers with what works from a laptop or a CI runner rather than
the ClusterIPs and pod IPs that work only on the cluster's network (the seed
article's §4-6): a LoadBalancer Service's load balancer addresses (and
``spec.externalIPs``) with the Service port, the URL of an Ingress that routes to the
Service, or each node's address with the Service's node port. ``external_answer``
decides which, in that order: the Service's own addresses first (they carry any
protocol), then an Ingress (HTTP only, but by name and with TLS), then node ports
(they work, but node addresses change and clients must know them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import attrs

from kdisco._attempts import Outcome
from kdisco._models import SCHEME_PORTS, Endpoint, Resolution, ServicePort, choose_port
from kdisco._names import Query
from kdisco._strategies.base import Miss

from .objects import (
    ServiceInfo,
    bad_field,
    get_list,
    get_object,
    get_str,
    load_balancer_addresses,
    object_name,
)

Json = dict[str, Any]

#: The well-known label a Node's zone is published in.
ZONE_LABEL = "topology.kubernetes.io/zone"
#: Node addresses in the order they are preferred from outside the cluster.
_ADDRESS_TYPES = ("ExternalIP", "InternalIP")
#: Nodes listed (one page) for a node port: enough to spread over and fail over
#: between, without reading every Node of a large cluster (Node objects are big).
NODE_PAGE = 50
#: Nodes read one by one for ``externalTrafficPolicy: Local`` (those running a pod).
LOCAL_NODES = 16
#: How long an external answer is kept (seconds). It is read directly, with no watch
#: to say when it changes; load balancer addresses, Ingresses and node addresses
#: change rarely, and an HTTP client sending through ``reach="external"`` must not
#: cost two or three API requests per request.
EXTERNAL_TTL = 10.0


def ingresses_path(namespace: str) -> str:
    return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses"


NODES_PATH = "/api/v1/nodes"


def node_path(name: str) -> str:
    return f"{NODES_PATH}/{quote(name, safe='')}"


@attrs.frozen
class NodeInfo:
    """What reaching a node port takes: the node's address from outside (ExternalIP,
    else InternalIP), its zone, and whether it is Ready."""

    name: str
    address: str | None
    zone: str | None = None
    ready: bool = True

    @classmethod
    def from_json(cls, node: Json) -> NodeInfo:
        given: object = node
        if not isinstance(given, dict):
            raise bad_field("Node", given, "an object")
        where = f"Node {object_name(node)!r}"
        meta = get_object(node, "metadata", where)
        labels = get_object(meta, "labels", f"{where}.metadata")
        status = get_object(node, "status", where)
        found: dict[str, str] = {}
        for i, entry in enumerate(get_list(status, "addresses", f"{where}.status")):
            at = f"{where}.status.addresses[{i}]"
            if not isinstance(entry, dict):
                raise bad_field(at, entry, "an object")
            kind = get_str(entry, "type", at) or ""
            value = get_str(entry, "address", at) or ""
            if kind in _ADDRESS_TYPES and value and kind not in found:
                found[kind] = value
        ready = False
        for i, cond in enumerate(get_list(status, "conditions", f"{where}.status")):
            if not isinstance(cond, dict):
                raise bad_field(f"{where}.status.conditions[{i}]", cond, "an object")
            if cond.get("type") == "Ready":
                ready = cond.get("status") == "True"
        address = next((found[k] for k in _ADDRESS_TYPES if k in found), None)
        return cls(
            name=get_str(meta, "name", where) or "",
            address=address,
            zone=get_str(labels, ZONE_LABEL, f"{where}.metadata.labels") or None,
            ready=ready,
        )


@attrs.frozen
class IngressRoute:
    """One Ingress path that leads to a Service port: as a URL's scheme, hosts and path."""

    ingress: str
    scheme: str
    hosts: tuple[str, ...]
    path: str
    #: The backend's Service port: a number or a name.
    port: int | str | None


def ingress_routes(ingress: Json, service: str) -> list[IngressRoute]:
    """Every path of ``ingress`` (and its default backend) that leads to ``service``.

    A rule's host is the URL's host; a rule without one (and the default backend) is
    reached at the Ingress's own addresses, from its status (none until an ingress
    controller has taken it). ``https`` when the host is listed in the TLS section
    (``*.example.com`` covers one label), else ``http``.
    """
    name = object_name(ingress)
    where = f"Ingress {name!r}"
    spec = get_object(ingress, "spec", where)
    status = get_object(ingress, "status", where)
    own = load_balancer_addresses(
        get_object(status, "loadBalancer", f"{where}.status"), f"{where}.status.loadBalancer"
    )
    tls_hosts: list[str] = []
    tls_everything = False
    for i, tls in enumerate(get_list(spec, "tls", f"{where}.spec")):
        if not isinstance(tls, dict):
            raise bad_field(f"{where}.spec.tls[{i}]", tls, "an object")
        named = [h for h in get_list(tls, "hosts", f"{where}.spec.tls[{i}]") if isinstance(h, str)]
        tls_hosts.extend(named)
        # A TLS entry naming no hosts covers the controller's default certificate:
        # the hostless rules and the default backend.
        tls_everything = tls_everything or not named

    def scheme_for(host: str | None) -> str:
        if host is None:
            return "https" if tls_everything else "http"
        return "https" if any(_host_matches(host, h) for h in tls_hosts) else "http"

    found: list[IngressRoute] = []
    default = get_object(spec, "defaultBackend", f"{where}.spec")
    port = _backend_port(default, service, f"{where}.spec.defaultBackend")
    if port is not False and own:
        found.append(IngressRoute(name, scheme_for(None), own, "/", port))
    for i, rule in enumerate(get_list(spec, "rules", f"{where}.spec")):
        at = f"{where}.spec.rules[{i}]"
        if not isinstance(rule, dict):
            raise bad_field(at, rule, "an object")
        host = get_str(rule, "host", at) or None
        hosts = (host,) if host else own
        if not hosts:
            continue  # no host, and no controller has given the Ingress an address
        http = get_object(rule, "http", at)
        for j, path in enumerate(get_list(http, "paths", f"{at}.http")):
            pat = f"{at}.http.paths[{j}]"
            if not isinstance(path, dict):
                raise bad_field(pat, path, "an object")
            port = _backend_port(get_object(path, "backend", pat), service, f"{pat}.backend")
            if port is False:
                continue
            text = get_str(path, "path", pat) or "/"
            found.append(IngressRoute(name, scheme_for(host), hosts, text, port))
    return found


def _backend_port(backend: Json, service: str, where: str) -> int | str | bool | None:
    """The Service port a backend names (a number, a name, or None for none), or False
    when the backend is another Service's (or a resource backend)."""
    svc = get_object(backend, "service", where)
    if not svc or get_str(svc, "name", f"{where}.service") != service:
        return False
    port = get_object(svc, "port", f"{where}.service")
    number = port.get("number")
    if isinstance(number, int) and not isinstance(number, bool) and number:
        return number
    return get_str(port, "name", f"{where}.service.port") or None


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


def _serves(route: IngressRoute, port: ServicePort | None, any_port: bool) -> bool:
    if any_port or route.port is None or port is None:
        return True
    return route.port == (port.port if isinstance(route.port, int) else port.name)


def route_endpoints(
    routes: Iterable[IngressRoute],
    ports: tuple[ServicePort, ...],
    chosen: ServicePort | None,
    *,
    any_port: bool,
) -> tuple[tuple[Endpoint, ...], ServicePort | None]:
    """The URLs of the routes that serve ``chosen`` (any port when ``any_port``, no
    port having been asked for: an Ingress may lead to a Service's second port), and
    the declared port they lead to."""
    out: list[Endpoint] = []
    seen: set[tuple[str, str, str]] = set()
    matched: ServicePort | None = None
    for route in routes:
        if not _serves(route, chosen, any_port):
            continue
        if matched is None:
            named = choose_port(ports, route.port)[0] if route.port is not None else None
            matched = named or chosen
        for host in route.hosts:
            ident = (route.scheme, host, route.path)
            if ident in seen:
                continue
            seen.add(ident)
            out.append(
                Endpoint(
                    host=host,
                    port=SCHEME_PORTS[route.scheme],
                    scheme=route.scheme,
                    path=route.path,
                )
            )
    return tuple(out), matched


def node_endpoints(
    nodes: Iterable[NodeInfo], node_port: int, *, only: frozenset[str] | None = None
) -> tuple[Endpoint, ...]:
    """Each node's address with the node port (``only``: the nodes running a pod of
    the Service, for ``externalTrafficPolicy: Local``)."""
    return tuple(
        Endpoint(host=n.address, port=node_port, node=n.name, zone=n.zone, ready=n.ready)
        for n in nodes
        if n.address and (only is None or n.name in only)
    )


def answer(
    query: Query,
    info: ServiceInfo,
    endpoints: tuple[Endpoint, ...],
    port: ServicePort | None,
) -> Resolution:
    """An external answer (``reach="external"``) from the endpoints found."""
    return Resolution(
        service=query.service,
        kind=info.kind,
        endpoints=endpoints,
        ports=info.ports,
        port=port,
        source="api",
        traffic_distribution=info.traffic_distribution,
        reach="external",
        ttl=EXTERNAL_TTL,
    )


def service_addresses(
    query: Query, info: ServiceInfo, chosen: ServicePort | None
) -> Resolution | None:
    """The Service's own ways in (load balancer addresses, ``spec.externalIPs``) with
    the Service port ``chosen``, or None when it has none."""
    hosts = tuple(dict.fromkeys(info.load_balancer + info.external_ips))
    if not hosts:
        return None
    port = chosen.port if chosen else None
    return answer(query, info, tuple(Endpoint(host=h, port=port) for h in hosts), chosen)


def no_route(query: Query, info: ServiceInfo, *, looked_at: str) -> Miss:
    """The miss that says why nothing leads into the Service from outside."""
    what = "headless" if info.headless else info.type
    return Miss(Outcome.NO_EXTERNAL_ROUTE, f"{what} Service {query.service}: {looked_at}")
