"""Benchmarks 3 (reading a large headless Service), 4 (memory) and 7 (growth)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kdisco

from ._cluster import big_service, warm_service
from ._common import (
    Section,
    Settings,
    Target,
    gc_paused,
    interleaved,
    mb,
    median,
    ms,
    progress,
    ratio,
)

REPO = Path(__file__).resolve().parents[1]


def has_api_watch() -> bool:
    return "api_watch" in inspect.signature(kdisco.Discoverer).parameters


def watch_kw(on: bool) -> dict[str, Any]:
    """``api_watch=on`` when the option exists (it did not in the first runs)."""
    return {"api_watch": on} if has_api_watch() else {}


def _client(kubeconfig: str) -> Any:
    from kubernetes import client, config

    cfg = type.__call__(client.Configuration)
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg, persist_config=False)
    return client.DiscoveryV1Api(client.ApiClient(configuration=cfg))


def measure_read(settings: Settings, endpoints: int, rounds: int) -> dict[str, Any]:
    """Median seconds per read of a ``endpoints``-endpoint headless Service, each way."""
    kubeconfig = str(settings.lab.kubeconfig)
    ns, svc = big_service(settings, endpoints)
    selector = f"kubernetes.io/service-name={svc}"
    api = _client(kubeconfig)
    raw = api.list_namespaced_endpoint_slice(ns, label_selector=selector, _preload_content=False)
    body = raw.data
    # Throughput figures, not deadline tests: the largest Services take seconds.
    plain = kdisco.Discoverer(
        strategies=["api"],
        cache=False,
        kubeconfig=kubeconfig,
        namespace=ns,
        timeout=120,
        **watch_kw(False),
    )
    cases: dict[str, Any] = {KD: lambda: plain.discover(svc)}
    watcher = None
    if has_api_watch():
        watcher = kdisco.Discoverer(
            strategies=["api"],
            cache=False,
            kubeconfig=kubeconfig,
            namespace=ns,
            timeout=120,
            **watch_kw(True),
        )
        cases[KDW] = lambda: watcher.discover(svc)
    cases.update(
        {
            "kubernetes list_namespaced_endpoint_slice (models)": lambda: (
                api.list_namespaced_endpoint_slice(ns, label_selector=selector)
            ),
            "kubernetes list_namespaced_endpoint_slice raw + json.loads": lambda: json.loads(
                api.list_namespaced_endpoint_slice(
                    ns, label_selector=selector, _preload_content=False
                ).data
            ),
            "json.loads of the response bytes alone": lambda: json.loads(body),
        }
    )
    got = {name: fn() for name, fn in cases.items()}  # warm every path (and the watch)
    found = len(got[KD].endpoints)
    if found != endpoints:
        raise RuntimeError(f"kdisco found {found} endpoints, expected {endpoints}")
    with gc_paused():
        times = interleaved(cases, rounds, budget=300)
    plain.close()
    if watcher is not None:
        watcher.close()
    api.api_client.close()
    return {
        "p50": {name: median(t) for name, t in times.items()},
        "rounds": len(next(iter(times.values()))),
        "bytes": len(body),
        "slices": len(json.loads(body)["items"]),
    }


def measure_memory(settings: Settings, endpoints: int) -> dict[str, int]:
    ns, svc = big_service(settings, endpoints)
    warm_ns, warm_svc = warm_service(settings)
    modes = ["kdisco", *(["kdisco-watch"] if has_api_watch() else []), "models", "json"]
    out: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for mode in modes:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench._memory",
                mode,
                str(settings.lab.kubeconfig),
                ns,
                svc,
                warm_ns,
                warm_svc,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=REPO,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"memory run {mode} failed ({proc.returncode}): "
                f"{proc.stdout[-500:]} {proc.stderr[-2000:]}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["endpoints"] != endpoints:
            raise RuntimeError(f"{mode}: {result['endpoints']} endpoints, expected {endpoints}")
        out[mode] = int(result["held"])
        out[mode + " peak"] = int(result["peak"])
    return out


KD = "kdisco discover(), cache=False, api_watch=False (GET + LIST per call)"
KDW = "kdisco discover(), cache=False, api_watch=True (from the watch cache)"
MODELS = "kubernetes list_namespaced_endpoint_slice (models)"
RAWJSON = "kubernetes list_namespaced_endpoint_slice raw + json.loads"
PARSE = "json.loads of the response bytes alone"


def bench_read(settings: Settings) -> Section:
    size = settings.n(10_000, 1_000)
    rounds = settings.n(15, 3)
    progress(f"3: reading a {size:,}-endpoint headless Service, {rounds} rounds")
    m = measure_read(settings, size, rounds)
    settings.cache[f"read-{size}"] = m
    p50 = m["p50"]
    rows = [[name, ms(t), ratio(t, p50[KD])] for name, t in p50.items()]
    notes = [
        f"{size:,} ready endpoints in {m['slices']} EndpointSlices (100 each, shaped like the "
        f"controller's: conditions, nodeName, zone, targetRef); the list response is "
        f"{mb(m['bytes'])} of JSON. Median of {m['rounds']} interleaved rounds.",
        "Request per call (`api_watch=False`): two requests per call (GET the Service, "
        "then LIST its slices, raw JSON) and one `Endpoint` built per address; the "
        "baselines make only the LIST.",
    ]
    if KDW in p50:
        notes.append(
            "`api_watch=True` (the default): the Service and its slices come from the "
            "namespace's list+watch cache, already in memory; `cache=False` only turns off "
            "the answer cache, so each call builds the answer again from the watch cache."
        )
    else:
        notes.append(
            "`api_watch` did not exist in `Discoverer` when this ran, so only the "
            "request-per-call path is measured."
        )
    targets = [
        Target(
            "models / kdisco, request per call (api_watch=False)",
            "≥ 5x",
            f"{p50[MODELS] / p50[KD]:.1f}x",
            p50[MODELS] / p50[KD] >= 5,
        ),
        Target(
            "kdisco request per call / (raw LIST + json.loads), like for like",
            "≤ 2x",
            f"{p50[KD] / p50[RAWJSON]:.2f}x",
            p50[KD] / p50[RAWJSON] <= 2,
        ),
        Target(
            "kdisco request per call / json.loads of the bytes alone (no HTTP)",
            "≤ 2x",
            f"{p50[KD] / p50[PARSE]:.2f}x",
            p50[KD] / p50[PARSE] <= 2,
        ),
    ]
    if KDW in p50:
        targets += [
            Target(
                "models / kdisco from the watch cache",
                "≥ 5x",
                f"{p50[MODELS] / p50[KDW]:.1f}x",
                p50[MODELS] / p50[KDW] >= 5,
            ),
            Target(
                "kdisco from the watch cache / json.loads of the bytes alone",
                "≤ 2x",
                f"{p50[KDW] / p50[PARSE]:.2f}x",
                p50[KDW] / p50[PARSE] <= 2,
            ),
        ]
    return Section(
        3,
        f"API discover() of a {size:,}-endpoint headless Service",
        ["read", "p50", "relative to kdisco (request per call)"],
        rows,
        targets=targets,
        notes=notes,
    )


def bench_memory(settings: Settings) -> Section:
    size = settings.n(10_000, 1_000)
    progress(f"4: memory held for a {size:,}-endpoint Service (fresh interpreters)")
    mem = measure_memory(settings, size)
    settings.cache[f"mem-{size}"] = mem
    labels = {
        "kdisco": "kdisco: Discoverer(api_watch=False) + Resolution",
        "kdisco-watch": "kdisco: Discoverer(api_watch=True): watch cache + Resolution",
        "models": "kubernetes client models (V1EndpointSliceList)",
        "json": "json.loads dicts of the same response",
    }
    rows = [
        [labels[k], mb(mem[k]), mb(mem[k + " peak"]), f"{mem[k] / size:,.0f} B"]
        for k in labels
        if k in mem
    ]
    kd = max(mem["kdisco"], mem.get("kdisco-watch", 0))
    return Section(
        4,
        f"Memory held for a {size:,}-endpoint Service",
        ["what", "held", "peak while reading", "held per endpoint"],
        rows,
        targets=[Target("memory held by kdisco (cache + result)", "≤ 5 MB", mb(kd), kd <= 5e6)],
        notes=[
            "Each row runs in a fresh interpreter (`python -m bench._memory`): clients are "
            "built and a small Service is read first, then `tracemalloc` traces the read "
            "and reports what is still allocated (after `gc.collect()`) while the answer is "
            "held, and the peak during the read (the response bytes included).",
            "kdisco keeps no copy of the JSON: one frozen, slotted `Endpoint` per address; "
            "strings (addresses, node and zone names) are the parser's.",
        ],
    )


def bench_growth(settings: Settings) -> Section:
    sizes = [200, 1_000] if settings.quick else [1_000, 10_000, 50_000]
    rows: list[list[str]] = []
    per: dict[int, dict[str, float]] = {}
    for size in sizes:
        rounds = 3 if settings.quick else (10 if size <= 10_000 else 3)
        m = settings.cache.get(f"read-{size}")
        if m is None:
            progress(f"7: reading a {size:,}-endpoint Service, {rounds} rounds")
            m = measure_read(settings, size, rounds)
        mem = settings.cache.get(f"mem-{size}")
        if mem is None:
            progress(f"7: memory for {size:,} endpoints")
            mem = measure_memory(settings, size)
        p50 = m["p50"]
        kdw = p50.get(KDW)
        per[size] = {
            "kd": p50[KD] / size,
            "models": p50[MODELS] / size,
            "parse": p50[PARSE] / size,
            "mem": mem["kdisco"] / size,
            "mem_models": mem["models"] / size,
            "mem_json": mem["json"] / size,
        }
        rows.append(
            [
                f"{size:,}",
                ms(p50[KD]),
                f"{p50[KD] / size * 1e6:.2f} µs",
                ms(kdw) if kdw is not None else "n/a",
                f"{kdw / size * 1e6:.2f} µs" if kdw is not None else "n/a",
                ms(p50[MODELS]),
                f"{p50[MODELS] / size * 1e6:.1f} µs",
                ms(p50[PARSE]),
                mb(mem["kdisco"]),
                f"{mem['kdisco'] / size:,.0f} B",
                mb(mem["kdisco-watch"]) if "kdisco-watch" in mem else "n/a",
                mb(mem["models"]),
                mb(mem["json"]),
            ]
        )
    small, large = sizes[0], sizes[-1]
    times = {size: per[size]["kd"] * size for size in sizes}
    if len(sizes) >= 3:
        # Linear means the cost of each added endpoint stays the same: compare the
        # slope over the upper range with the slope over the lower one (the fixed cost
        # of the requests drops out of both).
        mid = sizes[1]
        low = (times[mid] - times[small]) / (mid - small)
        high = (times[large] - times[mid]) / (large - mid)
        t_growth = high / low
        t_what = f"kdisco time per added endpoint, {mid:,}→{large:,} vs {small:,}→{mid:,}"
    else:
        t_growth = per[large]["kd"] / per[small]["kd"]
        t_what = f"kdisco time per endpoint, {large:,} vs {small:,}"
    m_growth = per[large]["mem"] / per[small]["mem"]
    return Section(
        7,
        "Growth with the number of endpoints",
        [
            "endpoints",
            "kdisco, request per call",
            "per endpoint",
            "kdisco, watch cache",
            "per endpoint",
            "models read",
            "per endpoint",
            "json.loads alone",
            "kdisco held",
            "per endpoint",
            "kdisco held with watch cache",
            "models held",
            "dicts held",
        ],
        rows,
        targets=[
            Target(
                f"{t_what} (1.0 = linear)",
                "linear (0.5 to 1.5)",
                f"{t_growth:.2f}",
                0.5 <= t_growth <= 1.5,
            ),
            Target(
                f"kdisco memory per endpoint, {large:,} vs {small:,} (1.0 = linear)",
                "linear (0.5 to 1.5)",
                f"{m_growth:.2f}",
                0.5 <= m_growth <= 1.5,
            ),
        ],
        notes=[
            "Same measurements as benchmarks 3 and 4 (the row for their size is theirs), "
            "repeated at each size. Per-endpoint cost that stays flat is linear growth; "
            "at small sizes the fixed cost of two HTTP requests dominates kdisco's time.",
        ],
    )
