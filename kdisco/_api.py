"""The ``api`` strategy: the Service and its EndpointSlices from kube-apiserver.

The kubernetes client is used for configuration, authentication and transport only.
Responses are requested raw (``_preload_content=False``) and parsed with ``json`` into
kdisco's own objects: the client's models cost ~12x the parse time and ~2.7x the
memory for large EndpointSlice lists (FACTS.md §6), and we need none of their features.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._deadline import Deadline
from ._exceptions import AccessDenied, ConfigurationError, TransientError
from ._models import Endpoint, Outcome, Resolution, ServiceKind, ServicePort
from ._names import Query, parse_service_fqdn
from ._strategy import Miss

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
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self._sa_dir = Path(serviceaccount_dir)
        self._kubeconfig = kubeconfig
        self._context = context
        self._factory = client_factory
        self._lock = threading.Lock()
        self._client: Any = None
        self._not_applicable: str | None = None
        self._mode = "injected client" if client_factory else self._pick_mode()

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

    def close(self) -> None:
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
            body = response.data
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
            if page is None:  # namespace vanished between the two reads
                return slices
            slices.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return slices

    # -- the strategy ----------------------------------------------------------

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        if self._not_applicable is not None:
            return Miss(Outcome.NOT_APPLICABLE, self._not_applicable)
        svc = self._read_service(query, deadline)
        if svc is None:
            return Miss(
                Outcome.NOT_FOUND,
                f"the API has no Service {query.service.name!r} in namespace "
                f"{query.service.namespace!r}",
            )
        return resolve_service(query, svc, lambda: self._list_slices(query, deadline))


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


def resolve_service(
    query: Query, svc: Json, list_slices: Callable[[], list[Json]]
) -> Resolution | Miss:
    """Build the answer from a Service object, listing its slices only when headless."""
    service = query.service
    spec = svc.get("spec") or {}
    svc_type = spec.get("type") or "ClusterIP"
    ports = service_ports(spec)
    chosen, ok = _choose_port(ports, query.port)

    if svc_type == "ExternalName":
        external = str(spec.get("externalName") or "").removesuffix(".")
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

    cluster_ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    if cluster_ips and cluster_ips != ["None"]:
        return Resolution(
            service=service,
            kind=_KINDS.get(svc_type, ServiceKind.UNKNOWN),
            endpoints=tuple(
                Endpoint(host=ip, port=chosen.port if chosen else None) for ip in cluster_ips
            ),
            ports=ports,
            port=chosen,
            source="api",
        )

    slices = list_slices()
    everything = merge_slices(slices, chosen)
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    if query.include_not_ready or publish_all:
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
    """All endpoints of all slices (IPv4 and IPv6), de-duplicated, in a stable order.

    The same endpoint can sit in two slices while the controller moves it; the copy
    that is ready wins, so a move never hides a ready endpoint. A slice that lists
    ports but not the chosen one does not serve it (kube-proxy would not route that
    port to its endpoints), so its endpoints are left out; a slice without ports, or
    with the port's number unset, gives endpoints whose port is unknown (None).
    """
    wanted_name = (chosen.name or "") if chosen else None
    merged: dict[tuple[str, int | None], Endpoint] = {}
    for sl in sorted(slices, key=lambda s: str((s.get("metadata") or {}).get("name", ""))):
        if sl.get("addressType") == "FQDN":
            continue  # deprecated, and never written by the controller
        serves, port = _slice_port(sl, wanted_name)
        if not serves:
            continue
        for raw in sl.get("endpoints") or []:
            ep = _endpoint(raw, port)
            for address in raw.get("addresses") or []:
                key = (address, port)
                this = attrs.evolve(ep, host=address)
                old = merged.get(key)
                if old is None or (this.ready and not old.ready):
                    merged[key] = this
    return tuple(merged.values())


def _slice_port(sl: Json, wanted_name: str | None) -> tuple[bool, int | None]:
    """(whether the slice serves the wanted port, its target port if known)."""
    ports = sl.get("ports") or []
    if wanted_name is None or not ports:
        return True, None
    for p in ports:
        if (p.get("name") or "") == wanted_name:
            number = p.get("port")
            return True, (int(number) if number is not None else None)
    return False, None


def _endpoint(raw: Json, port: int | None) -> Endpoint:
    cond = raw.get("conditions") or {}
    # discovery/v1: ready nil means true; serving nil means "same as ready";
    # terminating nil means false.
    ready = cond.get("ready")
    ready = True if ready is None else bool(ready)
    serving = cond.get("serving")
    serving = ready if serving is None else bool(serving)
    ref = raw.get("targetRef") or {}
    return Endpoint(
        host="",
        port=port,
        ready=ready,
        serving=serving,
        terminating=bool(cond.get("terminating") or False),
        hostname=raw.get("hostname") or None,
        pod=ref.get("name") if ref.get("kind", "Pod") == "Pod" else None,
        node=raw.get("nodeName") or None,
        zone=raw.get("zone") or None,
    )
