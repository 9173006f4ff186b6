"""The ``api`` strategy: the Service and its EndpointSlices from kube-apiserver.

All talking to the API is in ``kdisco._k8s``: ``client`` (credentials, transport,
errors), ``aioclient`` (the same on asyncio), ``objects`` (JSON → values) and
``informer`` (the shared watch cache). This module decides which of them to use for
a lookup. ``lookup`` and ``alookup`` make the same decisions: a direct read is one
sans-I/O plan (``direct_read``) that each of them drives with its own client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from kdisco._attempts import Outcome
from kdisco._deadline import Clock, Deadline
from kdisco._exceptions import API_SAID, AccessDenied, ConfigurationError, TransientError
from kdisco._forksafe import after_fork_in_child
from kdisco._k8s import routes
from kdisco._k8s.client import KubeClient, What, continue_token, parse_list, parse_object
from kdisco._k8s.informer import WatchCache
from kdisco._k8s.objects import (
    ALL_SERVICES_PATH,
    SERVICE_NAME_LABEL,
    Json,
    ServiceInfo,
    SliceInfo,
    answer_without_slices,
    cluster_ip_answer,
    list_items,
    no_port,
    resolve_steps,
    service_path,
    slices_path,
)
from kdisco._models import Resolution, choose_port
from kdisco._names import Query
from kdisco._notify import Notifier
from kdisco._policies import WatchCachePolicy
from kdisco._settings import DEFAULT_SERVICEACCOUNT_DIR, Settings, has_in_cluster_credentials
from kdisco._validation import as_policy

from .base import Miss

if TYPE_CHECKING:
    from kdisco._k8s.aioclient import AsyncKubeClient, LoopClients

_SLICE_PAGE = 500
#: Slices per page for asyncio callers. A page is parsed on the event loop one slice
#: at a time (``PAUSE`` between), but its body is read and decoded whole: 50 slices
#: of 100 endpoints are ~1 MB, well under a millisecond of copying.
ASYNC_SLICE_PAGE = 50
#: What ``direct_read`` yields between slices: no request, a point where an asyncio
#: driver lets the event loop run (the sync driver just goes on).
PAUSE = None
_CREDENTIALS_LATE = (
    "loading the API credentials did not finish before the deadline "
    "(a slow kubeconfig exec plugin?); it goes on in the background"
)


class ApiStrategy:
    """Read the Service and every EndpointSlice labelled ``kubernetes.io/service-name``.

    With ``watch`` on (``Discoverer`` turns it on by default), answers come from a
    shared list+watch cache of the namespace (see ``WatchCachePolicy``): one list and
    one watch per namespace and resource, no request per lookup. While that cache is
    not synced (first lookup, broken watch, RBAC without list/watch), the Service and
    its slices are read directly, as with ``watch`` off.

    ClusterIP (and NodePort, LoadBalancer) Services answer with their ClusterIPs and
    the Service port, when their slices show a ready (or serving) endpoint behind
    them (else ``NO_READY_ENDPOINTS``; without ``list`` on EndpointSlices, the
    ClusterIP as DNS gives it); headless Services with each endpoint and its target port;
    ExternalName Services with the external name. Credentials: in-cluster (token
    re-read when the file changes) when ``KUBERNETES_SERVICE_HOST`` and the
    service-account directory are there, else the kubeconfig.

    ``alookup`` and ``aclose`` are the same for asyncio callers, and never block the
    event loop: waits on threads (credentials, a first list, the informers' end) are
    awaited, and direct reads go through aiohttp, one session per event loop.
    """

    name = "api"
    #: It answers with cluster addresses, or (``query.reach == "external"``) with the
    #: ways in from outside: see ``kdisco._k8s.routes``.
    views = ("cluster", "external")

    def __init__(
        self,
        *,
        client_factory: Callable[[], KubeClient] | None = None,
        kubeconfig: Sequence[str] = (),
        context: str | None = None,
        serviceaccount_dir: str | Path = DEFAULT_SERVICEACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        watch: WatchCachePolicy | bool = False,
        clock: Clock = time.monotonic,
        notifier: Notifier | None = None,
    ) -> None:
        policy = as_policy(watch, WatchCachePolicy, where="watch")
        self._environ = {} if environ is None else environ
        self._sa_dir = Path(serviceaccount_dir)
        self._kubeconfig = tuple(kubeconfig)
        self._context = context
        self._factory = client_factory
        self._lock = threading.Lock()
        self._client: KubeClient | None = None
        self._building: _Building | None = None
        self._loop_clients: LoopClients | None = None
        self._not_applicable: str | None = None
        self._mode = "injected client" if client_factory else self._pick_mode()
        after_fork_in_child(self._after_fork)
        self._elsewhere = _Elsewhere(clock)
        #: Where the watch cache publishes changes (a Discoverer listens here).
        self.notifier = notifier if notifier is not None else Notifier()
        self._watch: WatchCache | None = (
            WatchCache(
                # An informer waits for credentials as long as for any response.
                lambda: self._api_client(Deadline(policy.connect_timeout + policy.read_timeout)),
                policy,
                clock,
                self.notifier,
            )
            if policy.enabled
            else None
        )

    def _pick_mode(self) -> str:
        if has_in_cluster_credentials(self._environ, self._sa_dir):
            return "in-cluster"
        if self._kubeconfig:
            return "kubeconfig"
        self._not_applicable = (
            f"no credentials: not in a cluster (no KUBERNETES_SERVICE_HOST with "
            f"{self._sa_dir}/token) and no kubeconfig (KUBECONFIG unset, no ~/.kube/config)"
        )
        return "none"

    @property
    def not_applicable(self) -> str | None:
        """Why this strategy cannot apply here at all (the chain then gives it no share
        of the deadline), or None."""
        return self._not_applicable

    def __repr__(self) -> str:
        return f"ApiStrategy({self._mode})"

    @property
    def mode(self) -> str:
        return self._mode

    def _build_client(self) -> KubeClient:
        if self._factory is not None:
            return self._factory()
        if self._mode == "in-cluster":
            return KubeClient.in_cluster(self._sa_dir, self._environ)
        return KubeClient.from_kubeconfig(self._kubeconfig, self._context)

    def client(self, deadline: Deadline) -> KubeClient:
        """The client this strategy reads with (built once, as for a lookup, and
        waited for until ``deadline``): for ``kdisco doctor``'s reads.

        Raises:
            TransientError: The credentials were not loaded by the deadline.
        """
        return self._api_client(deadline)

    def _api_client(self, deadline: Deadline | None = None) -> KubeClient:
        """The client, built once. Building can run a kubeconfig's exec credential
        plugin, which may take any time: it runs in a thread of its own, and each
        caller waits for it only as long as its own deadline allows (no lock is held
        while waiting, so no caller waits on another's)."""
        got = self._client_or_building()
        if isinstance(got, KubeClient):
            return got
        remaining = None if deadline is None else deadline.remaining()
        if not got.done.wait(remaining):
            raise TransientError(_CREDENTIALS_LATE)
        return self._built(got)

    async def _aapi_client(self, deadline: Deadline) -> KubeClient:
        """``_api_client`` for the event loop: the wait for the building thread is
        awaited, within the deadline."""
        got = self._client_or_building()
        if isinstance(got, KubeClient):
            return got
        if not got.done.is_set():
            from kdisco._k8s.aioclient import wait_for_callback

            if not await wait_for_callback(got.on_done, deadline.remaining()):
                raise TransientError(_CREDENTIALS_LATE)
        return self._built(got)

    def _client_or_building(self) -> KubeClient | _Building:
        with self._lock:
            if self._client is not None:
                return self._client
            if self._building is None:
                self._building = _Building(self._build_client)
            return self._building

    def _built(self, building: _Building) -> KubeClient:
        """The client ``building`` made (kept for every later caller), or its error."""
        with self._lock:
            if self._building is building:
                self._building = None
                if building.client is not None:
                    self._client = building.client
            if building.error is not None:
                raise building.error
            assert building.client is not None
            return building.client

    def _after_fork(self) -> None:
        # The pooled connections are the parent's: a child talking on them would
        # interleave with it. Drop them (unclosed: closing would shut the parent's
        # TLS sessions down); the child connects afresh.
        self._lock = threading.Lock()
        self._client = None
        self._building = None
        # aiohttp sessions too: their loops, if any, are the parent's.
        self._loop_clients = None

    @property
    def watch_cache(self) -> WatchCache | None:
        return self._watch

    def close(self) -> None:
        """Stop every watch thread (blocked reads are cut off), then drop the client.
        (asyncio sessions are closed on their own loops; from a coroutine, use
        ``aclose``.)"""
        if self._watch is not None:
            self._watch.stop()
        self._drop_clients()

    async def aclose(self) -> None:
        """``close`` for the event loop, which it never blocks: the informer threads
        are told to stop and their end is awaited (within the same 5 s as ``close``),
        then this loop's aiohttp session is closed (other loops' on their loops)."""
        if self._watch is not None:
            await self._watch.astop()
        loop_clients = self._loop_clients
        if loop_clients is not None:
            await loop_clients.aclose()
        self._drop_clients()

    def _drop_clients(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            loop_clients = self._loop_clients
        if loop_clients is not None:
            loop_clients.close()
        if client is not None:
            client.close()  # closes pooled sockets; nothing waits

    # -- the strategy ----------------------------------------------------------

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        if query.reach == "external":
            # Read directly: the watch cache holds Services and slices, not the
            # Ingresses and Nodes an external answer may need.
            with _explained_denial():
                return self._direct(query, deadline)
        if self._watch is None:
            return self._direct(query, deadline)
        cached = self._watch.lookup(query, deadline)
        if isinstance(cached, Miss) and cached.outcome is Outcome.NOT_FOUND:
            known = self._elsewhere.get(query)
            if known is not None:
                return known
            return self._elsewhere.put(
                query, self._drive(not_found(query, cached.reason), deadline)
            )
        if cached is not None:
            return cached
        try:
            return self._direct(query, deadline)
        except TransientError as exc:
            raise self._not_synced(query, exc) from exc

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """``lookup`` for asyncio callers (same answers, same errors)."""
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        if query.reach == "external":
            with _explained_denial():
                return await self._adirect(query, deadline)
        if self._watch is None:
            return await self._adirect(query, deadline)
        cached = await self._watch.alookup(query, deadline)
        if isinstance(cached, Miss) and cached.outcome is Outcome.NOT_FOUND:
            known = self._elsewhere.get(query)
            if known is not None:
                return known
            found = await self._adrive(not_found(query, cached.reason), deadline)
            return self._elsewhere.put(query, found)
        if cached is not None:
            return cached
        try:
            return await self._adirect(query, deadline)
        except TransientError as exc:
            raise self._not_synced(query, exc) from exc

    def _not_synced(self, query: Query, exc: TransientError) -> TransientError:
        assert self._watch is not None
        problem = self._watch.problem(query.service.namespace) or "first list not done"
        return TransientError(f"{exc}; watch cache not synced: {problem}")

    def node_zone(self, node: str, deadline: Deadline) -> str | None:
        """The ``topology.kubernetes.io/zone`` label of Node ``node``, or None when it
        has none or cannot be read (reading Nodes takes a ClusterRole: ``get`` on
        ``nodes``; most applications have none, and then say ``KDISCO_ZONE``)."""
        if self._not_applicable is not None:
            return None
        try:
            client = self._api_client(deadline)
            found = client.get_json(routes.node_path(node), (), deadline, ("get", "nodes", ""))
        except (TransientError, AccessDenied, ConfigurationError):
            return None
        meta = found.get("metadata") if isinstance(found, dict) else None
        labels = meta.get("labels") if isinstance(meta, dict) else None
        zone = labels.get(routes.ZONE_LABEL) if isinstance(labels, dict) else None
        return zone if isinstance(zone, str) and zone else None

    def _direct(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """GET the Service, then LIST its slices (``direct_read``)."""
        return self._drive(direct_read(query, _SLICE_PAGE), deadline)

    def _drive(self, plan: DirectRead, deadline: Deadline) -> Resolution | Miss:
        """Make a plan's requests with the sync client. A refused or failed request
        is thrown into the plan: it decides whether it can do without the answer."""
        client = self._api_client(deadline)
        try:
            step = next(plan)
            while True:
                if step is PAUSE:
                    step = plan.send(None)
                    continue
                try:
                    body = client.get_body(step.path, step.query, deadline, step.what)
                except (AccessDenied, TransientError) as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(body)
        except StopIteration as done:
            answer: Resolution | Miss = done.value
            return answer
        finally:
            plan.close()

    async def _adirect(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """``_direct`` on the loop: the same plan, aiohttp's requests, smaller pages,
        and the loop runs at every ``PAUSE``."""
        return await self._adrive(direct_read(query, ASYNC_SLICE_PAGE), deadline)

    async def _adrive(self, plan: DirectRead, deadline: Deadline) -> Resolution | Miss:
        """``_drive`` with the loop's aiohttp client."""
        import asyncio

        client = self._loop_client(await self._aapi_client(deadline))
        try:
            step = next(plan)
            while True:
                if step is PAUSE:
                    await asyncio.sleep(0)
                    step = plan.send(None)
                    continue
                try:
                    body = await client.get_body(step.path, step.query, deadline, step.what)
                except (AccessDenied, TransientError) as exc:
                    step = plan.throw(exc)
                    continue
                step = plan.send(body)
        except StopIteration as done:
            answer: Resolution | Miss = done.value
            return answer
        finally:
            plan.close()

    def _loop_client(self, client: KubeClient) -> AsyncKubeClient:
        from kdisco._k8s.aioclient import LoopClients

        with self._lock:
            if self._loop_clients is None:
                self._loop_clients = LoopClients()
            loop_clients = self._loop_clients
        return loop_clients.get(client)


@attrs.frozen
class Get:
    """One GET a direct read needs: the path, its query, and what it is for."""

    path: str
    query: tuple[tuple[str, str], ...]
    what: What


#: A direct read, sans I/O (see ``direct_read``).
DirectRead = Generator[Get | None, bytes | None, Resolution | Miss]


def direct_read(query: Query, page_size: int) -> DirectRead:
    """A direct read, sans I/O: GET the Service, then LIST its slices (page by page)
    when the answer needs them (every Service but an ExternalName, unless readiness
    is not asked about).

    Yields each request and is sent the body of its 2xx response (None for a 404).
    Between chunks of work (each slice decoded, each slice parsed, every
    ``MERGE_STEP`` endpoints merged) it yields ``PAUSE`` and is sent None back.
    Returns the answer. ``ApiStrategy._direct`` drives it with the sync client,
    ``_adirect`` with the asyncio one, so both make the same requests and decide the
    same way.
    """
    ns, name = query.service.namespace, query.service.name
    get = Get(service_path(ns, name), (), ("get", "services", ns))
    body = yield get
    if body is None:
        return (yield from not_found(query, f"the API has no Service {name!r} in namespace {ns!r}"))
    info = ServiceInfo.from_json(parse_object(body, get.what))
    if query.reach == "external" and info.type != "ExternalName":
        return (yield from external_read(query, info, page_size))
    early = answer_without_slices(query, info)
    if early is not None:
        return early
    if info.headless or query.backends:
        slices = yield from list_slices(query, info, page_size)
    else:
        # The slices tell whether anything behind the ClusterIP is ready. A Role
        # without ``list`` on EndpointSlices still gets the ClusterIP, as from DNS:
        # readiness is then not known.
        try:
            slices = yield from list_slices(query, info, page_size)
        except AccessDenied:
            return cluster_ip_answer(query, info)
    # (resolve_steps pauses by yielding None: PAUSE.)
    return (yield from resolve_steps(query, info, lambda: slices))


#: How many other namespaces a "not found" names, at most.
ELSEWHERE_LIMIT = 10
#: How long the watch cache's "not found" reuses what was found in other namespaces.
ELSEWHERE_TTL = 30.0
#: How many missing names that memory holds.
ELSEWHERE_KEPT = 256


def not_found(query: Query, reason: str) -> DirectRead:
    """The API's "no such Service" (decisive: the API holds every Service), and the
    namespaces where a Service of that name does exist, when this client may list
    Services cluster-wide (most applications may not: then the miss says nothing
    more). A failed or refused look elsewhere never turns the miss into an error."""
    name, ns = query.service.name, query.service.namespace
    what = ("list", "services", "")
    try:
        body = yield Get(
            ALL_SERVICES_PATH,
            (("fieldSelector", f"metadata.name={name}"), ("limit", str(ELSEWHERE_LIMIT + 1))),
            what,
        )
        page = {} if body is None else (yield from parse_list(body, what))
    except (AccessDenied, TransientError):
        return Miss(Outcome.NOT_FOUND, reason, decisive=True)
    found = sorted(
        {
            str(item["metadata"]["namespace"])
            for item in list_items(page, "ServiceList")
            if isinstance(item.get("metadata"), dict) and item["metadata"].get("namespace")
        }
        - {ns}
    )[:ELSEWHERE_LIMIT]
    if found:
        where = ", ".join(repr(n) for n in found)
        reason = f"{reason}; a Service {name!r} exists in namespace {where}"
    return Miss(Outcome.NOT_FOUND, reason, decisive=True, elsewhere=found)


def list_slices(
    query: Query, info: ServiceInfo, page_size: int
) -> Generator[Get | None, bytes | None, list[SliceInfo]]:
    """LIST the Service's EndpointSlices, page by page (part of ``direct_read``)."""
    ns, name = query.service.namespace, query.service.name
    prefer = info.slice_port_name(query.port)
    selector = (
        ("labelSelector", f"{SERVICE_NAME_LABEL}={name}"),
        ("limit", str(page_size)),
    )
    what = ("list", "endpointslices.discovery.k8s.io", ns)
    slices: list[SliceInfo] = []
    yield from list_all(
        slices_path(ns),
        selector,
        what,
        "EndpointSliceList",
        lambda item: slices.append(SliceInfo.from_json(item, prefer)),
    )
    return slices


def list_all(
    path: str,
    params: tuple[tuple[str, str], ...],
    what: What,
    kind: str,
    each: Callable[[Json], object],
) -> Generator[Get | None, bytes | None, None]:
    """LIST ``path`` page by page (``continue`` tokens), calling ``each`` on every item
    and pausing (``PAUSE``) after each, so that a big list never holds the event loop."""
    token: str | None = None
    while True:
        more = (("continue", token),) if token else ()
        body = yield Get(path, params + more, what)
        if body is None:
            return  # a missing namespace lists as 200 with no items; a 404 ends the list too
        page = yield from parse_list(body, what)
        for item in list_items(page, kind):
            each(item)
            yield PAUSE
        token = continue_token(page)
        if token is None:
            return


def external_read(query: Query, info: ServiceInfo, page_size: int) -> DirectRead:
    """The ways into the Service from outside the cluster (``reach="external"``), in
    the order ``kdisco._k8s.routes`` gives: its own load balancer addresses and
    external IPs; else the Ingresses of its namespace that lead to it; else, for a
    NodePort or LoadBalancer Service, node addresses with the node port."""
    ns, name = query.service.namespace, query.service.name
    chosen, ok = choose_port(info.ports, query.port)
    if not ok:
        return no_port(query, info.ports)
    own = routes.service_addresses(query, info, chosen)
    if own is not None:
        return own
    found: list[routes.IngressRoute] = []
    yield from list_all(
        routes.ingresses_path(ns),
        (("limit", str(page_size)),),
        ("list", "ingresses.networking.k8s.io", ns),
        "IngressList",
        lambda item: found.extend(routes.ingress_routes(item, name)),
    )
    urls, port = routes.route_endpoints(found, info.ports, chosen, any_port=query.port is None)
    if urls:
        return routes.answer(query, info, urls, port)
    looked_at = "no load balancer address or external IP, no Ingress leads to it"
    node_port = chosen.node_port if chosen else None
    if node_port is None:
        if info.type in ("NodePort", "LoadBalancer"):
            looked_at += f", and {chosen.label if chosen else 'it'} has no node port"
        return routes.no_route(query, info, looked_at=looked_at)
    only: frozenset[str] | None = None
    nodes: list[routes.NodeInfo] = []
    if info.external_traffic_policy == "Local":
        # Only nodes running a ready pod of the Service answer on its node port.
        slices = yield from list_slices(query, info, page_size)
        ready = sorted(
            {ep.node for sl in slices for ep in sl.endpoints(None) if ep.ready and ep.node}
        )
        only = frozenset(ready)
        for node in ready[: routes.LOCAL_NODES]:
            body = yield Get(routes.node_path(node), (), ("get", "nodes", ""))
            if body is not None:
                nodes.append(routes.NodeInfo.from_json(parse_object(body, ("get", "nodes", ""))))
    else:
        what = ("list", "nodes", "")
        body = yield Get(routes.NODES_PATH, (("limit", str(routes.NODE_PAGE)),), what)
        if body is not None:
            page = yield from parse_list(body, what)
            nodes = [routes.NodeInfo.from_json(item) for item in list_items(page, "NodeList")]
    endpoints = routes.node_endpoints(nodes, node_port, only=only)
    if not query.include_not_ready:
        endpoints = tuple(ep for ep in endpoints if ep.ready)
    if not endpoints:
        which = "Ready node" if only is None else "Ready node running one of its pods"
        looked_at += f"; node port {node_port}, but no {which} has an address"
        return routes.no_route(query, info, looked_at=looked_at)
    return routes.answer(query, info, endpoints, chosen)


@contextlib.contextmanager
def _explained_denial() -> Iterator[None]:
    """Say, in a refusal met while looking for a way in from outside, what it was for."""
    try:
        yield
    except AccessDenied as exc:
        # Said before the API's own words, so that it stays in the error's headline.
        refused, said, api_words = exc.message.partition(API_SAID)
        raise AccessDenied(
            f"{refused}; reach='external' reads the Service's Ingresses and its "
            "nodes (a ClusterRole: get/list on nodes) to find a way in from outside the "
            "cluster (see 'Permissions' in the README), or ask with reach='cluster'"
            f"{said}{api_words}",
            verb=exc.verb,
            resource=exc.resource,
            namespace=exc.namespace,
            status=exc.status,
        ) from exc


class _Elsewhere:
    """What ``not_found`` found for a name the watch cache has no Service for, kept for
    ``ELSEWHERE_TTL`` seconds: the cache answers "not found" without a request, and
    the look into other namespaces (a request) is made once in that time, not once
    per lookup of a missing name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, Resolution | Miss]] = {}

    def get(self, query: Query) -> Resolution | Miss | None:
        seen = self._seen.get((query.service.namespace, query.service.name))
        if seen is None or self._clock() - seen[0] > ELSEWHERE_TTL:
            return None
        return seen[1]

    def put(self, query: Query, result: Resolution | Miss) -> Resolution | Miss:
        if len(self._seen) >= ELSEWHERE_KEPT:
            self._seen.clear()  # names that do not exist are not worth an LRU
        self._seen[(query.service.namespace, query.service.name)] = (self._clock(), result)
        return result


class _Building:
    """A client being built in a thread of its own (see ``ApiStrategy._api_client``)."""

    def __init__(self, build: Callable[[], KubeClient]) -> None:
        self.done = threading.Event()
        self.client: KubeClient | None = None
        self.error: BaseException | None = None
        self._build = build
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        threading.Thread(target=self._run, name="kdisco-credentials", daemon=True).start()

    def on_done(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once the client is built or failed (at once if it is),
        from the building thread; returns a function that withdraws it."""
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return lambda: self._withdraw(callback)
        callback()
        return lambda: None

    def _withdraw(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _run(self) -> None:
        try:
            self.client = self._build()
        except BaseException as exc:  # handed to every waiting caller
            self.error = exc
        finally:
            with self._lock:
                self.done.set()
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()


def from_settings(settings: Settings, notifier: Notifier) -> ApiStrategy:
    """The registry's factory."""
    return ApiStrategy(
        kubeconfig=settings.kubeconfig,
        context=settings.context,
        serviceaccount_dir=settings.serviceaccount_dir,
        environ=settings.environ,
        watch=settings.api_watch,
        clock=settings.clock,
        notifier=notifier,
    )
