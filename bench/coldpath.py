"""Benchmark 10: the cold path (issue 7). A new Discoverer for each read (no watch cache,
no answer cache, no connection yet) of a large headless Service, next to the kubernetes
client's models and a raw LIST + ``json.loads``, each with a new client as well."""

from __future__ import annotations

import cProfile
import json
import pstats
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kdisco

from ._cluster import big_service
from ._common import Section, Settings, Target, gc_paused, interleaved, median, ms, progress, ratio
from .api import _client

KDISCO_DIR = str(Path(kdisco.__file__).resolve().parent)

COLD = "kdisco: new Discoverer(api_watch=False, cache=False), discover(), close()"
MODELS = "kubernetes client, new ApiClient: read_namespaced_service + list (models)"
RAW = "kubernetes client, new ApiClient: raw LIST + json.loads"
WARM = "kdisco: one Discoverer(api_watch=False, cache=False) kept (connection reused)"
MODELS_WARM = "kubernetes client, one ApiClient kept: read_namespaced_service + list (models)"
RAW_WARM = "kubernetes client, one ApiClient kept: raw LIST + json.loads"


def cases(kubeconfig: str, ns: str, svc: str) -> tuple[dict[str, Callable[[], Any]], Any]:
    """The timed reads; and what must be closed after (the kept clients)."""
    from kubernetes import client

    selector = f"kubernetes.io/service-name={svc}"

    def discoverer() -> kdisco.Discoverer:
        return kdisco.Discoverer(
            strategies=["api"], api_watch=False, cache=False, kubeconfig=kubeconfig, namespace=ns
        )

    def cold() -> kdisco.Resolution:
        d = discoverer()
        try:
            return d.discover(svc)
        finally:
            d.close()

    def models(api: Any) -> tuple[Any, Any]:
        core = client.CoreV1Api(api.api_client)
        return (
            core.read_namespaced_service(svc, ns),
            api.list_namespaced_endpoint_slice(ns, label_selector=selector),
        )

    def raw(api: Any) -> Any:
        return json.loads(
            api.list_namespaced_endpoint_slice(
                ns, label_selector=selector, _preload_content=False
            ).data
        )

    def fresh(read: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            # The same HTTP client configuration kdisco builds from the kubeconfig:
            # the kubernetes package's loader, a new pool, a new connection.
            api = _client(kubeconfig)
            try:
                return read(api)
            finally:
                api.api_client.close()

        return run

    kept = discoverer()
    api = _client(kubeconfig)
    timed: dict[str, Callable[[], Any]] = {
        COLD: cold,
        MODELS: fresh(models),
        RAW: fresh(raw),
        WARM: lambda: kept.discover(svc),
        MODELS_WARM: lambda: models(api),
        RAW_WARM: lambda: raw(api),
    }
    return timed, (kept, api)


def profile_cold(fn: Callable[[], Any], rounds: int) -> pstats.Stats:
    prof = cProfile.Profile()
    with gc_paused():
        prof.enable()
        for _ in range(rounds):
            fn()
        prof.disable()
    return pstats.Stats(prof)


def _where(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename.startswith(KDISCO_DIR):
        filename = "kdisco" + filename[len(KDISCO_DIR) :]
    elif "site-packages/" in filename:
        filename = filename.split("site-packages/", 1)[1]
    elif filename == "~":
        # A builtin: "<method 'read' of '_ssl._SSLSocket' objects>" (addresses dropped).
        return f"`{re.sub(r' at 0x[0-9a-f]+', '', func)}`"
    else:
        filename = "/".join(Path(filename).parts[-2:])
    return f"`{filename}:{line} {func}`"  # code: "<listcomp>" is not an HTML tag


def profile_rows(stats: pstats.Stats, rounds: int, *, ours: bool, by: int) -> list[list[str]]:
    """Top 10 by cumulative (``by=3``) or own (``by=2``) time, per round."""
    entries = stats.stats  # type: ignore[attr-defined]
    picked = [
        (key, value) for key, value in entries.items() if not ours or key[0].startswith(KDISCO_DIR)
    ]
    picked.sort(key=lambda kv: kv[1][by], reverse=True)
    return [
        [_where(key), f"{nc / rounds:,.0f}", ms(tt / rounds), ms(ct / rounds)]
        for key, (_, nc, tt, ct, _) in picked[:10]
    ]


def bench_cold_path(settings: Settings) -> Section:
    size = settings.n(10_000, 1_000)
    rounds = settings.n(15, 3)
    kubeconfig = str(settings.lab.kubeconfig)
    ns, svc = big_service(settings, size)
    timed, (kept, api) = cases(kubeconfig, ns, svc)
    progress(f"10: cold reads of a {size:,}-endpoint headless Service, {rounds} rounds")
    got = {name: fn() for name, fn in timed.items()}  # imports, lazy classes, .pyc
    if len(got[COLD].endpoints) != size:
        raise RuntimeError(f"kdisco found {len(got[COLD].endpoints)} endpoints, expected {size}")
    del got
    with gc_paused():
        times = interleaved(timed, rounds, budget=150)
    kept.close()
    api.api_client.close()
    p50 = {name: median(t) for name, t in times.items()}
    prounds = settings.n(5, 2)
    progress(f"10: profiling {prounds} cold reads")
    stats = profile_cold(timed[COLD], prounds)
    rows = [[name, ms(t), ratio(t, p50[COLD])] for name, t in p50.items()]
    r_models, r_raw = p50[MODELS] / p50[COLD], p50[COLD] / p50[RAW]
    headers = ["function", "calls per read", "own time per read", "cumulative per read"]
    return Section(
        10,
        f"Cold path: a new Discoverer reading a {size:,}-endpoint headless Service",
        ["read", "p50", "relative to kdisco cold"],
        rows,
        targets=[
            Target(
                "cold: models (new ApiClient) / kdisco (new Discoverer)",
                "≥ 5x",
                f"{r_models:.1f}x",
                r_models >= 5,
            ),
            Target(
                "cold: kdisco (new Discoverer) / raw LIST + json.loads (new ApiClient)",
                "≤ 1.5x",
                f"{r_raw:.2f}x",
                r_raw <= 1.5,
            ),
        ],
        extra_tables=[
            (
                f"Where a cold kdisco read spends its time: cProfile of {prounds} cold reads, "
                "kdisco's own functions, top 10 by cumulative time (the profiler's overhead "
                "inflates Python-heavy code):",
                headers,
                profile_rows(stats, prounds, ours=True, by=3),
            ),
            (
                "The same profile, any module, top 10 by own time:",
                headers,
                profile_rows(stats, prounds, ours=False, by=2),
            ),
        ],
        notes=[
            f"Median of {len(times[COLD])} interleaved rounds (one untimed round first). "
            f"The Service is benchmark 3's: {size:,} ready endpoints in "
            f"{(size + 99) // 100} EndpointSlices of 100.",
            "Cold rows build everything for each read, as a short-lived process or a new "
            "Discoverer would: kdisco loads the kubeconfig (the kubernetes package's "
            "loader), opens a new connection (TCP + TLS), GETs the Service and LISTs its "
            "slices (raw JSON, its own parsing), builds the Resolution, and closes. The "
            "kubernetes client rows load the same kubeconfig into a new `Configuration` and "
            "`ApiClient` each time (same HTTP client configuration); models: "
            "`CoreV1Api.read_namespaced_service` + `DiscoveryV1Api."
            "list_namespaced_endpoint_slice`; raw: the LIST alone with "
            "`_preload_content=False` and `json.loads` of its body.",
            "Kept rows reuse one Discoverer or ApiClient (and its connection) across "
            "rounds: the difference to the cold row is the price of being cold.",
        ],
    )
