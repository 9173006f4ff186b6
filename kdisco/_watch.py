"""``kdisco.watch()``: a new ``Resolution`` each time a Service's endpoints change.

The watch re-asks its ``Discoverer`` only when the last answer may be out of date:

- an answer from the API watch cache carries a validity check; the cache publishes
  every change it applies to the ``Discoverer``'s ``Notifier``, and the watch,
  subscribed to the Services its answer came from, wakes at once and re-asks when
  its answer stopped being valid;
- a DNS answer is re-asked when its TTL (clamped by ``CachePolicy``) runs out;
- an answer with neither (the kubelet's variables, an API answer read directly while
  the watch cache was not synced) every ``max_ttl`` seconds or on the next API change;
- a stale answer, or a failure, every ``min_ttl`` seconds or on the next API change.

Only a changed endpoint set, port, port list or kind is yielded. When the Service
loses its last ready endpoint or disappears, an empty ``Resolution`` is yielded (its
``attempts`` say why), so users see "nothing to connect to" rather than silence. Other
failures (timeouts, nothing reachable) are handed to ``on_error`` and the watch goes
on; the ``Discoverer`` already bridges short outages with labelled stale answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from ._deadline import Clock
from ._exceptions import DiscoveryError, NoReadyEndpoints, ServiceNotFound
from ._models import Freshness, Resolution, ServiceKind
from ._names import Query
from ._notify import Key, Notifier
from ._policies import CachePolicy
from ._redact import redact

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    # logging is imported when a watch first has something to say, not at import.
    from . import _telemetry

    return _telemetry.WATCH_LOG


Callback = Callable[[Resolution], object]
ErrorCallback = Callable[[DiscoveryError], object]


def _log_error(error: DiscoveryError) -> None:
    # DiscoveryError redacts its message and attempts; redacted again all the same, as
    # everything logged that quotes an error is.
    _log().warning("%s", redact(str(error)))


class WatchState:
    """What a watch decides, with no waiting of its own: which Services to follow,
    what to yield, and how long the last answer holds. ``Watch`` (threads) and
    ``kdisco.aio``'s watch (asyncio) are thin drivers around it."""

    def __init__(
        self,
        query: Query,
        *,
        policy: CachePolicy,
        clock: Clock,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self.query = query
        self._policy = policy
        self._clock = clock
        self._on_error = on_error if on_error is not None else _log_error
        self._basis: Resolution | DiscoveryError | None = None
        self._waited = False
        self.last: Resolution | None = None

    def keys(self, found: Resolution | DiscoveryError | None = None) -> set[Key]:
        """The Services whose changes can change the answer: the one asked for, and
        every ExternalName alias it went through."""
        service = self.query.service
        keys: set[Key] = {(service.namespace, service.name)}
        if isinstance(found, Resolution):
            for ref in (found.service, *found.via):
                keys.add((ref.namespace, ref.name))
        return keys

    def observe(self, found: Resolution | DiscoveryError) -> Resolution | None:
        """Take a new answer (or error) as the basis; the Resolution to yield, if it
        changed anything."""
        self._basis = found
        self._waited = False
        emitted = self._as_answer(found)
        if emitted is None or not self._changed(emitted):
            return None
        self.last = emitted
        return emitted

    def wait_time(self) -> float | None:
        """How long to wait (woken early by a change) before asking again; None when
        the last answer may already be out of date, so ask now."""
        basis = self._basis
        policy = self._policy
        fresh = None if not isinstance(basis, Resolution) else basis.freshness
        if isinstance(basis, Resolution) and not basis.stale and fresh and fresh.valid:
            # Sources that push changes publish them, which wakes the wait at once; a
            # validity check nobody publishes for (a static map) is polled every min_ttl.
            return max(policy.min_ttl, 0.01) if fresh.valid() else None
        if isinstance(basis, Resolution) and not basis.stale and basis.ttl is not None:
            ttl = min(max(basis.ttl, policy.min_ttl), policy.max_ttl)
            left = basis.fetched_at + ttl - self._clock()
            return left if left > 0 else None
        # An answer with neither (the kubelet's variables, or an API answer read
        # directly while the watch cache was not synced): every max_ttl, or as soon as
        # its Service changes or the API cache syncs again. Stale, or failed: the
        # same, but every min_ttl. One wait, woken or not.
        if self._waited:
            return None
        self._waited = True
        ok = isinstance(basis, Resolution) and not basis.stale
        return policy.max_ttl if ok else policy.min_ttl

    def _as_answer(self, found: Resolution | DiscoveryError) -> Resolution | None:
        if isinstance(found, Resolution):
            return found
        if isinstance(found, NoReadyEndpoints | ServiceNotFound):
            last = self.last
            now = Freshness(clock=self._clock, fetched_at=self._clock())
            if last is not None and isinstance(found, NoReadyEndpoints):
                return attrs.evolve(
                    last,
                    endpoints=(),
                    attempts=found.attempts,
                    stale=False,
                    ttl=None,
                    freshness=now,
                )
            gone = last is None or isinstance(found, ServiceNotFound)
            return Resolution(
                service=found.service or self.query.service,
                kind=ServiceKind.UNKNOWN if gone or last is None else last.kind,
                endpoints=(),
                source=found.attempts[-1].strategy if found.attempts else "",
                attempts=found.attempts,
                freshness=now,
            )
        try:
            self._on_error(found)
        except Exception:
            _log().exception("kdisco.watch: on_error for %s failed", self.query.service)
        return None

    def _changed(self, res: Resolution) -> bool:
        last = self.last
        if last is None:
            return True
        if res is last:
            return False
        if (res.kind, res.ports, res.port, res.external_name) != (
            last.kind,
            last.ports,
            last.port,
            last.external_name,
        ):
            return True
        if res.endpoints == last.endpoints:
            return False
        # The same set in another order is no change.
        return frozenset(res.endpoints) != frozenset(last.endpoints)


class Watch:
    """Iterate for each changed ``Resolution``; ``stop()`` (or ``with``) to end it.

    Without ``callback`` it is an iterator that runs in the caller's thread (breaking
    out of the loop is enough to end it). With ``callback`` a background thread calls
    it for each change until ``stop()`` or ``Discoverer.close()``. Made by
    ``Discoverer.watch()`` and ``kdisco.watch()``.

    It asks its Discoverer again only when the last answer may be out of date: an
    answer from the API watch cache when the cache applies a change to its Service
    (at once); a DNS answer when its TTL (clamped by `CachePolicy`) runs out; an
    answer with neither (the kubelet's variables) every ``CachePolicy.max_ttl``
    seconds or on the next change published for its Service; a stale answer, or a
    failure, every ``CachePolicy.min_ttl`` seconds or on the next change.

    Args:
        query: The validated request.
        resolve: Asks the Discoverer (through its cache) for a fresh answer.
        notifier: Where changes are published; the watch subscribes to the Services
            its answer came from.
        policy: The Discoverer's cache policy, for the waits above.
        clock: The Discoverer's clock.
        callback: Called with each new `Resolution` from a background thread, or
            None to iterate.
        on_error: Called with each failure that is not "not found" or "no ready
            endpoints"; None logs a warning.

    Example:
        >>> with d.watch("orders-db", port="postgres") as w:  # doctest: +SKIP
        ...     for res in w:
        ...         pool.resize([ep.address for ep in res])
    """

    def __init__(
        self,
        query: Query,
        resolve: Callable[[], Resolution],
        *,
        notifier: Notifier,
        policy: CachePolicy,
        clock: Clock,
        callback: Callback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._state = WatchState(query, policy=policy, clock=clock, on_error=on_error)
        self._query = query
        self._resolve_now = resolve
        self._callback = callback
        self._stopping = threading.Event()
        self._subscription = notifier.subscribe(self._state.keys())
        self._started = False
        self._thread: threading.Thread | None = None
        if callback is not None:
            self._thread = threading.Thread(
                target=self._run, name=f"kdisco-watch-callback-{self._query.service}", daemon=True
            )
            self._thread.start()

    def __repr__(self) -> str:
        state = "stopped" if self._stopping.is_set() else "running"
        return f"Watch({self._query.service}, {state})"

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called (or its Discoverer closed)."""
        return self._stopping.is_set()

    @property
    def last(self) -> Resolution | None:
        """The last Resolution yielded (or passed to the callback)."""
        return self._state.last

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the watch; a blocked ``next()`` returns (StopIteration) at once.

        Safe to call from any thread, and more than once.

        Args:
            timeout: Seconds to wait for the callback thread to finish (None: as
                long as it takes). Default 5.0.
        """
        self._stopping.set()
        self._subscription.wake()
        self._subscription.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Resolution]:
        return self

    def __next__(self) -> Resolution:
        state = self._state
        while True:
            if self._started:
                self._wait()
            if self._stopping.is_set():
                raise StopIteration
            self._started = True
            found = self._resolve()
            if not self._stopping.is_set():
                self._subscription.follow(state.keys(found))
            emitted = state.observe(found)
            if emitted is not None:
                return emitted

    # -- internals -------------------------------------------------------------------

    def _run(self) -> None:
        assert self._callback is not None
        for res in self:
            try:
                self._callback(res)
            except Exception:
                _log().exception("kdisco.watch: callback for %s failed", self._query.service)

    def _resolve(self) -> Resolution | DiscoveryError:
        try:
            return self._resolve_now()
        except DiscoveryError as exc:
            return exc

    def _wait(self) -> None:
        """Block until the basis of the last answer may be out of date (or stop)."""
        while not self._stopping.is_set():
            seconds = self._state.wait_time()
            if seconds is None:
                return
            self._subscription.wait(seconds)
