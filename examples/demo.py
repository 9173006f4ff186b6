"""See kdisco work: `nox -s demo`.

Brings the lab up (building it on first run), creates the example shop's Services from
examples/shop.yaml, runs `kdisco resolve` once per Service and strategy, prints a table
of what each strategy found, and tears the lab down (unless it was already running).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

import lab
from lab.objects import Cluster, kubelet_env

HERE = Path(__file__).resolve().parent
NAMESPACE = "shop"
STRATEGIES = ("dns", "env", "api")
#: The port each Service is asked for, as an application would (names, so that DNS
#: answers from SRV records and reports the number).
ASK = {"storefront": "http", "payments": "grpc", "orders-db": "postgres", "shop": "http"}


def apply(cluster: Cluster, path: Path) -> list[str]:
    """Create every object in the manifest; returns the Service names in order."""
    services = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        doc.setdefault("metadata", {})["namespace"] = NAMESPACE
        if doc["kind"] == "Service":
            cluster.core.create_namespaced_service(NAMESPACE, doc)
            services.append(doc["metadata"]["name"])
        elif doc["kind"] == "EndpointSlice":
            cluster.discovery.create_namespaced_endpoint_slice(NAMESPACE, doc)
        else:
            raise ValueError(f"{path}: the demo does not create {doc['kind']} objects")
    return services


def resolve(name: str, strategy: str, env: dict[str, str]) -> dict[str, Any]:
    """One `kdisco resolve NAME --json --strategies S`, as a user would type it."""
    cmd = [sys.executable, "-m", "kdisco", "resolve", name, "--json", "--strategies", strategy]
    if name in ASK:
        cmd += ["--port", ASK[name]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    if out.returncode == 0:
        return dict(json.loads(out.stdout))
    if out.returncode == 1:
        message = out.stderr.strip().removeprefix("kdisco: ")
        return {"error": message.split(" (tried:")[0]}
    raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr}")


def cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return "-- " + result["error"].split(":")[0]
    eps = result["endpoints"]
    shown = ", ".join(
        (f"[{e['host']}]" if ":" in e["host"] else e["host"])
        + (f":{e['port']}" if e["port"] is not None else "")
        + (f" ({e['hostname']})" if e.get("hostname") else "")
        for e in eps[:3]
    )
    more = f" +{len(eps) - 3}" if len(eps) > 3 else ""
    via = f" (via {', '.join(result['via'])})" if result.get("via") else ""
    return f"{result['kind']}: {shown}{more}{via}"


def main() -> int:
    print("== kdisco demo: starting the lab (first run builds it from source) ==", flush=True)
    with lab.ensure_lab() as info:
        cluster = Cluster(str(info.kubeconfig))
        try:
            cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
            services = apply(cluster, HERE / "shop.yaml")
            print(f"created namespace {NAMESPACE!r} with Services: {', '.join(services)}")

            # A pod in "shop" would have these: cluster DNS, kubelet's variables, and
            # the API (here through the lab's kubeconfig).
            env = dict(os.environ)
            env.update(kubelet_env(cluster.services(NAMESPACE)))
            env.update(
                KUBERNETES_SERVICE_HOST="127.0.0.1",
                KUBERNETES_SERVICE_PORT=str(urlsplit(info.apiserver_url).port),
                KUBECONFIG=str(info.kubeconfig),
                KDISCO_DNS_SERVER=f"{info.dns_host}:{info.dns_port}",
                KDISCO_CLUSTER_DOMAIN=info.cluster_domain,
                # The downward API's namespace, as a pod spec would set it (the env
                # strategy reads only the pod's own namespace's variables).
                POD_NAMESPACE=NAMESPACE,
            )
            rows = []
            for name in services:
                label = f"{name}:{ASK[name]}" if name in ASK else name
                rows.append([label] + [cell(resolve(name, s, env)) for s in STRATEGIES])
            print()
            print(table(["Service", *STRATEGIES], rows))
            print()
            print("$ kdisco resolve orders-db --port postgres   (all strategies, in order)")
            out = subprocess.run(
                [sys.executable, "-m", "kdisco", "resolve", "orders-db", "--port", "postgres"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            print(out.stdout)
        finally:
            cluster.close()
    print("== lab stopped ==")
    return 0


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
