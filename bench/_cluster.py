"""Services and EndpointSlices the benchmarks read, written into the lab.

Addresses are data only (10.128.0.0/9 and TEST-NET): nothing here, nor in kdisco
during a benchmark, ever connects to them.
"""

from __future__ import annotations

import time
import uuid

from lab.objects import MANAGED_BY, SERVICE_NAME_LABEL, port

from ._common import Settings, progress

#: What the EndpointSlice controller puts in a slice by default.
PER_SLICE = 100


def namespace(settings: Settings, prefix: str) -> str:
    ns = settings.cluster.namespace(prefix)
    settings.namespaces.append(ns)
    return ns


def data_address(i: int) -> str:
    """The i-th endpoint address: 10.128.0.0/9 holds 8M of them, as data only."""
    return f"10.{128 + (i >> 16) % 128}.{(i >> 8) & 255}.{i & 255}"


def controller_endpoint(i: int, ns: str, svc: str) -> dict[str, object]:
    """An endpoint shaped like the EndpointSlice controller's for a pod."""
    return {
        "addresses": [data_address(i)],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": f"node-{i % 500:03d}",
        "zone": f"zone-{'abc'[i % 3]}",
        "targetRef": {
            "kind": "Pod",
            "name": f"{svc}-{i:06d}-{uuid.UUID(int=i).hex[-5:]}",
            "namespace": ns,
            "uid": str(uuid.UUID(int=(1 << 100) + i)),
        },
    }


def headless_service(settings: Settings, ns: str, svc: str, endpoints: int) -> None:
    """A headless Service with ``endpoints`` ready endpoints in slices of 100."""
    started = time.monotonic()
    settings.cluster.service(ns, svc, ports=[port(8080, "http")], headless=True)
    slices = (endpoints + PER_SLICE - 1) // PER_SLICE
    for s in range(slices):
        first, last = s * PER_SLICE, min(endpoints, (s + 1) * PER_SLICE)
        settings.cluster.discovery.create_namespaced_endpoint_slice(
            ns,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc}-{s:04d}",
                    "labels": {SERVICE_NAME_LABEL: svc, **MANAGED_BY},
                },
                "addressType": "IPv4",
                "endpoints": [controller_endpoint(i, ns, svc) for i in range(first, last)],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            },
            _preload_content=False,
        )
    progress(
        f"created {svc}.{ns}: {endpoints:,} endpoints in {slices} EndpointSlices "
        f"({time.monotonic() - started:.1f} s)"
    )


def big_service(settings: Settings, endpoints: int) -> tuple[str, str]:
    """A large headless Service shared by benchmarks 3, 4 and 7 (made once per run)."""
    key = f"big-{endpoints}"
    if key not in settings.cache:
        ns = namespace(settings, f"bench-{endpoints}")
        headless_service(settings, ns, "big", endpoints)
        settings.cache[key] = (ns, "big")
    return settings.cache[key]  # type: ignore[no-any-return]


def warm_service(settings: Settings) -> tuple[str, str]:
    """A small Service in its own namespace, to build clients and caches before measuring."""
    if "warm" not in settings.cache:
        ns = namespace(settings, "bench-warm")
        headless_service(settings, ns, "warm", 3)
        settings.cache["warm"] = (ns, "warm")
    return settings.cache["warm"]  # type: ignore[no-any-return]
