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

        ``aclose()`` closes ``discoverer`` too."""
        return cls(_discoverer=discoverer)

    @property
    def sync(self) -> Discoverer:
        """The ``Discoverer`` underneath, for code that is not async."""
        return self._sync

    @property
    def settings(self) -> Settings:
        return self._sync.settings

    @property
    def namespace(self) -> str:
        return self._sync.namespace

    @property
    def strategies(self) -> tuple[Strategy, ...]:
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
        """Find a Service; see ``Discoverer.discover``. Never blocks the event loop."""
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
        Discoverer ends it."""
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
    hit = d._cached(key)
    if hit is not None:
        return hit
    query, deadline = d._plan(name, namespace, port, timeout, include_not_ready, backends, reach)
    try:
        res = await run_async(
            d.strategies, query, deadline, d.settings.retry, outside=d.settings.outside
        )
    except DiscoveryError as exc:
        return d._settle(key, exc)
    # Nothing is cached until the answer is whole: a task cancelled above leaves the
    # cache as it was.
    return d._settle(key, res)


class AsyncWatch:
    """``async for res in watch: ...``: a new ``Resolution`` each time the Service's
    endpoints change; the same rules as ``kdisco.Watch`` (one ``WatchState`` decides
    for both). Ends when the loop is left, on ``aclose()``/``stop()``, or when its
    Discoverer closes. Made by ``AsyncDiscoverer.watch()`` and ``kdisco.aio.watch()``.
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
    with the default Discoverer (see ``kdisco.Discoverer.discover``)."""
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
    first iteration."""
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
