"""``Discoverer``: settings + strategies + answer cache + chain; and the module-level
``discover()`` / ``watch()`` over a default one."""

from __future__ import annotations

import contextvars
import os
import threading
import time
import weakref
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol

import attrs

from ._cache import AnswerCache
from ._chain import run_sync
from ._deadline import Clock, Deadline
from ._exceptions import ConfigurationError, DiscoveryError
from ._models import Resolution
from ._names import Query, parse_query
from ._notify import Notifier
from ._policies import CachePolicy, RetryPolicy, Sleep, WatchCachePolicy
from ._settings import DEFAULT_RESOLV_CONF, Settings, parse_reach
from ._strategies import registry
from ._strategies.base import Strategy, close_strategy
from ._validation import parse_timeout
from ._watch import Callback, ErrorCallback, Watch

#: logging.DEBUG, without importing logging with kdisco (see ``discover``).
_DEBUG = 10


class Stoppable(Protocol):
    """A watch, sync or async: what ``Discoverer.close()`` stops."""

    def stop(self) -> None: ...


def cache_key(
    name: str,
    namespace: str | None,
    port: int | str | None,
    include_not_ready: bool,
    backends: bool = False,
    reach: str | None = None,
) -> Hashable:
    """One call's key in the answer cache."""
    # Types are part of the key: True == 1, but port=True is invalid and port=1 is not.
    return (
        name,
        namespace,
        port,
        type(port),
        include_not_ready,
        type(include_not_ready),
        backends,
        type(backends),
        reach,
    )


class Discoverer:
    """Finds Services by trying strategies in order under one deadline per call.

    Every argument left as None falls back to its environment variable
    (``KDISCO_STRATEGIES``, ``KDISCO_NAMESPACE``, ``KDISCO_DNS_SERVER``,
    ``KDISCO_CLUSTER_DOMAIN``, ``KDISCO_TIMEOUT``, ``KDISCO_STATIC``,
    ``KDISCO_SERVICEACCOUNT_DIR``, ``KUBECONFIG``, ``KDISCO_REACH``), then to
    auto-detection; `settings` shows every value in force and where it came from
    (see `kdisco.Settings`). The caller's zone and node, which balancing prefers,
    come from ``KDISCO_ZONE`` and ``KDISCO_NODE`` (or the downward API's
    ``NODE_NAME``) in ``environ``.

    Strategies are named (built-ins ``static``, ``dns``, ``env``, ``api``, or any
    installed through the ``kdisco.strategies`` entry point group) or given as
    objects. Configuration errors are raised here, before any network call.

    ``reach`` says where the answers must work from. ``"cluster"``: ClusterIPs and pod
    IPs, for code running in the cluster. ``"external"``: ways in from outside it, read
    from the API: a LoadBalancer Service's load balancer addresses (and
    ``spec.externalIPs``) with the Service port, else the URL of an Ingress that routes
    to the Service, else each node's ExternalIP (InternalIP when it has none) with the
    node port of a NodePort or LoadBalancer Service; `NotReachable` when there is no
    way in. ``"auto"`` (the default): ``cluster`` in a pod; outside a cluster (no
    ``KUBERNETES_SERVICE_HOST``, no service-account token) ``external`` when the
    Service has a way in, else the cluster's answer. A cluster-internal answer given
    to a caller outside the cluster carries a ``WARNING`` attempt that says so.

    Answers are cached (see `CachePolicy`), and the api strategy keeps one shared
    list+watch cache per namespace (see `WatchCachePolicy`): build one Discoverer
    and share it (threads may call it at once), and `close` it (or use ``with``)
    when done. ``kdisco.discover()`` uses a default one built from the environment.

    Args:
        strategies: The strategies to try, in order: names (``"static"``, ``"dns"``,
            ``"env"``, ``"api"``, or an installed plugin's) or objects implementing
            `Strategy`, in a list. Default: ``KDISCO_STRATEGIES`` (a comma list),
            else ``["dns", "env", "api"]``, with ``"static"`` first when a static map
            is configured.
        namespace: The namespace for names that carry none. Default:
            ``KDISCO_NAMESPACE``, else the pod's own (``POD_NAMESPACE``, then the
            service-account ``namespace`` file), else the kubeconfig context's,
            else ``"default"``.
        dns_server: The cluster DNS server: ``"ip"``, ``"ip:port"`` or
            ``"[ipv6]:port"`` (an IP address, not a host name; port 53 by default).
            Default: ``KDISCO_DNS_SERVER`` (a comma list there), else the
            ``nameserver`` lines of ``resolv_conf`` when its search list shows a
            cluster (``<ns>.svc.<zone>``). Outside a cluster there is none, and the
            dns strategy does not apply (it never asks public DNS).
        cluster_domain: The cluster's DNS domain. Default: ``KDISCO_CLUSTER_DOMAIN``,
            else the zone in the ``resolv_conf`` search list, else
            ``"cluster.local"``.
        timeout: Seconds each `discover` call may take, every strategy and retry
            included (a positive number). Default: ``KDISCO_TIMEOUT``, else 5.
        static: The static map: a mapping of ``"svc"`` or ``"svc.ns"`` to addresses
            (the forms `kdisco.testing.FakeResolver` takes), or the path of a TOML
            file with a ``[services]`` table. Default: ``KDISCO_STATIC`` (a path),
            else none, and the ``static`` strategy cannot be used.
        kubeconfig: The kubeconfig the api strategy uses outside a cluster (a path,
            or several joined with ``os.pathsep``, as in ``KUBECONFIG``). Default:
            ``KUBECONFIG``, else ``~/.kube/config`` when it exists.
        context: The kubeconfig context to use. Default: its current-context.
        serviceaccount_dir: The in-cluster credentials directory (``token``,
            ``ca.crt``, ``namespace``). Default: ``KDISCO_SERVICEACCOUNT_DIR``, else
            ``/var/run/secrets/kubernetes.io/serviceaccount``.
        resolv_conf: The resolv.conf that tells the cluster's nameservers and
            domain. Default: ``/etc/resolv.conf``.
        environ: The environment variables to read instead of ``os.environ``
            (copied once, here): the settings above, the kubelet's service
            variables for the env strategy, ``KUBERNETES_SERVICE_HOST``. Tests
            pass a mapping of their own. Default: ``os.environ``.
        clock: A monotonic clock in seconds, for deadlines, TTLs and answer ages.
            Tests pass a fake one. Default: ``time.monotonic``.
        sleep: What retries wait with, for the default ``retry`` policy (a test's
            fake sleep can move its fake clock). Default: ``time.sleep``.
        retry: The backoff for transient failures (timeouts, SERVFAIL, HTTP 5xx
            and 429), always inside the call's deadline. Default:
            ``RetryPolicy(sleep=sleep)``.
        cache: The answer cache: a `CachePolicy`, ``True`` for the default one, or
            ``False`` to ask the strategies on every call. Default: True.
        api_watch: The api strategy's shared list+watch cache: a
            `WatchCachePolicy`, ``True`` for the default one, or ``False`` to read
            the API directly on every uncached call. Default: True.
        reach: Where answers must work from: ``"cluster"``, ``"external"`` or
            ``"auto"`` (above). Default: ``KDISCO_REACH``, else ``"auto"``.

    Raises:
        ConfigurationError: A setting, environment variable or file is malformed
            (the message names it and where its value came from), a strategy name
            is unknown or given twice, a plugin's factory fails to load, or the
            static map is invalid.

    Example:
        >>> from kdisco.testing import FakeResolver
        >>> d = kdisco.Discoverer(strategies=[FakeResolver({"cart": ["10.0.0.7:80"]})])
        >>> d.discover("cart").first().address
        '10.0.0.7:80'
        >>> d.close()
    """

    def __init__(
        self,
        *,
        strategies: Sequence[str | Strategy] | None = None,
        namespace: str | None = None,
        dns_server: str | None = None,
        cluster_domain: str | None = None,
        timeout: float | None = None,
        static: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        serviceaccount_dir: str | os.PathLike[str] | None = None,
        resolv_conf: str | os.PathLike[str] = DEFAULT_RESOLV_CONF,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        cache: CachePolicy | bool = True,
        api_watch: WatchCachePolicy | bool = True,
        reach: str | None = None,
    ) -> None:
        settings = Settings.load(
            strategies=strategies,
            namespace=namespace,
            dns_server=dns_server,
            cluster_domain=cluster_domain,
            timeout=timeout,
            static=static,
            kubeconfig=kubeconfig,
            context=context,
            serviceaccount_dir=serviceaccount_dir,
            resolv_conf=resolv_conf,
            environ=environ,
            clock=clock,
            sleep=sleep,
            retry=retry,
            cache=cache,
            api_watch=api_watch,
            reach=reach,
        )
        self._settings = settings
        self._clock = settings.clock
        # Here, not at import: ``import kdisco`` loads no logging.
        from . import _telemetry

        self._telemetry = _telemetry.TELEMETRY
        self._telemetry.instruments()
        self._cache = AnswerCache(settings.cache, settings.clock)
        self._notifier = Notifier()
        self._watches: weakref.WeakSet[Stoppable] = weakref.WeakSet()
        self._watches_lock = threading.Lock()
        where = settings.sources.get("strategies", "strategies")
        built: list[Strategy] = []
        try:
            for item in settings.strategies:
                strategy = registry.build(item, settings, self._notifier, where=where)
                # A strategy built in code publishes to a notifier of its own: listen.
                own = getattr(strategy, "notifier", None)
                if isinstance(own, Notifier):
                    own.forward_to(self._notifier)
                built.append(strategy)
            names = [s.name for s in built]
            if len(set(names)) != len(names):
                raise ConfigurationError(f"strategies named twice: {names}")
        except BaseException:
            for strategy in built:
                close_strategy(strategy)
            raise
        self._strategies = tuple(built)

    # -- public ----------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Every setting in force, and where each came from (``settings.sources``)."""
        return self._settings

    @property
    def namespace(self) -> str:
        """The namespace for names that carry none (``settings.sources`` says why)."""
        return self._settings.namespace

    @property
    def cluster_domain(self) -> str:
        """The cluster's DNS domain, ``cluster.local`` unless configured or detected."""
        return self._settings.cluster_domain

    @property
    def timeout(self) -> float:
        """Seconds a `discover` call may take when it passes no ``timeout``."""
        return self._settings.timeout

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        """The strategies, built, in the order they are tried."""
        return self._strategies

    @property
    def cache_policy(self) -> CachePolicy:
        """How answers are cached (the ``cache`` argument as a `CachePolicy`)."""
        return self._cache.policy

    @property
    def clock(self) -> Clock:
        """The clock deadlines, TTLs and answer ages are measured with."""
        return self._clock

    @property
    def notifier(self) -> Notifier:
        """Where this Discoverer's strategies publish changes (``kdisco.watch`` listens)."""
        return self._notifier

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self._strategies)
        source = self._settings.sources.get("namespace", "")
        return (
            f"Discoverer(strategies=[{names}], namespace={self.namespace!r} "
            f"({source}), cluster_domain={self.cluster_domain!r})"
        )

    def discover(
        self,
        name: str,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        timeout: float | None = None,
        include_not_ready: bool = False,
        backends: bool = False,
        reach: str | None = None,
    ) -> Resolution:
        """Find the Service ``name`` (``svc``, ``svc.ns``, ``svc.ns.svc.<domain>``, ``:port``).

        The strategies are tried in order under one deadline until one answers.
        Answers are cached (see `CachePolicy`): a cached answer returns at once,
        with no I/O. Bad input raises before any network call; anything else raised is a
        `DiscoveryError` that carries ``service`` and ``attempts``, and whose message
        lists each strategy tried and why it gave no answer. When the strategies
        ended differently, the first error in the order of Raises below is raised.

        Args:
            name: The Service, in one of these forms (any case), each optionally
                followed by ``:port`` (a port name or number, as for ``port``):

                - ``"svc"``: in ``namespace``, else in this Discoverer's `namespace`;
                - ``"svc.ns"`` or ``"svc.ns.svc"``: in namespace ``ns``;
                - ``"svc.ns.svc.<cluster-domain>"``, with or without a trailing dot:
                  in that cluster domain rather than this Discoverer's.

                Names are queried fully qualified, never through the resolver's
                search list.
            namespace: The namespace when ``name`` names none; when both do they
                must agree. Default: this Discoverer's `namespace`
                (``KDISCO_NAMESPACE``, else the pod's own, else the kubeconfig
                context's, else ``default``).
            port: The port wanted: a name (``"http"``, matched against the
                Service's port names; DNS asks for the SRV records
                ``_http._tcp.<fqdn>``) or a number (1-65535, matched against its port
                numbers). When ``name`` has a ``:port`` too they must agree.
                Default None: the Service's first declared port, where the source
                knows it; cluster DNS does not, so a DNS answer then has no port
                (``port=None`` on its endpoints).
            timeout: Seconds this call may take, every strategy and retry included (a
                positive number). Default: this Discoverer's `timeout`
                (``KDISCO_TIMEOUT``, else 5).
            include_not_ready: Also return endpoints that are not ready (starting,
                failing their readiness probe, terminating); each `Endpoint` says
                which in ``ready``, ``serving`` and ``terminating``. Cluster DNS
                publishes only ready endpoints, so the dns strategy steps aside and
                the api strategy (or a static map) answers. A ClusterIP's virtual IP
                is answered as it is. Default False.
            backends: Return the ready pods behind a ClusterIP (NodePort,
                LoadBalancer) Service, with their target ports, instead of its
                virtual IP, so that long-lived connections (gRPC, pools) spread over
                the pods. The api strategy lists them (DNS only when the Service is
                headless, whose answer is its pods anyway). Not with
                ``reach="external"``. Default False.
            reach: Where the answer must work from, for this call: ``"cluster"``
                (ClusterIPs, pod IPs), ``"external"`` (a load balancer address, an
                Ingress URL or a node port, read from the API) or ``"auto"`` (the
                first in a pod; outside a cluster the second when the Service has a
                way in, else the first with a ``WARNING`` attempt). See the class.
                Default: this Discoverer's (``KDISCO_REACH``, else ``"auto"``).

        Returns:
            Resolution: The answer, iterable over its endpoints (``res.first()``,
            ``res.url()``). When a refresh fails with `DiscoveryTimeout` or
            `DiscoveryUnavailable` and this call's last answer is at most
            ``CachePolicy.max_stale`` seconds old, that answer is returned instead,
            with ``stale=True``, its ``age``, and the failure in its ``attempts``.

        Raises:
            InvalidServiceName: ``name``, ``namespace`` or ``port`` is malformed, or
                two of them disagree (before any network call).
            ConfigurationError: ``timeout`` or ``reach`` is malformed, or
                ``backends=True`` was given with ``reach="external"`` (before any
                network call).
            NoReadyEndpoints: The Service exists but nothing behind it is ready (a
                headless Service, ``backends=True``, a node port, a static entry, a
                ClusterIP the api strategy sees nothing ready behind).
            PortNotFound: The Service exists but declares no such port.
            NotReachable: The Service exists but nothing routes to it from outside
                the cluster (``reach="external"``).
            AccessDenied: The Kubernetes API refused (401 or 403) and no strategy
                answered; it names the verb, resource and namespace to grant.
            ServiceNotFound: Every strategy that could tell says there is no such
                Service (and none failed or timed out), or cluster DNS or the API
                says so and another strategy was only refused.
            DiscoveryTimeout: The deadline passed before an answer.
            DiscoveryUnavailable: No strategy could answer: each failed or does not
                apply here (no cluster DNS, no credentials), or an ExternalName
                chain loops.

        Example:
            >>> from kdisco.testing import FakeResolver
            >>> web = {"endpoints": ["10.0.0.5"], "ports": {"http": 8080}}
            >>> fake = FakeResolver({"web.shop": web})
            >>> with kdisco.Discoverer(strategies=[fake]) as d:
            ...     d.discover("web.shop:http").url()
            'http://10.0.0.5:8080'
        """
        key = cache_key(name, namespace, port, include_not_ready, backends, reach)
        # The hot path: while nothing listens (no metrics, no DEBUG) a cached answer
        # costs one check more, and nothing is timed or built. ``Telemetry.quiet``,
        # ``_started`` and ``_cached``, inlined: a call is a measurable part of it.
        tm = self._telemetry
        if tm.meters is None and (not tm.levels.get(_DEBUG, True) or tm.log.disabled):
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            started = self._clock()
        else:
            started = self._clock()
            hit = self._cache.get(key)
            if hit is not None:
                tm.cached(hit, started, self._clock())
                return hit
        query, deadline = self._plan(
            name, namespace, port, timeout, include_not_ready, backends, reach
        )
        try:
            res = run_sync(
                self._strategies,
                query,
                deadline,
                self._settings.retry,
                outside=self._settings.outside,
            )
        except DiscoveryError as exc:
            return self._settle(key, exc, query, started)
        return self._settle(key, res, query, started)

    # What ``discover`` does around the chain, shared with ``kdisco.aio``'s driver so
    # both read and fill one cache the same way.

    def _started(self) -> float | None:
        """When this lookup started, if anything listens (metrics, DEBUG); else None."""
        return None if self._telemetry.quiet() else self._clock()

    def _cached(self, key: Hashable, started: float | None) -> Resolution | None:
        """The cached answer, if any (recorded when ``started`` says to)."""
        hit = self._cache.get(key)
        if hit is not None and started is not None:
            self._telemetry.cached(hit, started, self._clock())
        return hit

    def _plan(
        self,
        name: str,
        namespace: str | None,
        port: int | str | None,
        timeout: float | None,
        include_not_ready: bool,
        backends: bool = False,
        reach: str | None = None,
    ) -> tuple[Query, Deadline]:
        """The parsed query and the call's deadline; bad input raises here, before any
        network call."""
        query = self._query(name, namespace, port, include_not_ready, backends, reach)
        seconds = self.timeout if timeout is None else parse_timeout(timeout)
        return query, Deadline(seconds, clock=self._clock)

    def _query(
        self,
        name: str,
        namespace: str | None,
        port: int | str | None,
        include_not_ready: bool,
        backends: bool = False,
        reach: str | None = None,
    ) -> Query:
        """``name`` parsed against this Discoverer's namespace and cluster domain, with
        the reach the chain works for (``auto`` settled: ``cluster`` in a pod)."""
        query = parse_query(
            name,
            namespace=namespace,
            default_namespace=self.namespace,
            cluster_domain=self.cluster_domain,
            port=port,
            include_not_ready=include_not_ready,
            backends=backends,
        )
        chosen = self._settings.reach if reach is None else parse_reach(reach)
        if backends and chosen == "external":
            raise ConfigurationError(
                "backends=True asks for pod addresses, which are cluster-internal: it "
                "cannot be combined with reach='external'"
            )
        if chosen == "auto" and (backends or not self._settings.outside):
            chosen = "cluster"
        return query if chosen == "cluster" else attrs.evolve(query, reach=chosen)

    def _settle(
        self, key: Hashable, outcome: Resolution | DiscoveryError, query: Query, started: float
    ) -> Resolution:
        """Cache an answer, or bridge a failure with a labelled stale answer; either
        way the lookup is logged and measured (``kdisco._telemetry``)."""
        tm = self._telemetry
        if isinstance(outcome, DiscoveryError):
            try:
                stale = self._cache.stale_or_raise(key, outcome)
            except DiscoveryError as exc:
                tm.failed(exc, query.service, started, self._clock())
                raise
            tm.bridged(stale, outcome, started, self._clock())
            return stale
        self._cache.put(key, outcome)
        tm.answered(outcome, started, self._clock())
        return outcome

    def _track(self, watch: Stoppable) -> None:
        """Stop ``watch`` when this Discoverer closes."""
        with self._watches_lock:
            self._watches.add(watch)

    def _stop_watches(self) -> None:
        with self._watches_lock:
            watches = list(self._watches)
        for w in watches:
            w.stop()

    def watch(
        self,
        name: str,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        timeout: float | None = None,
        include_not_ready: bool = False,
        backends: bool = False,
        reach: str | None = None,
        callback: Callback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Watch:
        """Follow a Service: a new `Resolution` each time its endpoints change.

        Iterate over the returned `Watch` (in this thread), or pass ``callback`` to have
        it called from a background thread. ``stop()``, a ``with`` block or ``close()``
        ends it. See `kdisco.Watch` for when it re-asks.

        The first answer comes at once; after it, only a changed endpoint set, port,
        port list or kind. When the Service loses its last ready endpoint or is
        deleted, an empty `Resolution` comes (its ``attempts`` say why). Other
        failures go to ``on_error`` and the watch goes on.

        Args:
            name: The Service, as for `discover`: ``"svc"``, ``"svc.ns"``,
                ``"svc.ns.svc"`` or ``"svc.ns.svc.<cluster-domain>"``, each
                optionally with ``:port``.
            namespace: The namespace when ``name`` names none. Default: this
                Discoverer's `namespace`.
            port: A port name or number, as for `discover`. Default: the Service's
                first declared port, where the source knows it.
            timeout: Seconds each re-ask may take. Default: this Discoverer's
                `timeout` (``KDISCO_TIMEOUT``, else 5).
            include_not_ready: Also yield endpoints that are not ready, as for
                `discover`. Default False.
            backends: Follow the ready pods behind a ClusterIP Service rather than
                its virtual IP, as for `discover`. Default False.
            reach: ``"cluster"``, ``"external"`` or ``"auto"``, as for `discover`.
                Default: this Discoverer's (``KDISCO_REACH``, else ``"auto"``).
            callback: Called with each new `Resolution` from a background thread
                until the watch stops; an exception it raises is logged (logger
                ``kdisco``) and the watch goes on. Default None: iterate the `Watch`.
            on_error: Called with each `DiscoveryError` other than "not found" and
                "no ready endpoints" (timeouts, nothing reachable, access denied),
                after which the watch waits ``CachePolicy.min_ttl`` seconds (or for a
                change) and asks again. Default: log a warning on logger ``kdisco``.

        Returns:
            Watch: Iterable, and a context manager; it stops when this Discoverer
            closes.

        Raises:
            InvalidServiceName: ``name``, ``namespace`` or ``port`` is malformed, or
                two of them disagree (here, in the caller's thread).
            ConfigurationError: ``timeout`` or ``reach`` is malformed, or
                ``backends=True`` was given with ``reach="external"``.

        Example:
            >>> for res in d.watch("orders-db", port="postgres"):  # doctest: +SKIP
            ...     pool.resize([ep.address for ep in res])
        """
        # Bad names and timeouts fail here, in the caller's thread, not later in a
        # callback thread.
        query = self._query(name, namespace, port, include_not_ready, backends, reach)
        checked = None if timeout is None else parse_timeout(timeout)

        def resolve() -> Resolution:
            return self.discover(
                name,
                namespace=namespace,
                port=port,
                timeout=checked,
                include_not_ready=include_not_ready,
                backends=backends,
                reach=reach,
            )

        w = Watch(
            query,
            resolve,
            notifier=self._notifier,
            policy=self._cache.policy,
            clock=self._clock,
            callback=callback,
            on_error=on_error,
        )
        self._track(w)
        return w

    def clear_cache(self) -> None:
        """Forget every cached answer, stale ones included (the api strategy's watch
        cache is left as it is: it follows the cluster by itself)."""
        self._cache.clear()

    def close(self) -> None:
        """Stop every watch and watch thread, and release connections the strategies hold.

        Leaving a ``with Discoverer(...) as d:`` block calls it.
        """
        self._stop_watches()
        for strategy in self._strategies:
            close_strategy(strategy)

    def __enter__(self) -> Discoverer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the module-level convenience ------------------------------------------------------

_lock = threading.Lock()
_default: Discoverer | None = None
#: The Discoverer ``kdisco.discover()`` uses in this context (``kdisco.testing.override``):
#: a context variable, so concurrent tests in threads or asyncio tasks never see each
#: other's fakes.
_override: contextvars.ContextVar[Discoverer | None] = contextvars.ContextVar(
    "kdisco_override", default=None
)


def get_default_discoverer() -> Discoverer:
    """The Discoverer ``kdisco.discover()`` uses, built from the environment on first use.

    Inside a `kdisco.testing.override` block it is the override's. One default is
    shared by every thread; `reset_default_discoverer` forgets it.

    Returns:
        Discoverer: The default one, built with no arguments (so entirely from the
        environment variables: see `Discoverer`).

    Raises:
        ConfigurationError: Building it failed: an environment variable or a file
            it names is malformed.
    """
    global _default
    overridden = _override.get()
    if overridden is not None:
        return overridden
    default = _default
    if default is not None:
        return default  # the hot path of kdisco.discover(): no lock once built
    with _lock:
        if _default is None:
            _default = Discoverer()
        return _default


def current_discoverer() -> Discoverer | None:
    """The Discoverer ``kdisco.discover()`` would use here, without building one."""
    return _override.get() or _default


def reset_default_discoverer() -> None:
    """Forget the default Discoverer (e.g. after changing environment variables).

    The old one is closed (its watches stop); the next ``kdisco.discover()`` builds a
    new one from the environment as it is then.
    """
    global _default
    with _lock:
        old, _default = _default, None
    if old is not None:
        old.close()


@contextmanager
def use_discoverer(discoverer: Discoverer) -> Iterator[Discoverer]:
    """Make ``kdisco.discover()`` use ``discoverer`` inside the ``with`` block, in this
    thread or task (and in tasks it starts)."""
    token = _override.set(discoverer)
    try:
        yield discoverer
    finally:
        _override.reset(token)


def discover(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
    backends: bool = False,
    reach: str | None = None,
) -> Resolution:
    """Find a Service with the default Discoverer and return its endpoints.

    The default `Discoverer` is built from the environment on first use (see
    `get_default_discoverer`; `kdisco.testing.override` replaces it in tests). It
    tries its strategies in order (cluster DNS, then the kubelet's service
    variables, then the Kubernetes API, unless ``KDISCO_STRATEGIES`` says otherwise)
    under one deadline, and caches answers: a repeated call returns at once, with no
    I/O. Bad input raises before any network call; anything else raised is a
    `DiscoveryError` that carries ``service`` and ``attempts``, and whose message
    lists each strategy tried and why it gave no answer. When the strategies ended
    differently, the first error in the order of Raises below is raised.

    Args:
        name: The Service, in one of these forms (any case), each optionally
            followed by ``:port`` (a port name or number, as for ``port``):

            - ``"svc"``: in ``namespace``, else in the default namespace;
            - ``"svc.ns"`` or ``"svc.ns.svc"``: in namespace ``ns``;
            - ``"svc.ns.svc.<cluster-domain>"``, with or without a trailing dot: in
              that cluster domain rather than the configured one
              (``KDISCO_CLUSTER_DOMAIN``, else the one resolv.conf shows, else
              ``cluster.local``).

            Names are queried fully qualified, never through the resolver's search
            list.
        namespace: The namespace when ``name`` names none; when both do they must
            agree. Default: ``KDISCO_NAMESPACE``, else the pod's own
            (``POD_NAMESPACE``, then the service-account ``namespace`` file), else
            the kubeconfig context's, else ``default``.
        port: The port wanted: a name (``"http"``, matched against the Service's
            port names; DNS asks for the SRV records ``_http._tcp.<fqdn>``) or a
            number (1-65535, matched against its port numbers). When ``name`` has a
            ``:port`` too they must agree. Default None: the Service's first
            declared port, where the source knows it; cluster DNS does not, so a DNS
            answer then has no port (``port=None`` on its endpoints).
        timeout: Seconds this call may take, every strategy and retry included (a
            positive number). Default: ``KDISCO_TIMEOUT``, else 5.
        include_not_ready: Also return endpoints that are not ready (starting,
            failing their readiness probe, terminating); each `Endpoint` says which
            in ``ready``, ``serving`` and ``terminating``. Cluster DNS publishes only
            ready endpoints, so the dns strategy steps aside and the api strategy
            (or a static map) answers. A ClusterIP's virtual IP is answered as it
            is. Default False.
        backends: Return the ready pods behind a ClusterIP (NodePort, LoadBalancer)
            Service, with their target ports, instead of its virtual IP, so that
            long-lived connections (gRPC, pools) spread over the pods. The api
            strategy lists them (DNS only when the Service is headless, whose answer
            is its pods anyway). Not with ``reach="external"``. Default False.
        reach: Where the answer must work from. ``"cluster"``: ClusterIPs and pod
            IPs, for code in the cluster (or on a network routed into it).
            ``"external"``: a way in from outside, read from the API: a LoadBalancer
            Service's addresses (and ``spec.externalIPs``) with the Service port,
            else the URL of an Ingress that routes to the Service, else each Ready
            node's ExternalIP (InternalIP when it has none) with the node port; only
            the api strategy sees these (a static map answers as written, dns and env
            are skipped). ``"auto"``: ``"cluster"`` in a pod; outside a cluster (no
            ``KUBERNETES_SERVICE_HOST``, no service-account token) ``"external"``
            when the Service has a way in, else the cluster's answer, with a
            ``WARNING`` attempt saying it works only from the cluster's network.
            Default: ``KDISCO_REACH``, else ``"auto"``.

    Returns:
        Resolution: The answer, iterable over its endpoints (``res.first()``,
        ``res.url()``); ``source`` names the strategy that answered and ``attempts``
        what was tried before it. When a refresh fails with `DiscoveryTimeout` or
        `DiscoveryUnavailable` and this call's last answer is at most
        ``CachePolicy.max_stale`` seconds old, that answer is returned instead, with
        ``stale=True``, its ``age``, and the failure in its ``attempts``.

    Raises:
        InvalidServiceName: ``name``, ``namespace`` or ``port`` is malformed, or two
            of them disagree (before any network call).
        ConfigurationError: ``timeout`` or ``reach`` is malformed, or
            ``backends=True`` was given with ``reach="external"`` (before any
            network call); or, on the first call, the environment is (building the
            default Discoverer).
        NoReadyEndpoints: The Service exists but nothing behind it is ready (a
            headless Service, ``backends=True``, a node port, a static entry, a
            ClusterIP the api strategy sees nothing ready behind).
        PortNotFound: The Service exists but declares no such port.
        NotReachable: The Service exists but nothing routes to it from outside the
            cluster (``reach="external"``).
        AccessDenied: The Kubernetes API refused (401 or 403) and no strategy
            answered; it names the verb, resource and namespace to grant.
        ServiceNotFound: Every strategy that could tell says there is no such
            Service (and none failed or timed out), or cluster DNS or the API
            says so and another strategy was only refused.
        DiscoveryTimeout: The deadline passed before an answer.
        DiscoveryUnavailable: No strategy could answer: each failed or does not
            apply here (no cluster DNS, no credentials), or an ExternalName chain
            loops.

    Example:
        >>> res = kdisco.discover("payments.billing", port="http")  # doctest: +SKIP
        >>> res.url()  # doctest: +SKIP
        'http://10.96.4.2:80'
    """
    return get_default_discoverer().discover(
        name,
        namespace=namespace,
        port=port,
        timeout=timeout,
        include_not_ready=include_not_ready,
        backends=backends,
        reach=reach,
    )


def watch(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
    backends: bool = False,
    reach: str | None = None,
    callback: Callback | None = None,
    on_error: ErrorCallback | None = None,
) -> Watch:
    """Follow a Service with the default Discoverer: a new `Resolution` on each change.

    Iterate over the returned `Watch` (in this thread), or pass ``callback`` to have
    it called from a background thread. The first answer comes at once; after it,
    only a changed endpoint set, port, port list or kind. When the Service loses its
    last ready endpoint or is deleted, an empty `Resolution` comes (its ``attempts``
    say why). ``stop()``, a ``with`` block or `reset_default_discoverer` ends it.
    See `Watch` for when it asks again.

    Args:
        name: The Service, as for `discover`: ``"svc"``, ``"svc.ns"``,
            ``"svc.ns.svc"`` or ``"svc.ns.svc.<cluster-domain>"``, each optionally
            with ``:port``.
        namespace: The namespace when ``name`` names none. Default:
            ``KDISCO_NAMESPACE``, else the pod's own, else the kubeconfig context's,
            else ``default``.
        port: A port name or number, as for `discover`. Default: the Service's
            first declared port, where the source knows it.
        timeout: Seconds each re-ask may take. Default: ``KDISCO_TIMEOUT``, else 5.
        include_not_ready: Also yield endpoints that are not ready, as for
            `discover`. Default False.
        backends: Follow the ready pods behind a ClusterIP Service rather than its
            virtual IP, as for `discover`. Default False.
        reach: ``"cluster"``, ``"external"`` or ``"auto"``, as for `discover`.
            Default: ``KDISCO_REACH``, else ``"auto"``.
        callback: Called with each new `Resolution` from a background thread until
            the watch stops; an exception it raises is logged (logger ``kdisco``)
            and the watch goes on. Default None: iterate the `Watch`.
        on_error: Called with each `DiscoveryError` other than "not found" and "no
            ready endpoints" (timeouts, nothing reachable, access denied), after
            which the watch waits ``CachePolicy.min_ttl`` seconds (or for a change)
            and asks again. Default: log a warning on logger ``kdisco``.

    Returns:
        Watch: Iterable, and a context manager.

    Raises:
        InvalidServiceName: ``name``, ``namespace`` or ``port`` is malformed, or two
            of them disagree (here, in the caller's thread).
        ConfigurationError: ``timeout`` or ``reach`` is malformed, ``backends=True``
            was given with ``reach="external"``, or the environment is (building the
            default Discoverer).

    Example:
        >>> for res in kdisco.watch("orders-db", port="postgres"):  # doctest: +SKIP
        ...     pool.resize([ep.address for ep in res if ep.ready])
    """
    return get_default_discoverer().watch(
        name,
        namespace=namespace,
        port=port,
        timeout=timeout,
        include_not_ready=include_not_ready,
        backends=backends,
        reach=reach,
        callback=callback,
        on_error=on_error,
    )
