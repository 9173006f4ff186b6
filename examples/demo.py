"""See kdisco work: `nox -s demo`.

Brings the lab up (building it on first run), creates the example shop from
examples/shop.yaml, runs `kdisco resolve` once per Service and strategy as a pod in the
cluster would, and once more with the api strategy as a laptop outside the cluster
would (`--reach external`: load balancer, Ingress URL or node port), prints a table of
what each found, and tears the lab down (unless it was already running).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
ASK = {
    "storefront": "http",
    "payments": "grpc",
    "checkout": "https",
    "orders-db": "postgres",
    "shop": "http",
}


def apply(cluster: Cluster, path: Path) -> tuple[list[str], list[str]]:
    """Create every object in the manifest, writing each one's ``status`` through its
    status subresource as the kubelet, a cloud or an ingress controller would; returns
    the Service names in order, and the Node names."""
    services, nodes = [], []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        kind, status = doc["kind"], doc.pop("status", None)
        name = doc["metadata"]["name"]
        if kind == "Node":
            cluster.core.create_node(doc)
            cluster.core.patch_node_status(name, {"status": status})
            nodes.append(name)
            continue
        doc["metadata"]["namespace"] = NAMESPACE
        if kind == "Service":
            cluster.core.create_namespaced_service(NAMESPACE, doc)
            if status:
                cluster.core.patch_namespaced_service_status(name, NAMESPACE, {"status": status})
            services.append(name)
        elif kind == "Pod":
            cluster.core.create_namespaced_pod(NAMESPACE, doc)
            cluster.core.patch_namespaced_pod_status(name, NAMESPACE, {"status": status})
        elif kind == "Ingress":
            cluster.networking.create_namespaced_ingress(NAMESPACE, doc)
            cluster.networking.patch_namespaced_ingress_status(name, NAMESPACE, {"status": status})
        else:
            raise ValueError(f"{path}: the demo does not create {kind} objects")
    return services, nodes


def wait_for_slices(cluster: Cluster, service: str, endpoints: int) -> None:
    """Until the EndpointSlice controller has placed ``endpoints`` endpoints for
    ``service`` (it works from the Pods, a moment after they are written)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        slices = cluster.slices(NAMESPACE, service)
        if sum(len(sl.get("endpoints") or []) for sl in slices) >= endpoints:
            return
        time.sleep(0.2)
    raise RuntimeError(f"no EndpointSlices with {endpoints} endpoints for {service} in 30 s")


def resolve(name: str, strategy: str, env: dict[str, str], *more: str) -> dict[str, Any]:
    """One `kdisco resolve NAME --json --strategies S`, as a user would type it."""
    cmd = [sys.executable, "-m", "kdisco", "resolve", name, "--json", "--strategies", strategy]
    cmd += more
    if name in ASK:
        cmd += ["--port", ASK[name]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    if out.returncode == 0:
        return dict(json.loads(out.stdout))
    if out.returncode == 1:
        return {"error": json.loads(out.stdout)["error"]}  # --json: the error as JSON
    raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr}")


def cell(result: dict[str, Any]) -> str:
    if "error" in result:
        return "-- " + result["error"]
    eps = result["endpoints"]
    shown = ", ".join(
        (
            f"{e['scheme']}://{e['host']}{e['path'].rstrip('/')}"
            if e.get("scheme")
            else (f"[{e['host']}]" if ":" in e["host"] else e["host"])
            + (f":{e['port']}" if e["port"] is not None else "")
        )
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
        nodes: list[str] = []
        try:
            cluster.core.create_namespace({"metadata": {"name": NAMESPACE}})
            services, nodes = apply(cluster, HERE / "shop.yaml")
            print(f"created namespace {NAMESPACE!r} with Services: {', '.join(services)}")
            wait_for_slices(cluster, "orders-db", 3)
            for service in ("storefront", "payments", "checkout"):
                wait_for_slices(cluster, service, 1)

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
            # A laptop with a kubeconfig: not in a pod, so no DNS or variables of the
            # cluster, and ClusterIPs that do not work from there.
            laptop = dict(os.environ, KUBECONFIG=str(info.kubeconfig), KDISCO_NAMESPACE=NAMESPACE)
            for key in ("KUBERNETES_SERVICE_HOST", "KDISCO_REACH", "KDISCO_DNS_SERVER"):
                laptop.pop(key, None)
            rows = []
            for name in services:
                label = f"{name}:{ASK[name]}" if name in ASK else name
                inside = [cell(resolve(name, s, env)) for s in STRATEGIES]
                outside = cell(resolve(name, "api", laptop, "--reach", "external"))
                rows.append([label, *inside, outside])
            print()
            print(
                "Inside: a pod in 'shop' (dns, env, api). Outside: a laptop with a "
                "kubeconfig (api, --reach external)."
            )
            print(table(["Service", *STRATEGIES, "api, from outside"], rows))
            print()
            for name, port in (("storefront", "http"), ("orders-db", "postgres")):
                print(f"$ kdisco resolve {name} --port {port}   (on the laptop: reach=auto)")
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "kdisco",
                        "resolve",
                        name,
                        "--port",
                        port,
                        "--strategies",
                        "api",
                    ],
                    env=laptop,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=True,
                )
                print(out.stdout)
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
            # Nodes are cluster-wide; the namespace takes its Pods and Services with it
            # (the lab runs the namespace controller).
            for node in nodes:
                cluster.core.delete_node(node)
            cluster.core.delete_namespace(NAMESPACE)
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
