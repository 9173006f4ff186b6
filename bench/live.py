"""Benchmarks 5 (change propagation) and 6 (load on the API server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import kdisco
from lab.objects import port

from . import _metrics
from ._cluster import data_address, headless_service, namespace
from ._common import Section, Settings, Target, median, ms, percentile, progress
from .api import has_api_watch, watch_kw

_POLL = 0.002  # between polls of discover(): fine enough for a 100 ms target
_GIVE_UP = 5.0  # per update


def _prop_fixture(settings: Settings) -> tuple[str, str]:
    if "prop" not in settings.cache:
        ns = namespace(settings, "bench-prop")
        headless_service(settings, ns, "prop", 3)
        settings.cache["prop"] = (ns, "prop")
    return settings.cache["prop"]  # type: ignore[no-any-return]


def _update(settings: Settings, ns: str, svc: str, serial: int) -> str:
    """Move endpoint 0 of the first slice to a new address; returns that address."""
    new = data_address(1_000_000 + serial)
    eps = [
        {"addresses": [new], "conditions": {"ready": True}},
        {"addresses": [data_address(1)], "conditions": {"ready": True}},
        {"addresses": [data_address(2)], "conditions": {"ready": True}},
    ]
    settings.cluster.replace_endpoints(ns, f"{svc}-0000", eps)
    return new


def _poll_case(
    settings: Settings, ns: str, svc: str, updates: int, discover: Callable[[], kdisco.Resolution]
) -> list[float]:
    out: list[float] = []
    for i in range(updates):
        t0 = time.perf_counter()
        new = _update(settings, ns, svc, len(settings.cache.setdefault("serials", [])))
        settings.cache["serials"].append(new)
        while True:
            try:
                if any(ep.host == new for ep in discover().endpoints):
                    out.append(time.perf_counter() - t0)
                    break
            except kdisco.DiscoveryError:
                pass
            if time.perf_counter() - t0 > _GIVE_UP:
                out.append(float("inf"))
                break
            time.sleep(_POLL)
        time.sleep(0.02)  # let the previous change settle before the next one
        del i
    return out


def _watch_case(settings: Settings, ns: str, svc: str, updates: int) -> list[float] | str:
    """Discoverer.watch() (what kdisco.watch() runs on the default Discoverer): time
    from the update until the callback gets a Resolution that shows it."""
    d = kdisco.Discoverer(strategies=["api"], kubeconfig=str(settings.lab.kubeconfig), namespace=ns)
    if not hasattr(d, "watch"):
        return "kdisco.watch() does not exist yet"
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def on_change(res: kdisco.Resolution) -> None:
        now = time.perf_counter()
        with lock:
            for ep in res.endpoints:
                seen.setdefault(ep.host, now)

    out: list[float] = []
    w = d.watch(svc, callback=on_change)
    try:
        for _ in range(updates):
            t0 = time.perf_counter()
            new = _update(settings, ns, svc, len(settings.cache.setdefault("serials", [])))
            settings.cache["serials"].append(new)
            while True:
                with lock:
                    at = seen.get(new)
                if at is not None:
                    out.append(at - t0)
                    break
                if time.perf_counter() - t0 > _GIVE_UP:
                    out.append(float("inf"))
                    break
                time.sleep(_POLL)
            time.sleep(0.02)
    finally:
        w.stop()
        d.close()
    return out


def bench_propagation(settings: Settings) -> Section:
    ns, svc = _prop_fixture(settings)
    lab = settings.lab
    kubeconfig = str(lab.kubeconfig)
    updates = settings.n(60, 10)
    cases: dict[str, kdisco.Discoverer] = {
        "discover(), api, api_watch=False, cache=False": kdisco.Discoverer(
            strategies=["api"], cache=False, kubeconfig=kubeconfig, namespace=ns, **watch_kw(False)
        ),
    }
    if has_api_watch():
        cases["discover(), api, api_watch=True (default), default cache"] = kdisco.Discoverer(
            strategies=["api"], kubeconfig=kubeconfig, namespace=ns, **watch_kw(True)
        )
    cases["discover(), dns, cache=False (CoreDNS's own watch)"] = kdisco.Discoverer(
        strategies=["dns"], cache=False, dns_server=lab.dns_server, namespace=ns
    )
    results: dict[str, list[float] | str] = {}
    for label, d in cases.items():
        progress(f"5: {updates} updates, {label}")
        d.discover(svc)
        results[label] = _poll_case(settings, ns, svc, updates, lambda d=d: d.discover(svc))
        d.close()
    progress(f"5: {updates} updates, Discoverer.watch()")
    results["Discoverer.watch(callback=...), api"] = _watch_case(settings, ns, svc, updates)
    rows = []
    targets = []
    for label, r in results.items():
        if isinstance(r, str):
            rows.append([label, "—", "—", "—", r])
            continue
        med, p99 = median(r), percentile(r, 99)
        missed = sum(1 for v in r if v == float("inf"))
        rows.append(
            [label, str(len(r)), ms(med), ms(p99), f"{missed} not seen in {_GIVE_UP:.0f} s"]
        )
        if "api" in label:
            targets.append(
                Target(
                    f"{label}: median / p99",
                    "≤ 100 ms / ≤ 500 ms",
                    f"{ms(med)} / {ms(p99)}",
                    med <= 0.1 and p99 <= 0.5,
                )
            )
    notes = [
        "Each update is a JSON patch of one EndpointSlice (one endpoint moves to a new "
        "address), timed from just before the PATCH is sent until the answer shows the "
        f"new address; discover() is polled every {_POLL * 1e3:.0f} ms. Cases run one "
        "after another on the same Service.",
    ]
    if not has_api_watch():
        notes.append(
            "The API watch cache (`api_watch`) did not exist when this ran: the API rows "
            "read the API on every call (API answers carry no TTL, so the answer cache does "
            "not keep them), which is why they see a change as soon as it is written."
        )
    return Section(
        5,
        "Change propagation: EndpointSlice update until discover() shows it",
        ["reader", "updates", "median", "p99", "misses"],
        rows,
        targets=targets,
        notes=notes,
    )


def bench_load(settings: Settings) -> Section:
    ns = namespace(settings, "bench-load")
    services = [f"s{i:02d}" for i in range(50)]
    progress("6: creating 50 Services")
    for svc in services:
        settings.cluster.service(ns, svc, ports=[port(8080, "http")], headless=True)
        settings.cluster.endpoint_slice(
            ns,
            svc,
            f"{svc}-0000",
            [{"addresses": [data_address(i)], "conditions": {"ready": True}} for i in range(3)],
            ports=[port(8080, "http")],
        )
    calls = settings.n(10_000, 500)
    kubeconfig = str(settings.lab.kubeconfig)
    variants: dict[str, dict[str, Any]] = {
        "api_watch=False, cache=False": {"cache": False, **watch_kw(False)},
        "api_watch=False, default cache": watch_kw(False),
    }
    if has_api_watch():
        variants["api_watch=True (default), default cache"] = watch_kw(True)
    rows = []
    targets = []
    per_variant: dict[str, float] = {}
    for label, extra in variants.items():
        d = kdisco.Discoverer(strategies=["api"], kubeconfig=kubeconfig, namespace=ns, **extra)
        progress(f"6: {calls:,} discover() calls over 50 Services, {label}")
        before, _ = _metrics.scrape(settings.lab)
        started = time.perf_counter()
        done = 0
        stop = time.monotonic() + (180 if not settings.quick else 30)
        for i in range(calls):
            d.discover(services[i % 50])
            done += 1
            if time.monotonic() > stop:
                break
        wall = time.perf_counter() - started
        after, open_now = _metrics.scrape(settings.lab)
        d.close()
        used = _metrics.delta(after, before)
        total = sum(used.values())
        per_variant[label] = total
        watches = sum(v for k, v in open_now.items() if k.startswith("WATCH"))
        rows.append(
            [
                label,
                f"{done:,}",
                f"{wall:.1f} s",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(used.items())) or "none",
                f"{total:,}",
                f"{total / done:.2f}",
                str(watches),
            ]
        )
    best = min(per_variant.values())
    targets.append(
        Target(
            f"API requests for {calls:,} calls with the watch cache",
            "the initial lists and watches only",
            f"{best:,.0f} requests",
            best <= 10,
        )
    )
    return Section(
        6,
        "API load: discover() calls over 50 Services in one namespace",
        [
            "Discoverer",
            "calls",
            "wall time",
            "requests by verb",
            "requests",
            "per call",
            "watches open (all clients)",
        ],
        rows,
        targets=targets,
        notes=[
            "Requests are counted by kube-apiserver itself: the difference in "
            "`apiserver_request_total` for services and endpointslices before and after "
            "the calls (scraped from /metrics with the lab's admin token). WATCH requests "
            "are counted there only when they end; 'watches open' is the "
            "`apiserver_longrunning_requests` gauge for the same resources just before "
            "the Discoverer is closed, CoreDNS's own watches included.",
            "Strategy `api` only, `Discoverer(strategies=['api'], kubeconfig=lab)`; "
            "each call asks for one of the 50 headless Services in turn.",
        ]
        + (
            []
            if has_api_watch()
            else [
                "The watch cache (`api_watch`) did not exist when this ran, and API answers "
                "carry no TTL, so the default answer cache does not keep them: every call "
                "is a GET of the Service and a LIST of its slices, with or without cache."
            ]
        ),
    )
