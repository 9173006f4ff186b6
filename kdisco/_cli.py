"""``kdisco``: the library from a shell.

``kdisco resolve NAME`` finds one Service (exit 0 found, 1 not, 2 bad input);
``kdisco doctor NAME`` checks why a name does or does not connect (exit 0 it would,
1 it would not, 2 bad input). Both take the same connection flags and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import attrs

from ._attempts import Attempt, Outcome
from ._discoverer import Discoverer
from ._exceptions import ConfigurationError, DiscoveryError, InvalidServiceName
from ._models import Resolution, ServicePort
from ._settings import parse_strategy_list

EXIT_FOUND, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EXAMPLES = """\
examples:
  kdisco resolve payments.billing            find a Service (DNS, then env, then the API)
  kdisco resolve payments.billing:http       ... and the port named http
  kdisco resolve web -n shop --json          the answer as JSON, for scripts
  kdisco resolve db.storage --explain        every strategy's turn, as a table
  kdisco resolve web --static hosts.toml     answer from a static map (local development)
  kdisco doctor payments.billing --probe     why it does or does not connect
  kdisco --kubeconfig ~/.kube/prod --context eu resolve payments.billing

exit status: 0 found (doctor: would connect), 1 not found (doctor: would not), 2 bad input.
docs: docs/cli.md and docs/troubleshooting.md
"""

_RESOLVE_EXAMPLES = """\
examples:
  kdisco resolve payments.billing
  kdisco resolve payments.billing:http --include-not-ready
  kdisco resolve web -n shop -p grpc --json | jq -r '.endpoints[].host'
  kdisco resolve cart --reach external --explain
"""

_DOCTOR_EXAMPLES = """\
examples:
  kdisco doctor payments.billing
  kdisco doctor payments -n billing -p http --probe
  kdisco doctor payments.billing --from-namespace shop --from-labels app=checkout
  kdisco doctor payments.billing --json

checks, in order: name, namespace, resolv.conf, dns server, dns answer, discover,
service, ports, pods, endpointslices, agreement, rbac, networkpolicy, externalname,
probe (only with --probe). Each passes, fails (with a hint) or could not be checked
(with why).
"""


def _common(*, sub: bool) -> argparse.ArgumentParser:
    """The flags every command takes: where the cluster is, and how to answer. Taken
    before the command or after it; ``sub``: the command's copy, whose unset flags
    must not overwrite those given before the command (argparse would, with None)."""
    common = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if sub else None
    )
    group = common.add_argument_group("connection")
    group.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file for the api strategy (default: KUBECONFIG, ~/.kube/config)",
    )
    group.add_argument("--context", help="kubeconfig context (default: its current-context)")
    group.add_argument(
        "--static",
        metavar="PATH",
        help="TOML static map, tried first (default: KDISCO_STATIC)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline of the lookup (doctor: of each check's network step)",
    )
    group.add_argument(
        "--dns-server", metavar="HOST:PORT", help="cluster DNS server (default: resolv.conf)"
    )
    group.add_argument("--cluster-domain", metavar="DOMAIN", help="default: from resolv.conf")
    common.add_argument(
        "--json",
        action="store_true",
        help="print JSON on stdout, errors included (messages still go to stderr)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from ._doctor import command as doctor

    common = _common(sub=True)
    parser = argparse.ArgumentParser(
        prog="kdisco",
        description="Find Kubernetes Services the way the cluster publishes them.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(sub=False)],
    )
    parser.add_argument("--version", action="version", version=f"kdisco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    resolve = sub.add_parser(
        "resolve",
        help="find one Service and print its endpoints",
        description="Find one Service and print its endpoints.",
        epilog=_RESOLVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    resolve.add_argument("name", help="svc, svc.ns, svc.ns.svc.<domain>, optionally :port")
    resolve.add_argument("-n", "--namespace", help="the Service's namespace")
    resolve.add_argument("-p", "--port", help="port name or number")
    resolve.add_argument(
        "--strategies",
        help="comma list, in order: static,dns,env,api (and installed plugin strategies)",
    )
    resolve.add_argument(
        "--include-not-ready", action="store_true", help="also list endpoints not ready"
    )
    resolve.add_argument(
        "--reach",
        help="where the answer must work from: cluster, external (a LoadBalancer address, "
        "node port or Ingress URL), auto (default: external outside a cluster when there "
        "is a way in); also KDISCO_REACH",
    )
    resolve.add_argument(
        "--explain", action="store_true", help="also print each strategy's turn as a table"
    )
    doctor_parser = sub.add_parser(
        "doctor",
        help="check why a Service name does or does not connect",
        description="Run every check that can be run, in order, and say what would stop a "
        "connection to NAME.",
        epilog=_DOCTOR_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    doctor.add_arguments(doctor_parser)
    return parser


def _settings_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Settings.load`` / ``Discoverer`` arguments from the common flags (unset ones
    left out, so the environment variables behind them still apply)."""
    given = {
        "kubeconfig": args.kubeconfig,
        "context": args.context,
        "static": args.static,
        "timeout": args.timeout,
        "dns_server": args.dns_server,
        "cluster_domain": args.cluster_domain,
    }
    return {k: v for k, v in given.items() if v is not None}


def _port_json(p: ServicePort) -> dict[str, Any]:
    return {
        "name": p.name,
        "port": p.port,
        "protocol": p.protocol,
        "app_protocol": p.app_protocol,
        "node_port": p.node_port,
    }


def to_json(res: Resolution) -> dict[str, Any]:
    return {
        "source": res.source,
        "kind": res.kind.value,
        "service": {
            "name": res.service.name,
            "namespace": res.service.namespace,
            "cluster_domain": res.service.cluster_domain,
            "fqdn": res.service.fqdn,
        },
        "external_name": res.external_name,
        "snapshot": res.snapshot,
        "reach": res.reach,
        "via": [str(v) for v in res.via],
        "ports": [_port_json(p) for p in res.ports],
        # Which declared port the endpoints' port numbers belong to (None: not known).
        "port": None if res.port is None else _port_json(res.port),
        "endpoints": [
            {
                "host": ep.host,
                "port": ep.port,
                "ready": ep.ready,
                "serving": ep.serving,
                "terminating": ep.terminating,
                "hostname": ep.hostname,
                "pod": ep.pod,
                "node": ep.node,
                "zone": ep.zone,
                "scheme": ep.scheme,
                "path": ep.path,
            }
            for ep in res.endpoints
        ],
        "attempts": [
            {"strategy": a.strategy, "outcome": a.outcome.value, "reason": a.reason}
            for a in res.attempts
        ],
    }


def summary(res: Resolution) -> str:
    reach = {"cluster": " [cluster-internal]", "external": " [from outside the cluster]"}
    lines = [
        f"{res.service} ({res.service.fqdn}) found by {res.source}: {res.kind.value}"
        + (" [snapshot from container start]" if res.snapshot else "")
        + reach.get(res.reach or "", "")
    ]
    if res.via:
        lines.append("  via ExternalName " + " -> ".join(str(v) for v in res.via))
    warnings = []
    for a in res.attempts:
        if a.outcome is Outcome.WARNING:
            warnings.append(f"WARNING: {a.reason}")
        else:
            lines.append(f"  before that, {a.describe()}")
    if res.ports:
        declared = ", ".join(
            f"{p.label}/{p.protocol}" + (f" (node port {p.node_port})" if p.node_port else "")
            for p in res.ports
        )
        lines.append(f"  ports: {declared}")
    for ep in res.endpoints:
        extras = [
            f"{k}={v}"
            for k, v in (
                ("hostname", ep.hostname),
                ("pod", ep.pod),
                ("node", ep.node),
                ("zone", ep.zone),
            )
            if v
        ]
        if not ep.ready:
            extras.append("NOT READY")
        if ep.terminating:
            extras.append("terminating")
        shown = ep.address
        if ep.scheme is not None:
            shown = attrs.evolve(res, endpoints=(ep,)).url()
        lines.append(f"  {shown}" + (f"  ({', '.join(extras)})" if extras else ""))
    return "\n".join(lines + warnings)


def explain(attempts: Sequence[Attempt], answered_by: str | None = None) -> str:
    """The attempts as a table (``resolve --explain``): one row per strategy's turn."""
    rows = [(a.strategy, a.outcome.value, str(a.tries), a.reason) for a in attempts]
    if answered_by is not None:
        rows.append((answered_by, Outcome.ANSWERED.value, "", "its answer is above"))
    header = ("STRATEGY", "OUTCOME", "TRIES", "WHY")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    indent = sum(widths) + 3 * 2
    why_width = max(_width() - indent, 30)
    lines = []
    for row in [header, *rows]:
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
        why = textwrap.wrap(row[3], why_width, break_long_words=False) or [""]
        lines.append(f"{cells}  {why[0]}")
        lines.extend(" " * (indent) + more for more in why[1:])
    return "\n".join(lines)


def _width() -> int:
    return min(shutil.get_terminal_size((100, 24)).columns, 120)


def _error_text(exc: DiscoveryError) -> str:
    """An error for a terminal: the headline, then each attempt, wrapped."""
    width = _width()
    lines = textwrap.wrap(
        f"kdisco: {type(exc).__name__}: {exc.message}",
        width,
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    if exc.attempts:
        lines.append("  tried:")
    for a in exc.attempts:
        lines += textwrap.wrap(
            a.describe(),
            width,
            initial_indent="    ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _error_json(exc: DiscoveryError) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": exc.message,
        "attempts": [
            {
                "strategy": a.strategy,
                "outcome": a.outcome.value,
                "reason": a.reason,
                "tries": a.tries,
            }
            for a in exc.attempts
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """The ``kdisco`` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        int: The exit status.
    """
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        from ._doctor import command as doctor

        return doctor.run(args, _settings_kwargs(args))
    try:
        strategies = (
            parse_strategy_list(args.strategies, where="--strategies")
            if (args.strategies)
            else None
        )
        # --namespace is the Service's namespace, as discover(namespace=) takes it. It is
        # not the Discoverer's: that one is the pod's own namespace, the only one the
        # env strategy's variables describe, and stays detected.
        discoverer = Discoverer(strategies=strategies, **_settings_kwargs(args))
        with discoverer:
            res = discoverer.discover(
                args.name,
                namespace=args.namespace,
                port=args.port,
                include_not_ready=args.include_not_ready,
                reach=args.reach,
            )
    except (InvalidServiceName, ConfigurationError) as exc:
        if args.json:
            print(json.dumps(_error_json(exc), indent=2))
        print(_error_text(exc), file=sys.stderr)
        return EXIT_USAGE
    except DiscoveryError as exc:
        if args.json:
            print(json.dumps(_error_json(exc), indent=2))
        print(_error_text(exc), file=sys.stderr)
        if args.explain and not args.json:
            print(explain(exc.attempts), file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(to_json(res), indent=2))
    else:
        print(summary(res))
        if args.explain:
            print()
            print(explain(res.attempts, answered_by=res.source))
    return EXIT_FOUND
