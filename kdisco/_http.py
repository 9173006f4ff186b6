"""Service names in URLs: what the HTTP integrations (``kdisco.httpx``,
``kdisco.requests``) share, with no HTTP client of their own.

A URL's host is a Service when it has one of the forms kdisco accepts for a name
(``payments``, ``payments.billing``, ``payments.billing.svc``,
``payments.billing.svc.<cluster-domain>``) or the SRV form of a named port,
``_http._tcp.payments.billing`` (URL parsers accept no port name after the colon,
so this is how a URL names a port). IP addresses, ``localhost`` and other names
pass through untouched, and so does a name every strategy says is no Service (a
lookup that fails otherwise raises).

Which port: the URL's port number if it has one; else the port named after the
scheme (``http``/``https``), else the Service's only port.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING

import attrs

from ._balancer import Balancer, Pick
from ._deadline import Clock, Deadline
from ._exceptions import ConfigurationError, InvalidServiceName, PortNotFound, ServiceNotFound
from ._models import SCHEME_PORTS, Endpoint, Resolution
from ._names import parse_query
from ._settings import Settings

if TYPE_CHECKING:
    from ._aio import AsyncDiscoverer
    from ._discoverer import Discoverer

#: Methods a retry cannot do harm with (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@attrs.frozen
class Target:
    """A URL host that names a Service: what to ask ``discover()``."""

    name: str
    #: A number from the URL, a name from the SRV form, or None: the default rule.
    port: int | str | None
    scheme: str
    #: The host as written in the URL: the TLS name and the ``Host`` header.
    host: str


@functools.lru_cache(maxsize=1024)
def target_of(scheme: str, host: str, port: int | None, *, cluster_domain: str) -> Target | None:
    """The Service a URL names, or None when its host is no Service name. (Cached:
    it depends on nothing else, and a client asks it for every request.)"""
    text = host.lower().rstrip(".")
    if not text or text == "localhost" or _is_ip(text):
        return None
    labels = text.split(".")
    named: str | None = None
    if len(labels) > 2 and labels[0].startswith("_") and labels[1] in ("_tcp", "_udp"):
        named = labels[0][1:]
        labels = labels[2:]
        if port is not None:
            raise InvalidServiceName(
                f"{host!r} names port {named!r} and the URL port {port}: give one of them"
            )
    if not _service_form(labels, cluster_domain):
        return None
    name = ".".join(labels)
    try:
        parse_query(
            name, namespace=None, default_namespace="default", cluster_domain=cluster_domain
        )
    except InvalidServiceName:
        return None  # not a name a Service can have: someone else's host
    return Target(name=name, port=named if named is not None else port, scheme=scheme, host=host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _service_form(labels: list[str], cluster_domain: str) -> bool:
    if len(labels) <= 2:
        return True
    if labels[2] != "svc":
        return False
    return len(labels) == 3 or ".".join(labels[3:]) == cluster_domain.rstrip(".")


#: One question for discover(): (name, port), answered with a Resolution or an error.
Ask = tuple[str, int | str | None]


def lookups(target: Target) -> Generator[Ask, Resolution | PortNotFound, Resolution]:
    """The ``discover()`` calls that find ``target``'s port, as a generator (the sync
    and async integrations drive it with their own discover): the port asked for;
    else the one named after the scheme; else the Service's only port."""
    if target.port is not None:
        got = yield (target.name, target.port)
        if isinstance(got, PortNotFound):
            raise got
        return got
    by_scheme = yield (target.name, target.scheme)
    if isinstance(by_scheme, Resolution):
        return by_scheme
    anyport = yield (target.name, None)
    if isinstance(anyport, PortNotFound):
        raise anyport
    if len(anyport.ports) == 1 and anyport.port is not None:
        return anyport
    known = ", ".join(p.label for p in anyport.ports) or "unknown here (DNS)"
    raise PortNotFound(
        f"{target.host}: no port named {target.scheme!r}, and not exactly one port "
        f"(ports: {known}); put the number in the URL, or name the port as "
        f"_<name>._tcp.{target.name}",
        service=anyport.service,
        attempts=anyport.attempts,
    )


def resolve_sync(
    target: Target, discover: Callable[[str, int | str | None], Resolution]
) -> Resolution:
    steps = lookups(target)
    ask = next(steps)
    while True:
        try:
            got: Resolution | PortNotFound = discover(*ask)
        except PortNotFound as exc:
            got = exc
        try:
            ask = steps.send(got)
        except StopIteration as done:
            result: Resolution = done.value
            return result


class Tries:
    """One request's tries over a Service's endpoints: the next endpoint (never one
    already tried while another is left), and whether a failure may be retried."""

    def __init__(self, balancer: Balancer, res: Resolution, method: str, retries: int) -> None:
        self._balancer = balancer
        self._res = res
        self._left = retries if method.upper() in IDEMPOTENT else 0
        self._tried: set[tuple[str, int | None]] = set()

    def next(self) -> Pick:
        if not self._tried:
            pick = self._balancer.choose(self._res)
        else:
            rest = tuple(ep for ep in self._res.endpoints if (ep.host, ep.port) not in self._tried)
            pick = self._balancer.choose(rest or self._res)
        self._tried.add((pick.endpoint.host, pick.endpoint.port))
        return pick

    def retry(self) -> bool:
        """After a failure that sent nothing (the connection was not made): try again?"""
        if self._left <= 0:
            return False
        self._left -= 1
        return True


def default_balancer(settings: Settings, strategies: tuple[object, ...]) -> Balancer:
    """A round-robin Balancer that knows where this process runs, so that a Service
    whose ``trafficDistribution`` asks for it keeps traffic in the zone or on the
    node: ``KDISCO_ZONE`` / ``KDISCO_NODE`` / ``NODE_NAME`` (the settings), else the
    zone label of this node, read by the api strategy when it may (one GET, at most a
    second, made once when the integration makes its first request)."""
    zone, node = settings.zone, settings.node
    if zone is None and node is not None:
        for strategy in strategies:
            read = getattr(strategy, "node_zone", None)
            if callable(read):
                found = read(node, Deadline(1.0))
                if isinstance(found, str):
                    zone = found
                    break
    return Balancer(zone=zone, node=node)


class NotServices:
    """Hosts that looked like Service names but were none (``example.com`` has the
    ``svc.ns`` shape): remembered for ``ttl`` seconds so that each request to them
    does not ask the cluster again. Bounded; thread-safe."""

    def __init__(self, ttl: float = 30.0, size: int = 1024, clock: Clock = time.monotonic) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __contains__(self, target: Target) -> bool:
        until = self._until.get(target.name)
        return until is not None and self._clock() < until

    def add(self, target: Target) -> None:
        now = self._clock()
        with self._lock:
            if len(self._until) >= self._size:
                self._until = {k: v for k, v in self._until.items() if v > now}
                if len(self._until) >= self._size:
                    self._until.pop(next(iter(self._until)))
            self._until[target.name] = now + self._ttl


class Balancing:
    """The Balancer an integration uses: the one given, or a default one made on
    first use from the discoverer it first serves (see ``default_balancer``)."""

    def __init__(self, given: Balancer | None) -> None:
        self._balancer = given
        self._lock = threading.Lock()

    def get(self, settings: Settings, strategies: tuple[object, ...]) -> Balancer:
        balancer = self._balancer
        if balancer is not None:
            return balancer
        with self._lock:
            if self._balancer is None:
                self._balancer = default_balancer(settings, strategies)
            return self._balancer

    @property
    def ready(self) -> Balancer | None:
        """The Balancer if there is one yet (made without a lookup)."""
        return self._balancer


def check_retries(retries: object) -> int:
    if type(retries) is not int or retries < 0:  # bool is no count
        raise ConfigurationError(f"retries must be a whole number >= 0, not {retries!r}")
    return retries


def after_failure(
    exc: BaseException,
    pick: Pick,
    tries: Tries,
    connect_errors: type[BaseException] | tuple[type[BaseException], ...],
) -> bool:
    """Report a failed send; True when it may be retried on another endpoint: the
    connection was never made (nothing was sent) and the method is idempotent.
    Cancellation is no fault of the endpoint's and is not reported."""
    if not isinstance(exc, Exception):
        return False
    pick.failed()
    return isinstance(exc, connect_errors) and tries.retry()


def judge(status: int, pick: Pick, failure_statuses: frozenset[int]) -> None:
    """Report a response: a failure when its status is one the caller counts as one."""
    if status in failure_statuses:
        pick.failed()
    else:
        pick.succeeded()


def port_of(ep: Endpoint, target: Target) -> int:
    if ep.port is None:
        raise PortNotFound(
            f"{target.host}: the answer for {target.name} has no port; put the number in the URL",
        )
    return ep.port


@attrs.frozen
class Route:
    """Where a request goes when the endpoint picked is a URL (an Ingress route, which
    ``reach="external"`` answers with): its scheme, the URL's port (None: the scheme's
    default), the ``Host`` to send (the rule's host: the Ingress routes on it), and
    the request's path under the route's."""

    scheme: str
    port: int | None
    host_header: str
    path: str


def route_of(ep: Endpoint, path: str) -> Route | None:
    """The ``Route`` for ``ep`` and a request path, or None when ``ep`` is an address."""
    if ep.scheme is None:
        return None
    port = None if ep.port == SCHEME_PORTS.get(ep.scheme) else ep.port
    host = f"[{ep.host}]" if ep.is_ipv6 else ep.host
    prefix = (ep.path or "").rstrip("/")
    return Route(
        scheme=ep.scheme,
        port=port,
        host_header=host if port is None else f"{host}:{port}",
        path=prefix + (path if path.startswith("/") else "/" + path),
    )


def not_a_service(exc: BaseException) -> bool:
    """A name that looked like a Service but is none here: the URL goes out as it is."""
    return isinstance(exc, ServiceNotFound)


class Routing:
    """What every HTTP integration keeps, and decides before its client sends: the
    answer a Service-name URL goes to (None: send the request as it is), and the
    tries over its endpoints. The sync and async integrations drive ``lookups`` with
    their own ``discover``; everything else here is theirs in common."""

    def __init__(
        self,
        balancer: Balancer | None,
        retries: object,
        failure_statuses: Iterable[int],
        backends: bool,
    ) -> None:
        self.retries = check_retries(retries)
        self.balancing = Balancing(balancer)
        self.failure_statuses = frozenset(failure_statuses)
        self.backends = backends
        self._not_services = NotServices()

    def answer(self, target: Target | None, d: Discoverer) -> Resolution | None:
        if target is None or target in self._not_services:
            return None
        try:
            return resolve_sync(
                target, lambda name, port: d.discover(name, port=port, backends=self.backends)
            )
        except ServiceNotFound:
            self._not_services.add(target)  # not a Service here after all
            return None

    async def aanswer(self, target: Target | None, d: AsyncDiscoverer) -> Resolution | None:
        """``answer`` for the event loop."""
        if target is None or target in self._not_services:
            return None
        steps = lookups(target)
        ask = next(steps)
        try:
            while True:
                try:
                    got: Resolution | PortNotFound = await d.discover(
                        ask[0], port=ask[1], backends=self.backends
                    )
                except PortNotFound as exc:
                    got = exc
                ask = steps.send(got)
        except StopIteration as done:
            result: Resolution = done.value
            return result
        except ServiceNotFound:
            self._not_services.add(target)
            return None

    def tries(self, res: Resolution, method: str, d: Discoverer) -> Tries:
        return Tries(self.balancing.get(d.settings, d.strategies), res, method, self.retries)

    async def atries(self, res: Resolution, method: str, d: AsyncDiscoverer) -> Tries:
        """``tries`` for the event loop: the default Balancer is made once, and may ask
        the API for this node's zone, so its first making runs in a worker thread."""
        balancer = self.balancing.ready
        if balancer is None:
            import asyncio

            balancer = await asyncio.to_thread(self.balancing.get, d.settings, d.strategies)
        return Tries(balancer, res, method, self.retries)
