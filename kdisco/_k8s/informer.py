"""The shared list+watch cache behind the ``api`` strategy (an informer per resource).

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
answer cache can keep it without a TTL. Every change is published to the
``Discoverer``'s ``Notifier`` (the Service that changed; the whole namespace when
the cache loses or regains sync), so ``kdisco.watch()`` wakes at once.

Reads are raw JSON; watch lines are parsed one by one. A client-side read timeout
bounds every read, so a watch that went silent (a dropped connection nobody closed)
is noticed and re-opened. ``stop()`` fires the cut-off of a blocked request (waiting
for headers or reading a body), so it returns at once.

The informers are threads for sync and asyncio callers alike. An asyncio caller
never waits on them by blocking: ``NamespaceCache.on_ready`` calls it back from the
informer's thread when a first list is done (``alookup``), and ``astop`` polls for
the threads' end instead of joining them.
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
from collections.abc import Callable, Generator, Iterator
from typing import Any

import attrs

from kdisco._attempts import Outcome
from kdisco._deadline import Clock, Deadline
from kdisco._exceptions import AccessDenied, TransientError
from kdisco._forksafe import after_fork_in_child
from kdisco._models import Freshness, Resolution
from kdisco._names import Query
from kdisco._notify import Notifier
from kdisco._policies import RetryPolicy, WatchCachePolicy
from kdisco._strategies.base import Miss
from kdisco._telemetry import TELEMETRY

from .client import (
    Cutoff,
    Json,
    KubeClient,
    cutoff_after,
    loads_in_steps,
    pages,
    raise_for_status,
    status_message,
)
from .objects import (
    SERVICE_NAME_LABEL,
    MalformedObject,
    ServiceInfo,
    SliceInfo,
    finish,
    list_items,
    object_name,
    resolve_steps,
    services_path,
    slices_path,
)

log = logging.getLogger("kdisco")

_THREAD_PREFIX = "kdisco-watch"
#: Longest watch event line kept: a Service or EndpointSlice is at most a few hundred KB
#: (etcd's request limit is 1.5 MiB); a longer line is a broken or hostile server.
MAX_LINE = 4 * 1024 * 1024


class _Gone(Exception):
    """410: the resourceVersion is too old for a watch; only a re-list helps."""


class _Stopped(Exception):
    pass


class _Silent(Exception):
    """The read timeout passed on an open watch without a byte."""


class _Valid:
    """``Freshness.valid`` for answers from the cache: two attribute reads per check."""

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
        client: Callable[[], KubeClient],
        policy: WatchCachePolicy,
        clock: Clock,
        counter: Iterator[int],
        notifier: Notifier,
    ) -> None:
        self.namespace = namespace
        self._clock = clock
        self._counter = counter
        self._notifier = notifier
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.services: dict[str, ServiceInfo] = {}
        self._service_rv: dict[str, str] = {}
        self.slices: dict[str, SliceInfo] = {}
        self.by_service: dict[str, dict[str, SliceInfo]] = {}
        #: Service name -> version; bumped by any change to the Service or its slices.
        self.versions: dict[str, int] = {}
        #: Service name -> why its object was refused (see ``_ingest_service``).
        self.malformed: dict[str, str] = {}
        #: Slice name -> (its Service, why it was refused).
        self._bad_slices: dict[str, tuple[str, str]] = {}
        #: A fresh number each time both informers are synced; -1 while not.
        self.epoch = -1
        self._stopped = False
        #: Called once the cache is ready (see ``on_ready``).
        self._waiters: list[Callable[[], None]] = []
        self._informers = (
            _Informer(self, "services", client, policy, clock),
            _Informer(self, "endpointslices", client, policy, clock),
        )

    def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def stop(self) -> None:
        """Tell both informers to stop (cutting their requests); does not wait."""
        with self._ready:
            self._stopped = True
            self._ready.notify_all()
            waiters = self._take_waiters()
        for informer in self._informers:
            informer.stop()
        _call_all(waiters)

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

    def _ready_now(self) -> bool:
        """Synced, or every informer has tried (and failed), or stopped: waiting for a
        first list any longer would be in vain. Caller holds the lock."""
        return self.epoch >= 0 or self._stopped or all(i.tried for i in self._informers)

    def wait_synced(self, timeout: float) -> bool:
        """Wait for the first list, unless every informer has already tried and failed."""
        with self._ready:
            self._ready.wait_for(self._ready_now, timeout)
            return self.epoch >= 0

    def on_ready(self, callback: Callable[[], None]) -> Callable[[], None]:
        """``wait_synced`` for the event loop: call ``callback`` once the wait is over
        (at once if it is), from the thread that ends it. Returns a function that
        withdraws the callback if it has not been called."""
        with self._ready:
            if not self._ready_now():
                self._waiters.append(callback)
                return lambda: self._withdraw(callback)
        callback()
        return _nothing

    def _withdraw(self, callback: Callable[[], None]) -> None:
        with self._ready:
            if callback in self._waiters:
                self._waiters.remove(callback)

    def _take_waiters(self) -> list[Callable[[], None]]:
        # Caller holds the lock; the waiters are called after it is released.
        if not self._waiters or not self._ready_now():
            return []
        waiters, self._waiters = self._waiters, []
        return waiters

    def resolve(self, query: Query) -> Resolution | Miss | None:
        """The answer from memory, or None when the cache is not synced."""
        return finish(self.resolving(query))

    def resolving(self, query: Query) -> Generator[None, None, Resolution | Miss | None]:
        """``resolve`` in steps (``objects.resolve_steps``): for the event loop, which
        runs at each pause while a big Service is merged."""
        name = query.service.name
        with self._lock:
            epoch = self.epoch
            if epoch < 0:
                return None
            version = self.versions.get(name, 0)
            info = self.services.get(name)
            slices = list(self.by_service.get(name, {}).values())
            confirmed = self.confirmed_at()
            refused = self.malformed.get(name) or next(
                (why for svc, why in self._bad_slices.values() if svc == name), None
            )
        if refused is not None:
            # Not a Miss: the Service may well exist; what the API sent cannot be used.
            raise MalformedObject(f"the API sent a malformed object: {refused}")
        if info is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"the API has no Service {name!r} in namespace {self.namespace!r} (watch cache)",
            )
        result = yield from resolve_steps(query, info, lambda: slices)
        if isinstance(result, Resolution):
            result = attrs.evolve(
                result,
                freshness=Freshness(
                    clock=self._clock,
                    fetched_at=confirmed,
                    valid=_Valid(self, name, version, epoch),
                    confirmed=self.confirmed_at,
                ),
            )
        return result

    # -- writing (informer threads) ----------------------------------------------

    def _bump(self, names: set[str]) -> None:
        # Caller holds the lock.
        for name in names:
            if name:
                self.versions[name] = next(self._counter)

    def _publish(self, names: set[str]) -> None:
        for name in names:
            if name:
                self._notifier.publish(self.namespace, name)

    def replace(self, resource: str, items: list[Json]) -> None:
        """A full list: keep unchanged objects as they are, rebuild the rest."""
        changed: set[str] = set()
        with self._lock:
            if resource == "services":
                seen = {self._ingest_service(item, changed) for item in items}
                gone = (set(self.services) | set(self.malformed)) - seen
                for name in gone:
                    changed |= self._forget_service(name)
            else:
                seen = {self._ingest_slice(item, changed) for item in items}
                for name in (set(self.slices) | set(self._bad_slices)) - seen:
                    changed |= self._drop_slice(name)
            self._bump(changed)
        self._publish(changed)

    def apply(self, resource: str, kind: str, obj: Json) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        changed: set[str] = set()
        with self._lock:
            name = object_name(obj)
            if not self._ours(obj):
                return
            if resource == "services":
                if kind == "DELETED":
                    changed = self._forget_service(name)
                else:
                    self._ingest_service(obj, changed)
            elif kind == "DELETED":
                changed = self._drop_slice(name)
            else:
                self._ingest_slice(obj, changed)
            if not changed:
                return
            self._bump(changed)
        self._publish(changed)

    def _ours(self, obj: Json) -> bool:
        """Whether ``obj`` belongs in this namespace's cache (a confused or hostile
        server can send another namespace's objects)."""
        meta = obj.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns is None or ns == self.namespace

    def _ingest_service(self, obj: Json, changed: set[str]) -> str:
        """Store one Service (caller holds the lock); returns its name.

        A malformed Service is remembered with its reason, never stored half-read: a
        lookup of it then says what is wrong, and every other Service of the
        namespace goes on being answered from the cache.
        """
        name = object_name(obj)
        if not self._ours(obj):
            return name
        rv = _resource_version(obj)
        old_rv = self._service_rv.get(name)
        if rv and old_rv and (rv == old_rv or _older(rv, old_rv)):
            return name  # unchanged, or an older copy arriving late
        self._service_rv[name] = rv
        try:
            info = ServiceInfo.from_json(obj)
        except MalformedObject as exc:
            if self.malformed.get(name) != str(exc):
                self.malformed[name] = str(exc)
                self.services.pop(name, None)
                changed.add(name)
                log.warning("kdisco: ignoring a malformed Service: %s", exc)
            return name
        if self.malformed.pop(name, None) is not None or self.services.get(name) != info:
            changed.add(name)  # (a status or annotation change leaves answers valid)
        self.services[name] = info
        return name

    def _forget_service(self, name: str) -> set[str]:
        self._service_rv.pop(name, None)
        had = self.services.pop(name, None) is not None
        had = self.malformed.pop(name, None) is not None or had
        return {name} if had else set()

    def _ingest_slice(self, obj: Json, changed: set[str]) -> str:
        """Store one EndpointSlice (caller holds the lock); returns its name."""
        name = object_name(obj)
        if not self._ours(obj):
            return name
        rv = _resource_version(obj)
        old = self.slices.get(name)
        if (
            rv
            and old is not None
            and (rv == old.resource_version or _older(rv, old.resource_version))
        ):
            return name
        try:
            sl = SliceInfo.from_json(obj)
        except MalformedObject as exc:
            service = _service_label(obj)
            changed |= self._drop_slice(name)
            if self._bad_slices.get(name) != (service, str(exc)):
                self._bad_slices[name] = (service, str(exc))
                changed.add(service)
                log.warning("kdisco: ignoring a malformed EndpointSlice: %s", exc)
            return name
        bad = self._bad_slices.pop(name, None)
        if bad is not None:
            changed.add(bad[0])
        changed |= self._put_slice(sl, old)
        return name

    def _put_slice(self, sl: SliceInfo, old: SliceInfo | None) -> set[str]:
        changed = {sl.service}
        if old is not None and old.service != sl.service:
            self.by_service.get(old.service, {}).pop(old.name, None)
            changed.add(old.service)
        self.slices[sl.name] = sl
        self.by_service.setdefault(sl.service, {})[sl.name] = sl
        return changed

    def _drop_slice(self, name: str) -> set[str]:
        bad = self._bad_slices.pop(name, None)
        old = self.slices.pop(name, None)
        if old is None:
            return set() if bad is None else {bad[0]}
        group = self.by_service.get(old.service, {})
        group.pop(name, None)
        if not group:
            self.by_service.pop(old.service, None)
        return {old.service}

    def set_synced(self) -> None:
        with self._ready:
            regained = self.epoch < 0 and all(i.synced for i in self._informers)
            if regained:
                self.epoch = next(self._counter)
            self._ready.notify_all()
            waiters = self._take_waiters()
        _call_all(waiters)
        if regained:
            # Watchers holding answers read directly meanwhile can switch back to memory.
            self._notifier.publish(self.namespace)

    def set_unsynced(self) -> None:
        with self._ready:
            was = self.epoch
            self.epoch = -1
            self._ready.notify_all()
            # A failed first list (``tried``) ends the wait too.
            waiters = self._take_waiters()
        _call_all(waiters)
        if was >= 0:
            self._notifier.publish(self.namespace)


def _nothing() -> None:
    pass


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


class _Informer(threading.Thread):
    """List, then watch, one resource of one namespace; forever, until stopped."""

    def __init__(
        self,
        cache: NamespaceCache,
        resource: str,
        client: Callable[[], KubeClient],
        policy: WatchCachePolicy,
        clock: Clock,
    ) -> None:
        super().__init__(name=f"{_THREAD_PREFIX}-{cache.namespace}-{resource}", daemon=True)
        self._cache = cache
        self.resource = resource
        self._client = client
        self._policy = policy
        self._clock = clock
        self._stopping = threading.Event()
        self._cut_lock = threading.Lock()
        self._cut: Cutoff | None = None
        self._backoff = RetryPolicy(initial=policy.backoff_initial, maximum=policy.backoff_max)
        if resource == "services":
            self._path = services_path(cache.namespace)
            self._selector: list[tuple[str, str]] = []
            self._resource_name = "services"
        else:
            self._path = slices_path(cache.namespace)
            # Only slices that belong to a Service (the label's presence).
            self._selector = [("labelSelector", SERVICE_NAME_LABEL)]
            self._resource_name = "endpointslices.discovery.k8s.io"
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
        self.reconnect()

    def reconnect(self) -> None:
        """Cut the request in flight; unless stopping, the informer opens a new one."""
        with self._cut_lock:
            cut = self._cut
        if cut is not None:
            cut.fire()

    def run(self) -> None:
        rv: str | None = None
        listed_at = -math.inf
        failures = 0
        denied = 0
        while not self._stopping.is_set():
            try:
                if rv is not None and self._clock() - listed_at >= self._policy.relist_interval:
                    TELEMETRY.relist(
                        self._cache.namespace,
                        self.resource,
                        "interval",
                        f"every {self._policy.relist_interval:g} s",
                    )
                    rv = None
                if rv is None:
                    rv = self._list()
                    listed_at = self._clock()
                    self._mark_synced()
                    failures = denied = 0
                until = listed_at + self._policy.relist_interval
                rv = self._watch(rv, until)
                failures = 0
            except _Stopped:
                break
            except _Silent:
                # No byte for read_timeout seconds: assume the connection died quietly
                # and re-open from the last resourceVersion at once. Only if that fails
                # is the cache marked not synced.
                TELEMETRY.reconnect(
                    self._cache.namespace,
                    self.resource,
                    "silent",
                    f"no event for {self._policy.read_timeout:g} s",
                    warn=True,
                )
                continue
            except _Gone as exc:
                # Events were lost: answers may be behind until the re-list is done.
                rv = None
                self._mark_unsynced(f"{self.resource}: {exc}; re-listing")
                TELEMETRY.relist(self._cache.namespace, self.resource, "expired", str(exc))
                # A compaction or an apiserver restart sends 410 to every client at
                # once: a short jittered pause spreads their re-lists.
                self._stopping.wait(self._backoff.wait_for(1))
            except AccessDenied as exc:
                failures += 1
                denied += 1
                self._mark_unsynced(f"{self.resource}: {exc.message}")
                # Said once below, when the denial lasts; counted every time.
                TELEMETRY.reconnect(
                    self._cache.namespace, self.resource, "denied", exc.message, warn=False
                )
                # A restarting apiserver denies everything until its RBAC cache has
                # loaded; only a denial that lasts is worth a warning.
                if denied == 3 and not self._denied_logged:
                    self._denied_logged = True
                    log.warning(
                        "kdisco: watch cache off for namespace %r (%s); reading the API "
                        "directly instead (grant 'list' and 'watch' on services and "
                        "endpointslices to use it)",
                        self._cache.namespace,
                        exc.message,
                    )
                # Backoff with full jitter, as for any failure: a fleet of clients
                # denied together must not retry together.
                self._stopping.wait(self._backoff.wait_for(min(failures, 32)))
            except Exception as exc:
                if self._stopping.is_set():
                    break
                failures += 1
                self._mark_unsynced(f"{self.resource}: {_describe(exc)}")
                # A warning for the first failure of a run; the retries of an outage
                # that lasts are counted, and logged at DEBUG.
                TELEMETRY.reconnect(
                    self._cache.namespace,
                    self.resource,
                    "error",
                    _describe(exc),
                    warn=failures == 1,
                )
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

    def _open(self, query: list[tuple[str, str]], verb: str, seconds: float) -> tuple[Any, Cutoff]:
        """Open one request under a cut-off ``stop()`` can fire; returns it unread."""
        if self._stopping.is_set():
            raise _Stopped
        cut = Cutoff()
        with self._cut_lock:
            self._cut = cut
        with cutoff_after(seconds, cut):
            try:
                response = self._client().open(
                    self._path,
                    self._selector + query,
                    connect_timeout=self._policy.connect_timeout,
                    read_timeout=self._policy.read_timeout,
                )
            except Exception:
                if self._stopping.is_set():
                    raise _Stopped from None
                raise
        if response.status == 410:
            body = response.read(65536)
            response.release_conn()
            raise _Gone(f"HTTP 410 Gone: {status_message(body)}")
        if not 200 <= response.status < 300:
            body = response.read(65536)
            response.release_conn()
            what = (verb, self._resource_name, self._cache.namespace)
            if raise_for_status(response.status, body, what):
                raise TransientError(f"{verb} {self.resource}: HTTP 404 (namespace missing?)")
        return response, cut

    def _list(self) -> str:
        items: list[Json] = []
        last: Json = {}
        for page in pages(self._page):
            items.extend(list_items(page, f"{self.resource} list"))
            last = page
        self.lists += 1
        self._cache.replace(self.resource, items)
        meta = last.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        return rv if isinstance(rv, str) else ""

    def _page(self, token: str | None) -> Json:
        query = [("limit", str(self._policy.page_size))]
        if token:
            query.append(("continue", token))
        # A list page gets connect + read timeout as a whole, not per recv.
        budget = self._policy.connect_timeout + self._policy.read_timeout
        response, cut = self._open(query, "list", budget)
        try:
            with cutoff_after(budget, cut):
                try:
                    body = response.data
                except Exception:
                    if self._stopping.is_set():
                        raise _Stopped from None
                    raise
            if self._stopping.is_set():
                raise _Stopped
            # Item by item, so that the GIL passes to other threads (an event loop's)
            # between items, not only after a whole page.
            page = finish(loads_in_steps(body))
        except ValueError as exc:
            raise TransientError(f"list {self.resource}: response is not JSON") from exc
        finally:
            response.release_conn()
        if not isinstance(page, dict):
            raise TransientError(f"list {self.resource}: response is not a JSON object")
        return page

    def _watch(self, rv: str, until: float) -> str:
        """One watch request, streamed until the server ends it; returns the last rv."""
        left = until - self._clock()
        if left <= 0:
            return rv
        seconds = max(1, int(min(self._policy.watch_timeout, left)))
        query = [
            ("watch", "true"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(seconds)),
        ]
        # Headers must come within the usual budget; the body is a stream that the
        # server ends after ``seconds`` (and the read timeout bounds each silence).
        response, cut = self._open(
            query, "watch", self._policy.connect_timeout + self._policy.read_timeout
        )
        try:
            with cutoff_after(math.inf, cut):
                if self._stopping.is_set():
                    raise _Stopped
                self.watches += 1
                self._mark_synced()
                for line in _lines(response):
                    rv = self._event(line, rv)
                    if self._clock() >= until:
                        # relist_interval is kept here, not left to the server's
                        # timeoutSeconds: a server that keeps a watch open with
                        # bookmarks would otherwise never be re-listed.
                        break
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
            # Closed, not just released: a watch left mid-stream (stopped, cut, or
            # ended here for a re-list) has unread bytes that must never reach the
            # next request on a pooled connection.
            response.close()
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
            # A Status code is an int; a server that sends "410" still means Gone.
            if str(code).strip() == "410":
                raise _Gone(f"watch ERROR 410: {message}")
            raise TransientError(f"watch {self.resource}: ERROR event {code}: {message}")
        self.confirmed_at = self._clock()
        if not isinstance(obj, dict):
            if kind == "BOOKMARK":
                return rv  # a bookmark without an object still says the watch is alive
            raise TransientError(f"watch {self.resource}: event object is not a JSON object")
        new_rv = _resource_version(obj) or rv
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._cache.apply(self.resource, kind, obj)
        # Never rewind the resume point: an older version arriving late is stale news.
        return rv if _older(new_rv, rv) else new_rv


def _resource_version(obj: Json) -> str:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) else ""


def _older(rv: str, than: str) -> bool:
    """Whether ``rv`` is older than ``than``. resourceVersions are opaque, but the API
    server's are integers (etcd revisions); only those are compared."""
    return rv.isdigit() and than.isdigit() and int(rv) < int(than)


def _service_label(obj: Json) -> str:
    meta = obj.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    value = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else ""


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-delimited JSON from a streamed response, as each chunk arrives.

    Chunks are kept in a list until a newline arrives (never re-joined per chunk), and
    a line longer than ``MAX_LINE`` ends the watch: a hostile or broken server must
    not grow memory without bound.
    """
    parts: list[bytes] = []
    size = 0
    for chunk in response.stream(65536, decode_content=True):
        if not chunk:
            continue
        if b"\n" not in chunk:
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_LINE:
                raise TransientError(f"watch line over {MAX_LINE} bytes; re-opening")
            continue
        head, *complete, tail = chunk.split(b"\n")
        parts.append(head)
        first = b"".join(parts)
        if first.strip():
            yield first
        for line in complete:
            if line.strip():
                yield line
        parts = [tail]
        size = len(tail)
    rest = b"".join(parts)
    if rest.strip():
        yield rest


def _is_read_timeout(exc: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ReadTimeoutError | TimeoutError):
            return True
        seen = seen.__context__
    return False


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

    def __init__(
        self,
        client: Callable[[], KubeClient],
        policy: WatchCachePolicy,
        clock: Clock,
        notifier: Notifier,
    ) -> None:
        self._client = client
        self.policy = policy
        self._clock = clock
        self._notifier = notifier
        self._lock = threading.Lock()
        self._namespaces: dict[str, NamespaceCache] = {}
        self._counter = itertools.count(1)
        self._closed = False
        _LIVE.add(self)
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: the informer threads are gone; start afresh on next use.

        Answers from the old caches stop being valid (their epoch is void), so the
        child asks again instead of serving the parent's last list as current.
        """
        self._lock = threading.Lock()
        for cache in self._namespaces.values():
            cache.epoch = -1
        self._namespaces = {}

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
                    namespace,
                    self._client,
                    self.policy,
                    self._clock,
                    self._counter,
                    self._notifier,
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

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss | None:
        """``lookup`` for the event loop: the wait for a first list does not block it,
        and the answer is built from memory on the loop in steps (no I/O; the lock is
        held only to copy what the answer needs)."""
        cache = self.namespace(query.service.namespace)
        if cache is None:
            return None
        from .aioclient import run_steps, wait_for_callback

        if not cache.synced:
            await wait_for_callback(cache.on_ready, deadline.remaining() * self.policy.sync_wait)
        return await run_steps(cache.resolving(query))

    def problem(self, namespace: str) -> str | None:
        cache = self._namespaces.get(namespace)
        return None if cache is None else cache.problem

    def threads(self) -> list[_Informer]:
        return [t for c in list(self._namespaces.values()) for t in c.threads]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread; ``timeout`` bounds the whole stop, not each thread."""
        caches = self._signal_stop()
        join_all([t for c in caches for t in c.threads], timeout)
        self._after_stop(caches)

    async def astop(self, timeout: float = 5.0) -> None:
        """``stop`` for the event loop: the threads' end is awaited, not joined."""
        from .aioclient import threads_ended

        caches = self._signal_stop()
        await threads_ended([t for c in caches for t in c.threads], timeout)
        self._after_stop(caches)

    def _signal_stop(self) -> list[NamespaceCache]:
        """Close the cache to new namespaces and tell every informer to stop."""
        with self._lock:
            self._closed = True
            caches = list(self._namespaces.values())
            self._namespaces.clear()
        for cache in caches:
            cache.stop()
        return caches

    def _after_stop(self, caches: list[NamespaceCache]) -> None:
        for cache in caches:
            cache.set_unsynced()
        self._notifier.publish_all()
