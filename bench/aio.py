"""Benchmarks 12-14: kdisco.aio against the lab (concurrency, cached calls, loop stalls)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.asyncresolver
import dns.rdatatype

import kdisco
import kdisco.aio
from kdisco._discoverer import use_discoverer
from kdisco.aio import AsyncDiscoverer
from lab.objects import port

from ._cluster import big_service, namespace
from ._common import Section, Settings, Target, gc_paused, median, ms, percentile, progress, us

SERVICES = 50


def _services(settings: Settings) -> tuple[str, list[str]]:
    """50 ClusterIP Services in one namespace (made once per run)."""
    if "aio-50" not in settings.cache:
        ns = namespace(settings, "bench-aio")
        names = [f"svc-{i:02d}" for i in range(SERVICES)]
        for name in names:
            settings.cluster.service(ns, name, ports=[port(80, "http")])
        settings.cache["aio-50"] = (ns, names)
    return settings.cache["aio-50"]  # type: ignore[no-any-return]


def _dns_discoverer(settings: Settings, ns: str, *, cache: bool) -> AsyncDiscoverer:
    return AsyncDiscoverer(
        strategies=["dns"], dns_server=settings.lab.dns_server, namespace=ns, cache=cache
    )


class StallMeter:
    """Two views of how kdisco treats the loop while the block runs.

    ``worst_step``: the longest single callback (a task step, a socket reader) the
    loop ran: what asyncio's debug mode reports as "Executing ... took", timed here
    by wrapping ``asyncio.Handle._run`` (debug mode's own bookkeeping would inflate
    every step). This is a stall: nothing else can run meanwhile.
    ``worst_lateness``: how late a ticker sleeping 1 ms at a time wakes. It adds
    queueing (a loop busy with a thousand lookups answers late without any one step
    being long) and other threads holding the GIL (an informer parsing a list).
    """

    def __init__(self) -> None:
        self.worst_step = 0.0
        self.worst_what = ""
        self.worst_lateness = 0.0
        self._task: asyncio.Task[None] | None = None
        self._original: Any = None

    async def __aenter__(self) -> StallMeter:
        original = self._original = asyncio.events.Handle._run
        clock = time.perf_counter
        meter = self

        def timed(handle: asyncio.Handle) -> None:
            t0 = clock()
            original(handle)
            took = clock() - t0
            if took > meter.worst_step:
                meter.worst_step = took
                meter.worst_what = repr(handle)[:300]

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]

    async def _tick(self) -> None:
        clock = time.perf_counter
        while True:
            t0 = clock()
            await asyncio.sleep(0.001)
            self.worst_lateness = max(self.worst_lateness, clock() - t0 - 0.001)


async def _spread(calls: list[Callable[[], Awaitable[Any]]]) -> list[float]:
    """Run ``calls`` all at once; seconds each took. Tasks are started 50 to a loop turn
    so that starting 1,000 of them is no stall of the benchmark's own making."""
    took = [0.0] * len(calls)

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await calls[i]()
        took[i] = time.perf_counter() - t0

    tasks = []
    for start in range(0, len(calls), 50):
        tasks.extend(asyncio.create_task(one(i)) for i in range(start, start + 50))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return took


def bench_concurrent(settings: Settings) -> Section:
    n = settings.n(1000, 200)
    rounds = settings.n(7, 2)
    ns, names = _services(settings)
    fqdns = [f"{name}.{ns}.svc.cluster.local." for name in names]
    lab = settings.lab
    progress(f"12: {n} concurrent lookups of {SERVICES} Services, cache off, {rounds} rounds")

    d = _dns_discoverer(settings, ns, cache=False)
    sync = d.sync
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [lab.dns_host]
    resolver.port = int(lab.dns_port)
    resolver.timeout = resolver.lifetime = 5.0
    pool = ThreadPoolExecutor(32)
    stalls: list[tuple[float, float]] = []

    async def kdisco_async() -> list[float]:
        async with StallMeter() as meter:
            took = await _spread(
                [lambda i=i: d.discover(names[i % SERVICES]) for i in range(n)]  # type: ignore[misc]
            )
        stalls.append((meter.worst_step, meter.worst_lateness))
        return took

    async def bare_a() -> list[float]:
        return await _spread(
            [lambda i=i: resolver.resolve(fqdns[i % SERVICES], "A") for i in range(n)]  # type: ignore[misc]
        )

    async def bare_a_aaaa() -> list[float]:
        async def both(name: str) -> None:
            # What kdisco asks for a name without a port: A and AAAA, at once.
            await asyncio.gather(
                resolver.resolve(name, "A"),
                resolver.resolve(name, "AAAA", raise_on_no_answer=False),
            )

        return await _spread([lambda i=i: both(fqdns[i % SERVICES]) for i in range(n)])  # type: ignore[misc]

    def threads() -> list[float]:
        def one(i: int) -> float:
            t0 = time.perf_counter()
            sync.discover(names[i % SERVICES])
            return time.perf_counter() - t0

        return list(pool.map(one, range(n)))

    def run_async(make: Callable[[], Coroutine[Any, Any, list[float]]]) -> Callable[[], Any]:
        return lambda: asyncio.run(make())

    cases: dict[str, Callable[[], list[float]]] = {
        "kdisco.aio (AsyncDiscoverer.discover)": run_async(kdisco_async),
        "kdisco sync, 32-thread pool": threads,
        "dnspython dns.asyncresolver, A": run_async(bare_a),
        "dnspython dns.asyncresolver, A + AAAA": run_async(bare_a_aaaa),
    }
    for fn in cases.values():  # warm: imports, CoreDNS's own cache
        fn()
    stalls.clear()
    walls: dict[str, list[float]] = {name: [] for name in cases}
    per_call: dict[str, list[float]] = {name: [] for name in cases}
    with gc_paused():
        for _ in range(rounds):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                took = fn()
                walls[name].append(time.perf_counter() - t0)
                per_call[name].extend(took)
    pool.shutdown()
    sync.close()
    wall = {name: median(w) for name, w in walls.items()}
    k = "kdisco.aio (AsyncDiscoverer.discover)"
    rows = [
        [
            name,
            ms(wall[name]),
            us(percentile(per_call[name], 50)),
            us(percentile(per_call[name], 99)),
            f"{wall[name] / wall[k]:.2f}x",
        ]
        for name in cases
    ]
    vs_bare = wall[k] / wall["dnspython dns.asyncresolver, A"]
    vs_like = wall[k] / wall["dnspython dns.asyncresolver, A + AAAA"]
    vs_threads = wall["kdisco sync, 32-thread pool"] / wall[k]
    settings.cache["aio-stall-concurrent"] = (
        max(step for step, _ in stalls),
        max(late for _, late in stalls),
    )
    return Section(
        12,
        f"asyncio: {n:,} concurrent lookups of {SERVICES} Services through CoreDNS, cache off",
        ["side", "wall time (median)", "per call p50", "per call p99", "wall / kdisco.aio"],
        rows,
        targets=[
            Target(
                "kdisco.aio / bare dns.asyncresolver (A only)",
                "≤ 1.3x",
                f"{vs_bare:.2f}x",
                vs_bare <= 1.3,
            ),
            Target(
                "kdisco.aio / dns.asyncresolver asking what kdisco asks (A + AAAA)",
                "(like for like)",
                f"{vs_like:.2f}x",
                vs_like <= 1.3,
            ),
            Target("32-thread pool / kdisco.aio", "≥ 3x", f"{vs_threads:.2f}x", vs_threads >= 3),
        ],
        notes=[
            f"Median wall time of {rounds} interleaved rounds, each a fresh event loop; "
            f"per-call figures over every call of every round. Names cycle over {SERVICES} "
            "ClusterIP Services; the lab's CoreDNS runs on 127.0.0.1 with its own cache "
            "(30 s), so every side's questions are answered from it alike.",
            "kdisco asks A and AAAA for a name without a port (dual-stack Services have "
            "both); the A-only row is what a bare client asking for IPv4 alone pays, the "
            "A + AAAA row is the same questions kdisco asks.",
            "The thread pool runs the sync `Discoverer.discover` (the same Discoverer) on "
            "32 threads: the GIL serialises the Python work of every lookup.",
        ],
    )


def bench_cached(settings: Settings) -> Section:
    n = settings.n(200_000, 20_000)
    ns, names = _services(settings)
    d = _dns_discoverer(settings, ns, cache=True)
    svc = names[0]
    progress(f"13: cached await discover() vs sync cached discover(), {n:,} calls each")

    def sync_calls() -> list[float]:
        call = d.sync.discover
        clock = time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            call(svc)
            out[i] = clock() - t0
        return [v / 1e9 for v in out]

    async def async_calls() -> list[float]:
        call = d.discover
        clock = time.perf_counter_ns
        out = [0] * n
        for i in range(n):
            t0 = clock()
            await call(svc)
            out[i] = clock() - t0
        return [v / 1e9 for v in out]

    async def module_calls() -> list[float]:
        call = kdisco.aio.discover
        clock = time.perf_counter_ns
        out = [0] * n
        with use_discoverer(d.sync):
            for i in range(n):
                t0 = clock()
                await call(svc)
                out[i] = clock() - t0
        return [v / 1e9 for v in out]

    async def warm() -> None:
        await d.discover(svc)

    asyncio.run(warm())
    d.sync.discover(svc)

    with gc_paused():
        t_sync = percentile(sync_calls(), 50)
        t_async = percentile(asyncio.run(async_calls()), 50)
        t_module = percentile(asyncio.run(module_calls()), 50)
        t_sync_module = percentile(_module_sync(d, svc, n), 50)
    d.sync.close()
    r = t_async / t_sync
    return Section(
        13,
        "asyncio: a cached `await discover()` next to the sync cached call",
        ["call", "p50", "/ sync"],
        [
            ["`Discoverer.discover` (sync)", us(t_sync), "1.00x"],
            ["`await AsyncDiscoverer.discover`", us(t_async), f"{r:.2f}x"],
            ["`kdisco.discover` (sync, module level)", us(t_sync_module), "—"],
            [
                "`await kdisco.aio.discover` (module level)",
                us(t_module),
                f"{t_module / t_sync_module:.2f}x of module-level sync",
            ],
        ],
        targets=[Target("cached await discover() / sync cached", "≤ 2x", f"{r:.2f}x", r <= 2)],
        notes=[
            f"p50 of {n:,} back-to-back calls for one cached DNS answer, in one coroutine "
            "(async) or the main thread (sync); perf_counter_ns around each call, the "
            "collector paused.",
        ],
    )


def _module_sync(d: AsyncDiscoverer, svc: str, n: int) -> list[float]:
    call = kdisco.discover
    clock = time.perf_counter_ns
    out = [0] * n
    with use_discoverer(d.sync):
        for i in range(n):
            t0 = clock()
            call(svc)
            out[i] = clock() - t0
    return [v / 1e9 for v in out]


def bench_stalls(settings: Settings) -> Section:
    size = settings.n(10_000, 1_000)
    rounds = settings.n(5, 2)
    ns, svc = big_service(settings, size)
    kubeconfig = str(settings.lab.kubeconfig)
    progress(f"14: event-loop stalls during cold {size:,}-endpoint api lookups, {rounds} rounds")

    async def cold(watch: bool) -> tuple[StallMeter, int]:
        d = await asyncio.to_thread(
            AsyncDiscoverer,
            strategies=["api"],
            kubeconfig=kubeconfig,
            namespace=ns,
            api_watch=watch,
            cache=False,
            timeout=60,
        )
        async with StallMeter() as meter:
            res = await d.discover(svc)
        await d.aclose()
        return meter, len(res)

    cases = {"watch cache (default)": True, "direct reads": False}
    # Each case twice: as an application runs (the collector on), and with the
    # collector paused, which leaves kdisco's own steps: a full collection is
    # triggered by whoever allocates when it is due, and 10,000 endpoints allocate.
    runs: dict[tuple[str, bool], list[StallMeter]] = {
        (k, paused): [] for k in cases for paused in (False, True)
    }
    for _ in range(rounds):
        for label, watch in cases.items():
            for paused in (False, True):
                if paused:
                    with gc_paused():
                        meter, found = asyncio.run(cold(watch))
                else:
                    meter, found = asyncio.run(cold(watch))
                if found != size:
                    raise RuntimeError(f"found {found} endpoints, expected {size}")
                runs[(label, paused)].append(meter)

    def worst(label: str, paused: bool) -> StallMeter:
        return max(runs[(label, paused)], key=lambda m: m.worst_step)

    rows = []
    for label in cases:
        for paused in (False, True):
            m = worst(label, paused)
            late = max(x.worst_lateness for x in runs[(label, paused)])
            med = median([x.worst_step for x in runs[(label, paused)]])
            rows.append(
                [
                    f"cold {size:,}-endpoint api lookup, {label}"
                    + (", collector paused" if paused else ""),
                    ms(m.worst_step),
                    ms(med),
                    ms(late),
                ]
            )
    concurrent = settings.cache.get("aio-stall-concurrent")
    if concurrent is not None:
        rows.insert(
            0, ["benchmark 12 (concurrent DNS lookups)", ms(concurrent[0]), "—", ms(concurrent[1])]
        )
    own = max(worst(label, True).worst_step for label in cases)
    overall = max(worst(label, False).worst_step for label in cases)
    return Section(
        14,
        "asyncio: the longest event-loop stall caused by kdisco",
        ["during", "longest step (worst round)", "longest step (median round)", "ticker lateness"],
        rows,
        targets=[
            Target(
                "longest kdisco step on the loop, collector paused", "≤ 5 ms", ms(own), own <= 0.005
            ),
            Target(
                "longest step with the collector on (a full collection included)",
                "≤ 5 ms",
                ms(overall),
                overall <= 0.005,
            ),
        ],
        notes=[
            "Longest step: the longest single callback the loop ran (asyncio's "
            "'Executing ... took'), timed by wrapping `asyncio.Handle._run`. Ticker "
            "lateness: how late a task sleeping 1 ms at a time woke; under benchmark "
            "12's load it is mostly queueing behind a thousand lookups; in a cold lookup "
            "it adds the worker threads of a cold start (credentials, TLS context, "
            "informers parsing list pages) holding the GIL.",
            "With the collector on, a full collection (tens of ms in this process, which "
            "holds every earlier benchmark's data) lands in whichever step allocates "
            "when it is due; building 10,000 endpoints allocates enough to trigger one. "
            "The paused rows show kdisco's own steps.",
            f"{rounds} rounds of each case. Each builds a new AsyncDiscoverer in a worker "
            "thread (as `kdisco.aio` does for its default) and makes one lookup: "
            "credentials, connection, the first list (watch cache) or GET + paged LIST "
            "(direct reads, 50 slices a page, the loop let run between slices).",
        ],
    )
