"""Test doubles for code that calls kdisco.

``FakeResolver`` answers from a mapping and is a strategy like any other;
``override`` makes plain ``kdisco.discover()`` use it. The pytest fixture
``kdisco_fake`` (installed with kdisco) does both for one test. See docs/testing.md.
"""

# Imports are bound to private names: this is a public module, and what it shows
# (dir(), tab completion, ``import *``) should be exactly ``__all__``.
import collections.abc as _abc
import contextlib as _contextlib
import ipaddress as _ipaddress
import os as _os

import attrs as _attrs

from . import _attempts, _deadline, _discoverer, _exceptions, _models, _names
from ._k8s import objects as _objects
from ._strategies import base as _base
from ._strategies import env as _env
from ._strategies import static as _static

__all__ = ["FakeResolver", "override"]

_Answer = _models.Resolution | _base.Miss

#: What ``FakeResolver(mode=...)`` accepts: ``static`` answers as the static strategy
#: does (the default); the others as the strategy of that name would in a cluster.
_MODES = ("static", "dns", "env", "api")
#: The variables the kubelet writes into every container (the ``kubernetes`` Service of
#: ``default``): the env strategy takes them as the sign that it runs in a pod.
_KUBELET_ALWAYS = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
}


class FakeResolver(_static.StaticStrategy):
    """A strategy that answers from ``mapping`` of ``"svc"`` / ``"svc.ns"`` to addresses.

    Values are lists of ``"host:port"`` strings (``"[2001:db8::1]:443"`` for IPv6) or
    ``Endpoint`` objects, or ``{"endpoints": [...], "ports": {"http": 8080}}`` to
    declare named ports. A bare ``"svc"`` key matches any namespace. Everything is
    validated when the fake is built, so a typo fails the test that made it.

    ``mode`` says which source the fake stands for. The default, ``"static"``,
    answers as the ``static`` strategy does: a ``"svc.ns"`` key wins over a bare
    ``"svc"``; with no port asked, the first declared port; a port number must match
    the entry's; endpoints with ``ready=False`` are left out unless
    ``include_not_ready=True`` (none ready: `kdisco.NoReadyEndpoints`); a name not in
    the map: `kdisco.ServiceNotFound`. Its answers are of kind
    ``ServiceKind.UNKNOWN``, with ``source`` set to ``name``.

    The other modes answer as that strategy would in a cluster, for a Service
    described by the entry, so a test fails where production would:

    - ``"dns"`` (recommended for code that runs with the default chain, which asks
      DNS first): a ClusterIP Service answers with its ClusterIP and ``port=None``
      unless a port is asked for; a port name comes back with its number (SRV), a
      port number only if the Service declares it; readiness is unknown (a ClusterIP
      answers with no pod ready); a headless Service lists its ready endpoints only
      (none: `kdisco.ServiceNotFound`, as NXDOMAIN); ``include_not_ready`` and
      ``backends`` of a ClusterIP are not applicable.
    - ``"env"``: the kubelet's variables of a pod in ``pod_namespace``: only
      ClusterIP Services of that namespace, with their ClusterIP and ports, marked
      ``snapshot``; nothing about readiness; headless Services are not found. (As in
      every pod, the ``kubernetes`` Service's variables are there too.)
    - ``"api"``: the Service and its EndpointSlices: ports known, readiness known,
      `kdisco.NoReadyEndpoints` when no pod is ready (behind a ClusterIP: none ready
      or still serving while terminating, as kube-proxy routes).

    In these modes an entry is a Service: ``"cluster_ip"`` (one address, or a list of
    one per family) makes it a ClusterIP Service whose pods are the ``endpoints``;
    ``"headless": True`` a headless one. Without either, its addresses are the
    Service's own: one per address family is a ClusterIP Service (the ``Endpoint``
    objects' readiness standing for its pods'), more are a headless Service's
    endpoints. An endpoint's port is its target port; without ``"ports"``, the port
    in the addresses is the Service's one unnamed port. Addresses must be IP
    addresses. ``"static"`` mode refuses ``cluster_ip`` and ``headless``.

    Changes made with `add` and `remove` reach cached answers and ``kdisco.watch()``
    at once (in every mode: a real pod's variables are fixed when it starts).

    Args:
        mapping: ``"svc"`` or ``"svc.ns"`` to a list of addresses (``"host:port"``,
            ``"host"``, ``"[ipv6]:port"`` or `kdisco.Endpoint` objects), or to
            ``{"endpoints": [...], "ports": {"name": number}, "cluster_ip": ...,
            "headless": ...}``. Default: empty.
        name: The strategy's name, as ``Resolution.source`` and attempts show it.
            Default ``"fake"`` in mode ``"static"``, else the mode's name (``"dns"``,
            ``"env"``, ``"api"``), as the real strategy's answers carry it.
        mode: Which source to answer as: ``"static"`` (default), ``"dns"``,
            ``"env"`` or ``"api"`` (see above).
        pod_namespace: Mode ``"env"`` only: the namespace of the pod the code runs
            in, the only one the kubelet's variables cover. Default ``"default"``
            (as `override` and the ``kdisco_fake`` fixture look up names without a
            namespace there).

    Attributes:
        notifier: Where `add` and `remove` publish their changes (a
            `kdisco.Notifier`; each Discoverer using the fake listens there).

    Raises:
        kdisco.ConfigurationError: An entry is malformed (a bad address, key or
            port, or a key the mode does not read), ``mode`` is not one of the four,
            or ``pod_namespace`` is malformed or given outside mode ``"env"``.

    Example:
        >>> import kdisco
        >>> from kdisco.testing import FakeResolver, override
        >>> fake = FakeResolver({"payments": ["10.0.0.1:5432"]})
        >>> with override(fake):
        ...     kdisco.discover("payments.billing").first().address
        '10.0.0.1:5432'
        >>> with override(FakeResolver({"payments": ["10.96.0.12:5432"]}, mode="dns")):
        ...     kdisco.discover("payments").first().port is None
        True
    """

    def __init__(
        self,
        mapping: _abc.Mapping[str, _static.StaticEntry] | None = None,
        *,
        name: str | None = None,
        mode: str = "static",
        pod_namespace: str | None = None,
    ) -> None:
        if mode not in _MODES:
            raise _exceptions.ConfigurationError(
                f"FakeResolver mode {mode!r}: expected one of {', '.join(map(repr, _MODES))}"
            )
        if pod_namespace is not None and mode != "env":
            raise _exceptions.ConfigurationError(
                f"FakeResolver pod_namespace={pod_namespace!r} is read only in mode 'env', "
                f"not {mode!r}"
            )
        try:
            self._pod_namespace = _names.check_namespace(
                "default" if pod_namespace is None else pod_namespace
            )
        except (_exceptions.InvalidServiceName, AttributeError, TypeError):
            raise _exceptions.ConfigurationError(
                f"FakeResolver pod_namespace={pod_namespace!r} is not a namespace name"
            ) from None
        self._mode = mode
        super().__init__(mapping or {}, name=name or ("fake" if mode == "static" else mode))

    @classmethod
    def from_file(
        cls, path: str | _os.PathLike[str], *, name: str = "static"
    ) -> _static.StaticStrategy:
        """A fake loaded from the ``[services]`` table of a TOML file.

        The table has the form of ``KDISCO_STATIC`` files (see docs/local-development.md).

        Args:
            path: The TOML file.
            name: The strategy's name. Default ``"static"``.

        Returns:
            FakeResolver: Answering from the file's map (mode ``"static"``).

        Raises:
            kdisco.ConfigurationError: The file cannot be read, is not TOML, has no
                ``[services]`` table, or an entry is malformed.
        """
        return super().from_file(path, name=name)

    @property
    def name(self) -> str:
        """The strategy's name (``"fake"`` or the mode's unless given), as attempts show it."""
        return super().name

    def __repr__(self) -> str:
        return f"FakeResolver({len(self._all())} services, mode={self._mode!r})"

    def lookup(self, query: _names.Query, deadline: _deadline.Deadline) -> _Answer:
        """Answer from the map (the `kdisco.Strategy` contract), as ``mode`` says.

        Args:
            query: What is asked.
            deadline: Unused: a map in memory answers at once.

        Returns:
            kdisco.Resolution | kdisco.Miss: The entry's endpoints, or a miss
            saying why not (not found, no such port, none ready, not applicable).
        """
        if self._mode == "static":
            return super().lookup(query, deadline)
        if self._mode == "env":
            return self._as_env(query, deadline)
        service = query.service
        if self._mode == "dns" and query.include_not_ready:
            return _base.Miss(
                _attempts.Outcome.NOT_APPLICABLE,
                "include_not_ready: cluster DNS publishes only ready endpoints",
            )
        entry, freshness = self._find(service)
        if entry is None:
            said = "cluster DNS would answer NXDOMAIN" if self._mode == "dns" else "no Service"
            return _base.Miss(_attempts.Outcome.NOT_FOUND, f"no entry for {service} ({said})")
        shape = _Shape.of(service.name, entry, self._mode)
        answer = _as_dns(query, shape) if self._mode == "dns" else _as_api(query, shape)
        return self._stamped(answer, freshness)

    async def alookup(self, query: _names.Query, deadline: _deadline.Deadline) -> _Answer:
        """``lookup()`` for ``kdisco.aio``, on the event loop (it never waits).

        Args:
            query: What is asked.
            deadline: Unused.

        Returns:
            kdisco.Resolution | kdisco.Miss: As ``lookup()``.
        """
        return await super().alookup(query, deadline)

    def add(self, name: str, entry: _static.StaticEntry) -> None:
        """Add or replace one Service.

        Args:
            name: ``"svc"`` (any namespace) or ``"svc.ns"``.
            entry: Its addresses, in the forms the constructor takes.

        Raises:
            kdisco.ConfigurationError: ``name`` or ``entry`` is malformed.

        Example:
            >>> from kdisco.testing import FakeResolver
            >>> fake = FakeResolver()
            >>> fake.add("web.shop", {"endpoints": ["10.0.0.9"], "ports": {"http": 8080}})
        """
        self._set(name, entry)

    def remove(self, name: str) -> None:
        """Forget one Service, so discovering it raises ServiceNotFound.

        Args:
            name: The key it was added under (``"svc"`` or ``"svc.ns"``); an unknown
                one is ignored.

        Raises:
            kdisco.ConfigurationError: ``name`` is malformed.
        """
        self._remove(name)

    def _parse(self, key: str, value: object) -> _static.Entry:
        if self._mode == "static":
            return super()._parse(key, value)
        entry = _static.parse_entry(key, value)
        _Shape.of(key, entry, self._mode)  # checked now, not at the first lookup
        return entry

    def _stamped(self, answer: _Answer, freshness: _models.Freshness) -> _Answer:
        """An answer built as a real strategy's, with this fake's name, valid until the
        map changes."""
        if isinstance(answer, _base.Miss):
            return answer
        return _attrs.evolve(answer, source=self.name, freshness=freshness)

    def _as_env(self, query: _names.Query, deadline: _deadline.Deadline) -> _Answer:
        """The env strategy itself, reading the variables the kubelet would write for
        the map's ClusterIP Services in the pod's namespace."""
        # Taken before the map is read: a change in between makes the answer invalid.
        freshness = self._find(query.service)[1]
        own: dict[str, _static.Entry] = {}
        for (svc, ns), entry in sorted(self._all().items(), key=lambda kv: kv[0][1] is not None):
            if ns in (None, self._pod_namespace):
                own[svc] = entry  # a "svc.ns" key wins over a bare "svc"
        environ = dict(_KUBELET_ALWAYS)
        for svc, entry in own.items():
            environ.update(_Shape.of(svc, entry, "env").kubelet_variables(svc))
        answer = _env.EnvStrategy(environ, namespace=self._pod_namespace).lookup(query, deadline)
        return self._stamped(answer, freshness)


@_attrs.frozen(kw_only=True)
class _Shape:
    """The Service an entry stands for in the modes that answer as a real source."""

    headless: bool
    cluster_ips: tuple[str, ...]
    ports: tuple[_models.ServicePort, ...]
    #: Its pods; an endpoint's own port is its target port (None: the Service port's).
    pods: tuple[_models.Endpoint, ...]

    @classmethod
    def of(cls, key: str, entry: _static.Entry, mode: str) -> "_Shape":
        where = f"static entry {key!r}"
        for ep in entry.endpoints:
            try:
                _ipaddress.ip_address(ep.host)
            except ValueError:
                raise _exceptions.ConfigurationError(
                    f"{where}: 'endpoints': {ep.host!r} is not an IP address (mode {mode!r} "
                    "answers as a cluster does, with the addresses of Services and pods)"
                ) from None
        ports = entry.ports
        if not ports:
            numbers = list(dict.fromkeys(ep.port for ep in entry.endpoints if ep.port))
            if len(numbers) > 1:
                raise _exceptions.ConfigurationError(
                    f"{where}: 'endpoints' have ports {', '.join(map(str, numbers))}: "
                    "declare the Service's ports with 'ports'"
                )
            ports = tuple(_models.ServicePort(port=n) for n in numbers)
        hosts = [ep.host for ep in entry.endpoints]
        several = len({":" in h for h in hosts}) != len(hosts)  # two of one family
        headless = entry.headless
        if headless is None:
            headless = not entry.cluster_ips and several
        cluster_ips = entry.cluster_ips
        if not headless and not cluster_ips:
            if several or not hosts:
                raise _exceptions.ConfigurationError(
                    f"{where}: 'headless': false needs a 'cluster_ip' (a ClusterIP Service "
                    "has one address per family)"
                )
            cluster_ips = tuple(hosts)
        return cls(headless=headless, cluster_ips=cluster_ips, ports=ports, pods=entry.endpoints)

    def ready_pods(self) -> tuple[_models.Endpoint, ...]:
        return tuple(ep for ep in self.pods if ep.ready)

    def kubelet_variables(self, name: str) -> dict[str, str]:
        """What the kubelet writes for this Service into a pod of its namespace
        (FACTS.md §3): nothing for a headless Service."""
        if self.headless:
            return {}
        prefix = _env.env_prefix(name)
        found = {f"{prefix}_SERVICE_HOST": self.cluster_ips[0]}
        if self.ports:
            found[f"{prefix}_SERVICE_PORT"] = str(self.ports[0].port)
        for p in self.ports:
            if p.name:
                found[f"{prefix}_SERVICE_PORT_{_env.env_prefix(p.name)}"] = str(p.port)
        return found


def _families_first(hosts: _abc.Iterable[str]) -> tuple[str, ...]:
    """Each address once, IPv4 before IPv6: the A answer, then the AAAA one."""
    unique = list(dict.fromkeys(hosts))
    return tuple([h for h in unique if ":" not in h] + [h for h in unique if ":" in h])


def _as_dns(query: _names.Query, shape: _Shape) -> _Answer:
    """What the dns strategy makes of what CoreDNS publishes for ``shape`` (FACTS.md §1,
    §8): A/AAAA, SRV per named port, SRV on the bare name per declared port."""
    service = query.service
    ready = shape.ready_pods()
    if shape.headless and not ready:
        return _base.Miss(
            _attempts.Outcome.NOT_FOUND,
            f"NXDOMAIN for {service.fqdn} (a headless Service with no ready endpoints)",
        )
    wanted = query.port
    answer: _models.Resolution
    if isinstance(wanted, str):
        chosen = next((p for p in shape.ports if p.name == wanted), None)
        if chosen is None:
            return _base.Miss(
                _attempts.Outcome.NO_SUCH_PORT,
                f"no SRV record _{wanted}._tcp/_udp.{service.fqdn} "
                "(the Service has no port of that name)",
            )
        if shape.headless:
            # One SRV record per ready endpoint, its target port and per-endpoint name;
            # the Service's own port number is not in DNS.
            answer = _models.Resolution(
                service=service,
                kind=_models.ServiceKind.HEADLESS,
                endpoints=_models.distinct(
                    _models.Endpoint(
                        host=ep.host,
                        port=ep.port or chosen.port,
                        hostname=ep.hostname or _dashed(ep.host),
                    )
                    for ep in ready
                ),
                source="dns",
            )
        else:
            declared = _models.ServicePort(name=wanted, port=chosen.port, protocol=chosen.protocol)
            answer = _models.Resolution(
                service=service,
                kind=_models.ServiceKind.CLUSTER_IP,
                endpoints=tuple(
                    _models.Endpoint(host=ip, port=chosen.port)
                    for ip in _families_first(shape.cluster_ips)
                ),
                ports=(declared,),
                port=declared,
                source="dns",
            )
    else:
        numbers = {p.port for p in shape.ports}
        if isinstance(wanted, int) and not shape.headless and numbers and wanted not in numbers:
            return _base.Miss(
                _attempts.Outcome.NO_SUCH_PORT,
                f"{service.fqdn} declares no port {wanted} "
                f"(SRV lists {', '.join(map(str, sorted(numbers)))})",
            )
        addresses = [ep.host for ep in ready] if shape.headless else shape.cluster_ips
        hosts = _families_first(addresses)
        v4 = sum(1 for h in hosts if ":" not in h)
        answer = _models.Resolution(
            service=service,
            # One address per family could be a ClusterIP or a one-pod headless
            # Service: DNS cannot tell.
            kind=_models.ServiceKind.HEADLESS
            if v4 > 1 or len(hosts) - v4 > 1
            else _models.ServiceKind.UNKNOWN,
            endpoints=tuple(
                _models.Endpoint(host=h, port=wanted if isinstance(wanted, int) else None)
                for h in hosts
            ),
            source="dns",
        )
    if query.backends and answer.kind is not _models.ServiceKind.HEADLESS:
        return _base.Miss(
            _attempts.Outcome.NOT_APPLICABLE,
            f"backends: DNS gives {service.fqdn} as one address, not its pods",
        )
    return answer


def _dashed(host: str) -> str:
    """CoreDNS's per-endpoint name for an endpoint without a hostname: its IP, dashed."""
    return host.replace(".", "-").replace(":", "-").lower()


def _as_api(query: _names.Query, shape: _Shape) -> _Answer:
    """The api strategy's own answer (``kdisco._k8s.objects``) for ``shape`` as a Service
    and its EndpointSlices."""
    info = _objects.ServiceInfo(
        type="ClusterIP",
        ports=shape.ports,
        cluster_ips=() if shape.headless else shape.cluster_ips,
    )
    # The api strategy's own rules decide, readiness behind a ClusterIP included.
    return _objects.resolve_info(query, info, lambda: _slices(query.service.name, shape))


def _slices(name: str, shape: _Shape) -> list[_objects.SliceInfo]:
    """The EndpointSlices the controller would write: one per address family and
    target port (a pod's own port serves every Service port)."""
    groups: dict[tuple[str, int | None], list[_models.Endpoint]] = {}
    for ep in shape.pods:
        family = "IPv6" if ":" in ep.host else "IPv4"
        groups.setdefault((family, ep.port), []).append(ep)
    slices = []
    for i, ((family, own), pods) in enumerate(groups.items()):
        ports = tuple((p.name or "", own or p.port) for p in shape.ports)
        first = ports[0][1] if ports else None
        slices.append(
            _objects.SliceInfo(
                name=f"{name}-{i:05d}",
                service=name,
                address_type=family,
                ports=ports,
                endpoints=tuple(_attrs.evolve(ep, port=first) for ep in pods),
                port=first,
            )
        )
    return slices


@_contextlib.contextmanager
def override(
    resolver: _base.Strategy, *, namespace: str = "default", timeout: float = 5.0
) -> _abc.Iterator[_discoverer.Discoverer]:
    """Inside the ``with`` block, ``kdisco.discover()`` answers from ``resolver`` only.

    ``resolver`` is usually a ``FakeResolver``, but any strategy will do. Nothing else
    is consulted (no DNS, no environment, no API), so tests are hermetic whatever
    machine they run on. Yields the Discoverer in use.

    The override holds in the current context: this thread, and asyncio tasks
    started inside the block. Threads and tasks elsewhere keep their own, so tests
    running concurrently never see each other's fakes.

    ``kdisco.aio.discover()`` and ``kdisco.watch()`` use it too. The environment is
    not read: the Discoverer is built with no variables and no resolv.conf.

    Args:
        resolver: The strategy to answer from (a `FakeResolver`, or any
            `kdisco.Strategy`).
        namespace: The namespace for names that carry none. Default ``"default"``.
        timeout: Seconds each call may take. Default 5.0.

    Yields:
        kdisco.Discoverer: The Discoverer ``kdisco.discover()`` uses inside the
        block.

    Raises:
        kdisco.ConfigurationError: ``namespace`` or ``timeout`` is malformed, or
            ``resolver`` is not a strategy.

    Example:
        >>> import kdisco
        >>> from kdisco.testing import FakeResolver, override
        >>> with override(FakeResolver({"cart": ["10.0.0.7:80"]}), namespace="shop"):
        ...     str(kdisco.discover("cart").service)
        'cart.shop'
    """
    discoverer = _discoverer.Discoverer(
        strategies=[resolver],
        namespace=namespace,
        timeout=timeout,
        environ={},
        resolv_conf="/nonexistent",
    )
    with _discoverer.use_discoverer(discoverer):
        yield discoverer
