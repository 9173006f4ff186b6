"""Run in a fresh interpreter: how much memory one way of reading a Service holds.

``python -m bench._memory MODE KUBECONFIG NS SVC WARM_NS WARM_SVC`` prints one JSON
line: ``{"held": bytes, "peak": bytes, "endpoints": n}``. Only what is allocated after
clients are built and imports are done is traced, and ``held`` is what is still
allocated once the answer is in hand (garbage collected).
"""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from typing import Any


def main(argv: list[str]) -> None:
    mode, kubeconfig, ns, svc, warm_ns, warm_svc = argv
    from kubernetes import client, config

    import kdisco

    selector = f"kubernetes.io/service-name={svc}"
    keep: Any
    if mode.startswith("kdisco"):
        import inspect

        extra: dict[str, Any] = {}
        if "api_watch" in inspect.signature(kdisco.Discoverer).parameters:
            extra["api_watch"] = mode == "kdisco-watch"
        # A throughput figure, not a deadline test: 50,000 endpoints take seconds.
        d = kdisco.Discoverer(
            strategies=["api"],
            kubeconfig=kubeconfig,
            namespace=ns,
            cache=True,
            timeout=120,
            **extra,
        )
        d.discover(warm_svc, namespace=warm_ns)  # builds the client, imports, threads
        gc.collect()
        tracemalloc.start()
        res = d.discover(svc)
        keep = (d, res)
        count = len(res.endpoints)
    else:
        cfg = type.__call__(client.Configuration)
        config.load_kube_config(
            config_file=kubeconfig, client_configuration=cfg, persist_config=False
        )
        api = client.DiscoveryV1Api(client.ApiClient(configuration=cfg))
        api.list_namespaced_endpoint_slice(
            warm_ns, label_selector=f"kubernetes.io/service-name={warm_svc}"
        )
        if mode == "models":
            gc.collect()
            tracemalloc.start()
            keep = api.list_namespaced_endpoint_slice(ns, label_selector=selector)
            count = sum(len(s.endpoints or []) for s in keep.items)
        elif mode == "json":
            raw = api.list_namespaced_endpoint_slice(
                ns, label_selector=selector, _preload_content=False
            ).data
            gc.collect()
            tracemalloc.start()
            keep = json.loads(raw)
            count = sum(len(s.get("endpoints") or []) for s in keep["items"])
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"held": held, "peak": peak, "endpoints": count}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
