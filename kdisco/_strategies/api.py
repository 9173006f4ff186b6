"""The ``api`` strategy: the Service and its EndpointSlices from kube-apiserver.

All talking to the API is in ``kdisco._k8s``: ``client`` (credentials, transport,
errors), ``objects`` (JSON → values) and ``informer`` (the shared watch cache).
This module decides which of them to use for a lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kdisco._attempts import Outcome
from kdisco._deadline import Clock, Deadline
from kdisco._exceptions import TransientError
from kdisco._forksafe import after_fork_in_child
from kdisco._k8s.client import Json, KubeClient, pages
from kdisco._k8s.informer import WatchCache
from kdisco._k8s.objects import (
    SERVICE_NAME_LABEL,
    ServiceInfo,
    SliceInfo,
    list_items,
    resolve_info,
    service_path,
    slices_path,
)
from kdisco._models import Resolution
from kdisco._names import Query
from kdisco._notify import Notifier
from kdisco._policies import WatchCachePolicy
from kdisco._settings import DEFAULT_SERVICEACCOUNT_DIR, Settings, has_in_cluster_credentials
from kdisco._validation import as_policy

from .base import Miss

_SLICE_PAGE = 500


class ApiStrategy:
    """Read the Service and every EndpointSlice labelled ``kubernetes.io/service-name``.

    With ``watch`` on (``Discoverer`` turns it on by default), answers come from a
    shared list+watch cache of the namespace (see ``WatchCachePolicy``): one list and
    one watch per namespace and resource, no request per lookup. While that cache is
    not synced (first lookup, broken watch, RBAC without list/watch), the Service and
    its slices are read directly, as with ``watch`` off.

    ClusterIP (and NodePort, LoadBalancer) Services answer with their ClusterIPs and
    the Service port; headless Services with each endpoint and its target port;
    ExternalName Services with the external name. Credentials: in-cluster (token
    re-read when the file changes) when ``KUBERNETES_SERVICE_HOST`` and the
    service-account directory are there, else the kubeconfig.
    """

    name = "api"

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
        self._not_applicable: str | None = None
        self._mode = "injected client" if client_factory else self._pick_mode()
        after_fork_in_child(self._after_fork)
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

    def _api_client(self, deadline: Deadline | None = None) -> KubeClient:
        """The client, built once. Building can run a kubeconfig's exec credential
        plugin, which may take any time: it runs in a thread of its own, and each
        caller waits for it only as long as its own deadline allows (no lock is held
        while waiting, so no caller waits on another's)."""
        with self._lock:
            if self._client is not None:
                return self._client
            building = self._building
            if building is None:
                building = self._building = _Building(self._build_client)
        remaining = None if deadline is None else deadline.remaining()
        if not building.done.wait(remaining):
            raise TransientError(
                "loading the API credentials did not finish before the deadline "
                "(a slow kubeconfig exec plugin?); it goes on in the background"
            )
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

    @property
    def watch_cache(self) -> WatchCache | None:
        return self._watch

    def close(self) -> None:
        """Stop every watch thread (blocked reads are cut off), then drop the client."""
        if self._watch is not None:
            self._watch.stop()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- the strategy ----------------------------------------------------------

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        if self._watch is None:
            return self._direct(query, deadline)
        cached = self._watch.lookup(query, deadline)
        if cached is not None:
            return cached
        try:
            return self._direct(query, deadline)
        except TransientError as exc:
            problem = self._watch.problem(query.service.namespace) or "first list not done"
            raise TransientError(f"{exc}; watch cache not synced: {problem}") from exc

    def _direct(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """GET the Service, then LIST its slices when headless."""
        ns, name = query.service.namespace, query.service.name
        client = self._api_client(deadline)
        svc = client.get_json(service_path(ns, name), (), deadline, ("get", "services", ns))
        if svc is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"the API has no Service {name!r} in namespace {ns!r}",
            )
        info = ServiceInfo.from_json(svc)
        prefer = info.slice_port_name(query.port)
        return resolve_info(
            query,
            info,
            lambda: [
                SliceInfo.from_json(sl, prefer) for sl in _list_slices(client, query, deadline)
            ],
        )


class _Building:
    """A client being built in a thread of its own (see ``ApiStrategy._api_client``)."""

    def __init__(self, build: Callable[[], KubeClient]) -> None:
        self.done = threading.Event()
        self.client: KubeClient | None = None
        self.error: BaseException | None = None
        self._build = build
        threading.Thread(target=self._run, name="kdisco-credentials", daemon=True).start()

    def _run(self) -> None:
        try:
            self.client = self._build()
        except BaseException as exc:  # handed to every waiting caller
            self.error = exc
        finally:
            self.done.set()


def _list_slices(client: KubeClient, query: Query, deadline: Deadline) -> list[Json]:
    """Every EndpointSlice of the Service, page by page, within ``deadline``."""
    ns = query.service.namespace
    base = [
        ("labelSelector", f"{SERVICE_NAME_LABEL}={query.service.name}"),
        ("limit", str(_SLICE_PAGE)),
    ]
    what = ("list", "endpointslices.discovery.k8s.io", ns)

    def fetch(token: str | None) -> Json | None:
        # A missing namespace lists as 200 with no items; a 404 ends the list too.
        query_args = base + ([("continue", token)] if token else [])
        return client.get_json(slices_path(ns), query_args, deadline, what)

    return [item for page in pages(fetch) for item in list_items(page, "EndpointSliceList")]


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
