"""The asyncio front: ``AsyncDiscoverer``, ``AsyncWatch``, and ``kdisco.aio``'s functions.

An ``AsyncDiscoverer`` is a ``Discoverer`` driven from the event loop: the same
settings, strategies, answer cache and notifier, with the chain run by
``run_async`` instead of ``run_sync``. Wrapping rather than copying is what lets
one ``kdisco.testing.FakeResolver`` (or one default Discoverer) serve sync and async
callers alike, and keeps a single cache between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from ._chain import run_async
from ._deadline import Clock
from ._discoverer import Discoverer, cache_key, current_discoverer, get_default_discoverer
from ._exceptions import DiscoveryError
from ._models import Resolution
from ._notify import Subscription
from ._policies import CachePolicy, RetryPolicy, Sleep, WatchCachePolicy
from ._settings import DEFAULT_RESOLV_CONF, Settings
from ._strategies.base import Strategy, aclose_strategy
from ._validation import parse_timeout
from ._watch import ErrorCallback, WatchState


class AsyncDiscoverer:
    """``Discoverer`` for asyncio: ``await d.discover(...)``, ``async for`` over
    ``d.watch(...)``, ``async with`` / ``await d.aclose()``.

    Takes the same arguments and environment variables as ``kdisco.Discoverer``,
    returns the same ``Resolution`` and raises the same errors, with the same cache
    (TTL, stale-if-error, labelled staleness). Strategies with an ``alookup`` are
    awaited on the loop (``dns``, ``api``, ``env``, ``static``); a sync-only plugin
    runs in a worker thread, and its attempts say so. ``AsyncDiscoverer.wrap(d)``
    drives an existing ``Discoverer``, sharing its cache.

    Building one reads small configuration files and imports the strategies: do it
    at start-up (a FastAPI lifespan, say), not inside a request.

    Args:
        strategies: Strategy names or objects, in order. Default:
            ``KDISCO_STRATEGIES``, else ``dns, env, api`` (``static`` first when a
            static map is configured).
        namespace: The namespace for names that carry none. Default:
            ``KDISCO_NAMESPACE``, else the pod's own, else the kubeconfig
            context's, else ``"default"``.
        dns_server: The cluster DNS server (``ip``, ``ip:port``, ``[ipv6]:port``).
            Default: ``KDISCO_DNS_SERVER``, else resolv.conf's nameservers when it
            shows a cluster.
        cluster_domain: The cluster's DNS domain. Default:
            ``KDISCO_CLUSTER_DOMAIN``, else from resolv.conf, else
            ``"cluster.local"``.
        timeout: Seconds each ``discover()`` may take, retries included. Default:
            ``KDISCO_TIMEOUT``, else 5.
        static: A static map, or the path of its TOML file. Default:
            ``KDISCO_STATIC``, else none.
        kubeconfig: Kubeconfig path(s) for the api strategy outside a cluster.
            Default: ``KUBECONFIG``, else ``~/.kube/config``.
        context: The kubeconfig context. Default: its current-context.
        serviceaccount_dir: The in-cluster credentials directory. Default:
            ``KDISCO_SERVICEACCOUNT_DIR``, else
            ``/var/run/secrets/kubernetes.io/serviceaccount``.
        resolv_conf: The resolv.conf to read. Default: ``/etc/resolv.conf``.
        environ: The environment to read instead of ``os.environ`` (copied).
            Default: ``os.environ``.
        clock: The monotonic clock. Default: ``time.monotonic``.
        sleep: What retries wait with: the real ``time.sleep`` is replaced by
            ``asyncio.sleep``, a test's fake sleep is called as it is. Default:
            ``time.sleep``.
        retry: The backoff for transient failures. Default:
            ``RetryPolicy(sleep=sleep)``.
        cache: A `kdisco.CachePolicy`, or True/False for the default one on or off.
            Default True.
        api_watch: A `kdisco.WatchCachePolicy`, or True/False. Default True.
        reach: ``"cluster"``, ``"external"`` or ``"auto"`` (see
            `kdisco.Discoverer`). Default: ``KDISCO_REACH``, else ``"auto"``.

    Raises:
        kdisco.ConfigurationError: A setting, environment variable or file is
            malformed, or a strategy name is unknown.

    Example:
        >>> async with kdisco.aio.AsyncDiscoverer(timeout=2.0) as d:  # doctest: +SKIP
        ...     res = await d.discover("cart", port="grpc")
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
        _discoverer: Discoverer | None = None,
    ) -> None:
        # ``sleep``: a test's fake sleep (moving a fake clock) is called as it is; the
        # real one is replaced by ``asyncio.sleep``.
        self._sync = (
            _discoverer
            if _discoverer is not None
            else Discoverer(
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
        )
        self._closed = False
        prepare(self._sync)

    @classmethod
    def wrap(cls, discoverer: Discoverer) -> AsyncDiscoverer:
        """Drive ``discoverer`` from asyncio (one cache, one set of strategies).

        ``aclose()`` closes ``discoverer`` too.

        Args:
            discoverer: The `kdisco.Discoverer` to drive.

        Returns:
            AsyncDiscoverer: Sharing ``discoverer``'s settings, strategies, cache
            and watches.
        """
        return cls(_discoverer=discoverer)

    @property
    def sync(self) -> Discoverer:
        """The ``Discoverer`` underneath, for code that is not async."""
        return self._sync

    @property
    def settings(self) -> Settings:
        """Every setting in force, and where each came from (``settings.sources``)."""
        return self._sync.settings

    @property
    def namespace(self) -> str:
        """The namespace for names that carry none."""
        return self._sync.namespace

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        """The strategies, built, in the order they are tried."""
        return self._sync.strategies

    def __repr__(self) -> str:
        return f"Async{self._sync!r}"

    async def discover(
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
        """Find a Service; see ``Discoverer.discover``. Never blocks the event loop.

        The same answers, cache and errors as `kdisco.Discoverer.discover`. A task
        cancelled while it waits leaves the cache as it was.

        Args:
            name: ``"svc"``, ``"svc.ns"``, ``"svc.ns.svc"`` or
                ``"svc.ns.svc.<cluster-domain>"``, each optionally with ``:port``.
            namespace: The namespace when ``name`` names none. Default: this
                Discoverer's (``KDISCO_NAMESPACE``, else detected).
            port: A port name or number. Default: the Service's first declared
                port, where the source knows it (DNS does not).
            timeout: Seconds this call may take, retries included. Default: this
                Discoverer's (``KDISCO_TIMEOUT``, else 5).
            include_not_ready: Also return endpoints that are not ready (DNS then
                steps aside). Default False.
            backends: The ready pods behind a ClusterIP Service, not its virtual
                IP. Default False.
            reach: ``"cluster"``, ``"external"`` or ``"auto"``. Default: this
                Discoverer's (``KDISCO_REACH``, else ``"auto"``).

        Returns:
            kdisco.Resolution: The answer (``stale=True`` when it is the last good
            one, served while refreshes fail).

        Raises:
            kdisco.InvalidServiceName: Bad ``name``, ``namespace`` or ``port``
                (before any I/O).
            kdisco.ConfigurationError: Bad ``timeout`` or ``reach``, or
                ``backends=True`` with ``reach="external"``.
            kdisco.DiscoveryError: When no answer was found: `kdisco.NoReadyEndpoints`,
                `kdisco.PortNotFound`, `kdisco.NotReachable`, `kdisco.AccessDenied`,
                `kdisco.ServiceNotFound`, `kdisco.DiscoveryTimeout` or
                `kdisco.DiscoveryUnavailable`, as for `kdisco.discover`.
        """
        return await _discover(
            self._sync, name, namespace, port, timeout, include_not_ready, backends, reach
        )

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
        on_error: ErrorCallback | None = None,
    ) -> AsyncWatch:
        """Follow a Service: ``async for res in d.watch("payments"): ...``.

        Same rules as ``Discoverer.watch`` (see ``kdisco.Watch``); bad input raises
        here. Leaving the loop, ``await w.aclose()`` or ``aclose()`` of this
        Discoverer ends it.

        Args:
            name: The Service, as for `discover`.
            namespace: The namespace when ``name`` names none. Default: this
                Discoverer's.
            port: A port name or number. Default: the first declared port.
            timeout: Seconds each re-ask may take. Default: this Discoverer's.
            include_not_ready: Also yield endpoints that are not ready. Default
                False.
            backends: Follow the pods behind a ClusterIP Service. Default False.
            reach: ``"cluster"``, ``"external"`` or ``"auto"``. Default: this
                Discoverer's.
            on_error: Called with each failure other than "not found" and "no ready
                endpoints"; the watch goes on. Default: log a warning on logger
                ``kdisco``.

        Returns:
            AsyncWatch: For ``async for``.

        Raises:
            kdisco.InvalidServiceName: Bad ``name``, ``namespace`` or ``port``.
            kdisco.ConfigurationError: Bad ``timeout`` or ``reach``, or
                ``backends=True`` with ``reach="external"``.
        """
        return AsyncWatch(
            self._sync,
            name,
            namespace=namespace,
            port=port,
            timeout=timeout,
            include_not_ready=include_not_ready,
            backends=backends,
            reach=reach,
            on_error=on_error,
        )

    def clear_cache(self) -> None:
        """Forget every cached answer (the cache is shared with `sync`)."""
        self._sync.clear_cache()

    async def aclose(self) -> None:
        """Stop every watch, then release what the strategies hold (watch threads are
        signalled and awaited, never joined on the loop)."""
        if self._closed:
            return
        self._closed = True
        self._sync._stop_watches()
        await asyncio.gather(*(aclose_strategy(s) for s in self._sync.strategies))

    async def __aenter__(self) -> AsyncDiscoverer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _discover(
    d: Discoverer,
    name: str,
    namespace: str | None,
    port: int | str | None,
    timeout: float | None,
    include_not_ready: bool,
    backends: bool = False,
    reach: str | None = None,
) -> Resolution:
    """``Discoverer.discover`` with the chain awaited: the same cache, the same key."""
    key = cache_key(name, namespace, port, include_not_ready, backends, reach)
    started = d._started()
    hit = d._cached(key, started)
    if hit is not None:
        return hit
    if started is None:
        started = d.clock()
    query, deadline = d._plan(name, namespace, port, timeout, include_not_ready, backends, reach)
    try:
        res = await run_async(
            d.strategies, query, deadline, d.settings.retry, outside=d.settings.outside
        )
    except DiscoveryError as exc:
        return d._settle(key, exc, query, started)
    # Nothing is cached until the answer is whole: a task cancelled above leaves the
    # cache as it was.
    return d._settle(key, res, query, started)


class AsyncWatch:
    """``async for res in watch: ...``: a new ``Resolution`` each time the Service's
    endpoints change; the same rules as ``kdisco.Watch`` (one ``WatchState`` decides
    for both). Ends when the loop is left, on ``aclose()``/``stop()``, or when its
    Discoverer closes. Made by ``AsyncDiscoverer.watch()`` and ``kdisco.aio.watch()``.

    Args:
        discoverer: The `kdisco.Discoverer` to ask, or None for the default one
            (bound on the first iteration).
        name: The Service, as for `kdisco.discover`.
        namespace: The namespace when ``name`` names none.
        port: A port name or number.
        timeout: Seconds each re-ask may take.
        include_not_ready: Also yield endpoints that are not ready.
        on_error: Called with each failure other than "not found" and "no ready
            endpoints"; None logs a warning.
        backends: Follow the pods behind a ClusterIP Service. Default False.
        reach: ``"cluster"``, ``"external"`` or ``"auto"``. Default None: the
            Discoverer's.

    Raises:
        kdisco.InvalidServiceName: Bad ``name``, ``namespace`` or ``port`` (when
            ``discoverer`` is given; else on the first iteration).
        kdisco.ConfigurationError: Bad ``timeout`` or ``reach``.

    Example:
        >>> async for res in kdisco.aio.watch("orders-db"):  # doctest: +SKIP
        ...     pool.resize([ep.address for ep in res])
    """

    def __init__(
        self,
        discoverer: Discoverer | None,
        name: str,
        *,
        namespace: str | None,
        port: int | str | None,
        timeout: float | None,
        include_not_ready: bool,
        on_error: ErrorCallback | None,
        backends: bool = False,
        reach: str | None = None,
    ) -> None:
        self._args = (
            name,
            namespace,
            port,
            None if timeout is None else parse_timeout(timeout),
            include_not_ready,
            backends,
            reach,
        )
        self._on_error = on_error
        self._stopped = False
        self._started = False
        # Set from whichever thread publishes (informer threads, mostly), through the
        # loop; bound to a loop on first use, in ``__anext__``.
        self._woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound: tuple[Discoverer, WatchState, Subscription] | None = None
        if discoverer is not None:
            # Bad names fail here, where the watch is made, not in the loop body.
            self._bind(discoverer)

    def _bind(self, discoverer: Discoverer) -> tuple[Discoverer, WatchState, Subscription]:
        name, namespace, port, _, include_not_ready, backends, reach = self._args
        query = discoverer._query(name, namespace, port, include_not_ready, backends, reach)
        state = WatchState(
            query, policy=discoverer.cache_policy, clock=discoverer.clock, on_error=self._on_error
        )
        subscription = discoverer.notifier.subscribe(state.keys(), wake=self._wake)
        self._bound = (discoverer, state, subscription)
        discoverer._track(self)
        return self._bound

    def __repr__(self) -> str:
        return f"AsyncWatch({self._args[0]!r}, {'stopped' if self._stopped else 'running'})"

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called (or its Discoverer closed)."""
        return self._stopped

    @property
    def last(self) -> Resolution | None:
        """The last Resolution yielded."""
        return None if self._bound is None else self._bound[1].last

    def stop(self) -> None:
        """End the watch: a waiting ``async for`` ends at once. Safe from any thread."""
        self._stopped = True
        if self._bound is not None:
            self._bound[2].close()
        self._wake()

    async def aclose(self) -> None:
        """End the watch, as ``stop()`` does (for ``contextlib.aclosing``)."""
        self.stop()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Resolution:
        if self._woken is None:
            self._loop = asyncio.get_running_loop()
            self._woken = asyncio.Event()
        bound = self._bound or self._bind(await _default())
        discoverer, state, subscription = bound
        while True:
            if self._started:
                await self._wait(state)
            if self._stopped:
                raise StopAsyncIteration
            self._started = True
            try:
                found: Resolution | DiscoveryError = await _discover(discoverer, *self._args)
            except DiscoveryError as exc:
                found = exc
            if not self._stopped:
                subscription.follow(state.keys(found))
            emitted = state.observe(found)
            if emitted is not None:
                return emitted

    async def _wait(self, state: WatchState) -> None:
        woken = self._woken
        assert woken is not None
        while not self._stopped:
            seconds = state.wait_time()
            if seconds is None:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await woken.wait()
            woken.clear()

    def _wake(self) -> None:
        # Called by the notifier from any thread: hand the wake-up to the loop.
        loop, woken = self._loop, self._woken
        if loop is None or woken is None:
            return  # not iterated yet: the first __anext__ asks anyway
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(woken.set)


# -- the module-level convenience ------------------------------------------------------


async def default_discoverer() -> AsyncDiscoverer:
    """The ``AsyncDiscoverer`` over the default ``Discoverer`` (or the one
    ``kdisco.testing.override`` put in place in this context).

    The first call builds the default in a worker thread: building it imports the
    strategies and reads configuration files, which the event loop should not wait on.

    Returns:
        AsyncDiscoverer: Over the same Discoverer ``kdisco.discover()`` uses (one
        cache for sync and async callers).

    Raises:
        kdisco.ConfigurationError: Building the default failed: the environment is
            malformed.
    """
    return AsyncDiscoverer.wrap(await _default())


async def _default() -> Discoverer:
    current = current_discoverer()
    if current is not None and current in _prepared:
        return current
    # Only the first build (or the first async use of a default the sync API built)
    # goes to a thread; the context is copied, so an override set in this task is
    # seen there too.
    return await asyncio.to_thread(_prepared_default)


def _prepared_default() -> Discoverer:
    d = get_default_discoverer()
    prepare(d)
    return d


#: Discoverers whose strategies have loaded what their ``alookup`` needs.
_prepared: weakref.WeakSet[Discoverer] = weakref.WeakSet()


def prepare(d: Discoverer) -> None:
    """Let each strategy load what its ``alookup`` needs (modules, mostly), here and
    now rather than on the event loop at its first call (``prepare_async``, optional
    in the Strategy contract)."""
    if d in _prepared:
        return
    for strategy in d.strategies:
        hook = getattr(strategy, "prepare_async", None)
        if callable(hook):
            hook()
    _prepared.add(d)


async def discover(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
    backends: bool = False,
    reach: str | None = None,
) -> Resolution:
    """``await kdisco.aio.discover("payments.billing", port="http")``: find a Service
    with the default Discoverer (see ``kdisco.Discoverer.discover``).

    The same answers, cache and errors as `kdisco.discover`, without blocking the
    event loop: DNS over non-blocking sockets, the API watch cache awaited, direct
    API reads over aiohttp. The first call builds the default Discoverer in a
    worker thread.

    Args:
        name: The Service: ``"svc"`` (in the default namespace), ``"svc.ns"``,
            ``"svc.ns.svc"`` or ``"svc.ns.svc.<cluster-domain>"``, each optionally
            with ``:port``.
        namespace: The namespace when ``name`` names none. Default:
            ``KDISCO_NAMESPACE``, else the pod's own, else the kubeconfig
            context's, else ``default``.
        port: A port name (matched against the Service's port names) or number.
            Default: the Service's first declared port, where the source knows it
            (DNS does not: ``port=None``).
        timeout: Seconds this call may take, retries included. Default:
            ``KDISCO_TIMEOUT``, else 5.
        include_not_ready: Also return endpoints that are not ready (DNS then steps
            aside for the api strategy). Default False.
        backends: The ready pods behind a ClusterIP Service, with their target
            ports, not its virtual IP. Default False.
        reach: ``"cluster"`` (ClusterIPs, pod IPs), ``"external"`` (a load balancer
            address, Ingress URL or node port) or ``"auto"`` (cluster in a pod,
            external outside when there is a way in): see `kdisco.discover`.
            Default: ``KDISCO_REACH``, else ``"auto"``.

    Returns:
        kdisco.Resolution: The answer (``stale=True`` when it is the last good one,
        served while refreshes fail).

    Raises:
        kdisco.InvalidServiceName: Bad ``name``, ``namespace`` or ``port`` (before
            any I/O).
        kdisco.ConfigurationError: Bad ``timeout`` or ``reach``, ``backends=True``
            with ``reach="external"``, or a malformed environment.
        kdisco.DiscoveryError: When no answer was found: `kdisco.NoReadyEndpoints`,
            `kdisco.PortNotFound`, `kdisco.NotReachable`, `kdisco.AccessDenied`,
            `kdisco.ServiceNotFound`, `kdisco.DiscoveryTimeout` or
            `kdisco.DiscoveryUnavailable`, as for `kdisco.discover`.
    """
    d = await _default()
    return await _discover(d, name, namespace, port, timeout, include_not_ready, backends, reach)


def watch(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
    backends: bool = False,
    reach: str | None = None,
    on_error: ErrorCallback | None = None,
) -> AsyncWatch:
    """``async for res in kdisco.aio.watch("payments"): ...`` with the default
    Discoverer (see ``AsyncDiscoverer.watch``). Bad input raises here once the default
    Discoverer is built (it is built on the first ``kdisco.aio`` call), else on the
    first iteration.

    Args:
        name: The Service, as for `discover`.
        namespace: The namespace when ``name`` names none. Default:
            ``KDISCO_NAMESPACE``, else detected.
        port: A port name or number. Default: the first declared port.
        timeout: Seconds each re-ask may take. Default: ``KDISCO_TIMEOUT``, else 5.
        include_not_ready: Also yield endpoints that are not ready. Default False.
        backends: Follow the pods behind a ClusterIP Service. Default False.
        reach: ``"cluster"``, ``"external"`` or ``"auto"``. Default:
            ``KDISCO_REACH``, else ``"auto"``.
        on_error: Called with each failure other than "not found" and "no ready
            endpoints"; the watch goes on. Default: log a warning on logger
            ``kdisco``.

    Returns:
        AsyncWatch: For ``async for``; the first answer comes at once, then one for
        each change (an empty `kdisco.Resolution` when the Service loses its last
        ready endpoint or is deleted).

    Raises:
        kdisco.InvalidServiceName: Bad ``name``, ``namespace`` or ``port``.
        kdisco.ConfigurationError: Bad ``timeout`` or ``reach``.
    """
    return AsyncWatch(
        current_discoverer(),
        name,
        namespace=namespace,
        port=port,
        timeout=timeout,
        include_not_ready=include_not_ready,
        backends=backends,
        reach=reach,
        on_error=on_error,
    )
