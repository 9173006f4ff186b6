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
        auto-detection; see ``kdisco.Settings``.

    Strategies are named (built-ins ``static``, ``dns``, ``env``,
        ``api``, or any installed through the ``kdisco.strategies`` entry point group) or
        given as objects. Configuration errors are raised here, before any network call.

        ``reach`` says where the answers must work from. ``"cluster"``: ClusterIPs and pod
        IPs, for code running in the cluster. ``"external"``: ways in from outside it, read
        from the API: a LoadBalancer Service's load balancer addresses (and
        ``spec.externalIPs``) with the Service port, else the URL of an Ingress that routes
        to the Service, else each node's ExternalIP (InternalIP when it has none) with the
        node port of a NodePort or LoadBalancer Service; ``NotReachable`` when there is no
        way in. ``"auto"`` (the default): ``cluster`` in a pod; outside a cluster (no
        ``KUBERNETES_SERVICE_HOST``, no service-account token) ``external`` when the
        Service has a way in, else the cluster's answer. A cluster-internal answer given
        to a caller outside the cluster carries a ``WARNING`` attempt that says so.
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
        return self._settings.namespace

    @property
    def cluster_domain(self) -> str:
        return self._settings.cluster_domain

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        return self._strategies

    @property
    def cache_policy(self) -> CachePolicy:
        return self._cache.policy

    @property
    def clock(self) -> Clock:
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

        Raises ``InvalidServiceName`` before any network call when the input is bad, and
        otherwise a ``DiscoveryError`` subclass that lists each strategy tried and why.
        Answers are cached (see ``CachePolicy``); a cached answer returns at once.
        ``backends=True`` asks for the ready pods behind a ClusterIP (NodePort,
        LoadBalancer) Service, with their target ports, instead of its virtual IP:
        the api strategy lists them (DNS only when the Service is headless).
        ``reach`` overrides the Discoverer's (see the class).
        """
        key = cache_key(name, namespace, port, include_not_ready, backends, reach)
        hit = self._cache.get(key)
        if hit is not None:
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
            return self._cache.stale_or_raise(key, exc)
        self._cache.put(key, res)
        return res

    # What ``discover`` does around the chain, shared with ``kdisco.aio``'s driver so
    # both read and fill one cache the same way.

    def _cached(self, key: Hashable) -> Resolution | None:
        return self._cache.get(key)

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

    def _settle(self, key: Hashable, outcome: Resolution | DiscoveryError) -> Resolution:
        """Cache an answer, or bridge a failure with a labelled stale answer."""
        if isinstance(outcome, DiscoveryError):
            return self._cache.stale_or_raise(key, outcome)
        self._cache.put(key, outcome)
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
        """Follow a Service: a new ``Resolution`` each time its endpoints change.

        Iterate over the returned ``Watch`` (in this thread), or pass ``callback`` to have
        it called from a background thread. ``stop()``, a ``with`` block or ``close()``
        ends it. See ``kdisco.Watch`` for when it re-asks.
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
        """Forget every cached answer."""
        self._cache.clear()

    def close(self) -> None:
        """Stop every watch and watch thread, and release connections the strategies hold."""
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
    """The Discoverer ``kdisco.discover()`` uses, built from the environment on first use."""
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
    """Forget the default Discoverer (e.g. after changing environment variables)."""
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
    """Find a Service with the default Discoverer (see ``Discoverer.discover``)."""
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
    """Follow a Service with the default Discoverer (see ``Discoverer.watch``)."""
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
