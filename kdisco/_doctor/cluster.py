"""The doctor's questions to kube-apiserver: does the Service exist, does it declare the
port, which Pods back it and are they ready, what its EndpointSlices say, whether DNS
and the API agree, whether kdisco's own credentials may read what it needs, and
whether a NetworkPolicy lets the caller in.

Every request has its own short deadline (``Context.step_timeout``). A check that
cannot ask (no credentials, a 403, a timeout) says so and why, as could not check;
nothing here raises to the caller. Reads go through kdisco's own ``KubeClient`` and
the api strategy's sans-I/O list plans, so paging and parsing are the strategy's.
"""

from __future__ import annotations

import difflib
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import TypeVar

import attrs

from kdisco._deadline import Deadline
from kdisco._exceptions import (
    AccessDenied,
    ConfigurationError,
    TransientError,
    permission_words,
    rbac_rule,
)
from kdisco._k8s import netpol
from kdisco._k8s.client import KubeClient, What
from kdisco._k8s.objects import (
    ALL_SERVICES_PATH,
    Json,
    MalformedObject,
    ServiceInfo,
    SliceInfo,
    object_name,
    resolve_info,
    service_path,
    services_path,
)
from kdisco._models import Resolution, choose_port
from kdisco._names import Query
from kdisco._settings import Settings
from kdisco._strategies.api import ApiStrategy, Get, list_all, list_slices

from .context import Context
from .report import Check, Status

T = TypeVar("T")
#: A read, sans I/O: yields each GET (None: a pause), is sent its body; returns a value.
Plan = Generator[Get | None, bytes | None, T]

#: Where the Role kdisco needs is written out, for hints.
ROLE_DOC = "docs/in-a-pod.md"
#: Items per LIST page.
PAGE = 500
#: Names shown at most in one detail line (closest Services, Pods listed one by one).
SHOWN = 10
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SELF_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
NETPOL_GROUP = "networking.k8s.io"
#: Services of every namespace (a cluster-wide LIST: a ClusterRole grants it).


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def policies_path(namespace: str) -> str:
    return f"/apis/{NETPOL_GROUP}/v1/namespaces/{namespace}/networkpolicies"


# -- talking to the API --------------------------------------------------------------


class Api:
    """One client and the doctor's per-step deadline."""

    def __init__(self, client: KubeClient, settings: Settings, step_timeout: float) -> None:
        self.client = client
        self._clock = settings.clock
        self._step = step_timeout

    def deadline(self) -> Deadline:
        return Deadline(self._step, clock=self._clock)

    def get(self, path: str, what: What) -> Json | None:
        """One GET (None: 404)."""
        return self.client.get_json(path, (), self.deadline(), what)

    def post(self, path: str, obj: Json, what: What) -> Json | None:
        return self.client.post_json(path, obj, self.deadline(), what)

    def run(self, plan: Plan[T]) -> T:
        """Make a plan's requests, all within one step's deadline; a refused or
        failed request ends it with that error."""
        deadline = self.deadline()
        body: bytes | None = None
        try:
            while True:
                step = plan.send(body)
                body = (
                    None
                    if step is None
                    else self.client.get_body(step.path, step.query, deadline, step.what)
                )
        except StopIteration as done:
            result: T = done.value
            return result
        finally:
            plan.close()

    def items(self, path: str, params: Sequence[tuple[str, str]], what: What) -> list[Json]:
        """Every item of a LIST, page by page."""
        items: list[Json] = []

        def plan() -> Plan[None]:
            yield from list_all(
                path, (*params, ("limit", str(PAGE))), what, f"{what[1]} list", items.append
            )

        self.run(plan())
        return items


def connect(settings: Settings, wait: float) -> tuple[KubeClient | None, str | None]:
    """The client kdisco's api strategy would use here, or why there is none.

    It is built as the api strategy builds it (a kubeconfig's exec plugin runs in a
    thread of its own), and waited for ``wait`` seconds at most.
    """
    strategy = ApiStrategy(
        kubeconfig=settings.kubeconfig,
        context=settings.context,
        serviceaccount_dir=settings.serviceaccount_dir,
        environ=settings.environ,
    )
    if strategy.not_applicable is not None:
        return None, strategy.not_applicable  # "no credentials: not in a cluster ..."
    try:
        return strategy.client(Deadline(wait)), None
    except TransientError:
        return None, f"loading the API credentials took over {wait:g}s (a slow exec plugin?)"
    except Exception as exc:
        return None, f"cannot load the API credentials: {why_not(exc)}"


NO_CREDENTIALS_HINT = (
    "run it in a pod with a service account token, or point --kubeconfig (KUBECONFIG) at a cluster"
)


def why_not(exc: Exception) -> str:
    """Why a read gave no answer, in one line."""
    if isinstance(exc, AccessDenied):
        return exc.permission
    if isinstance(exc, ConfigurationError):
        return exc.message  # the headline alone: no attempts, no line breaks
    if isinstance(exc, TransientError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def grant_hint(exc: Exception) -> str | None:
    """How to make a refused read checkable."""
    if not isinstance(exc, AccessDenied):
        return None
    if exc.status == 401:
        return "the credentials are wrong or expired: renew the kubeconfig's (or the pod's) token"
    kind = "a Role" if exc.namespace else "a ClusterRole"
    return f"grant it to check this ({kind} rule: {rbac_rule(exc.verb, exc.resource)})"


#: What a read can fail with; each becomes a could-not-check, never an error.
READ_ERRORS = (AccessDenied, TransientError, ConfigurationError, MalformedObject, ValueError)


def unknown(name: str, summary: str, hint: str | None = None) -> Check:
    return Check(name=name, status=Status.UNKNOWN, summary=summary, hint=hint)


# -- the checks ------------------------------------------------------------------------

#: The checks this module runs, in order.
NAMES = ("service", "ports", "pods", "endpointslices", "agreement", "rbac", "networkpolicy")


def checks(ctx: Context) -> Iterator[Check]:
    """The cluster checks, in order (``NAMES``); sets ``ctx.findings``' ``service``,
    ``api_answer``, ``pods`` and (with an API answer) ``probe_targets``."""
    ctx.findings.setdefault("service", None)
    ctx.findings.setdefault("api_answer", None)
    ctx.findings.setdefault("pods", [])
    if ctx.query is None:
        for name in NAMES:
            yield unknown(name, "the name is not valid (see the name check)")
        return
    client, why = connect(ctx.settings, 2 * ctx.step_timeout)
    if client is None:
        for name in NAMES:
            yield unknown(name, why or "no API client", NO_CREDENTIALS_HINT)
        return
    try:
        yield from _Run(ctx, ctx.query, Api(client, ctx.settings, ctx.step_timeout)).checks()
    finally:
        client.close()


@attrs.define
class _Run:
    ctx: Context
    query: Query
    api: Api
    svc: Json | None = None
    info: ServiceInfo | None = None
    slices: list[SliceInfo] | None = None
    missing: bool = False

    @property
    def ns(self) -> str:
        return self.query.service.namespace

    @property
    def name(self) -> str:
        return self.query.service.name

    def checks(self) -> Iterator[Check]:
        yield self.service()
        if self.svc is None or self.info is None:
            why = (
                "no Service to check (see the service check)"
                if self.missing
                else "the Service could not be read (see the service check)"
            )
            for name in ("ports", "pods", "endpointslices", "agreement"):
                yield unknown(name, why)
            yield self.rbac()
            yield unknown("networkpolicy", why)
            return
        yield self.ports()
        if self.info.type == "ExternalName":
            # An alias: no Pods or endpoints of its own (local.after checks its target).
            self.set_answer([])
            alias = f"does not apply: an ExternalName Service (for {self.info.external_name})"
            yield Check(name="pods", status=Status.PASSED, summary=alias)
            yield Check(name="endpointslices", status=Status.PASSED, summary=alias)
            yield self.agreement()
            yield self.rbac()
            yield Check(name="networkpolicy", status=Status.PASSED, summary=alias)
            return
        yield self.pods()
        yield self.endpointslices()
        yield self.agreement()
        yield self.rbac()
        yield self.networkpolicy()

    # -- service ---------------------------------------------------------------------

    def service(self) -> Check:
        what = ("get", "services", self.ns)
        try:
            svc = self.api.get(service_path(self.ns, self.name), what)
            info = None if svc is None else ServiceInfo.from_json(svc)
        except READ_ERRORS as exc:
            return unknown("service", why_not(exc), grant_hint(exc))
        if svc is None or info is None:
            self.missing = True
            return self.missing_service()
        self.svc, self.info = svc, info
        self.ctx.findings["service"] = svc
        summary = (
            f"Service {self.name!r} in namespace {self.ns!r}: {describe_service(info)}, "
            f"ports {describe_ports(raw_ports(svc))}"
        )
        return Check(name="service", status=Status.PASSED, summary=summary)

    def missing_service(self) -> Check:
        summary = f"no Service {self.name!r} in namespace {self.ns!r}"
        details: list[str] = []
        hints: list[str] = []
        try:
            names = [
                object_name(s)
                for s in self.api.items(services_path(self.ns), (), ("list", "services", self.ns))
            ]
        except READ_ERRORS as exc:
            details.append(f"could not list the Services of {self.ns!r}: {why_not(exc)}")
        else:
            close = closest(self.name, names)
            if close:
                details.append(f"closest names in {self.ns!r}: {', '.join(close)}")
                hints.append(f"did you mean {close[0]!r}?")
            elif names:
                details.append(f"{self.ns!r} has {len(names)} other Service(s), none close")
            else:
                details.append(f"{self.ns!r} has no Services at all (does the namespace exist?)")
        try:
            found = self.api.items(
                ALL_SERVICES_PATH,
                (("fieldSelector", f"metadata.name={self.name}"),),
                ("list", "services", ""),
            )
        except READ_ERRORS as exc:
            details.append(f"could not look in other namespaces: {why_not(exc)}")
        else:
            others = sorted(
                {str((s.get("metadata") or {}).get("namespace") or "") for s in found}
                - {self.ns, ""}
            )
            if others:
                shown = ", ".join(repr(n) for n in others[:SHOWN])
                where = "namespace" if len(others) == 1 else "namespaces"
                details.append(f"a Service {self.name!r} exists in {where} {shown}")
                hints.insert(
                    0,
                    f"use {self.name}.{others[0]} (or --namespace {others[0]}): the "
                    f"namespace came from {self.ctx.namespace_source}",
                )
            else:
                details.append(f"no Service {self.name!r} in any other namespace either")
        return Check(
            name="service",
            status=Status.FAILED,
            summary=summary,
            details=tuple(details),
            hint="; or ".join(hints) if hints else "create the Service, or check the name",
        )

    # -- ports -----------------------------------------------------------------------

    def ports(self) -> Check:
        assert self.svc is not None
        assert self.info is not None
        raw = raw_ports(self.svc)
        declared = describe_ports(raw)
        wanted = self.query.port
        chosen, ok = choose_port(self.info.ports, wanted)
        if ok:
            if chosen is None:
                summary = "no port asked for, and the Service declares none"
            else:
                target = target_port_of(raw, chosen.port)
                shown = f"{chosen.label} (targetPort {target})" if target else chosen.label
                asked = self.query.describe_port()
                summary = f"{asked}: {shown}" if wanted is None else f"{asked} is declared: {shown}"
            return Check(
                name="ports",
                status=Status.PASSED,
                summary=summary,
                details=(f"declared: {declared}",),
            )
        if self.info.type == "ExternalName" and isinstance(wanted, int):
            return Check(
                name="ports",
                status=Status.PASSED,
                summary=f"port {wanted}: an ExternalName Service's ports are advisory only",
                details=(f"declared: {declared}",),
            )
        assert wanted is not None
        return Check(
            name="ports",
            status=Status.FAILED,
            summary=f"{self.query.describe_port()} is not declared (declared: {declared})",
            hint=port_hint(raw, wanted),
        )

    # -- pods ------------------------------------------------------------------------

    def pods(self) -> Check:
        assert self.svc is not None
        assert self.info is not None
        selector = service_selector(self.svc)
        if not selector:
            return Check(
                name="pods",
                status=Status.PASSED,
                summary=(
                    "the Service has no selector: its endpoints are managed by hand "
                    "(EndpointSlices written by someone else), not by Pods"
                ),
            )
        shown = selector_text(selector)
        try:
            pods = self.api.items(
                pods_path(self.ns), (("labelSelector", shown),), ("list", "pods", self.ns)
            )
        except READ_ERRORS as exc:
            return unknown("pods", why_not(exc), grant_hint(exc))
        self.ctx.findings["pods"] = pods
        if not pods:
            return Check(
                name="pods",
                status=Status.FAILED,
                summary=f"no Pod in namespace {self.ns!r} matches the selector {shown}",
                hint=(
                    f"the Service's selector ({shown}) must equal labels of the Pods: compare "
                    f"`kubectl get pods -n {self.ns} --show-labels`"
                ),
            )
        states = [pod_state(p) for p in pods]
        ready = [s for s in states if s.ready]
        details = tuple(s.describe() for s in sorted(states, key=lambda s: (s.ready, s.name)))
        summary = f"{len(ready)} of {len(states)} Pods ready (selector {shown})"
        if len(details) > SHOWN:
            details = (*details[:SHOWN], f"... and {len(details) - SHOWN} more")
        if ready or self.info.publish_not_ready:
            # (publishNotReadyAddresses: the controller publishes them anyway.)
            return Check(name="pods", status=Status.PASSED, summary=summary, details=details)
        return Check(
            name="pods",
            status=Status.FAILED,
            summary=summary,
            details=details,
            hint="no Pod is ready, so none gets traffic: fix what the reasons above say",
        )

    # -- endpointslices --------------------------------------------------------------

    def endpointslices(self) -> Check:
        assert self.svc is not None
        assert self.info is not None
        info = self.info
        try:
            slices = self.api.run(list_slices(self.query, info, PAGE))
        except READ_ERRORS as exc:
            return unknown("endpointslices", why_not(exc), grant_hint(exc))
        self.slices = slices
        self.set_answer(slices)
        wanted = info.slice_port_name(self.query.port)
        counts = count_endpoints(slices, wanted)
        summary = counts.describe()
        details: list[str] = []
        if counts.unserved:
            details.append(
                f"{counts.unserved} endpoint(s) in slices without the port asked for (Pods "
                "lacking the named targetPort): they get no traffic on it"
            )
        if counts.ready:
            return Check(
                name="endpointslices",
                status=Status.PASSED,
                summary=summary,
                details=tuple(details),
            )
        if not service_selector(self.svc):
            hint = (
                f"the Service has no selector: write an EndpointSlice labelled "
                f"kubernetes.io/service-name={self.name} with ready endpoints"
            )
        elif not self.ctx.findings.get("pods"):
            hint = "no Pod matches the Service's selector (see the pods check)"
        elif not slices:
            hint = "Pods match but no slice exists: is kube-controller-manager running?"
        else:
            hint = "no Pod behind the Service is ready (see the pods check)"
        return Check(
            name="endpointslices",
            status=Status.FAILED,
            summary=summary,
            details=tuple(details),
            hint=hint,
        )

    def set_answer(self, slices: list[SliceInfo]) -> None:
        """What the api strategy answers (the cluster view), and where a probe would go."""
        assert self.info is not None
        query = attrs.evolve(self.query, reach="cluster")
        try:
            got = resolve_info(query, self.info, lambda: slices)
        except READ_ERRORS:
            return
        if isinstance(got, Resolution):
            self.ctx.findings["api_answer"] = got
            self.ctx.findings["probe_targets"] = [
                (ep.host, ep.port) for ep in got.endpoints if ep.port is not None
            ]

    # -- agreement -------------------------------------------------------------------

    def agreement(self) -> Check:
        assert self.info is not None
        dns = self.ctx.findings.get("dns_answer")
        if not isinstance(dns, Resolution):
            return unknown("agreement", "no DNS answer to compare (see the dns answer check)")
        if self.info.type == "ExternalName":
            api_names: set[str] = {self.info.external_name}
            dns_names = {dns.external_name} if dns.external_name else {ep.host for ep in dns}
            return agreement_check(dns_names, api_names, "external name")
        if self.info.headless:
            if self.slices is None:
                return unknown("agreement", "the EndpointSlices could not be read")
            return agreement_check(
                {ep.host for ep in dns}, ready_addresses(self.slices), "ready pod addresses"
            )
        return agreement_check({ep.host for ep in dns}, set(self.info.cluster_ips), "ClusterIPs")

    # -- rbac ------------------------------------------------------------------------

    def rbac(self) -> Check:
        settings = self.ctx.settings
        needs = needed_permissions(
            self.ns,
            watch=settings.api_watch.enabled,
            reach=settings.reach,
            outside=settings.outside,
        )
        missing: list[Permission] = []
        details: list[str] = []
        for need in needs:
            try:
                allowed = self.review(need)
            except READ_ERRORS as exc:
                return unknown(
                    "rbac", f"could not ask the API (SelfSubjectAccessReview): {why_not(exc)}"
                )
            if not allowed:
                missing.append(need)
        who = self.whoami()
        as_who = f" as {who}" if who else ""
        uses_api = "api" in settings.strategies
        if not uses_api:
            details.append(
                "the api strategy is not among the strategies: kdisco does not read the API"
            )
        if not missing:
            asked = ", ".join(n.short() for n in needs)
            return Check(
                name="rbac",
                status=Status.PASSED,
                summary=f"kdisco may read what it needs{as_who}: {asked}",
                details=tuple(details),
            )
        blocking = uses_api and any(m.blocking for m in missing)
        answer = self.ctx.findings.get("answer")
        if blocking and isinstance(answer, Resolution):
            # kdisco answered (the discover check): what is missing does not stop this
            # connection, but the api strategy would be refused where only it can tell.
            blocking = False
            details.append(
                f"kdisco answers anyway (from {answer.source}); these matter where only the "
                "api strategy can answer: a headless Service's Pods when DNS cannot, "
                "readiness behind a ClusterIP, and the fallback when cluster DNS fails"
            )
        for m in missing:
            details.append(f"missing: {m.describe()} ({m.why})")
        return Check(
            name="rbac",
            status=Status.FAILED,
            summary=f"missing{as_who}: " + ", ".join(m.short() for m in missing),
            details=tuple(details),
            hint=rbac_hint(missing),
            blocking=blocking,
        )

    def review(self, need: Permission) -> bool:
        attributes = {"verb": need.verb, "group": need.group, "resource": need.resource}
        if need.namespace:
            attributes["namespace"] = need.namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        what = ("create", "selfsubjectaccessreviews.authorization.k8s.io", "")
        got = self.api.post(SSAR_PATH, body, what)
        status = (got or {}).get("status")
        if not isinstance(status, dict):
            raise TransientError("SelfSubjectAccessReview: the response has no status")
        return status.get("allowed") is True

    def whoami(self) -> str | None:
        """Who the API takes the credentials for (a SelfSubjectReview), when it says."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        what = ("create", "selfsubjectreviews.authentication.k8s.io", "")
        try:
            got = self.api.post(SELF_REVIEW_PATH, body, what)
        except READ_ERRORS:
            return None
        user = ((got or {}).get("status") or {}).get("userInfo") or {}
        name = user.get("username") if isinstance(user, dict) else None
        return name if isinstance(name, str) and name else None

    # -- networkpolicy ---------------------------------------------------------------

    def networkpolicy(self) -> Check:
        assert self.svc is not None
        assert self.info is not None
        pods: list[Json] = self.ctx.findings.get("pods") or []
        if not pods:
            return unknown("networkpolicy", "no target Pods to evaluate (see the pods check)")
        what = ("list", f"networkpolicies.{NETPOL_GROUP}", self.ns)
        try:
            policies = self.api.items(policies_path(self.ns), (), what)
        except READ_ERRORS as exc:
            return unknown("networkpolicy", why_not(exc), grant_hint(exc))
        chosen, ok = choose_port(self.info.ports, self.query.port)
        target_port = None if chosen is None else raw_port(self.svc, chosen.port)
        if target_port is None:
            why = "the port asked for is not declared" if not ok else "the Service has no ports"
            return unknown("networkpolicy", f"no port to evaluate: {why} (see the ports check)")
        caller, notes = self.caller()
        verdicts: list[tuple[str, netpol.Verdict]] = []
        skipped: list[str] = []
        for pod in pods:
            target = pod_target(pod, self.ns, target_port)
            if target is None:
                skipped.append(object_name(pod))
                continue
            try:
                verdicts.append(
                    (object_name(pod), netpol.ingress_verdict(policies, target, caller))
                )
            except ValueError as exc:
                return unknown("networkpolicy", f"a NetworkPolicy could not be read: {exc}")
        details = list(notes)
        if skipped:
            details.append(
                f"not evaluated (the Pod does not declare the target port): {', '.join(skipped)}"
            )
        return netpol_check(
            verdicts, len(policies), caller, details, describe_target_port(target_port)
        )

    def caller(self) -> tuple[netpol.Peer, list[str]]:
        """Who connects: ``ctx.caller`` when given, else this pod (its namespace and,
        when it may be read, its own Pod's labels), else a client outside the cluster;
        with the namespace's labels when it may be read."""
        settings = self.ctx.settings
        notes: list[str] = []
        peer: netpol.Peer | None = self.ctx.caller
        if peer is None and settings.in_pod() and settings.pod_namespace:
            own = settings.pod_namespace
            labels: Mapping[str, str] | None = None
            ip: str | None = None
            pod_name = settings.environ.get("HOSTNAME", "")
            if pod_name:
                try:
                    me = self.api.get(f"{pods_path(own)}/{pod_name}", ("get", "pods", own))
                except READ_ERRORS as exc:
                    notes.append(f"this Pod's labels are unknown: {why_not(exc)}")
                    me = None
                if me is not None:
                    labels = str_map((me.get("metadata") or {}).get("labels"))
                    ip = (me.get("status") or {}).get("podIP") or None
                elif not notes:
                    notes.append(f"this Pod's labels are unknown: no Pod {pod_name!r} in {own!r}")
            else:
                notes.append("this Pod's labels are unknown: HOSTNAME is not set")
            peer = netpol.Peer(namespace=own, pod_labels=labels, ip=ip)
        if peer is None:
            peer = netpol.Peer(namespace=None)
            notes.append(
                "the caller is outside the cluster (give --from-namespace/--from-labels to "
                "ask for a Pod instead)"
            )
        if peer.namespace is not None and peer.namespace_labels is None:
            try:
                found = self.api.get(
                    f"/api/v1/namespaces/{peer.namespace}", ("get", "namespaces", "")
                )
            except READ_ERRORS as exc:
                # Left unknown: a rule selecting namespaces by their name label is still
                # decided (every namespace has it); one by other labels is said to be
                # unknown, not guessed to deny.
                notes.append(
                    f"the labels of namespace {peer.namespace!r} are unknown ({why_not(exc)}) "
                    f"except its {netpol.NAMESPACE_NAME_LABEL}={peer.namespace}"
                )
                return peer, notes
            if found is None:
                notes.append(f"the caller's namespace {peer.namespace!r} does not exist")
            labels = (
                str_map((found.get("metadata") or {}).get("labels")) if found is not None else None
            )
            peer = attrs.evolve(
                peer,
                namespace_labels=labels or {netpol.NAMESPACE_NAME_LABEL: peer.namespace},
            )
        return peer, notes


# -- pure pieces (tested without a cluster) ---------------------------------------------


def describe_service(info: ServiceInfo) -> str:
    """``ClusterIP 10.96.0.10``, ``ClusterIP, headless``, ``ExternalName for db.example``."""
    if info.type == "ExternalName":
        return f"ExternalName for {info.external_name}"
    if info.headless:
        return f"{info.type}, headless"
    return f"{info.type} {', '.join(info.cluster_ips)}"


def closest(name: str, names: Sequence[str]) -> list[str]:
    """The names most like ``name`` (a typo's likely intent), best first."""
    return difflib.get_close_matches(name, [n for n in names if n != name], n=3, cutoff=0.6)


def raw_ports(svc: Json) -> list[Json]:
    ports = (svc.get("spec") or {}).get("ports") or []
    return [p for p in ports if isinstance(p, dict)]


def raw_port(svc: Json, number: int) -> Json | None:
    """The ``spec.ports`` entry of a Service port number."""
    return next((p for p in raw_ports(svc) if p.get("port") == number), None)


def target_port_of(raw: Sequence[Json], number: int) -> int | str | None:
    """A Service port's targetPort (its own number when unset, as the API defaults it)."""
    for p in raw:
        if p.get("port") == number:
            target = p.get("targetPort")
            return number if target is None else target
    return None


def port_label(p: Json) -> str:
    """``'http' (80)`` or ``80``: a Service port as a hint names it."""
    return f"{p['name']!r} ({p.get('port')})" if p.get("name") else str(p.get("port"))


def describe_ports(raw: Sequence[Json]) -> str:
    """``http=80→8080, 9090``: each Service port with its targetPort when it differs."""
    shown = []
    for p in raw:
        text = f"{p['name']}={p.get('port')}" if p.get("name") else str(p.get("port"))
        target = p.get("targetPort")
        if target is not None and target != p.get("port"):
            text += f"→{target}"
        shown.append(text)
    return ", ".join(shown) or "none"


def port_hint(raw: Sequence[Json], wanted: int | str) -> str:
    """The fix when the port asked for is not declared; the common mistake, asking
    for the Pods' port (targetPort) rather than the Service's, is named as such."""
    for p in raw:
        if wanted == p.get("targetPort") and wanted != p.get("port"):
            return (
                f"{wanted} is the targetPort of port {port_label(p)}; clients connect to the "
                f"Service port {p.get('port')}"
            )
    if isinstance(wanted, str):
        names = [str(p["name"]) for p in raw if p.get("name")]
        close = difflib.get_close_matches(wanted, names, n=1, cutoff=0.6)
        if close:
            return f"did you mean port {close[0]!r}?"
    return f"ask for one of the declared ports: {describe_ports(raw)}"


def service_selector(svc: Json) -> dict[str, str]:
    return str_map((svc.get("spec") or {}).get("selector")) or {}


def selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def str_map(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): str(v) for k, v in value.items()}


@attrs.frozen(kw_only=True)
class PodState:
    """A Pod as the pods check reports it."""

    name: str
    phase: str
    ready: bool
    ip: str | None
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        state = "ready" if self.ready else "not ready"
        text = f"{self.name}: {self.phase}, {state}, IP {self.ip or 'none yet'}"
        return f"{text}: {'; '.join(self.reasons)}" if self.reasons else text


def pod_state(pod: Json) -> PodState:
    """Phase, readiness and why it is not ready, from what the kubelet wrote."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    reasons: list[str] = []
    if meta.get("deletionTimestamp"):
        reasons.append("terminating (being deleted)")
    if not spec.get("nodeName"):
        reasons.append("not scheduled to a node")
    false = {c.get("type") for c in conditions if c.get("status") != "True"}
    for c in conditions:
        # ContainersReady=False is why Ready=False: said once, with Ready.
        if c.get("type") == "ContainersReady" and "Ready" in false:
            continue
        if c.get("status") != "True":
            said = ": ".join(str(c[k]) for k in ("reason", "message") if c.get(k))
            reasons.append(f"{c.get('type')}={c.get('status')}" + (f" ({said})" if said else ""))
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if isinstance(cs, dict):
                reasons += container_reasons(cs)
    return PodState(
        name=object_name(pod),
        phase=str(status.get("phase") or "Unknown"),
        ready=ready and not meta.get("deletionTimestamp"),
        ip=status.get("podIP") or None,
        reasons=tuple(reasons) if not ready else tuple(r for r in reasons if "terminating" in r),
    )


def container_reasons(cs: Json) -> list[str]:
    name = cs.get("name", "?")
    state = cs.get("state") or {}
    out: list[str] = []
    waiting = state.get("waiting")
    terminated = state.get("terminated")
    if isinstance(waiting, dict):
        said = ": ".join(str(waiting[k]) for k in ("reason", "message") if waiting.get(k))
        out.append(f"container {name!r} waiting" + (f" ({said})" if said else ""))
    elif isinstance(terminated, dict):
        code = terminated.get("exitCode")
        out.append(f"container {name!r} terminated ({terminated.get('reason', '?')}, exit {code})")
    elif cs.get("ready") is False and "running" in state:
        out.append(f"container {name!r} running but not ready (its readiness probe?)")
    last = (cs.get("lastState") or {}).get("terminated")
    if isinstance(last, dict) and cs.get("restartCount"):
        out.append(
            f"container {name!r} restarted {cs['restartCount']} time(s), last exit "
            f"{last.get('reason', '?')} ({last.get('exitCode')})"
        )
    return out


@attrs.frozen(kw_only=True)
class EndpointCounts:
    """A Service's endpoints, counted once each across its slices."""

    slices: int
    total: int
    ready: int
    serving: int
    terminating: int
    unserved: int

    def describe(self) -> str:
        if not self.slices:
            return "no EndpointSlices for the Service"
        return (
            f"{self.ready} ready of {self.total} endpoint(s) in {self.slices} EndpointSlice(s); "
            f"{self.serving} serving, {self.terminating} terminating"
        )


def count_endpoints(slices: Sequence[SliceInfo], port_name: str | None) -> EndpointCounts:
    """Ready/serving/terminating counts over the slices serving the port (the same
    address in two slices, an endpoint moving between them, counts once: the readier
    of the two), and how many endpoints sit in slices that do not serve it."""
    merged: dict[str, tuple[bool, bool, bool]] = {}
    unserved = 0
    for sl in slices:
        serves, _ = sl.port_for(port_name)
        eps = sl.endpoints(None)
        if not serves:
            unserved += len(eps)
            continue
        for ep in eps:
            state = (ep.ready, ep.serving, ep.terminating)
            old = merged.get(ep.host)
            merged[ep.host] = state if old is None else max(old, state)
    return EndpointCounts(
        slices=len(slices),
        total=len(merged),
        ready=sum(1 for r, _, _ in merged.values() if r),
        serving=sum(1 for _, s, _ in merged.values() if s),
        terminating=sum(1 for _, _, t in merged.values() if t),
        unserved=unserved,
    )


def ready_addresses(slices: Sequence[SliceInfo]) -> set[str]:
    """Every ready endpoint address (what CoreDNS answers for a headless Service)."""
    return {ep.host for sl in slices for ep in sl.endpoints(None) if ep.ready}


def agreement_check(dns: set[str], api: set[str], what: str) -> Check:
    """DNS's answer against the API's: the same set, or a non-blocking failure that
    names what each has that the other has not."""
    if dns == api:
        return Check(
            name="agreement",
            status=Status.PASSED,
            summary=f"DNS and the API agree on the {what}: {', '.join(sorted(api)) or 'none'}",
        )
    details = []
    if api - dns:
        details.append(f"only the API has: {', '.join(sorted(api - dns))}")
    if dns - api:
        details.append(f"only DNS has: {', '.join(sorted(dns - api))}")
    return Check(
        name="agreement",
        status=Status.FAILED,
        summary=f"DNS and the API disagree on the {what}",
        details=tuple(details),
        hint=(
            "DNS lags the API (CoreDNS's watch, or a cached answer until its TTL runs out): "
            "retry in a few seconds; if it lasts, look at CoreDNS's logs"
        ),
        blocking=False,
    )


@attrs.frozen(kw_only=True)
class Permission:
    """One thing kdisco asks the API for, and what it is for."""

    verb: str
    resource: str
    group: str = ""
    namespace: str = ""
    why: str
    #: False: without it kdisco still answers (more slowly, or with less).
    blocking: bool = True

    @property
    def qualified(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def short(self) -> str:
        return f"{self.verb} {self.qualified}"

    def describe(self) -> str:
        return permission_words(self.verb, self.qualified, self.namespace)


def needed_permissions(
    namespace: str, *, watch: bool, reach: str, outside: bool
) -> list[Permission]:
    """What kdisco's api strategy reads, each verb once: the Service (get), its slices
    (list); with the watch cache, list and watch of both; for the external view,
    Ingresses and Nodes."""
    slices = "discovery.k8s.io"
    needs = [
        Permission(verb="get", resource="services", namespace=namespace, why="reads the Service"),
        Permission(
            verb="list",
            resource="endpointslices",
            group=slices,
            namespace=namespace,
            why="reads the Service's endpoints",
        ),
    ]
    if watch:
        cache = "the watch cache; without it every lookup reads the API"
        needs += [
            Permission(
                verb="list", resource="services", namespace=namespace, why=cache, blocking=False
            ),
            Permission(
                verb="watch", resource="services", namespace=namespace, why=cache, blocking=False
            ),
            Permission(
                verb="watch",
                resource="endpointslices",
                group=slices,
                namespace=namespace,
                why=cache,
                blocking=False,
            ),
        ]
    if reach == "external" or (reach == "auto" and outside):
        # Under auto the cluster view is the fallback: missing these costs the way in
        # from outside, not the answer.
        hard = reach == "external"
        needs += [
            Permission(
                verb="list",
                resource="ingresses",
                group=NETPOL_GROUP,
                namespace=namespace,
                why="Ingress routes for reach=external",
                blocking=hard,
            ),
            Permission(
                verb="get", resource="nodes", why="node ports for reach=external", blocking=hard
            ),
            Permission(
                verb="list", resource="nodes", why="node ports for reach=external", blocking=hard
            ),
        ]
    return needs


def rbac_hint(missing: Sequence[Permission]) -> str:
    """The Role (and ClusterRole) rules that would grant what is missing."""
    rules: dict[tuple[str, str, bool], list[str]] = {}
    for m in missing:
        rules.setdefault((m.group, m.resource, bool(m.namespace)), []).append(m.verb)
    parts = []
    for (group, resource, namespaced), verbs in rules.items():
        kind = "Role" if namespaced else "ClusterRole"
        shown = ", ".join(repr(v) for v in verbs)
        parts.append(
            f"{kind} rule apiGroups [{group!r}], resources [{resource!r}], verbs [{shown}]"
        )
    namespace = next((m.namespace for m in missing if m.namespace), "")
    where = f" in namespace {namespace!r}" if namespace else ""
    return f"add to the Role{where} ({ROLE_DOC} has it whole): " + "; ".join(parts)


def pod_target(pod: Json, namespace: str, service_port: Json) -> netpol.Target | None:
    """The Pod-side port a Service port reaches (its targetPort, by number or by the
    name of a container port), as the NetworkPolicy evaluation takes it; None when
    the Pod does not declare a named targetPort."""
    labels = str_map((pod.get("metadata") or {}).get("labels")) or {}
    number = service_port.get("port")
    target = service_port.get("targetPort", number)
    protocol = str(service_port.get("protocol") or "TCP")
    declared = [
        p
        for c in (pod.get("spec") or {}).get("containers") or []
        if isinstance(c, dict)
        for p in c.get("ports") or []
        if isinstance(p, dict) and (p.get("protocol") or "TCP") == protocol
    ]
    if isinstance(target, str):
        found = next((p for p in declared if p.get("name") == target), None)
        if found is None or not isinstance(found.get("containerPort"), int):
            return None
        return netpol.Target(
            namespace=namespace,
            pod_labels=labels,
            port=found["containerPort"],
            port_name=target,
            protocol=protocol,
        )
    if not isinstance(target, int):
        return None
    name = next((p.get("name") for p in declared if p.get("containerPort") == target), None)
    return netpol.Target(
        namespace=namespace,
        pod_labels=labels,
        port=target,
        port_name=name if isinstance(name, str) else None,
        protocol=protocol,
    )


def netpol_check(
    verdicts: Sequence[tuple[str, netpol.Verdict]],
    policies: int,
    caller: netpol.Peer,
    notes: Sequence[str],
    port: str = "",
) -> Check:
    """One check from each target Pod's verdict: denied for every Pod fails (for
    some, a warning), any unknown verdict is could-not-check, else passed."""
    who = netpol.describe_peer(caller)
    details = list(notes)
    if not verdicts:
        return Check(
            name="networkpolicy",
            status=Status.UNKNOWN,
            summary="no target Pod declares the port the Service sends to",
            details=tuple(details),
        )
    denied_pods = [(n, v) for n, v in verdicts if v.allowed is False]
    unknown_pods = [(n, v) for n, v in verdicts if v.allowed is None]
    for n, v in verdicts:
        details.append(f"{n}: {v.reason}")
    if len(details) > SHOWN + len(notes):
        details = [*details[: SHOWN + len(notes)], f"... and {len(verdicts) - SHOWN} more Pods"]
    if denied_pods:
        isolating = sorted({p for _, v in denied_pods for p in v.selecting})
        some = len(denied_pods) < len(verdicts)
        pods = f"{len(denied_pods)} of {len(verdicts)} target Pods"
        return Check(
            name="networkpolicy",
            status=Status.FAILED,
            summary=f"NetworkPolicy {', '.join(isolating)} denies {who} on {pods}",
            details=tuple(details),
            hint=needed_rule(caller, isolating, port),
            blocking=not some,
        )
    if unknown_pods:
        return Check(
            name="networkpolicy",
            status=Status.UNKNOWN,
            summary=f"whether {who} may connect is not known: {unknown_pods[0][1].reason}",
            details=tuple(details),
            hint="give --from-namespace and --from-labels to say who connects",
        )
    isolated = sum(1 for _, v in verdicts if v.isolated)
    if isolated:
        summary = f"{who} is admitted to all {len(verdicts)} target Pods"
    else:
        summary = f"no NetworkPolicy isolates the target Pods ({policies} in the namespace)"
    details.append("(policies are enforced only by a network plugin that implements them)")
    return Check(
        name="networkpolicy", status=Status.PASSED, summary=summary, details=tuple(details)
    )


def describe_target_port(service_port: Json) -> str:
    """``port 8080/TCP`` or ``port 'http'/TCP``: the Pod side of a Service port."""
    target = service_port.get("targetPort", service_port.get("port"))
    shown = repr(target) if isinstance(target, str) else str(target)
    return f"port {shown}/{service_port.get('protocol') or 'TCP'}"


def needed_rule(caller: netpol.Peer, isolating: Sequence[str], port: str) -> str:
    """The ingress rule that would admit the caller, for the hint."""
    policy = f"policy {isolating[0]!r}" if len(isolating) == 1 else "one of the isolating policies"
    if caller.namespace is None:
        source = "an ipBlock holding the caller's address (as the Pod sees it, often a node's)"
    else:
        source = f"namespaceSelector {{{netpol.NAMESPACE_NAME_LABEL}: {caller.namespace}}}"
        if caller.pod_labels:
            source += f" with podSelector {{{selector_text(caller.pod_labels)}}}"
    return f"add to {policy} an ingress rule from {source} on {port or 'the target port'}"
