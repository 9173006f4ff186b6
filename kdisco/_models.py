"""Frozen value objects: what a discovery returns.

``Resolution`` and ``Endpoint`` are plain values: equality, hashing, ``pickle`` and
``copy`` look at their data only. How long an answer holds and how old it is (which
depends on a clock and, for watched sources, on live state) is bookkeeping the
answer cache and ``kdisco.watch()`` need; it rides along in a ``Freshness`` that is
excluded from equality and not pickled.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from ._attempts import Attempt
from ._exceptions import NoReadyEndpoints, PortNotFound
from ._service_ref import ServiceRef

Clock = Callable[[], float]

#: Port names and appProtocols that are URI schemes in their own right, so that
#: ``Resolution.url()`` can default the scheme without guessing from arbitrary names.
_SCHEME_NAMES = frozenset({"http", "https", "grpc", "grpcs", "h2c", "ws", "wss"})
#: Schemes whose URLs may leave the port out, and the port such a URL then means.
SCHEME_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class ServiceKind(enum.Enum):
    """What kind of Service answered, as far as the source can tell (``Resolution.kind``).

    Attributes:
        CLUSTER_IP: A Service with a virtual IP: the endpoint is that IP
            (``spec.type: ClusterIP``).
        HEADLESS: ``clusterIP: None``: the endpoints are the pods themselves.
        EXTERNAL_NAME: An alias of a DNS name (``spec.externalName``): the endpoint
            is that name, or the answer for the Service it names when it points back
            into the cluster (``Resolution.via`` lists the aliases followed).
        NODE_PORT: ``spec.type: NodePort``: a ClusterIP Service also open on a port
            of every node (``ServicePort.node_port``).
        LOAD_BALANCER: ``spec.type: LoadBalancer``: a NodePort Service with a load
            balancer in front.
        UNKNOWN: The source cannot tell: DNS with a single address (a ClusterIP, or
            a headless Service with one pod), a static map, a fake.
    """

    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    EXTERNAL_NAME = "ExternalName"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    UNKNOWN = "Unknown"


@attrs.frozen(kw_only=True)
class ServicePort:
    """A port the Service declares (one of ``spec.ports``).

    Attributes:
        port: The Service's port number: what clients connect to on its ClusterIP
            (a pod's target port is the `Endpoint`'s ``port``).
        name: The port's name (``"http"``), which ``discover(..., port="http")``
            matches; None for an unnamed port.
        protocol: ``"TCP"``, ``"UDP"`` or ``"SCTP"``. Default ``"TCP"``.
        app_protocol: The port's ``appProtocol`` (``"http"``, ``"grpc"``...), where
            the source knows it; `Resolution.url` takes its scheme from it.
        node_port: The port opened on every node for a NodePort or LoadBalancer
            Service (``spec.ports[].nodePort``), where the source knows it (the api).
    """

    port: int
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None
    #: The port opened on every node for a NodePort or LoadBalancer Service
    #: (``spec.ports[].nodePort``), where the source knows it (the api).
    node_port: int | None = None

    @property
    def label(self) -> str:
        """``name=port``, or the bare number for an unnamed port (as messages show it)."""
        return f"{self.name}={self.port}" if self.name else str(self.port)


def choose_port(
    ports: tuple[ServicePort, ...], wanted: int | str | None
) -> tuple[ServicePort | None, bool]:
    """The declared port a query asks for: ``(chosen, ok)``.

    No port asked: the first declared one (None when there is none), and ok. A name
    matches the port's name, a number its number. ``ok`` is False when a port was asked
    for and none matches.
    """
    if wanted is None:
        return (ports[0] if ports else None), True
    for p in ports:
        if p.name == wanted or p.port == wanted:
            return p, True
    return None, False


def port_labels(ports: tuple[ServicePort, ...]) -> str:
    """The declared ports for a message: ``http=80, 9090`` (or ``none``)."""
    return ", ".join(p.label for p in ports) or "none"


@attrs.frozen(kw_only=True, slots=True)
class Endpoint:
    """One address to reach the Service at.

    ``host`` is an IP literal or, for ExternalName, a DNS name. ``port`` is None when
    the source cannot know it (DNS without a named port). The remaining fields are
    filled where the source knows them (the api strategy, from EndpointSlices).

    Attributes:
        host: An IP address literal (IPv6 without brackets), or a DNS name: an
            ExternalName's target, a load balancer's or an Ingress rule's host.
        port: The port to connect to: the Service port for a ClusterIP, the target
            port for a pod (a headless Service, ``backends=True``), the node port
            for a node; None when the source cannot know it (DNS asked without a
            port name).
        ready: The EndpointSlice ``ready`` condition (a node's Ready condition for
            a node port). Only ready endpoints are returned unless
            ``include_not_ready=True``. Default True.
        serving: The ``serving`` condition: as ``ready``, but it stays True while a
            terminating pod still serves. Default True.
        terminating: The ``terminating`` condition: the pod is shutting down.
            Default False.
        hostname: The pod's hostname (a headless Service's SRV target, or the
            EndpointSlice's ``hostname``), where known.
        pod: The pod's name (the EndpointSlice's ``targetRef``), where known.
        node: The node it runs on (``nodeName``), or the node itself for a node
            port, where known.
        zone: Its zone (the EndpointSlice's ``zone``, a node's
            ``topology.kubernetes.io/zone``), where known.
        zone_hints: EndpointSlice topology hints: the zones (``hints.forZones``)
            whose clients this endpoint should serve. Default: none.
        node_hints: The nodes (``hints.forNodes``) whose clients this endpoint
            should serve. Default: none.
        scheme: For an endpoint that is a URL rather than an address (an Ingress
            route, with ``reach="external"``): ``"http"`` or ``"https"``, which
            `Resolution.url` uses. Else None.
        path: For an Ingress route, its path, which `Resolution.url` appends. Else
            None.
    """

    host: str
    port: int | None = None
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str | None = None
    pod: str | None = None
    node: str | None = None
    zone: str | None = None
    #: EndpointSlice topology hints: the zones (``hints.forZones``) and nodes
    #: (``hints.forNodes``) whose clients this endpoint should serve.
    zone_hints: tuple[str, ...] = ()
    node_hints: tuple[str, ...] = ()
    #: For an endpoint that is a URL rather than an address (an Ingress route, with
    #: ``reach="external"``): its scheme and path, which ``Resolution.url()`` uses.
    scheme: str | None = None
    path: str | None = None

    @property
    def is_ipv6(self) -> bool:
        """Whether ``host`` is an IPv6 literal (which URLs and ``address`` bracket)."""
        # Hosts are IP literals or DNS names, and only an IPv6 literal has a colon
        # (checked this way, not with ipaddress: importing it costs every process).
        return ":" in self.host

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 bracketed), or just the host when the port is unknown."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return host if self.port is None else f"{host}:{self.port}"


def distinct(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """Each (host, port) once, the first seen kept (an address listed twice, by two
    EndpointSlices or two SRV records, is one endpoint)."""
    seen: set[tuple[str, int | None]] = set()
    out: list[Endpoint] = []
    for ep in endpoints:
        ident = (ep.host, ep.port)
        if ident not in seen:
            seen.add(ident)
            out.append(ep)
    return tuple(out)


@attrs.frozen(kw_only=True)
class Freshness:
    """When an answer was obtained, and how its source says it stays current.

    ``valid`` is set by sources that push changes (the API watch cache, a static map
    that can be edited): True while the answer still reflects the source, so caches
    can keep it without a TTL. ``confirmed`` goes with it: when the source last
    confirmed the data (a watch confirms it continuously), so ``age`` tells how old
    the knowledge is, not the object.

    A strategy may attach one to its `Resolution` (``freshness=``); the chain stamps
    ``clock`` and ``fetched_at`` when the strategy leaves them out.

    Attributes:
        clock: The clock ``fetched_at`` and ``confirmed`` are on. Default:
            ``time.monotonic``.
        fetched_at: When the data was obtained, on ``clock``; None until stamped.
        valid: Called to ask whether the answer still reflects the source; None
            when the source does not push changes (the answer then holds for its
            ``ttl``, or is not cached).
        confirmed: Called to ask when the source last confirmed the data, on
            ``clock``; None to count from ``fetched_at``.
    """

    clock: Clock = time.monotonic
    #: None until the chain stamps it with its clock, as the answer arrives.
    fetched_at: float | None = None
    valid: Callable[[], bool] | None = None
    confirmed: Callable[[], float] | None = None

    def since(self) -> float:
        """When the data was last known good, on ``clock``: the source's last
        confirmation, else ``fetched_at``, else now."""
        if self.confirmed is not None:
            return self.confirmed()
        return self.clock() if self.fetched_at is None else self.fetched_at

    def age(self) -> float:
        """Seconds since `since`, never negative."""
        return max(0.0, self.clock() - self.since())


def _restore(fields: dict[str, Any], age: float) -> Resolution:
    # A copy in another process knows how old the data was, not what vouched for it.
    now = time.monotonic()
    return Resolution(**fields, freshness=Freshness(clock=time.monotonic, fetched_at=now - age))


@attrs.frozen(kw_only=True)
class Resolution:
    """The answer to one discovery: iterable over its endpoints.

    ``source`` names the strategy that answered; ``attempts`` records the strategies
    tried before it and why they gave no answer. ``snapshot`` is True when the data is
    a copy taken at some earlier time (the kubelet's environment variables are written
    once, at container start). ``via`` lists ExternalName Services that were followed
    to reach ``service``.

    ``len(res)`` counts the endpoints and ``for ep in res`` walks them. Equality,
    hashing and pickling look at the data only, not at ``freshness``.

    Attributes:
        service: The Service that answered (after ExternalName aliases, the last
            one followed).
        kind: What kind of Service it is, as far as the source can tell.
        endpoints: The addresses to connect to (ready ones only, unless
            ``include_not_ready=True``).
        source: The name of the strategy that answered (``"dns"``, ``"env"``,
            ``"api"``, ``"static"``, a plugin's or a fake's).
        ports: The ports the Service declares, where the source knows them (DNS
            knows at most the port asked for by name). Default: none.
        port: The declared port chosen: the one asked for, else the first declared;
            None when the source does not know it. Default None.
        external_name: For an ExternalName Service, the DNS name it aliases. Default
            None.
        snapshot: True when the data is a copy from some earlier time (the env
            strategy: the kubelet writes the variables once, at container start).
            Default False.
        attempts: What each strategy tried before this answer and why it gave none,
            the ExternalName aliases followed, and notes (a ``WARNING`` when the
            addresses work only inside the cluster and this process runs outside
            it); for a ``stale`` answer, why the refresh failed. Default: none.
        via: The ExternalName Services followed to reach ``service``, in order.
            Default: none.
        ttl: How long the source says the answer holds (a DNS TTL), or None when it
            does not say. Default None.
        stale: True when a refresh failed and this is the last good answer, served
            within the Discoverer's ``CachePolicy.max_stale``; ``attempts`` then says
            why the refresh failed. Default False.
        traffic_distribution: The Service's ``spec.trafficDistribution``
            (``PreferSameZone``, ``PreferSameNode``, ``PreferClose``), where the
            source knows it (the api); balancing follows it. Default None.
        reach: Where the endpoints can be reached from: ``"cluster"`` (ClusterIPs,
            pod IPs: only from the cluster's network), ``"external"`` (load balancer
            addresses, node ports, Ingress URLs: from outside too), or None when the
            source does not say (a static map, an ExternalName's external host, a
            plugin, a fake). Default None.
        freshness: Bookkeeping for caches and watches (when the data was obtained,
            whether its source still vouches for it): see `Freshness`. Left out of
            equality, hashing, repr and pickling. Default None.

    Example:
        >>> http = kdisco.ServicePort(port=8080, name="http")
        >>> res = kdisco.Resolution(
        ...     service=kdisco.ServiceRef(name="web", namespace="shop"),
        ...     kind=kdisco.ServiceKind.CLUSTER_IP,
        ...     endpoints=(kdisco.Endpoint(host="10.96.0.7", port=8080),),
        ...     source="api",
        ...     ports=(http,),
        ...     port=http,
        ... )
        >>> res.first().address, res.url(), len(res)
        ('10.96.0.7:8080', 'http://10.96.0.7:8080', 1)
    """

    service: ServiceRef
    kind: ServiceKind
    endpoints: tuple[Endpoint, ...]
    source: str
    ports: tuple[ServicePort, ...] = ()
    port: ServicePort | None = None
    external_name: str | None = None
    snapshot: bool = False
    attempts: tuple[Attempt, ...] = ()
    via: tuple[ServiceRef, ...] = ()
    #: How long the source says the answer holds (DNS TTL), or None when it does not say.
    ttl: float | None = None
    #: True when a refresh failed and this is the last good answer, served within the
    #: Discoverer's maximum staleness; ``attempts`` then says why the refresh failed.
    stale: bool = False
    #: The Service's ``spec.trafficDistribution`` (``PreferSameZone``,
    #: ``PreferSameNode``, ``PreferClose``), where the source knows it (the api).
    traffic_distribution: str | None = None
    #: Where the endpoints can be reached from: ``"cluster"`` (ClusterIPs, pod IPs:
    #: only from the cluster's network), ``"external"`` (LoadBalancer addresses, node
    #: ports, Ingress URLs: from outside too), or None when the source does not say
    #: (a static map, an ExternalName's external host, a plugin, a fake).
    reach: str | None = None
    #: Bookkeeping, not data: left out of equality, hashing, repr and pickling.
    _freshness: Freshness | None = attrs.field(
        default=None, eq=False, repr=False, alias="freshness"
    )

    @property
    def freshness(self) -> Freshness | None:
        """When the data was obtained and whether its source still vouches for it
        (None for an answer built by hand)."""
        return self._freshness

    @property
    def fetched_at(self) -> float:
        """When the data was obtained, on the clock it was obtained with."""
        fresh = self._freshness
        return 0.0 if fresh is None or fresh.fetched_at is None else fresh.fetched_at

    @property
    def age(self) -> float:
        """Seconds since the source last confirmed the data.

        An answer from the API watch cache is confirmed as long as the watch runs;
        a DNS or env answer is as old as its fetch. For a ``stale`` answer, the age
        of the last good one, still growing. 0.0 for an answer built by hand.
        """
        return 0.0 if self._freshness is None else self._freshness.age()

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {
            (a.alias or a.name): getattr(self, a.name)
            for a in attrs.fields(Resolution)
            if a.name != "_freshness"
        }
        age = self.age
        return (_restore, (fields, age if math.isfinite(age) else 0.0))

    def __copy__(self) -> Resolution:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> Resolution:
        return self

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def first(self) -> Endpoint:
        """The first ready endpoint (or the first endpoint at all when none is ready).

        Returns:
            Endpoint: In the order the source gave them; for spreading load over
            several, iterate, or use a `Balancer`.

        Raises:
            NoReadyEndpoints: There are no endpoints at all (an empty answer from
                ``kdisco.watch()`` when the Service lost them).
        """
        for ep in self.endpoints:
            if ep.ready:
                return ep
        if self.endpoints:
            return self.endpoints[0]
        raise NoReadyEndpoints(f"{self.service} has no endpoints", service=self.service)

    def url(self, scheme: str | None = None) -> str:
        """A URL for the first endpoint, IPv6 bracketed.

        Without ``scheme``, the endpoint's own (an Ingress route's ``http`` or
        ``https``) is used, else the chosen port's appProtocol or name when it is a URI
        scheme (http, https, grpc, ...), else ``tcp``. An Ingress route's path is
        appended, and its default port left out. When no port is known (DNS asked
        without a port name) a URL would name no port, which HTTP clients read as 80
        or reject: that raises ``PortNotFound``, unless ``scheme`` has a default port
        (``http``, ``https``, ``ws``, ``wss``).

        Args:
            scheme: The URL's scheme (``"http"``, ``"grpc"``...). Default None:
                chosen as above.

        Returns:
            str: ``scheme://host:port`` for `first`'s endpoint (IPv6 bracketed), or
            ``scheme://host[:port]/path`` for an Ingress route.

        Raises:
            PortNotFound: No port is known and ``scheme`` has no default port.
            NoReadyEndpoints: There are no endpoints at all.
        """
        ep = self.first()
        if scheme is None:
            scheme = ep.scheme or "tcp"
            if ep.scheme is None and self.port is not None:
                for candidate in (self.port.app_protocol, self.port.name):
                    if candidate and candidate.lower() in _SCHEME_NAMES:
                        scheme = candidate.lower()
                        break
        if ep.port is None and scheme.lower() not in SCHEME_PORTS:
            raise PortNotFound(
                f"{self.service}: no port is known, so no URL can be made; ask for one "
                f"(port='http' or a number) or give a scheme with a default port "
                f"(url('http'))",
                service=self.service,
                attempts=self.attempts,
            )
        if ep.scheme is None:
            return f"{scheme}://{ep.address}"
        # A route: the port is the scheme's default unless it says otherwise.
        host = f"[{ep.host}]" if ep.is_ipv6 else ep.host
        if ep.port is not None and ep.port != SCHEME_PORTS.get(scheme.lower()):
            host = f"{host}:{ep.port}"
        path = (ep.path or "").rstrip("/")
        return f"{scheme}://{host}{path}"
