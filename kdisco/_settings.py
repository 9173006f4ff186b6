"""``Settings``: every setting of a ``Discoverer``, resolved and validated in one place.

Each value comes from the argument when one is given, else from its environment
variable, else from what the machine shows (the pod's files, resolv.conf, the
kubeconfig), else a default; ``Settings.sources`` records which, for error messages
and for troubleshooting. Every reader takes the environment mapping and file paths
as arguments, so tests build any pod or laptop they like without touching the real
process environment. Nothing here does network I/O.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._deadline import Clock
from ._exceptions import ConfigurationError, InvalidServiceName
from ._k8s.kubeconfig import kubeconfig_namespace, kubeconfig_paths
from ._names import check_cluster_domain, check_namespace
from ._policies import CachePolicy, RetryPolicy, Sleep, WatchCachePolicy
from ._strategies.base import Strategy
from ._validation import as_policy, parse_port_text, parse_timeout, read_text_file

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
DEFAULT_SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_STRATEGIES = ("dns", "env", "api")
#: Where answers should be reachable from (``reach=``, ``KDISCO_REACH``): ``cluster``
#: (ClusterIPs and pod IPs), ``external`` (load balancer addresses, node ports, Ingress
#: URLs), ``auto`` (cluster inside a pod, external outside when there is a way in).
REACHES = ("cluster", "external", "auto")
DEFAULT_REACH = "auto"


@attrs.frozen
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    #: ``options ndots:N`` (glibc's default 1 when none is set; glibc caps it at 15).
    ndots: int = 1

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ResolvConf:
        try:
            text = read_text_file(path, "resolv.conf")
        except ConfigurationError:
            # An unreadable resolv.conf (a directory, no permission, not text) says
            # nothing about a cluster: DNS then does not apply, as with none at all.
            return cls()
        if text is None:
            return cls()
        nameservers: list[str] = []
        search: list[str] = []
        ndots = 1
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                # The last search/domain line wins, as in glibc.
                search = [w.lower().rstrip(".") for w in words[1:]]
            elif words[0] == "options":
                for word in words[1:]:
                    key, _, value = word.partition(":")
                    if key == "ndots" and value.isdigit():
                        ndots = min(int(value), 15)
        return cls(tuple(nameservers), tuple(search), ndots)

    def cluster_domain(self) -> str | None:
        """The zone from the kubelet's search list ``<ns>.svc.<zone> svc.<zone> <zone>``.

        Matching the kubelet's pattern, not just the first ``svc`` label, keeps a
        namespace called ``svc`` (search ``svc.svc.cluster.local``) from looking like
        the zone ``svc.cluster.local``.
        """
        for first, second in zip(self.search, self.search[1:], strict=False):
            ns, sep, zone = first.partition(".svc.")
            if sep and ns and "." not in ns and second == f"svc.{zone}":
                return zone
        for entry in self.search:
            labels = entry.split(".")
            if len(labels) >= 3 and labels[1] == "svc":
                return ".".join(labels[2:])
        return None


@attrs.frozen
class DnsTarget:
    """One nameserver to ask."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_dns_server(text: str, *, where: str = "KDISCO_DNS_SERVER") -> DnsTarget:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 literal."""
    raw = text.strip()
    host, port_text = raw, ""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"{where}={text!r}: expected '[ipv6]:port'")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigurationError(
            f"{where}={text!r}: {host!r} is not an IP address (a nameserver must be an IP)"
        ) from None
    port = 53
    if port_text or raw.endswith(":"):
        port = parse_port_text(port_text, f"{where}={text[:40]!r}")
    return DnsTarget(host, port)


def parse_strategy_list(text: str, *, where: str = "KDISCO_STRATEGIES") -> tuple[str, ...]:
    """``dns, api`` as ``("dns", "api")``; which names exist is the registry's to say."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigurationError(f"{where}={text!r}: no strategies named")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}={text!r}: a strategy is named twice")
    return tuple(names)


def _namespace(value: str, where: str) -> str:
    try:
        return check_namespace(value)
    except InvalidServiceName as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _cluster_domain(value: str, where: str) -> str:
    try:
        return check_cluster_domain(value)
    except InvalidServiceName as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def caller_topology(
    env: Mapping[str, str],
) -> tuple[tuple[str | None, str | None], dict[str, str]]:
    """(zone, node) of this process from ``KDISCO_ZONE`` and ``KDISCO_NODE`` (else the
    downward API's ``NODE_NAME``), and the variable each came from."""
    found: dict[str, str] = {}
    values: dict[str, str | None] = {"zone": None, "node": None}
    for what, variables in (("zone", ("KDISCO_ZONE",)), ("node", ("KDISCO_NODE", "NODE_NAME"))):
        for variable in variables:
            value = env.get(variable, "").strip()
            if value:
                values[what], found[what] = value, variable
                break
    return (values["zone"], values["node"]), found


def pod_namespace(
    environ: Mapping[str, str], serviceaccount_dir: str | os.PathLike[str]
) -> tuple[str, str] | None:
    """(namespace, where it came from): the pod's own namespace, or None outside a pod.

    Downward-API ``POD_NAMESPACE``, else the service-account ``namespace`` file. This
    ignores ``KDISCO_NAMESPACE``: that picks which namespace to search, not where the
    pod runs, and the kubelet's variables describe only the pod's own namespace.
    """
    value = environ.get("POD_NAMESPACE", "").strip()
    if value:
        return _namespace(value, "POD_NAMESPACE"), "POD_NAMESPACE"
    ns_file = Path(serviceaccount_dir) / "namespace"
    try:
        text = read_text_file(ns_file, "the service-account namespace file")
    except ConfigurationError:
        if ns_file.is_dir() or not ns_file.exists():
            return None  # not a pod's service-account directory
        raise
    value = (text or "").strip()
    return (_namespace(value, str(ns_file)), str(ns_file)) if value else None


def has_in_cluster_credentials(
    environ: Mapping[str, str], serviceaccount_dir: str | os.PathLike[str]
) -> bool:
    """``KUBERNETES_SERVICE_HOST`` and a service-account token: what a pod has (the
    variable alone, with ``automountServiceAccountToken: false``, is not enough)."""
    return (
        bool(environ.get("KUBERNETES_SERVICE_HOST"))
        and (Path(serviceaccount_dir) / "token").is_file()
    )


def parse_reach(value: object, *, where: str = "reach") -> str:
    """``cluster``, ``external`` or ``auto`` (any case); ConfigurationError otherwise."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in REACHES:
        raise ConfigurationError(f"{where} must be 'cluster', 'external' or 'auto', not {value!r}")
    return text


def outside_cluster(environ: Mapping[str, str], serviceaccount_dir: str | os.PathLike[str]) -> bool:
    """Whether this process runs outside the cluster: not in a pod (the kubelet sets
    ``KUBERNETES_SERVICE_HOST`` in every container) and without in-cluster credentials."""
    return not environ.get("KUBERNETES_SERVICE_HOST") and not (
        (Path(serviceaccount_dir) / "token").is_file()
    )


@attrs.frozen(kw_only=True)
class Settings:
    """Everything a ``Discoverer`` and its strategies are configured with.

    Build it with ``Settings.load(...)`` (``Discoverer`` does); strategies receive it.
    ``sources`` maps each setting's name to where its value came from: ``argument``,
    the environment variable, the file it was read from, ``detected`` or ``default``.

    Attributes:
        namespace: The namespace for names that carry none.
        cluster_domain: The cluster's DNS domain.
        timeout: Seconds a ``discover()`` call may take by default.
        strategies: Strategy names (or strategy objects given in code), in order.
        static: The static map: a mapping given in code, or the path of a TOML
            file, or None.
        dns_servers: The cluster DNS servers to ask; empty with ``dns_unavailable``
            saying why.
        dns_unavailable: Why there is no cluster DNS server (not in a cluster), or
            None.
        kubeconfig: The kubeconfig files in effect (none when there is none).
        context: The kubeconfig context asked for, or None for its current-context.
        serviceaccount_dir: The in-cluster credentials directory.
        pod_namespace: The pod's own namespace (None outside a pod): what the
            kubelet's variables cover.
        environ: The environment variables read (a copy); strategies read theirs
            here.
        zone: This process's zone, for topology-aware balancing:
            ``KDISCO_ZONE``; None when not said. Default None.
        node: This process's node: ``KDISCO_NODE``, else the downward API's
            ``NODE_NAME``; None when not said. Default None.
        reach: Where answers should be reachable from: ``"cluster"``,
            ``"external"`` or ``"auto"``. Default ``"auto"``.
        outside: Whether this process runs outside the cluster (no
            ``KUBERNETES_SERVICE_HOST``, no service-account token), which ``auto``
            follows. Default False.
        clock: The monotonic clock deadlines and ages are measured with.
        retry: The backoff for transient failures.
        cache: The answer cache's policy.
        api_watch: The api strategy's watch cache policy.
        sources: Each setting's name mapped to where its value came from.
    """

    namespace: str
    cluster_domain: str
    timeout: float
    #: Strategy names (or strategy objects given in code), in order.
    strategies: tuple[str | Strategy, ...]
    #: The static map: a mapping given in code, or the path of a TOML file, or None.
    static: Mapping[str, Any] | Path | None
    #: Where cluster DNS is; empty with ``dns_unavailable`` saying why.
    dns_servers: tuple[DnsTarget, ...]
    dns_unavailable: str | None
    kubeconfig: tuple[str, ...]
    context: str | None
    serviceaccount_dir: Path
    #: The pod's own namespace (None outside a pod): what the kubelet's variables cover.
    pod_namespace: str | None
    environ: Mapping[str, str] = attrs.field(repr=False)
    #: Where this process runs, for topology-aware balancing: ``KDISCO_ZONE``, and
    #: ``KDISCO_NODE`` or the downward API's ``NODE_NAME``; None when not said.
    zone: str | None = None
    node: str | None = None
    #: Where answers should be reachable from (see ``REACHES``), and whether this
    #: process runs outside the cluster (``outside_cluster``), which ``auto`` follows.
    reach: str = DEFAULT_REACH
    outside: bool = False
    clock: Clock = attrs.field(default=time.monotonic, repr=False)
    retry: RetryPolicy = attrs.Factory(RetryPolicy)
    cache: CachePolicy = attrs.Factory(CachePolicy)
    api_watch: WatchCachePolicy = attrs.Factory(WatchCachePolicy)
    sources: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    def in_pod(self) -> bool:
        """Whether the kubelet's in-cluster API variables and token are here.

        Returns:
            bool: True when ``KUBERNETES_SERVICE_HOST`` is set and the service-account
            token file exists.
        """
        return has_in_cluster_credentials(self.environ, self.serviceaccount_dir)

    @classmethod
    def load(
        cls,
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
    ) -> Settings:
        """Resolve every setting: argument, then environment variable, then detection.

        Raises ``ConfigurationError`` naming the setting and where its value came from.
        Reads small files (resolv.conf, the service-account namespace, the
        kubeconfig's namespace); no network I/O. The arguments are
        `kdisco.Discoverer`'s.

        Args:
            strategies: Strategy names or objects, in order. Default:
                ``KDISCO_STRATEGIES``, else ``dns, env, api`` (``static`` first when
                a static map is configured).
            namespace: The default namespace. Default: ``KDISCO_NAMESPACE``, else
                ``POD_NAMESPACE``, the service-account ``namespace`` file, the
                kubeconfig context's, ``"default"``.
            dns_server: The cluster DNS server (``ip``, ``ip:port``, ``[ipv6]:port``).
                Default: ``KDISCO_DNS_SERVER`` (a comma list), else resolv.conf's
                nameservers when it shows a cluster.
            cluster_domain: The cluster domain. Default: ``KDISCO_CLUSTER_DOMAIN``,
                else from the resolv.conf search list, else ``"cluster.local"``.
            timeout: Seconds per call. Default: ``KDISCO_TIMEOUT``, else 5.
            static: A static map, or the path of its TOML file. Default:
                ``KDISCO_STATIC``, else none.
            kubeconfig: Kubeconfig path(s). Default: ``KUBECONFIG``, else
                ``~/.kube/config`` when it exists.
            context: The kubeconfig context. Default: its current-context.
            serviceaccount_dir: The in-cluster credentials directory. Default:
                ``KDISCO_SERVICEACCOUNT_DIR``, else
                ``/var/run/secrets/kubernetes.io/serviceaccount``.
            resolv_conf: The resolv.conf to read. Default: ``/etc/resolv.conf``.
            environ: The environment to read instead of ``os.environ`` (copied).
                ``KDISCO_ZONE``, ``KDISCO_NODE`` and ``NODE_NAME`` are read from it
                too. Default: ``os.environ``.
            clock: The monotonic clock. Default: ``time.monotonic``.
            sleep: What the default retry policy waits with. Default:
                ``time.sleep``.
            retry: The retry policy. Default: ``RetryPolicy(sleep=sleep)``.
            cache: A `CachePolicy`, or True/False for the default one on or off.
                Default True.
            api_watch: A `WatchCachePolicy`, or True/False. Default True.
            reach: ``"cluster"``, ``"external"`` or ``"auto"``. Default:
                ``KDISCO_REACH``, else ``"auto"``.

        Returns:
            Settings: Every value resolved, with ``sources`` saying where each came
            from.

        Raises:
            ConfigurationError: A value is malformed (from an argument, a variable or
                a file); the message names the setting and where it came from.
        """
        env = dict(os.environ if environ is None else environ)
        sources: dict[str, str] = {}

        def pick(name: str, argument: object, variable: str | None) -> tuple[Any, str | None]:
            if argument is not None:
                sources[name] = "argument"
                return argument, name
            if variable and env.get(variable, "").strip():
                sources[name] = variable
                return env[variable].strip(), variable
            return None, None

        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, not {retry!r}")
        retry_policy = retry if retry is not None else RetryPolicy(sleep=sleep)
        cache_policy = as_policy(cache, CachePolicy, where="cache")
        watch_policy = as_policy(api_watch, WatchCachePolicy, where="api_watch")

        value, where = pick("serviceaccount_dir", serviceaccount_dir, "KDISCO_SERVICEACCOUNT_DIR")
        if value is None:
            sources["serviceaccount_dir"] = "default"
        sa_dir = Path(value or DEFAULT_SERVICEACCOUNT_DIR)

        value, where = pick("kubeconfig", kubeconfig, "KUBECONFIG")
        if value is None:
            sources["kubeconfig"] = "default (~/.kube/config)"
        paths = kubeconfig_paths(None if value is None else os.fspath(value))
        given: object = context  # checked at run time: callers need not be typed
        if given is not None and (not isinstance(given, str) or not given):
            raise ConfigurationError(f"context must be a non-empty str, not {given!r}")
        sources["context"] = "argument" if context else "kubeconfig current-context"

        in_pod = pod_namespace(env, sa_dir)
        ns_value, where = pick("namespace", namespace, "KDISCO_NAMESPACE")
        if ns_value is not None:
            if where == "namespace" and not isinstance(ns_value, str):
                raise ConfigurationError(f"namespace must be a str, not {ns_value!r}")
            ns = _namespace(ns_value, where or "namespace")
        elif in_pod is not None:
            ns, sources["namespace"] = in_pod
        else:
            found = kubeconfig_namespace(paths, context)
            if found is not None:
                ns = _namespace(found[0], found[1])
                sources["namespace"] = found[1]
            else:
                ns, sources["namespace"] = "default", "default"

        resolv = ResolvConf.read(resolv_conf)
        resolv_zone = resolv.cluster_domain()
        domain_value, where = pick("cluster_domain", cluster_domain, "KDISCO_CLUSTER_DOMAIN")
        if domain_value is not None:
            if not isinstance(domain_value, str):
                raise ConfigurationError(f"cluster_domain must be a str, not {domain_value!r}")
            domain = _cluster_domain(domain_value, where or "cluster_domain")
        elif resolv_zone is not None:
            domain = resolv_zone
            sources["cluster_domain"] = os.fspath(resolv_conf)
        else:
            domain, sources["cluster_domain"] = DEFAULT_CLUSTER_DOMAIN, "default"

        timeout_value, where = pick("timeout", timeout, "KDISCO_TIMEOUT")
        if timeout_value is None:
            seconds, sources["timeout"] = DEFAULT_TIMEOUT, "default"
        else:
            seconds = parse_timeout(timeout_value, where=where or "timeout")

        static_value, where = pick("static", static, "KDISCO_STATIC")
        static_source: Mapping[str, Any] | Path | None
        if static_value is None or isinstance(static_value, Mapping):
            static_source = static_value
        elif isinstance(static_value, str | os.PathLike):
            static_source = Path(static_value)
        else:
            raise ConfigurationError(
                f"static must be a mapping or the path of a TOML file, not {static_value!r}"
            )

        servers, unavailable = _dns_servers(dns_server, env, resolv, resolv_conf, sources)

        chosen: tuple[str | Strategy, ...]
        if strategies is not None:
            if isinstance(strategies, str):
                raise ConfigurationError(
                    "strategies must be a list such as ['dns', 'api'], not a str"
                )
            chosen = tuple(strategies)
            sources["strategies"] = "argument"
        elif env.get("KDISCO_STRATEGIES", "").strip():
            chosen = parse_strategy_list(env["KDISCO_STRATEGIES"])
            sources["strategies"] = "KDISCO_STRATEGIES"
        else:
            # A static map, when configured, answers first: that is its point.
            chosen = (("static",) if static_source is not None else ()) + DEFAULT_STRATEGIES
            sources["strategies"] = "default"
        (zone, node), said = caller_topology(env)
        sources.update(said)
        reach_value, where = pick("reach", reach, "KDISCO_REACH")
        if reach_value is None:
            chosen_reach, sources["reach"] = DEFAULT_REACH, "default"
        else:
            chosen_reach = parse_reach(reach_value, where=where or "reach")

        return cls(
            namespace=ns,
            cluster_domain=domain,
            timeout=seconds,
            strategies=chosen,
            static=static_source,
            dns_servers=servers,
            dns_unavailable=unavailable,
            kubeconfig=paths,
            context=context,
            serviceaccount_dir=sa_dir,
            pod_namespace=None if in_pod is None else in_pod[0],
            environ=env,
            clock=clock,
            retry=retry_policy,
            cache=cache_policy,
            api_watch=watch_policy,
            sources=sources,
            zone=zone,
            node=node,
            reach=chosen_reach,
            outside=outside_cluster(env, sa_dir),
        )


def _dns_servers(
    argument: str | None,
    env: Mapping[str, str],
    resolv: ResolvConf,
    resolv_conf: str | os.PathLike[str],
    sources: dict[str, str],
) -> tuple[tuple[DnsTarget, ...], str | None]:
    if argument is not None:
        sources["dns_servers"] = "argument"
        return (parse_dns_server(argument, where="dns_server"),), None
    if env.get("KDISCO_DNS_SERVER", "").strip():
        sources["dns_servers"] = "KDISCO_DNS_SERVER"
        return tuple(parse_dns_server(p) for p in env["KDISCO_DNS_SERVER"].split(",")), None
    sources["dns_servers"] = os.fspath(resolv_conf)
    if resolv.cluster_domain() is None:
        # Outside a cluster, asking public DNS for *.svc.cluster.local only wastes the
        # caller's deadline (and leaks the name); say so at once instead.
        return (), (
            "not in a cluster: no '<ns>.svc.<zone>' search domain in "
            "resolv.conf and KDISCO_DNS_SERVER unset"
        )
    targets: list[DnsTarget] = []
    for ns in resolv.nameservers:
        try:
            targets.append(parse_dns_server(ns, where="resolv.conf nameserver"))
        except ConfigurationError:
            continue  # e.g. a scoped IPv6 literal; other nameservers may still work
    if not targets:
        return (), "resolv.conf lists no usable nameserver"
    return tuple(targets), None
