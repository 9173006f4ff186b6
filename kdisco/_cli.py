"""``kdisco resolve NAME``: the library from a shell. Exit 0 found, 1 not found, 2 bad input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from ._attempts import Outcome
from ._discoverer import Discoverer
from ._exceptions import ConfigurationError, DiscoveryError, InvalidServiceName
from ._models import Resolution, ServicePort
from ._settings import parse_strategy_list

EXIT_FOUND, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdisco", description="Find Kubernetes Services the way the cluster publishes them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    resolve = sub.add_parser("resolve", help="find one Service and print its endpoints")
    resolve.add_argument("name", help="svc, svc.ns, svc.ns.svc.<domain>, optionally :port")
    resolve.add_argument("-n", "--namespace")
    resolve.add_argument("-p", "--port", help="port name or number")
    resolve.add_argument(
        "--strategies",
        help="comma list, in order: static,dns,env,api (and installed plugin strategies)",
    )
    resolve.add_argument("--timeout", type=float, help="seconds for the whole lookup")
    resolve.add_argument("--dns-server", help="host:port of the cluster DNS server")
    resolve.add_argument("--cluster-domain")
    resolve.add_argument(
        "--include-not-ready", action="store_true", help="also list endpoints not ready"
    )
    resolve.add_argument(
        "--reach",
        help="where the answer must work from: cluster, external (a LoadBalancer address, "
        "node port or Ingress URL), auto (default: external outside a cluster when there "
        "is a way in); also KDISCO_REACH",
    )
    resolve.add_argument("--json", action="store_true", help="print JSON")
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        strategies = (
            parse_strategy_list(args.strategies, where="--strategies")
            if (args.strategies)
            else None
        )
        # --namespace is the Service's namespace, as discover(namespace=) takes it. It is
        # not the Discoverer's: that one is the pod's own namespace, the only one the
        # env strategy's variables describe, and stays detected.
        discoverer = Discoverer(
            strategies=strategies,
            dns_server=args.dns_server,
            cluster_domain=args.cluster_domain,
        )
        with discoverer:
            res = discoverer.discover(
                args.name,
                namespace=args.namespace,
                port=args.port,
                timeout=args.timeout,
                include_not_ready=args.include_not_ready,
                reach=args.reach,
            )
    except (InvalidServiceName, ConfigurationError) as exc:
        print(f"kdisco: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DiscoveryError as exc:
        if args.json:
            print(
                json.dumps(
                    {
                        "error": type(exc).__name__,
                        "message": exc.message,
                        "attempts": [
                            {"strategy": a.strategy, "outcome": a.outcome.value, "reason": a.reason}
                            for a in exc.attempts
                        ],
                    },
                    indent=2,
                )
            )
        print(f"kdisco: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(to_json(res), indent=2) if args.json else summary(res))
    return EXIT_FOUND
