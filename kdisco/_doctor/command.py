"""``kdisco doctor NAME``: the command (its flags, ``run``) and ``diagnose``, which runs
every check in order.

The checks: the local ones (``local.before``: name, namespace, resolv.conf, dns
server, dns answer, discover), the cluster's (``cluster.checks``: the Service, its
ports, Pods, EndpointSlices, DNS/API agreement, RBAC, NetworkPolicies), then
``local.after`` (an ExternalName's target, the TCP probe when asked). Each reports
passed, failed or could not check, with why. Exit 0 when nothing found stops a
connection, 1 otherwise, 2 for bad flags or settings. An invalid Service name is a
finding (exit 1), not bad input: the doctor is where one goes to find out why a name
fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kdisco._exceptions import ConfigurationError, InvalidServiceName
from kdisco._k8s.netpol import Peer
from kdisco._names import Query, check_namespace, parse_query
from kdisco._settings import DEFAULT_RESOLV_CONF, Settings

from .context import DEFAULT_STEP_TIMEOUT, Context
from .report import Check, Report, Status

EXIT_CONNECTS, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` as a dict (``--from-labels``); argparse reports a malformed one.

    Args:
        text: The flag's value.

    Returns:
        dict: Label keys to values.

    Raises:
        argparse.ArgumentTypeError: A part is not ``key=value``.
    """
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"expected key=value[,key=value...], not {text!r}")
        labels[key.strip()] = value.strip()
    return labels


def _namespace_flag(text: str) -> str:
    try:
        return check_namespace(text)
    except InvalidServiceName as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the doctor's own flags to its subcommand's parser.

    Args:
        parser: The ``doctor`` subcommand's parser (the common flags are the CLI's).
    """
    parser.add_argument(
        "name",
        help="svc, svc.ns, svc.ns.svc.<domain>, optionally :port; an invalid name is "
        "reported as the failed 'name' check (exit 1)",
    )
    parser.add_argument("-p", "--port", help="port name or number")
    parser.add_argument("-n", "--namespace", help="the Service's namespace")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also try a TCP connect to the endpoints found (never done without it)",
    )
    parser.add_argument(
        "--from-namespace",
        type=_namespace_flag,
        metavar="NAMESPACE",
        help="the client's namespace, for the NetworkPolicy check (default: this pod's "
        "when in one; with --from-labels alone, else the Service's)",
    )
    parser.add_argument(
        "--from-labels",
        type=parse_labels,
        metavar="K=V[,K=V...]",
        help="the client Pod's labels, for the NetworkPolicy check",
    )


def parse_name(
    raw_name: str, *, namespace: str | None, port: str | None, settings: Settings
) -> tuple[Query | None, str | None]:
    """The user's name as kdisco would parse it, or None and why it is invalid.

    Args:
        raw_name: The name as typed.
        namespace: ``--namespace``, or None.
        port: ``--port``, or None.
        settings: For the default namespace and the cluster domain.

    Returns:
        tuple: The query (or None) and the error message (or None).
    """
    try:
        query = parse_query(
            raw_name,
            namespace=namespace,
            default_namespace=settings.namespace,
            cluster_domain=settings.cluster_domain,
            port=port,
        )
    except InvalidServiceName as exc:
        return None, exc.message
    return query, None


def namespace_source(raw_name: str, namespace: str | None, settings: Settings) -> str:
    """Where the namespace of ``raw_name`` comes from, in words.

    Args:
        raw_name: The name as typed.
        namespace: ``--namespace``, or None.
        settings: The settings, whose ``sources`` say where their namespace came from.

    Returns:
        str: e.g. ``the name``, ``--namespace``, ``the pod's service account (...)``.
    """
    if "." in raw_name.partition(":")[0].rstrip("."):
        return "the name"
    if namespace is not None:
        return "--namespace"
    where = settings.sources.get("namespace", "default")
    if where == "default":
        return "the default (no namespace given, not in a pod, no kubeconfig namespace)"
    if where == "POD_NAMESPACE":
        return "the pod's POD_NAMESPACE (downward API)"
    if where.startswith("kubeconfig"):
        return f"the {where}"
    if where == "argument":
        return "the namespace setting"
    if where == "KDISCO_NAMESPACE":
        return where
    return f"the pod's service account ({where})"


def build_context(
    args: argparse.Namespace, settings: Settings, resolv_conf: str = DEFAULT_RESOLV_CONF
) -> Context:
    """The doctor's state for ``args``: the parsed name (or why it is invalid) and
    where its namespace comes from.

    Args:
        args: The parsed flags (``name``, ``port``, ``namespace``, ``probe``,
            ``from_namespace``, ``from_labels``; ``timeout`` when given sets each
            step's timeout).
        settings: The settings kdisco would use.
        resolv_conf: The resolv.conf the settings were read with.

    Returns:
        Context: Ready for `diagnose`.
    """
    namespace = getattr(args, "namespace", None)
    query, error = parse_name(
        args.name, namespace=namespace, port=getattr(args, "port", None), settings=settings
    )
    timeout = getattr(args, "timeout", None)
    return Context(
        settings=settings,
        query=query,
        raw_name=args.name,
        namespace_source=namespace_source(args.name, namespace, settings),
        probe=bool(getattr(args, "probe", False)),
        step_timeout=float(timeout) if timeout else DEFAULT_STEP_TIMEOUT,
        caller=_caller(args, settings, query),
        name_error=error,
        resolv_conf=resolv_conf,
    )


def _caller(args: argparse.Namespace, settings: Settings, query: Query | None) -> Peer | None:
    namespace = getattr(args, "from_namespace", None)
    labels = getattr(args, "from_labels", None)
    if namespace is None and labels is None:
        return None  # cluster.checks may find this pod's own
    if namespace is None:
        # Labels alone describe a Pod: in this pod's namespace, else the target's.
        namespace = settings.pod_namespace or (query.service.namespace if query else None)
    return Peer(namespace=namespace, pod_labels=labels)


def _guarded(
    stage: str, checks: Callable[[Context], Iterable[Check]], ctx: Context
) -> Iterator[Check]:
    """A stage's checks; a bug in one becomes a check that says so, not a traceback
    that hides every other finding."""
    try:
        yield from checks(ctx)
    except Exception as exc:  # reported as a check, never hidden
        yield Check(
            name=stage,
            status=Status.UNKNOWN,
            summary=f"the doctor failed here: {type(exc).__name__}: {exc}",
            hint="please report this as a kdisco bug",
        )


def diagnose(ctx: Context) -> Report:
    """Run every check in order.

    Args:
        ctx: The doctor's state (`build_context`).

    Returns:
        Report: Every check's result.
    """
    # Imported here, not at the top: ``kdisco --help`` builds this command's parser
    # and should not load DNS and API machinery to print it.
    from . import cluster, local

    checks = [
        *_guarded("local", local.before, ctx),
        *_guarded("cluster", cluster.checks, ctx),
        *_guarded("local", local.after, ctx),
    ]
    return Report(target=_target(ctx), checks=tuple(checks))


def _target(ctx: Context) -> str:
    if ctx.query is None:
        return repr(ctx.raw_name)
    shown = ctx.query.service.fqdn.rstrip(".")
    if ctx.query.port is not None:
        shown += f":{ctx.query.port}"
    return shown


def run(args: argparse.Namespace, settings_kwargs: dict[str, Any]) -> int:
    """``kdisco doctor``: load the settings, diagnose, print the report.

    Args:
        args: The parsed flags (the doctor's and ``json``).
        settings_kwargs: Keyword arguments for ``Settings.load`` from the common flags.

    Returns:
        int: 0 when it would connect, 1 when a check failed, 2 for bad settings.
    """
    try:
        settings = Settings.load(**settings_kwargs)
    except ConfigurationError as exc:
        print(f"kdisco: {exc}", file=sys.stderr)
        return EXIT_USAGE
    resolv_conf = str(settings_kwargs.get("resolv_conf") or DEFAULT_RESOLV_CONF)
    report = diagnose(build_context(args, settings, resolv_conf))
    if getattr(args, "json", False):
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text(), end="")
    return EXIT_CONNECTS if report.would_connect else EXIT_FINDINGS
