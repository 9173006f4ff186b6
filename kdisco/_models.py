"""Frozen value objects: what a discovery asks for and what it returns."""

from __future__ import annotations

import enum
import ipaddress
import time
from collections.abc import Callable, Iterator

import attrs

from ._exceptions import NoReadyEndpoints

#: Port names and appProtocols that are URI schemes in their own right, so that
#: ``Resolution.url()`` can default the scheme without guessing from arbitrary names.
_SCHEME_NAMES = frozenset({"http", "https", "grpc", "grpcs", "h2c", "ws", "wss"})


class ServiceKind(enum.Enum):
    """What kind of Service answered, as far as the source can tell."""

    CLUSTER_IP = "ClusterIP"
    HEADLESS = "Headless"
    EXTERNAL_NAME = "ExternalName"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    UNKNOWN = "Unknown"


class Outcome(enum.Enum):
    """How one strategy's turn in the chain ended."""

    ANSWERED = "answered"
    NOT_FOUND = "not found"
    NOT_APPLICABLE = "not applicable"
    NO_SUCH_PORT = "no such port"
    NO_READY_ENDPOINTS = "no ready endpoints"
    DENIED = "access denied"
    TIMED_OUT = "timed out"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class ServiceRef:
    """Which Service: name, namespace and cluster domain."""

    name: str
    namespace: str
    cluster_domain: str = "cluster.local"

    @property
    def fqdn(self) -> str:
        """The fully-qualified DNS name, with the trailing dot (no search-list walk)."""
        return f"{self.name}.{self.namespace}.svc.{self.cluster_domain}."

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"


@attrs.frozen(kw_only=True)
class ServicePort:
    """A port the Service declares."""

    port: int
    name: str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class Endpoint:
    """One address to reach the Service at.

    ``host`` is an IP literal or, for ExternalName, a DNS name. ``port`` is None when
    the source cannot know it (DNS without a named port). The remaining fields are
    filled where the source knows them.
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

    @property
    def is_ipv6(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).version == 6
        except ValueError:
            return False

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 bracketed), or just the host when the port is unknown."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return host if self.port is None else f"{host}:{self.port}"


@attrs.frozen(kw_only=True)
class Attempt:
    """One strategy's turn: what it concluded and why."""

    strategy: str
    outcome: Outcome
    reason: str
    tries: int = 1

    def describe(self) -> str:
        retried = f", {self.tries} tries" if self.tries > 1 else ""
        return f"{self.strategy}: {self.outcome.value} ({self.reason}{retried})"


@attrs.frozen(kw_only=True)
class Resolution:
    """The answer to one discovery: iterable over its endpoints.

    ``source`` names the strategy that answered; ``attempts`` records the strategies
    tried before it and why they gave no answer. ``snapshot`` is True when the data is
    a copy taken at some earlier time (the kubelet's environment variables are written
    once, at container start). ``via`` lists ExternalName Services that were followed
    to reach ``service``.
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
    #: When the data was obtained, on ``clock`` (``time.monotonic`` unless injected).
    fetched_at: float = attrs.field(default=0.0, eq=False)
    _clock: Callable[[], float] = attrs.field(
        default=time.monotonic, eq=False, repr=False, alias="clock"
    )
    # Set by sources that push changes (the API watch cache): True while the answer
    # still reflects the source, so caches can keep it without a TTL.
    _valid: Callable[[], bool] | None = attrs.field(
        default=None, eq=False, repr=False, alias="valid"
    )
    # Set with ``valid``: when the source last confirmed the data (a watch confirms
    # it continuously), so ``age`` says how old the knowledge is, not the object.
    _confirmed: Callable[[], float] | None = attrs.field(
        default=None, eq=False, repr=False, alias="confirmed"
    )

    @property
    def age(self) -> float:
        """Seconds since the source last confirmed the data (for a stale answer: since
        the last good one was fetched)."""
        since = self.fetched_at if self._confirmed is None else self._confirmed()
        return max(0.0, self._clock() - since)

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def first(self) -> Endpoint:
        """The first ready endpoint (or the first endpoint at all when none is ready)."""
        for ep in self.endpoints:
            if ep.ready:
                return ep
        if self.endpoints:
            return self.endpoints[0]
        raise NoReadyEndpoints(f"{self.service} has no endpoints", service=self.service)

    def url(self, scheme: str | None = None) -> str:
        """A URL for the first endpoint, IPv6 bracketed.

        Without ``scheme``, the chosen port's appProtocol or name is used when it is a
        URI scheme (http, https, grpc, ...), else ``tcp``.
        """
        ep = self.first()
        if scheme is None:
            scheme = "tcp"
            if self.port is not None:
                for candidate in (self.port.app_protocol, self.port.name):
                    if candidate and candidate.lower() in _SCHEME_NAMES:
                        scheme = candidate.lower()
                        break
        return f"{scheme}://{ep.address}"
