"""The doctor's checks that need no Kubernetes API: the name, the namespace, resolv.conf,
cluster DNS, kdisco's own answer (``before``), and, after the cluster checks, an
ExternalName's target and the TCP probe (``after``).

Each network step gets ``ctx.step_timeout`` seconds; nothing here raises for what it
finds, it reports.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from kdisco._attempts import Outcome
from kdisco._deadline import Deadline
from kdisco._discoverer import Discoverer
from kdisco._exceptions import (
    AccessDenied,
    ConfigurationError,
    DiscoveryError,
    DiscoveryTimeout,
    NoReadyEndpoints,
    NotReachable,
    PortNotFound,
    ServiceNotFound,
    TransientError,
)
from kdisco._models import Resolution, ServiceKind
from kdisco._names import Query, in_cluster_target, parse_query
from kdisco._settings import ResolvConf, Settings
from kdisco._strategies.base import Miss
from kdisco._strategies.dns import DnsStrategy

from .context import Context
from .report import Check, Status

#: The Service every cluster has: if DNS cannot answer for it, it answers nothing.
_KUBERNETES = "kubernetes.default"
#: glibc's default when resolv.conf sets no ``options ndots``.
#: At most this many endpoints are listed, and probed.
_SHOWN = 5
_COREDNS_HINT = (
    "is CoreDNS running (kubectl -n kube-system get pods -l k8s-app=kube-dns)? "
    "is a NetworkPolicy blocking egress to port 53?"
)


def before(ctx: Context) -> Iterator[Check]:
    """The checks before the cluster's: name, namespace, resolv.conf, dns server, dns
    answer, discover. Sets ``findings["dns_answer"]``, ``["answer"]`` and ``["error"]``.

    Args:
        ctx: The doctor's state.

    Yields:
        Check: One per question, in order.
    """
    yield name_check(ctx)
    yield namespace_check(ctx)
    yield resolv_conf_check(ctx)
    # DNS failures stop a connection only when kdisco has no other way to an answer:
    # ask everything first, then say how much each finding matters.
    server = dns_server_check(ctx)
    answer = dns_answer_check(ctx)
    found = discover_check(ctx)
    fallback = ctx.findings.get("answer") is not None
    for check in (server, answer):
        if check.status is Status.FAILED and fallback:
            source = ctx.findings["answer"].source
            check = Check(
                name=check.name,
                status=check.status,
                summary=check.summary,
                details=(*check.details, f"kdisco still answers (from {source}), see discover"),
                hint=check.hint,
                blocking=False,
            )
        yield check
    yield found


def after(ctx: Context) -> Iterator[Check]:
    """The checks after the cluster's: the ExternalName target (only for an
    ExternalName Service) and the TCP probe (only when ``ctx.probe``).

    Args:
        ctx: The doctor's state.

    Yields:
        Check: One per question that applies.
    """
    target = _external_name(ctx)
    if target is not None:
        yield externalname_check(ctx, target)
    if ctx.probe:
        yield probe_check(ctx)


# -- before ---------------------------------------------------------------------------


def name_check(ctx: Context) -> Check:
    """``name``: whether the name is one a Service can have, and how it parses."""
    query = ctx.query
    if query is None:
        return Check(
            name="name",
            status=Status.FAILED,
            summary=ctx.name_error or f"{ctx.raw_name!r} is not a valid Service name",
            hint="write svc, svc.ns or svc.ns.svc.<cluster-domain>, optionally :port "
            "(lower-case letters, digits and '-')",
        )
    svc = query.service
    return Check(
        name="name",
        status=Status.PASSED,
        summary=f"Service {svc.name!r} in namespace {svc.namespace!r}, {query.describe_port()}",
        details=(f"fully qualified: {svc.fqdn}",),
    )


def namespace_check(ctx: Context) -> Check:
    """``namespace``: which namespace is searched, and why that one."""
    if ctx.query is None:
        return Check(
            name="namespace",
            status=Status.UNKNOWN,
            summary="the name is invalid, so it names no namespace",
            hint="fix the name (see above)",
        )
    ns = ctx.query.service.namespace
    details: list[str] = []
    own = ctx.settings.pod_namespace
    if own is not None and own != ns:
        details.append(
            f"this pod runs in {own!r}: service environment variables cover only that "
            "namespace, so the env strategy cannot answer for this one"
        )
    return Check(
        name="namespace",
        status=Status.PASSED,
        summary=f"{ns!r}, from {ctx.namespace_source}",
        details=tuple(details),
    )


def resolv_conf_check(ctx: Context) -> Check:
    """``resolv.conf``: its nameservers, search list and ndots, and whether it is a pod's."""
    path = os.fspath(ctx.resolv_conf)
    conf = ResolvConf.read(path)
    settings = ctx.settings
    said = settings.sources.get("dns_servers")
    override = (
        f"the DNS server is set by {said} ({', '.join(map(str, settings.dns_servers))}), "
        "not by this file"
        if said in ("argument", "KDISCO_DNS_SERVER")
        else None
    )
    if not conf.nameservers and not conf.search:
        where = "a pod's" if settings.in_pod() else "this machine's"
        return Check(
            name="resolv.conf",
            status=Status.FAILED if settings.in_pod() else Status.PASSED,
            summary=f"{path}: missing or empty ({where})",
            details=(override,) if override else (),
            hint="a pod always has one: is its dnsPolicy None without dnsConfig?"
            if settings.in_pod()
            else None,
            blocking=False,
        )
    ndots = conf.ndots
    summary = (
        f"{path}: nameserver {', '.join(conf.nameservers) or '(none)'}; "
        f"search {' '.join(conf.search) or '(none)'}; ndots:{ndots}"
    )
    details: list[str] = [override] if override else []
    zone = conf.cluster_domain()
    if zone is None:
        if settings.in_pod():
            return Check(
                name="resolv.conf",
                status=Status.FAILED,
                summary=summary,
                details=(*details, "no <ns>.svc.<zone> search domain: not a cluster's resolv.conf"),
                hint="the pod's dnsPolicy is not ClusterFirst: short Service names will not "
                "resolve; kdisco can still ask --dns-server / KDISCO_DNS_SERVER or the API",
                blocking=False,
            )
        details.append(
            "not a pod's: no <ns>.svc.<zone> search domain, so this is outside a cluster"
        )
        return Check(
            name="resolv.conf", status=Status.PASSED, summary=summary, details=tuple(details)
        )
    details.append(f"a pod's: cluster domain {zone!r} from the search list")
    if ctx.query is not None:
        name = ctx.raw_name.partition(":")[0]
        dots = name.count(".")
        if not name.endswith(".") and dots < ndots:
            first = f"{name}.{conf.search[0]}" if conf.search else name
            details.append(
                f"ndots:{ndots}: {name!r} has {dots} dot{'s' * (dots != 1)}, so a system "
                f"resolver tries the search list first ({first}, ...); kdisco asks "
                f"{ctx.query.service.fqdn} directly"
            )
    return Check(name="resolv.conf", status=Status.PASSED, summary=summary, details=tuple(details))


def _no_dns(ctx: Context, name: str) -> Check | None:
    settings = ctx.settings
    if settings.dns_servers:
        return None
    return Check(
        name=name,
        status=Status.UNKNOWN,
        summary=settings.dns_unavailable or "no cluster DNS server configured",
        hint="to ask a cluster DNS server from here, pass --dns-server IP[:PORT]",
    )


def dns_server_check(ctx: Context) -> Check:
    """``dns server``: whether each cluster DNS server answers at all (for the
    ``kubernetes.default`` Service, which every cluster has)."""
    missing = _no_dns(ctx, "dns server")
    if missing is not None:
        return missing
    settings = ctx.settings
    probe = parse_query(
        _KUBERNETES,
        namespace=None,
        default_namespace="default",
        cluster_domain=settings.cluster_domain,
    )
    answered: list[str] = []
    silent: list[str] = []
    details: list[str] = []
    for server in settings.dns_servers:
        result = _ask_dns(DnsStrategy((server,)), probe, ctx.step_timeout)
        if isinstance(result, TransientError):
            silent.append(str(server))
            details.append(f"{server}: {result}")
        else:
            answered.append(str(server))
            if isinstance(result, Miss):
                details.append(
                    f"{server} answers, but not for {probe.service.fqdn}: {result.reason}"
                )
    where = settings.sources.get("dns_servers", "")
    details.append(f"servers from {where}")
    if answered:
        return Check(
            name="dns server",
            status=Status.PASSED,
            summary=f"{', '.join(answered)} answers",
            details=tuple(details),
        )
    return Check(
        name="dns server",
        status=Status.FAILED,
        summary=f"no answer from {', '.join(silent)}",
        details=tuple(details),
        hint=f"the cluster DNS server at {', '.join(silent)} does not answer: {_COREDNS_HINT}",
    )


def _ask_dns(
    strategy: DnsStrategy, query: Query, seconds: float
) -> Resolution | Miss | TransientError:
    try:
        return strategy.lookup(query, Deadline(seconds))
    except TransientError as exc:
        return exc


def dns_answer_check(ctx: Context) -> Check:
    """``dns answer``: what cluster DNS answers for this name, as kdisco asks it."""
    ctx.findings["dns_answer"] = None
    if ctx.query is None:
        return _invalid_name("dns answer")
    missing = _no_dns(ctx, "dns answer")
    if missing is not None:
        return missing
    query = ctx.query
    svc = query.service
    result = _ask_dns(DnsStrategy(ctx.settings.dns_servers), query, ctx.step_timeout)
    if isinstance(result, Resolution):
        ctx.findings["dns_answer"] = result
        return Check(
            name="dns answer",
            status=Status.PASSED,
            summary=f"{svc.fqdn} -> {_describe(result)}",
        )
    if isinstance(result, TransientError):
        return Check(
            name="dns answer",
            status=Status.FAILED,
            summary=f"no answer for {svc.fqdn}: {result}",
            hint="see the dns server check above",
        )
    if result.outcome is Outcome.NOT_APPLICABLE:
        return Check(name="dns answer", status=Status.UNKNOWN, summary=result.reason)
    if result.outcome is Outcome.NO_SUCH_PORT:
        hint = (
            f"the Service has no such port: kubectl -n {svc.namespace} get service {svc.name} "
            "lists its ports (see the ports check below)"
        )
    elif "NXDOMAIN" in result.reason:
        hint = (
            f"no Service with that name in namespace {svc.namespace} (or a headless one with no "
            "ready endpoints): check the name and namespace (see the service check below)"
        )
    else:
        hint = "the Service has no addresses in DNS: see the service and pods checks below"
    return Check(name="dns answer", status=Status.FAILED, summary=result.reason, hint=hint)


def discoverer_for(settings: Settings) -> Discoverer:
    """A Discoverer configured as ``settings`` say, but with no answer cache and no
    watches: the doctor wants a fresh answer, and nothing left running.

    Args:
        settings: The settings to follow.

    Returns:
        Discoverer: Close it when done.
    """
    environ = dict(settings.environ)
    environ.pop("KDISCO_DNS_SERVER", None)
    if settings.dns_servers:
        environ["KDISCO_DNS_SERVER"] = ",".join(map(str, settings.dns_servers))
    return Discoverer(
        strategies=settings.strategies,
        namespace=settings.namespace,
        cluster_domain=settings.cluster_domain,
        timeout=settings.timeout,
        static=settings.static,
        kubeconfig=os.pathsep.join(settings.kubeconfig) or None,
        context=settings.context,
        serviceaccount_dir=settings.serviceaccount_dir,
        # Without servers in the environment, an unreadable resolv.conf keeps DNS off
        # exactly as ``dns_unavailable`` says it is.
        resolv_conf=os.devnull,
        environ=environ,
        clock=settings.clock,
        retry=settings.retry,
        cache=False,
        api_watch=False,
        reach=settings.reach,
    )


def discover_check(ctx: Context) -> Check:
    """``discover``: what kdisco itself answers with these settings."""
    ctx.findings["answer"] = None
    ctx.findings["error"] = None
    if ctx.query is None:
        return _invalid_name("discover")
    query = ctx.query
    strategies = [getattr(s, "name", s) for s in ctx.settings.strategies]
    try:
        with discoverer_for(ctx.settings) as discoverer:
            res = discoverer.discover(
                query.service.fqdn,
                port=query.port,
                # Each strategy its own step; the chain shares the deadline out.
                timeout=ctx.step_timeout * max(1, len(strategies)),
            )
    except ConfigurationError as exc:
        return Check(
            name="discover",
            status=Status.FAILED,
            summary=f"kdisco cannot start with these settings: {exc.message}",
            hint="fix the setting named (flags, KDISCO_* variables, files)",
        )
    except DiscoveryError as exc:
        ctx.findings["error"] = exc
        return Check(
            name="discover",
            status=Status.FAILED,
            summary=f"{type(exc).__name__}: {exc.message}",
            details=tuple(a.describe() for a in exc.attempts),
            hint=_error_hint(exc, query),
        )
    ctx.findings["answer"] = res
    details = [f"strategies: {', '.join(map(str, strategies))}"]
    details += [
        a.describe() if a.outcome is not Outcome.WARNING else f"WARNING: {a.reason}"
        for a in res.attempts
    ]
    if res.via:
        details.append("via ExternalName " + " -> ".join(map(str, res.via)))
    # The chain's WARNING: cluster-internal addresses given to a process outside the
    # cluster. They work only with a route into the cluster's network (a VPN, say), so
    # this warns rather than decides.
    internal = any(a.outcome is Outcome.WARNING for a in res.attempts)
    return Check(
        name="discover",
        status=Status.FAILED if internal else Status.PASSED,
        summary=f"found by {res.source}: {_describe(res)}",
        details=tuple(details),
        hint="these addresses work only from the cluster's network: run this in a pod, or set "
        "KDISCO_REACH=external to look for a way in from outside"
        if internal
        else None,
        blocking=not internal,
    )


def _error_hint(exc: DiscoveryError, query: Query) -> str:
    svc = query.service
    if isinstance(exc, ServiceNotFound):
        return f"no Service {svc.name!r} in namespace {svc.namespace!r}: see the service check"
    if isinstance(exc, PortNotFound):
        return "the Service does not declare that port: see the ports check"
    if isinstance(exc, NoReadyEndpoints):
        return "the Service exists but no Pod behind it is ready: see the pods check"
    if isinstance(exc, AccessDenied):
        return "the credentials lack a permission kdisco needs: see the rbac check"
    if isinstance(exc, NotReachable):
        return "nothing routes to it from outside the cluster: run this in a pod, or --reach"
    if isinstance(exc, DiscoveryTimeout):
        return "every way to ask was too slow: see the dns server check, and --timeout"
    return "no strategy could answer: each one's reason is listed above"


def _invalid_name(name: str) -> Check:
    return Check(
        name=name,
        status=Status.UNKNOWN,
        summary="not asked: the name is invalid",
        hint="fix the name (see above)",
    )


def _describe(res: Resolution) -> str:
    if res.kind is ServiceKind.EXTERNAL_NAME and res.external_name and not res.via:
        return f"ExternalName {res.external_name}"
    shown = ", ".join(ep.address for ep in res.endpoints[:_SHOWN])
    more = len(res.endpoints) - _SHOWN
    extra = f" and {more} more" if more > 0 else ""
    kind = "" if res.kind is ServiceKind.UNKNOWN else f"{res.kind.value} "
    return f"{kind}{shown or '(no endpoints)'}{extra}"


# -- after ------------------------------------------------------------------------------


def _external_name(ctx: Context) -> str | None:
    """The ExternalName target when the Service is one (from the API, else an answer)."""
    service: dict[str, Any] | None = ctx.findings.get("service")
    if service:
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" and spec.get("externalName"):
            return str(spec["externalName"]).rstrip(".")
    for key in ("dns_answer", "answer"):
        res = ctx.findings.get(key)
        if (
            isinstance(res, Resolution)
            and res.kind is ServiceKind.EXTERNAL_NAME
            and res.external_name
            and not res.via
        ):
            return res.external_name
    return None


def externalname_check(ctx: Context, target: str) -> Check:
    """``externalname``: whether the ExternalName's target resolves.

    A target inside the cluster (``svc.ns.svc.<zone>``) is asked of cluster DNS; any
    other of this machine's resolver, as an application here would.
    """
    settings = ctx.settings
    inside = in_cluster_target(target, settings.cluster_domain)
    if inside is not None:
        if not settings.dns_servers:
            return Check(
                name="externalname",
                status=Status.UNKNOWN,
                summary=f"target {target} is a Service: {settings.dns_unavailable}",
                hint="pass --dns-server IP[:PORT], or run this in a pod",
            )
        query = Query(service=inside)
        result = _ask_dns(DnsStrategy(settings.dns_servers), query, ctx.step_timeout)
        if isinstance(result, Resolution):
            return Check(
                name="externalname",
                status=Status.PASSED,
                summary=f"target {target} (a Service) -> {_describe(result)}",
            )
        reason = str(result) if isinstance(result, TransientError) else result.reason
        return Check(
            name="externalname",
            status=Status.FAILED,
            summary=f"target {target} (a Service) does not resolve: {reason}",
            hint=f"run kdisco doctor {inside} for the target Service",
        )
    found = _resolve_host(target, ctx.step_timeout)
    if isinstance(found, list):
        return Check(
            name="externalname",
            status=Status.PASSED,
            summary=f"target {target} -> {', '.join(found[:_SHOWN])}",
            details=("asked this machine's resolver",),
        )
    return Check(
        name="externalname",
        status=Status.FAILED,
        summary=f"target {target} does not resolve: {found}",
        details=("asked this machine's resolver",),
        hint="the ExternalName points at a name DNS does not know: fix spec.externalName "
        "or the DNS record",
    )


def _resolve_host(host: str, seconds: float) -> list[str] | str:
    """The addresses of ``host`` from the system resolver, or why not, within ``seconds``.

    getaddrinfo takes no timeout, so it runs in a daemon thread that is abandoned when
    it takes too long (the process exits without waiting for it).
    """
    result: list[list[str] | str] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            result.append(str(exc))
        else:
            result.append(list(dict.fromkeys(str(info[4][0]) for info in infos)))

    thread = threading.Thread(target=lookup, name="kdisco-doctor-resolve", daemon=True)
    thread.start()
    thread.join(seconds)
    return result[0] if result else f"no answer within {seconds:g}s"


def probe_targets(ctx: Context) -> list[tuple[str, int]] | str:
    """Where the probe connects: the cluster checks' targets, else kdisco's answer's
    endpoints; or why there is nothing to connect to.

    Args:
        ctx: The doctor's state.

    Returns:
        list | str: (host, port) pairs, at most a few, or the reason there are none.
    """
    chosen: list[tuple[str, int]] | None = ctx.findings.get("probe_targets")
    if chosen:
        return list(chosen)[:_SHOWN]
    res = ctx.findings.get("answer")
    if not isinstance(res, Resolution):
        return "nothing to connect to: kdisco found no answer (see discover)"
    targets = [(ep.host, ep.port) for ep in res.endpoints if ep.port is not None]
    if not targets:
        return "the answer has no port: give one (NAME:PORT or --port)"
    return targets[:_SHOWN]


def probe_check(ctx: Context) -> Check:
    """``probe``: a TCP connect to each chosen endpoint (only when asked: ``--probe``)."""
    targets = probe_targets(ctx)
    if isinstance(targets, str):
        return Check(name="probe", status=Status.UNKNOWN, summary=targets)
    ok: list[str] = []
    failed: list[str] = []
    refused = False
    for host, port in targets:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=ctx.step_timeout):
                ok.append(shown)
        except ConnectionRefusedError:
            refused = True
            failed.append(f"{shown}: refused")
        except TimeoutError:
            failed.append(f"{shown}: no answer within {ctx.step_timeout:g}s")
        except OSError as exc:
            failed.append(f"{shown}: {exc.strerror or exc}")
    if not failed:
        return Check(
            name="probe", status=Status.PASSED, summary=f"TCP connect to {', '.join(ok)} works"
        )
    hint = (
        "nothing listens there: is targetPort the port the container listens on?"
        if refused
        else "dropped on the way: a NetworkPolicy or firewall (see networkpolicy)?"
    )
    return Check(
        name="probe",
        status=Status.FAILED,
        summary=f"{len(failed)} of {len(targets)} endpoints fail a TCP connect",
        details=tuple(failed + [f"{t}: connected" for t in ok]),
        hint=hint,
        # One good endpoint still serves a client that retries another.
        blocking=not ok,
    )
