"""The ``api`` strategy: the Service and its EndpointSlices from kube-apiserver.

The kubernetes client is used for configuration, authentication and transport only.
Responses are requested raw (``_preload_content=False``) and parsed with ``json`` into
kdisco's own objects: the client's models cost ~12x the parse time and ~2.7x the
memory for large EndpointSlice lists (FACTS.md §6), and we need none of their features.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._deadline import Clock, Deadline
from ._exceptions import AccessDenied, ConfigurationError, TransientError
from ._models import Endpoint, Outcome, Resolution, ServiceKind, ServicePort
from ._names import Query, parse_service_fqdn
from ._strategy import Miss
from ._watchcache import WatchCache, WatchCachePolicy, shutdown_response

DEFAULT_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_SLICE_PAGE = 500
_SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_KINDS = {
    "ClusterIP": ServiceKind.CLUSTER_IP,
    "NodePort": ServiceKind.NODE_PORT,
    "LoadBalancer": ServiceKind.LOAD_BALANCER,
    "ExternalName": ServiceKind.EXTERNAL_NAME,
}
#: Smallest I/O timeout handed to urllib3 (the client rejects 0).
_MIN_TIMEOUT = 0.01

Json = dict[str, Any]


class _TokenFile:
    """A bearer token file re-read whenever it changes on disk.

    Bound service-account tokens expire and the kubelet rotates the file; re-reading
    on change (one stat per request) avoids the 401s that a cached token causes.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def current(self) -> str:
        try:
            st = self._path.stat()
        except OSError as exc:
            raise ConfigurationError(f"cannot read token file {self._path}: {exc}") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                token = self._path.read_text().strip()
                if not token:
                    raise ConfigurationError(f"token file {self._path} is empty")
                self._token, self._stamp = token, stamp
            return self._token


def _in_cluster_client(sa_dir: Path, environ: Mapping[str, str]) -> Any:
    from kubernetes import client

    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    config = type.__call__(client.Configuration)
    config.host = f"https://{host}:{port}"
    ca = sa_dir / "ca.crt"
    if not ca.is_file():
        raise ConfigurationError(f"in-cluster credentials: {ca} is missing")
    config.ssl_ca_cert = str(ca)
    token = _TokenFile(sa_dir / "token")
    config.api_key["BearerToken"] = token.current()
    config.api_key_prefix["BearerToken"] = "Bearer"

    def refresh(cfg: Any) -> None:
        cfg.api_key["BearerToken"] = token.current()

    config.refresh_api_key_hook = refresh
    return _finish(config)


def _kubeconfig_client(path: str, context: str | None) -> Any:
    from kubernetes import client, config

    cfg = type.__call__(client.Configuration)
    try:
        # Passing client_configuration keeps the client's global default untouched.
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except Exception as exc:
        raise ConfigurationError(f"cannot load kubeconfig {path!r}: {exc}") from exc
    return _finish(cfg)


def _finish(cfg: Any) -> Any:
    from kubernetes import client

    # kdisco retries with its own backoff inside the caller's deadline; urllib3's own
    # retries would spend that deadline invisibly.
    cfg.retries = 0
    return client.ApiClient(configuration=cfg)


def kubeconfig_namespace(path: str, context: str | None = None) -> str | None:
    """The namespace of the kubeconfig's (current) context, if it sets one."""
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=path
        )
        if context:
            active = next((c for c in contexts if c.get("name") == context), active)
    except Exception:
        return None
    ns = (active or {}).get("context", {}).get("namespace")
    return ns if isinstance(ns, str) and ns else None


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
        client_factory: Callable[[], Any] | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        serviceaccount_dir: str | os.PathLike[str] = DEFAULT_SERVICEACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        watch: WatchCachePolicy | bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(watch, bool):
            watch = WatchCachePolicy(enabled=watch)
        elif not isinstance(watch, WatchCachePolicy):
            raise ConfigurationError(f"watch must be a bool or a WatchCachePolicy, not {watch!r}")
        self._environ = os.environ if environ is None else environ
        self._sa_dir = Path(serviceaccount_dir)
        self._kubeconfig = kubeconfig
        self._context = context
        self._factory = client_factory
        self._lock = threading.Lock()
        self._client: Any = None
        self._not_applicable: str | None = None
        self._mode = "injected client" if client_factory else self._pick_mode()
        self._clock = clock
        self._watch: WatchCache | None = (
            WatchCache(self._api_client, watch, clock) if watch.enabled else None
        )

    def _pick_mode(self) -> str:
        env = self._environ
        if env.get("KUBERNETES_SERVICE_HOST") and (self._sa_dir / "token").is_file():
            return "in-cluster"
        if self._kubeconfig or env.get("KUBECONFIG"):
            return "kubeconfig"
        if Path("~/.kube/config").expanduser().is_file():
            return "kubeconfig"
        self._not_applicable = (
            f"no credentials: not in a cluster (no KUBERNETES_SERVICE_HOST with "
            f"{self._sa_dir}/token) and no kubeconfig (KUBECONFIG unset, no ~/.kube/config)"
        )
        return "none"

    def __repr__(self) -> str:
        return f"ApiStrategy({self._mode})"

    @property
    def mode(self) -> str:
        return self._mode

    def _api_client(self) -> Any:
        with self._lock:
            if self._client is None:
                if self._factory is not None:
                    self._client = self._factory()
                elif self._mode == "in-cluster":
                    self._client = _in_cluster_client(self._sa_dir, self._environ)
                else:
                    path = (
                        self._kubeconfig
                        or self._environ.get("KUBECONFIG")
                        or str(Path("~/.kube/config").expanduser())
                    )
                    self._client = _kubeconfig_client(path, self._context)
            return self._client

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

    # -- HTTP ------------------------------------------------------------------

    def _get(
        self,
        call: Callable[..., Any],
        deadline: Deadline,
        what: tuple[str, str, str],
        **kwargs: Any,
    ) -> Json | None:
        """One GET, raw. None for 404; raises AccessDenied or TransientError."""
        from kubernetes.client.exceptions import ApiException

        remaining = deadline.remaining()
        if remaining <= 0:
            raise TransientError(f"no time left to {what[0]} {what[1]}")
        timeout = max(_MIN_TIMEOUT, remaining)
        try:
            response = call(_preload_content=False, _request_timeout=(timeout, timeout), **kwargs)
            # urllib3's read timeout bounds each recv(), not the body: a server that
            # trickles its reply would hold the caller far past the deadline. Cut the
            # connection when the deadline passes.
            cutoff = threading.Timer(deadline.remaining(), shutdown_response, (response,))
            cutoff.daemon = True
            cutoff.start()
            try:
                body = response.data
            finally:
                cutoff.cancel()
            if deadline.expired() and not body:
                raise TransientError("the response did not arrive before the deadline")
        except ApiException as exc:
            _api_error(exc, what)
            return None
        except ConfigurationError:
            raise
        except Exception as exc:
            # urllib3 connection refused/reset, timeouts, TLS handshakes cut short.
            raise TransientError(f"{what[0]} {what[1]}: {type(exc).__name__}: {exc}") from exc
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise TransientError(f"{what[0]} {what[1]}: response is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise TransientError(f"{what[0]} {what[1]}: response is not a JSON object")
        return parsed

    def _read_service(self, query: Query, deadline: Deadline) -> Json | None:
        from kubernetes.client import CoreV1Api

        ns = query.service.namespace
        return self._get(
            CoreV1Api(self._api_client()).read_namespaced_service,
            deadline,
            ("get", "services", ns),
            name=query.service.name,
            namespace=ns,
        )

    def _list_slices(self, query: Query, deadline: Deadline) -> list[Json]:
        from kubernetes.client import DiscoveryV1Api

        ns = query.service.namespace
        call = DiscoveryV1Api(self._api_client()).list_namespaced_endpoint_slice
        slices: list[Json] = []
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"_continue": token} if token else {}
            page = self._get(
                call,
                deadline,
                ("list", "endpointslices.discovery.k8s.io", ns),
                namespace=ns,
                label_selector=f"{_SERVICE_NAME_LABEL}={query.service.name}",
                limit=_SLICE_PAGE,
                **extra,
            )
            if page is None:  # a 404 (a missing namespace lists as 200, empty)
                return slices
            slices.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return slices

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
        """Today's path: GET the Service, then LIST its slices when headless."""
        svc = self._read_service(query, deadline)
        if svc is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"the API has no Service {query.service.name!r} in namespace "
                f"{query.service.namespace!r}",
            )
        info = ServiceInfo.from_json(svc)
        prefer = preferred_port_name(info, query.port)
        return resolve_info(
            query,
            info,
            lambda: [SliceInfo.from_json(sl, prefer) for sl in self._list_slices(query, deadline)],
        )


def _api_error(exc: Any, what: tuple[str, str, str]) -> None:
    verb, resource, namespace = what
    status = int(exc.status or 0)
    message = _status_message(exc)
    if status == 404:
        return
    if status in (401, 403):
        if status == 401:
            text = (
                f"the API rejected the credentials (401 Unauthorized) for {verb} {resource} "
                f"in namespace {namespace!r}: {message}"
            )
        else:
            text = (
                f"forbidden: needs {verb!r} on {resource!r} in namespace {namespace!r} "
                f"(a Role rule: apiGroups [{_api_group(resource)!r}], resources "
                f"[{resource.split('.')[0]!r}], verbs [{verb!r}]); the API said: {message}"
            )
        raise AccessDenied(text, verb=verb, resource=resource, namespace=namespace, status=status)
    if status == 429 or status >= 500 or status == 0:
        raise TransientError(f"{verb} {resource} in {namespace!r}: HTTP {status}: {message}")
    raise TransientError(f"{verb} {resource} in {namespace!r}: unexpected HTTP {status}: {message}")


def _api_group(resource: str) -> str:
    _, _, group = resource.partition(".")
    return group


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
        except (TypeError, ValueError):
            return str(body)[:300]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(getattr(exc, "reason", "") or "")


# -- turning API JSON into a Resolution (pure; tested against recorded API JSON) ------------


@attrs.frozen(kw_only=True)
class ServiceInfo:
    """What kdisco keeps of a Service: the few spec fields an answer is built from."""

    type: str = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()
    external_name: str = ""
    publish_not_ready: bool = False

    @classmethod
    def from_json(cls, svc: Json) -> ServiceInfo:
        spec = svc.get("spec") or {}
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        return cls(
            type=spec.get("type") or "ClusterIP",
            ports=service_ports(spec),
            cluster_ips=tuple(str(ip) for ip in ips if ip),
            external_name=str(spec.get("externalName") or "").removesuffix("."),
            publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        )


#: Strings repeated across thousands of endpoints (node and zone names, the pod name
#: that equals the hostname) are stored once; see ``SliceInfo``.
_intern = sys.intern


class SliceInfo:
    """One EndpointSlice as kdisco keeps it: its ports and ready-made ``Endpoint`` objects.

    The endpoints are built once, when the slice is read, for one target port (the one
    asked for, else the slice's first); other ports get evolved copies, made on first
    use and kept. Raw JSON dicts of a 10,000-endpoint Service take ~12 MB; this takes a
    fraction of it.
    """

    __slots__ = ("_by_port", "address_type", "name", "ports", "resource_version", "service")

    def __init__(
        self,
        *,
        name: str,
        service: str,
        address_type: str,
        ports: tuple[tuple[str, int | None], ...],
        endpoints: tuple[Endpoint, ...],
        port: int | None,
        resource_version: str = "",
    ) -> None:
        self.name = name
        self.service = service
        self.address_type = address_type
        self.ports = ports
        self.resource_version = resource_version
        self._by_port: dict[int | None, tuple[Endpoint, ...]] = {port: endpoints}

    @classmethod
    def from_json(cls, sl: Json, prefer: str | None = None) -> SliceInfo:
        """Build from API JSON; ``prefer`` names the port the endpoints are built for."""
        meta = sl.get("metadata") or {}
        ports = tuple(
            (str(p.get("name") or ""), int(p["port"]) if p.get("port") is not None else None)
            for p in sl.get("ports") or []
        )
        port: int | None = None
        if ports:
            port = ports[0][1]
            for pname, number in ports:
                if pname == prefer:
                    port = number
                    break
        return cls(
            name=str(meta.get("name", "")),
            service=str((meta.get("labels") or {}).get(_SERVICE_NAME_LABEL, "")),
            address_type=str(sl.get("addressType") or ""),
            ports=ports,
            endpoints=_endpoints(sl.get("endpoints") or (), port),
            port=port,
            resource_version=str(meta.get("resourceVersion", "")),
        )

    def port_for(self, wanted_name: str | None) -> tuple[bool, int | None]:
        """(whether the slice serves the wanted port, its target port if known)."""
        if wanted_name is None or not self.ports:
            return True, None
        for pname, number in self.ports:
            if pname == wanted_name:
                return True, number
        return False, None

    def endpoints(self, port: int | None) -> tuple[Endpoint, ...]:
        found = self._by_port.get(port)
        if found is None:
            base = next(iter(self._by_port.values()))
            found = tuple(attrs.evolve(ep, port=port) for ep in base)
            # A racing reader may build the same tuple: both are equal, either may stay.
            self._by_port[port] = found
        return found

    def __len__(self) -> int:
        return len(next(iter(self._by_port.values())))


def service_ports(spec: Json) -> tuple[ServicePort, ...]:
    return tuple(
        ServicePort(
            port=int(p["port"]),
            name=p.get("name") or None,
            protocol=p.get("protocol") or "TCP",
            app_protocol=p.get("appProtocol") or None,
        )
        for p in spec.get("ports") or []
    )


def _choose_port(
    ports: tuple[ServicePort, ...], wanted: int | str | None
) -> tuple[ServicePort | None, bool]:
    """(chosen, ok): ok is False when a port was asked for and none matches."""
    if wanted is None:
        return (ports[0] if ports else None), True
    for p in ports:
        if p.name == wanted or p.port == wanted:
            return p, True
    return None, False


def preferred_port_name(svc: Json | ServiceInfo, wanted: int | str | None) -> str | None:
    """The slice port name a query will read, so slices can be built for it directly."""
    ports = svc.ports if isinstance(svc, ServiceInfo) else service_ports(svc.get("spec") or {})
    chosen, _ = _choose_port(ports, wanted)
    return (chosen.name or "") if chosen else None


def resolve_service(
    query: Query, svc: Json, list_slices: Callable[[], list[Json]]
) -> Resolution | Miss:
    """Build the answer from a Service object, listing its slices only when headless."""
    info = ServiceInfo.from_json(svc)
    prefer = preferred_port_name(info, query.port)
    return resolve_info(
        query, info, lambda: [SliceInfo.from_json(sl, prefer) for sl in list_slices()]
    )


def resolve_info(
    query: Query, info: ServiceInfo, get_slices: Callable[[], list[SliceInfo]]
) -> Resolution | Miss:
    """Build the answer from kdisco's own Service and slice objects."""
    service = query.service
    ports = info.ports
    chosen, ok = _choose_port(ports, query.port)

    if info.type == "ExternalName":
        external = info.external_name
        if isinstance(query.port, int) and chosen is None:
            port: int | None = query.port  # ExternalName ports are advisory only
        elif not ok:
            target = parse_service_fqdn(external)
            if target is None or target.cluster_domain != service.cluster_domain:
                return _no_port(query, ports)
            # An alias of another Service: the chain follows it, and that Service's
            # own ports answer the port name.
            port = None
        else:
            port = chosen.port if chosen else None
        return Resolution(
            service=service,
            kind=ServiceKind.EXTERNAL_NAME,
            endpoints=(Endpoint(host=external, port=port),),
            ports=ports,
            port=chosen,
            external_name=external,
            source="api",
        )
    if not ok:
        return _no_port(query, ports)

    if info.cluster_ips and info.cluster_ips != ("None",):
        return Resolution(
            service=service,
            kind=_KINDS.get(info.type, ServiceKind.UNKNOWN),
            endpoints=tuple(
                Endpoint(host=ip, port=chosen.port if chosen else None) for ip in info.cluster_ips
            ),
            ports=ports,
            port=chosen,
            source="api",
        )

    slices = get_slices()
    everything = merge_slice_infos(slices, chosen)
    if query.include_not_ready or info.publish_not_ready:
        endpoints = everything
    else:
        endpoints = tuple(ep for ep in everything if ep.ready)
    if not endpoints:
        detail = (
            f"{len(everything)} endpoints in {len(slices)} EndpointSlices, none ready"
            if everything
            else f"{len(slices)} EndpointSlices with no endpoints"
            if slices
            else "no EndpointSlices"
        )
        return Miss(Outcome.NO_READY_ENDPOINTS, f"headless Service {service}: {detail}")
    return Resolution(
        service=service,
        kind=ServiceKind.HEADLESS,
        endpoints=endpoints,
        ports=ports,
        port=chosen,
        source="api",
    )


def _no_port(query: Query, ports: tuple[ServicePort, ...]) -> Miss:
    known = ", ".join(f"{p.name}={p.port}" if p.name else str(p.port) for p in ports) or "none"
    return Miss(
        Outcome.NO_SUCH_PORT,
        f"Service {query.service} declares no {query.describe_port()} (ports: {known})",
    )


def merge_slices(slices: list[Json], chosen: ServicePort | None) -> tuple[Endpoint, ...]:
    """``merge_slice_infos`` over API JSON."""
    prefer = (chosen.name or "") if chosen else None
    return merge_slice_infos([SliceInfo.from_json(sl, prefer) for sl in slices], chosen)


def merge_slice_infos(
    slices: Iterable[SliceInfo], chosen: ServicePort | None
) -> tuple[Endpoint, ...]:
    """All endpoints of all slices (IPv4 and IPv6), de-duplicated, in a stable order.

    The same endpoint can sit in two slices while the controller moves it; the copy
    that is ready wins, so a move never hides a ready endpoint. A slice that lists
    ports but not the chosen one does not serve it (kube-proxy would not route that
    port to its endpoints), so its endpoints are left out; a slice without ports, or
    with the port's number unset, gives endpoints whose port is unknown (None).
    """
    wanted_name = (chosen.name or "") if chosen else None
    merged: dict[tuple[str, int | None], Endpoint] = {}
    for sl in sorted(slices, key=lambda s: s.name):
        if sl.address_type == "FQDN":
            continue  # deprecated, and never written by the controller
        serves, port = sl.port_for(wanted_name)
        if not serves:
            continue
        for ep in sl.endpoints(port):
            key = (ep.host, port)
            old = merged.get(key)
            if old is None or (ep.ready and not old.ready):
                merged[key] = ep
    return tuple(merged.values())


def _endpoints(raws: Iterable[Json], port: int | None) -> tuple[Endpoint, ...]:
    """Endpoint objects for a slice's endpoints, one per address (the hot loop of ingest)."""
    out: list[Endpoint] = []
    append = out.append
    for raw in raws:
        cond = raw.get("conditions") or {}
        # discovery/v1: ready nil means true; serving nil means "same as ready";
        # terminating nil means false.
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        ref = raw.get("targetRef")
        pod = ref.get("name") if ref and ref.get("kind", "Pod") == "Pod" else None
        hostname = raw.get("hostname") or None
        if pod is not None and pod == hostname:
            pod = hostname  # one string object for both (StatefulSets)
        node = raw.get("nodeName")
        zone = raw.get("zone")
        for address in raw.get("addresses") or ():
            append(
                Endpoint(
                    host=address,
                    port=port,
                    ready=ready,
                    serving=serving,
                    terminating=bool(cond.get("terminating") or False),
                    hostname=hostname,
                    pod=pod,
                    node=_intern(node) if node else None,
                    zone=_intern(zone) if zone else None,
                )
            )
    return tuple(out)
