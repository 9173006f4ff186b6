"""The shared list+watch cache behind the ``api`` strategy.

One cache per namespace, started by the first lookup there and shared by every call
and thread. It holds two informers, one per resource (Services, and EndpointSlices
that carry ``kubernetes.io/service-name``), each a thread that lists (paginated) and
then watches from the list's resourceVersion with bookmarks::

    list ──► watch(rv, allowWatchBookmarks, timeoutSeconds) ──► events ──► watch(rv) ...
      ▲          │ 410 Gone (HTTP or ERROR event)       │ relist_interval passed
      └──────────┴──────────────────────────────────────┘
    errors: the cache is marked not synced, retried with backoff (resuming from rv)

Answers are built from memory while both informers are synced. Each Service has a
version, bumped by any change to it or to its slices; an answer is valid while its
Service's version and the cache's sync epoch are unchanged, so ``Discoverer``'s
answer cache can keep it without a TTL. Every change is announced on ``changes`` so
``kdisco.watch()`` wakes at once.

Reads are raw JSON (``_preload_content=False``); watch lines are parsed one by one.
A client-side read timeout bounds every read, so a watch that went silent (a dropped
connection nobody closed) is noticed and re-opened. ``stop()`` shuts the socket of a
blocked watch, so it returns at once.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ._chain import RetryPolicy
from ._deadline import Clock, Deadline
from ._exceptions import AccessDenied, ConfigurationError, TransientError
from ._models import Outcome, Resolution
from ._names import Query
from ._strategy import Miss

log = logging.getLogger("kdisco")

Json = dict[str, Any]

#: Announced (``notify_all``) after every change any cache applies; ``kdisco.watch()``
#: waits on it and then checks whether its own answer is still valid.
changes = threading.Condition()

_SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_THREAD_PREFIX = "kdisco-watch"


def notify_changes() -> None:
    with changes:
        changes.notify_all()


@attrs.frozen(kw_only=True)
class WatchCachePolicy:
    """How the ``api`` strategy's shared list+watch cache behaves.

    ``relist_interval``: a full re-list this often, which catches anything a watch
    could have missed. ``watch_timeout``: the server ends each watch after this many
    seconds (it is then re-opened from the last resourceVersion). ``read_timeout``:
    the longest silence tolerated on an open connection before it is assumed dead and
    re-opened (the API sends a bookmark about every minute). ``page_size``: items per
    list page. ``backoff_initial``/``backoff_max``: reconnect backoff (full jitter).
    ``sync_wait``: the share of a caller's remaining deadline spent waiting for the
    first list of a namespace before reading the API directly. ``max_namespaces``:
    at most this many namespaces are watched (two threads and two watches each);
    lookups in further namespaces read the API directly, so names from user input or
    typos cannot grow the threads without bound.
    """

    enabled: bool = True
    relist_interval: float = 600.0
    watch_timeout: float = 300.0
    read_timeout: float = 90.0
    connect_timeout: float = 10.0
    page_size: int = 500
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    sync_wait: float = 0.5
    max_namespaces: int = 32

    def __attrs_post_init__(self) -> None:
        for name in (
            "relist_interval",
            "watch_timeout",
            "read_timeout",
            "connect_timeout",
            "backoff_initial",
            "backoff_max",
            "sync_wait",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (value >= 0 and not math.isnan(value))
            ):
                raise ConfigurationError(
                    f"WatchCachePolicy.{name} must be a number >= 0, not {value!r}"
                )
        if isinstance(self.page_size, bool) or self.page_size < 1:
            raise ConfigurationError("WatchCachePolicy.page_size must be an int >= 1")
        if self.sync_wait > 1:
            raise ConfigurationError("WatchCachePolicy.sync_wait is a share: between 0 and 1")


class _Gone(Exception):
    """410: the resourceVersion is too old for a watch; only a re-list helps."""


class _Stopped(Exception):
    pass


class _Silent(Exception):
    """The read timeout passed on an open watch without a byte."""


class _Valid:
    """``Resolution.valid`` for answers from the cache: two attribute reads per check."""

    __slots__ = ("_cache", "_epoch", "_name", "_version")

    def __init__(self, cache: NamespaceCache, name: str, version: int, epoch: int) -> None:
        self._cache = cache
        self._name = name
        self._version = version
        self._epoch = epoch

    def __call__(self) -> bool:
        cache = self._cache
        return cache.epoch == self._epoch and cache.versions.get(self._name, 0) == self._version


class NamespaceCache:
    """Services and EndpointSlices of one namespace, kept current by two informers."""

    def __init__(
        self,
        namespace: str,
        api_client: Callable[[], Any],
        policy: WatchCachePolicy,
        clock: Clock,
        counter: Iterator[int],
    ) -> None:
        from ._api import ServiceInfo, SliceInfo

        self.namespace = namespace
        self._policy = policy
        self._clock = clock
        self._counter = counter
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.services: dict[str, ServiceInfo] = {}
        self._service_rv: dict[str, str] = {}
        self.slices: dict[str, SliceInfo] = {}
        self.by_service: dict[str, dict[str, SliceInfo]] = {}
        #: Service name -> version; bumped by any change to the Service or its slices.
        self.versions: dict[str, int] = {}
        #: A fresh number each time both informers are synced; -1 while not.
        self.epoch = -1
        self._informers = (
            _Informer(self, "services", api_client, policy, clock),
            _Informer(self, "endpointslices", api_client, policy, clock),
        )

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def stop(self, timeout: float = 5.0) -> None:
        for informer in self._informers:
            informer.stop()
        join_all(self._informers, timeout)
        with self._lock:
            self.epoch = -1
        notify_changes()

    @property
    def threads(self) -> tuple[_Informer, ...]:
        return self._informers

    @property
    def problem(self) -> str | None:
        """Why the cache is not synced, if it is not."""
        problems = [i.problem for i in self._informers if i.problem]
        return "; ".join(problems) if problems else None

    @property
    def synced(self) -> bool:
        return self.epoch >= 0

    def confirmed_at(self) -> float:
        """When the data was last confirmed current (the older of the two informers)."""
        return min(i.confirmed_at for i in self._informers)

    # -- reading -------------------------------------------------------------------

    def wait_synced(self, timeout: float) -> bool:
        """Wait for the first list, unless every informer has already tried and failed."""
        with self._ready:
            self._ready.wait_for(
                lambda: self.epoch >= 0 or all(i.tried for i in self._informers), timeout
            )
            return self.epoch >= 0

    def resolve(self, query: Query) -> Resolution | Miss | None:
        """The answer from memory, or None when the cache is not synced."""
        from ._api import resolve_info

        name = query.service.name
        with self._lock:
            epoch = self.epoch
            if epoch < 0:
                return None
            version = self.versions.get(name, 0)
            info = self.services.get(name)
            slices = list(self.by_service.get(name, {}).values())
            confirmed = self.confirmed_at()
        if info is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"the API has no Service {name!r} in namespace {self.namespace!r} (watch cache)",
            )
        result = resolve_info(query, info, lambda: slices)
        if isinstance(result, Resolution):
            result = attrs.evolve(
                result,
                valid=_Valid(self, name, version, epoch),
                fetched_at=confirmed,
                clock=self._clock,
                confirmed=self.confirmed_at,
            )
        return result

    # -- writing (informer threads) ----------------------------------------------

    def _bump(self, names: set[str]) -> None:
        # Caller holds the lock.
        for name in names:
            if name:
                self.versions[name] = next(self._counter)

    def replace(self, resource: str, items: list[Json]) -> None:
        """A full list: keep unchanged objects as they are, rebuild the rest."""
        if resource == "services":
            self._replace_services(items)
        else:
            self._replace_slices(items)
        notify_changes()

    def _replace_services(self, items: list[Json]) -> None:
        from ._api import ServiceInfo

        with self._lock:
            seen: set[str] = set()
            changed: set[str] = set()
            for item in items:
                meta = item.get("metadata") or {}
                name = str(meta.get("name", ""))
                seen.add(name)
                rv = str(meta.get("resourceVersion", ""))
                if rv and self._service_rv.get(name) == rv:
                    continue
                info = ServiceInfo.from_json(item)
                if self.services.get(name) != info:
                    changed.add(name)
                self.services[name] = info
                self._service_rv[name] = rv
            for name in set(self.services) - seen:
                del self.services[name]
                self._service_rv.pop(name, None)
                changed.add(name)
            self._bump(changed)

    def _replace_slices(self, items: list[Json]) -> None:
        from ._api import SliceInfo

        with self._lock:
            seen: set[str] = set()
            changed: set[str] = set()
            for item in items:
                meta = item.get("metadata") or {}
                name = str(meta.get("name", ""))
                seen.add(name)
                old = self.slices.get(name)
                if old is not None and old.resource_version == meta.get("resourceVersion"):
                    continue
                changed |= self._put_slice(SliceInfo.from_json(item), old)
            for name in set(self.slices) - seen:
                changed |= self._drop_slice(name)
            self._bump(changed)

    def _put_slice(self, sl: Any, old: Any) -> set[str]:
        changed = {sl.service}
        if old is not None and old.service != sl.service:
            self.by_service.get(old.service, {}).pop(old.name, None)
            changed.add(old.service)
        self.slices[sl.name] = sl
        self.by_service.setdefault(sl.service, {})[sl.name] = sl
        return changed

    def _drop_slice(self, name: str) -> set[str]:
        old = self.slices.pop(name, None)
        if old is None:
            return set()
        group = self.by_service.get(old.service, {})
        group.pop(name, None)
        if not group:
            self.by_service.pop(old.service, None)
        return {old.service}

    def apply(self, resource: str, kind: str, obj: Json) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        from ._api import ServiceInfo, SliceInfo

        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        rv = str(meta.get("resourceVersion", ""))
        with self._lock:
            if resource == "services":
                if kind == "DELETED":
                    if self.services.pop(name, None) is None:
                        return
                    self._service_rv.pop(name, None)
                else:
                    if rv and self._service_rv.get(name) == rv:
                        return
                    info = ServiceInfo.from_json(obj)
                    self._service_rv[name] = rv
                    if self.services.get(name) == info:
                        return  # e.g. a status or annotation change: answers stay valid
                    self.services[name] = info
                self._bump({name})
            else:
                if kind == "DELETED":
                    changed = self._drop_slice(name)
                else:
                    old = self.slices.get(name)
                    if old is not None and rv and old.resource_version == rv:
                        return
                    changed = self._put_slice(SliceInfo.from_json(obj), old)
                if not changed:
                    return
                self._bump(changed)
        notify_changes()

    def set_synced(self) -> None:
        with self._ready:
            regained = self.epoch < 0 and all(i.synced for i in self._informers)
            if regained:
                self.epoch = next(self._counter)
            self._ready.notify_all()
        if regained:
            # Watchers holding answers read directly meanwhile can switch back to memory.
            notify_changes()

    def set_unsynced(self) -> None:
        with self._ready:
            was = self.epoch
            self.epoch = -1
            self._ready.notify_all()
        if was >= 0:
            notify_changes()


class _Informer(threading.Thread):
    """List, then watch, one resource of one namespace; forever, until stopped."""

    def __init__(
        self,
        cache: NamespaceCache,
        resource: str,
        api_client: Callable[[], Any],
        policy: WatchCachePolicy,
        clock: Clock,
    ) -> None:
        super().__init__(name=f"{_THREAD_PREFIX}-{cache.namespace}-{resource}", daemon=True)
        self._cache = cache
        self.resource = resource
        self._api_client = api_client
        self._policy = policy
        self._clock = clock
        self._stopping = threading.Event()
        self._response_lock = threading.Lock()
        self._response: Any = None
        self._backoff = RetryPolicy(initial=policy.backoff_initial, maximum=policy.backoff_max)
        #: Whether the data is current (listed, and the watch open or re-opening).
        self.synced = False
        #: Whether a first list was attempted (succeeded or failed).
        self.tried = False
        self.problem: str | None = None
        self.confirmed_at = -math.inf
        self._denied_logged = False
        self.lists = 0
        self.watches = 0

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        with self._response_lock:
            response = self._response
        if response is not None:
            shutdown_response(response)

    def run(self) -> None:
        rv: str | None = None
        listed_at = -math.inf
        failures = 0
        while not self._stopping.is_set():
            try:
                if rv is None or self._clock() - listed_at >= self._policy.relist_interval:
                    rv = self._list()
                    listed_at = self._clock()
                    self._mark_synced()
                    failures = 0
                until = listed_at + self._policy.relist_interval
                rv = self._watch(rv, until)
                failures = 0
            except _Stopped:
                break
            except _Silent:
                # No byte for read_timeout seconds: assume the connection died quietly
                # and re-open from the last resourceVersion at once. Only if that fails
                # is the cache marked not synced.
                continue
            except _Gone as exc:
                # Events were lost: answers may be behind until the re-list is done.
                rv = None
                self._mark_unsynced(f"{self.resource}: {exc}; re-listing")
            except AccessDenied as exc:
                failures += 1
                self._mark_unsynced(f"{self.resource}: {exc.message}")
                if not self._denied_logged:
                    self._denied_logged = True
                    log.warning(
                        "kdisco: watch cache off for namespace %r (%s); reading the API "
                        "directly instead (grant 'list' and 'watch' on services and "
                        "endpointslices to use it)",
                        self._cache.namespace,
                        exc.message,
                    )
                # Permissions rarely change: try again at the re-list pace.
                self._stopping.wait(max(self._policy.backoff_max, 1.0))
            except Exception as exc:
                if self._stopping.is_set():
                    break
                failures += 1
                self._mark_unsynced(f"{self.resource}: {_describe(exc)}")
                # Capped: 2.0 ** attempt overflows a float after ~1000 failures, and the
                # backoff reached its maximum long before.
                self._stopping.wait(self._backoff.wait_for(min(failures, 32)))

    def _mark_synced(self) -> None:
        self.synced = True
        self.tried = True
        self.problem = None
        self.confirmed_at = self._clock()
        self._cache.set_synced()

    def _mark_unsynced(self, problem: str) -> None:
        self.synced = False
        self.tried = True
        self.problem = problem
        self._cache.set_unsynced()

    # -- requests ------------------------------------------------------------------

    def _call(self) -> Callable[..., Any]:
        from kubernetes.client import CoreV1Api, DiscoveryV1Api

        client = self._api_client()
        if self.resource == "services":
            return CoreV1Api(client).list_namespaced_service
        call = DiscoveryV1Api(client).list_namespaced_endpoint_slice

        def slices(**kwargs: Any) -> Any:
            # Only slices that belong to a Service (the label's presence).
            return call(label_selector=_SERVICE_NAME_LABEL, **kwargs)

        return slices

    def _request(self, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        from ._api import _api_error

        if self._stopping.is_set():
            raise _Stopped
        timeout = (self._policy.connect_timeout, self._policy.read_timeout)
        try:
            return self._call()(
                namespace=self._cache.namespace,
                _preload_content=False,
                _request_timeout=timeout,
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone(f"HTTP 410 Gone: {exc.reason}") from exc
            verb = "watch" if kwargs.get("watch") else "list"
            group = "" if self.resource == "services" else ".discovery.k8s.io"
            if exc.status == 404:
                raise TransientError(
                    f"{verb} {self.resource}: HTTP 404 (namespace missing?)"
                ) from exc
            _api_error(exc, (verb, f"{self.resource}{group}", self._cache.namespace))
            raise  # pragma: no cover - _api_error always raises for non-404

    def _list(self) -> str:
        items: list[Json] = []
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"_continue": token} if token else {}
            response = self._request(limit=self._policy.page_size, **extra)
            with self._response_lock:
                self._response = response  # so stop() can cut a slow body short
            try:
                if self._stopping.is_set():
                    raise _Stopped
                page = json.loads(response.data)
            except ValueError as exc:
                raise TransientError(f"list {self.resource}: response is not JSON") from exc
            except Exception:
                if self._stopping.is_set():
                    raise _Stopped from None
                raise
            finally:
                with self._response_lock:
                    self._response = None
                response.release_conn()
            if not isinstance(page, dict):
                raise TransientError(f"list {self.resource}: response is not a JSON object")
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self.lists += 1
                self._cache.replace(self.resource, items)
                return str(meta.get("resourceVersion", ""))

    def _watch(self, rv: str, until: float) -> str:
        """One watch request, streamed until the server ends it; returns the last rv."""
        left = until - self._clock()
        if left <= 0:
            return rv
        seconds = max(1, int(min(self._policy.watch_timeout, left)))
        response = self._request(
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
        )
        with self._response_lock:
            self._response = response
        try:
            if self._stopping.is_set():
                raise _Stopped
            self.watches += 1
            self._mark_synced()
            for line in _lines(response):
                rv = self._event(line, rv)
            return rv
        except _Stopped:
            raise
        except Exception as exc:
            if self._stopping.is_set():
                raise _Stopped from None
            if _is_read_timeout(exc):
                raise _Silent from exc
            raise
        finally:
            with self._response_lock:
                self._response = None
            response.release_conn()

    def _event(self, line: bytes, rv: str) -> str:
        try:
            event = json.loads(line)
            kind = event["type"]
            obj = event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"watch {self.resource}: bad event line {line[:200]!r}") from exc
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            message = obj.get("message", "") if isinstance(obj, dict) else obj
            if code == 410:
                raise _Gone(f"watch ERROR 410: {message}")
            raise TransientError(f"watch {self.resource}: ERROR event {code}: {message}")
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._cache.apply(self.resource, kind, obj)
        self.confirmed_at = self._clock()
        return new_rv


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-delimited JSON from a streamed response, as each chunk arrives."""
    pending = b""
    for chunk in response.stream(65536, decode_content=True):
        if not chunk:
            continue
        pending += chunk
        if b"\n" not in pending:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _is_read_timeout(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ReadTimeoutError | TimeoutError):
            return True
        seen = seen.__context__
    return False


def shutdown_response(response: Any) -> None:
    """Unblock a thread reading ``response`` (urllib3 >= 2.3 shuts the socket down)."""
    try:
        shutdown = getattr(response, "shutdown", None)
        if callable(shutdown):
            shutdown()
        else:  # pragma: no cover - older urllib3
            response.close()
    except Exception:  # pragma: no cover - already closed
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TransientError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


#: Every WatchCache alive, so that interpreter exit can stop their threads.
_LIVE: weakref.WeakSet[WatchCache] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    # Informer threads are daemons blocked in socket reads; left running into
    # interpreter finalization they abort the process (SIGABRT) as it exits. Programs
    # that never call Discoverer.close() must still exit cleanly.
    for cache in list(_LIVE):
        cache.stop()


def join_all(threads: list[_Informer] | tuple[_Informer, ...], timeout: float) -> None:
    """Join threads under one shared deadline."""
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))


class WatchCache:
    """Every namespace's cache, created on first use; what ``ApiStrategy`` holds."""

    def __init__(self, api_client: Callable[[], Any], policy: WatchCachePolicy, clock: Clock):
        self._api_client = api_client
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._namespaces: dict[str, NamespaceCache] = {}
        self._counter = itertools.count(1)
        self._closed = False
        _LIVE.add(self)

    def namespace(self, namespace: str) -> NamespaceCache | None:
        """The namespace's cache, started on first use; None once closed or full."""
        cache = self._namespaces.get(namespace)
        if cache is not None:
            return cache
        with self._lock:
            if self._closed or len(self._namespaces) >= self.policy.max_namespaces:
                return None
            cache = self._namespaces.get(namespace)
            if cache is None:
                cache = NamespaceCache(
                    namespace, self._api_client, self.policy, self._clock, self._counter
                )
                self._namespaces[namespace] = cache
                cache.start()
            return cache

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss | None:
        """From memory when synced (waiting a share of the deadline for a first list)."""
        cache = self.namespace(query.service.namespace)
        if cache is None:
            return None  # closed, or max_namespaces reached: the caller reads directly
        if not cache.synced:
            cache.wait_synced(deadline.remaining() * self.policy.sync_wait)
        return cache.resolve(query)

    def problem(self, namespace: str) -> str | None:
        cache = self._namespaces.get(namespace)
        return None if cache is None else cache.problem

    def threads(self) -> list[threading.Thread]:
        return [t for c in list(self._namespaces.values()) for t in c.threads]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread; ``timeout`` bounds the whole stop, not each thread."""
        with self._lock:
            self._closed = True
            caches = list(self._namespaces.values())
            self._namespaces.clear()
        for cache in caches:
            for informer in cache.threads:
                informer.stop()
        join_all([t for c in caches for t in c.threads], timeout)
        for cache in caches:
            cache.stop(timeout=0)
