"""Benchmark 11: a fleet of clients through a kube-apiserver restart (the re-list storm).

200 clients, each its own ``Discoverer(strategies=["api"])`` and so its own watch
cache (two informer threads, a list and a watch per resource), watch one namespace
of a private lab's kube-apiserver. Once all are synced the apiserver is restarted
(SIGTERM, SIGKILL after 2 s, start, /readyz); every watch breaks, the informers
retry, get 410 Gone (the apiserver's watch cache starts empty) and re-list.
Measured per second: the requests the fleet sends (each passes through
``KubeClient.open``, wrapped here with a thread-safe counter), and the time until
every client is synced again. Two trials with kdisco's full-jitter backoff and two
without jitter (every retry waits its full ceiling, as a plain exponential backoff
would), all with the lab's kubeconfig; then one fleet with a ServiceAccount token,
as pods have.

The lab is private (started and stopped here): restarting a shared lab would break
whoever else uses it. Nothing is connected to but its 127.0.0.1 ports.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kdisco
from kdisco._k8s import informer as _informer
from kdisco._k8s.client import KubeClient
from kdisco._policies import RetryPolicy
from kdisco._strategies.api import ApiStrategy
from lab.objects import Cluster, port

from . import _metrics
from ._cluster import data_address
from ._common import Section, Settings, progress

#: The namespace every client watches: Services with a slice each.
SERVICES = 10
ENDPOINTS = 10
#: Longest wait for the fleet to sync (at start, and again after the restart).
SYNC_LIMIT = 45.0
#: Whole-benchmark budget (seconds): runs that would not fit are skipped, and said so.
BUDGET = 160.0
#: The deployment the figures are extrapolated to.
PODS = 5000
KUBECONFIG = "kubeconfig (admin)"
SERVICE_ACCOUNT = "service-account token"
RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]


# -- counting requests ------------------------------------------------------------------


@dataclass
class Requests:
    """Every request the fleet sends: when, what, and how it ended (thread-safe)."""

    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    body: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, kind: str, outcome: str) -> None:
        with self._lock:
            self.events.append((time.monotonic(), kind, outcome))

    def add_bytes(self, kind: str, n: int) -> None:
        with self._lock:
            self.body[kind] += n

    def reset(self) -> None:
        with self._lock:
            self.t0 = time.monotonic()
            self.events = []
            self.body = Counter()

    def snapshot(self) -> tuple[list[tuple[float, str, str]], Counter[str]]:
        with self._lock:
            return list(self.events), Counter(self.body)


def _kind(path: str, query: Any) -> str:
    q = dict(query)
    if q.get("watch") == "true":
        return "watch"
    if path.endswith(("/services", "/endpointslices")) and "=" not in q.get("labelSelector", ""):
        return "list"
    return "direct read"


class _Counted:
    """A urllib3 response whose body bytes are counted as the informer reads them."""

    def __init__(self, response: Any, requests: Requests, kind: str) -> None:
        self._response = response
        self._requests = requests
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    @property
    def data(self) -> bytes:
        body: bytes = self._response.data
        self._requests.add_bytes(self._kind, len(body))
        return body

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        chunk: bytes = self._response.read(*args, **kwargs)
        self._requests.add_bytes(self._kind, len(chunk))
        return chunk

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in self._response.stream(*args, **kwargs):
            self._requests.add_bytes(self._kind, len(chunk))
            yield chunk


@contextmanager
def counting(requests: Requests) -> Iterator[None]:
    """Count every request of every KubeClient in this process (lists, watches, reads)."""
    original = KubeClient.open

    def open_(self: KubeClient, path: str, query: Any = (), **kwargs: Any) -> Any:
        kind = _kind(path, query)
        try:
            response = original(self, path, query, **kwargs)
        except Exception:
            requests.add(kind, "no response")  # refused, reset, timed out, cut off
            raise
        requests.add(kind, str(response.status))
        return _Counted(response, requests, kind)

    KubeClient.open = open_  # type: ignore[method-assign]
    try:
        yield
    finally:
        KubeClient.open = original  # type: ignore[method-assign]


@contextmanager
def without_jitter() -> Iterator[None]:
    """Informers built inside wait their full backoff ceiling (``rng`` always 1.0).

    ``RetryPolicy.rng`` defaults to ``kdisco._policies._random``, but the default is
    the function object taken when the class was defined: replacing the module's
    ``_random`` changes nothing. The informer module's own name ``RetryPolicy`` is
    what ``_Informer`` calls, so that is what is replaced, for this process only.
    """
    if not hasattr(_informer, "RetryPolicy"):
        raise RuntimeError("kdisco._k8s.informer no longer builds RetryPolicy by name")
    _informer.RetryPolicy = functools.partial(RetryPolicy, rng=lambda: 1.0)
    try:
        yield
    finally:
        _informer.RetryPolicy = RetryPolicy


# -- the fleet ----------------------------------------------------------------------------


def _informers(d: kdisco.Discoverer, ns: str) -> tuple[Any, ...]:
    strategy = next(s for s in d.strategies if isinstance(s, ApiStrategy))
    assert strategy.watch_cache is not None
    cache = strategy.watch_cache.namespace(ns)
    assert cache is not None
    return tuple(cache.threads)


def _wait(pred: Callable[[], bool], limit: float) -> float | None:
    """Seconds until ``pred()`` holds, polled every 20 ms; None after ``limit``."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > limit:
            return None
        time.sleep(0.02)
    return time.monotonic() - t0


@dataclass
class Run:
    label: str
    clients: int
    credentials: str
    initial_sync: float | None = None
    down: float = 0.0  # restart began -> /readyz answers again
    back: float | None = None  # restart began -> the restarted apiserver's first answer
    resync_from_back: float | None = None
    resync_from_restart: float | None = None
    #: Most requests answered in any 0.1 s, and sent (answered or not).
    busiest_answered: int = 0
    busiest_sent: int = 0
    unsynced: int = 0
    per_second: list[Counter[str]] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    body: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    server: Counter[str] = field(default_factory=Counter)

    def per_client(self, key: str) -> float:
        return self.totals[key] / self.clients


class _CountWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextmanager
def _quiet_kdisco_log() -> Iterator[_CountWarnings]:
    """kdisco's warnings (one per informer refused by RBAC) counted, not printed."""
    logger = logging.getLogger("kdisco")
    handler = _CountWarnings()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _run(
    lab: Any,
    ns: str,
    clients: int,
    label: str,
    make: Callable[[], kdisco.Discoverer],
    credentials: str,
    requests: Requests,
    *,
    jitter: bool = True,
    until: float = math.inf,
) -> Run:
    run = Run(label, clients, credentials)
    fleet: list[kdisco.Discoverer] = []
    lock = threading.Lock()

    def client(_: int) -> None:
        d = make()
        with lock:
            fleet.append(d)
        # Starts its informers; if it fails they go on in the background, and the
        # sync below is what counts.
        with contextlib.suppress(kdisco.DiscoveryError):
            d.discover("svc-00", timeout=4)

    try:
        with without_jitter() if not jitter else _nothing(), _quiet_kdisco_log() as warned:
            requests.reset()
            progress(f"11: {label}: starting {clients} clients")
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(client, range(clients)))
            informers = [i for d in fleet for i in _informers(d, ns)]
            if _wait(lambda: all(i.synced for i in informers), _limit(until)) is not None:
                run.initial_sync = time.monotonic() - requests.t0
            time.sleep(1.0)  # let the last watches settle
            lists_before = [i.lists for i in informers]

            def again() -> list[bool]:
                return [
                    i.synced and i.lists > n for i, n in zip(informers, lists_before, strict=True)
                ]

            requests.reset()
            warned.count = 0
            progress(f"11: {label}: restarting kube-apiserver under {len(informers)} watches")
            lab.restart_apiserver()
            run.down = time.monotonic() - requests.t0
            if _wait(lambda: all(again()), _limit(until)) is not None:
                run.resync_from_restart = time.monotonic() - requests.t0
            run.unsynced = sum(1 for ok in again() if not ok)
            time.sleep(1.0)  # the watches opened after the last list land in the count
            events, run.body = requests.snapshot()
            run.warnings = warned.count
        try:
            run.server, _ = _metrics.scrape(lab)  # counted since the restart
        except OSError as exc:
            progress(f"11: could not read /metrics: {exc}")
    finally:
        progress(f"11: {label}: closing {len(fleet)} clients")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda d: d.close(), fleet))
    t0 = requests.t0
    run.back = min((t - t0 for t, _, outcome in events if outcome != "no response"), default=None)
    if run.back is not None and run.resync_from_restart is not None:
        run.resync_from_back = run.resync_from_restart - run.back
    tenths = Counter(int((t - t0) * 10) for t, _, _ in events)
    answered = Counter(int((t - t0) * 10) for t, _, o in events if o != "no response")
    run.busiest_sent = max(tenths.values(), default=0)
    run.busiest_answered = max(answered.values(), default=0)
    seconds = max(1, math.ceil(max((t - t0 for t, _, _ in events), default=0.0)))
    run.per_second = [Counter() for _ in range(seconds)]
    for t, kind, outcome in events:
        bucket = run.per_second[min(int(t - t0), seconds - 1)]
        bucket[kind] += 1
        bucket["no response" if outcome == "no response" else "answered"] += 1
        bucket["sent"] += 1
        run.totals[kind] += 1
        run.statuses[outcome] += 1
        if outcome == "no response":
            run.totals[outcome] += 1
    return run


def _limit(until: float) -> float:
    """How long a wait may take: SYNC_LIMIT, less when the budget is nearly spent."""
    return max(1.0, min(SYNC_LIMIT, until - time.monotonic()))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- the report -------------------------------------------------------------------------


def _s(seconds: float | None) -> str:
    return "not within the limit" if seconds is None else f"{seconds:.1f} s"


def _peak(run: Run, key: str) -> int:
    return max((b[key] for b in run.per_second), default=0)


def _namespace(cluster: Cluster) -> str:
    ns = cluster.namespace("bench-fleet")
    for s in range(SERVICES):
        name = f"svc-{s:02d}"
        cluster.service(ns, name, ports=[port(8080, "http")], headless=True)
        cluster.endpoint_slice(
            ns,
            name,
            f"{name}-0000",
            [
                {"addresses": [data_address(s * 100 + i)], "conditions": {"ready": True}}
                for i in range(ENDPOINTS)
            ],
            ports=[port(8080, "http")],
        )
    return ns


def bench_fleet(settings: Settings) -> Section:
    from lab import ensure_lab

    clients = settings.n(200, 20)
    started = time.monotonic()
    runs: list[Run] = []
    skipped: list[str] = []
    requests = Requests()
    progress("11: starting a private lab (its apiserver is restarted: never a shared one)")
    with ensure_lab(reuse=False, verbose=False) as lab, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(str(lab.kubeconfig))
        try:
            ns = _namespace(cluster)
            sa = cluster.serviceaccount_credentials(
                ns, Path(tmp) / "sa", str(lab.ca_path), name="fleet", rules=RULES
            )
            port_ = str(urlsplit(lab.apiserver_url).port)
            pod_env = {
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": port_,
                "KDISCO_SERVICEACCOUNT_DIR": str(sa),
            }

            def by_kubeconfig() -> kdisco.Discoverer:
                return kdisco.Discoverer(
                    strategies=["api"], kubeconfig=str(lab.kubeconfig), namespace=ns, environ={}
                )

            def in_pod() -> kdisco.Discoverer:
                return kdisco.Discoverer(strategies=["api"], environ=pod_env)

            # Two trials each way (restarts vary a lot), then one fleet of pods' tokens,
            # which can take backoff_max (30 s) longer: see the notes.
            plan = [
                ("full jitter (kdisco), trial 1", by_kubeconfig, KUBECONFIG, True, 25.0),
                ("no jitter, trial 1", by_kubeconfig, KUBECONFIG, False, 25.0),
                ("full jitter (kdisco), trial 2", by_kubeconfig, KUBECONFIG, True, 25.0),
                ("no jitter, trial 2", by_kubeconfig, KUBECONFIG, False, 25.0),
                ("full jitter (kdisco)", in_pod, SERVICE_ACCOUNT, True, 55.0),
            ]
            with counting(requests):
                for label, make, creds, jitter, needs in plan:
                    # ``needs``: what the run usually takes here; its waits are cut
                    # short rather than overrun the budget.
                    if time.monotonic() - started + needs > BUDGET and runs:
                        skipped.append(f"{label}, {creds}")
                        continue
                    runs.append(
                        _run(
                            lab,
                            ns,
                            clients,
                            label,
                            make,
                            creds,
                            requests,
                            jitter=jitter,
                            until=started + BUDGET,
                        )
                    )
        finally:
            cluster.close()
    return _section(runs, skipped, clients, time.monotonic() - started)


def _timeline(r: Run) -> list[list[str]]:
    """One row per second; quiet seconds in a row are one row."""
    rows: list[list[str]] = []
    quiet_from: int | None = None
    for i, b in enumerate([*r.per_second, Counter({"sent": 1})]):
        if not b["sent"]:
            quiet_from = i if quiet_from is None else quiet_from
            continue
        if quiet_from is not None:
            rows.append([f"{quiet_from}-{i} s", "0", "0", "0", "0", "0"])
            quiet_from = None
        if i == len(r.per_second):
            break
        kinds = (b["list"], b["watch"], b["direct read"], b["no response"], b["answered"])
        rows.append([f"{i}-{i + 1} s", *(str(n) for n in kinds)])
    return rows


def _section(runs: list[Run], skipped: list[str], clients: int, seconds: float) -> Section:
    rows = []
    for r in runs:
        kib = sum(r.body.values()) / clients / 1024
        lists_kib = r.body["list"] / clients / 1024
        rows.append(
            [
                r.label,
                r.credentials,
                _s(r.initial_sync),
                f"{r.down:.1f} s",
                _s(r.back),
                _s(r.resync_from_restart),
                _s(r.resync_from_back),
                f"{_peak(r, 'answered')} ({_peak(r, 'sent')})",
                f"{r.busiest_answered} ({r.busiest_sent})",
                f"{r.per_client('list'):.2f}",
                f"{r.per_client('watch'):.2f}",
                f"{r.per_client('no response'):.2f}",
                f"{kib:.1f} KiB ({lists_kib:.1f} KiB)",
                str(r.unsynced),
            ]
        )
    extra: list[tuple[str, list[str], list[list[str]]]] = []
    for r in runs:
        extra.append(
            (
                f"Requests per second after the restart began: {r.label}, {r.credentials} "
                f"(/readyz again at {r.down:.1f} s):",
                ["second", "lists", "watch opens", "direct reads", "no response", "answered"],
                _timeline(r),
            )
        )
    statuses = sorted({k for r in runs for k in r.statuses})
    extra.append(
        (
            "Responses by HTTP status over each restart ('no response': refused, reset or "
            "cut off), and kdisco's warnings logged meanwhile:",
            ["run", *statuses, "warnings"],
            [
                [
                    f"{r.label}, {r.credentials}",
                    *(f"{r.statuses[k]:,}" for k in statuses),
                    str(r.warnings),
                ]
                for r in runs
            ],
        )
    )
    verbs = sorted({k for r in runs for k in r.server})
    if verbs:
        extra.append(
            (
                "kube-apiserver's own count from its restart until the fleet was synced "
                "again (`apiserver_request_total` for Services and EndpointSlices; CoreDNS's "
                "few requests included; a WATCH is counted only once it ends):",
                ["run", *verbs],
                [
                    [f"{r.label}, {r.credentials}", *(f"{r.server[k]:,}" for k in verbs)]
                    for r in runs
                ],
            )
        )
    scale = PODS / clients
    extra.append(
        (
            f"What {PODS:,} pods would send one kube-apiserver per restart: each client's "
            f"measured cost x {PODS:,}; the peaks x {scale:.0f}, as if the retries kept "
            "the same shape in time (a real apiserver would queue or refuse much of it):",
            [
                "run",
                "LISTs",
                "WATCH opens",
                "attempts with no response",
                "bytes received",
                "most answered in 1 s",
                "most answered in 0.1 s",
            ],
            [
                [
                    f"{r.label}, {r.credentials}",
                    f"{r.per_client('list') * PODS:,.0f}",
                    f"{r.per_client('watch') * PODS:,.0f}",
                    f"{r.per_client('no response') * PODS:,.0f}",
                    f"{sum(r.body.values()) / clients * PODS / 2**20:,.0f} MiB",
                    f"{_peak(r, 'answered') * scale:,.0f}",
                    f"{r.busiest_answered * scale:,.0f}",
                ]
                for r in runs
            ],
        )
    )
    notes = [
        f"{clients} clients in one process, each its own `Discoverer(strategies=['api'])` "
        "with the default watch cache (two informers: Services and EndpointSlices), all "
        f"watching one namespace of {SERVICES} headless Services with one "
        f"{ENDPOINTS}-endpoint EndpointSlice each; `{KUBECONFIG}` clients use the lab's "
        f"kubeconfig, `{SERVICE_ACCOUNT}` clients a ServiceAccount token with a Role "
        "(get, list, watch), as pods would. The lab is private to this benchmark, with "
        "the apiserver's watch cache on (the default), so watches resumed after the "
        "restart get 410 Gone and re-list.",
        "Every request passes through `kdisco._k8s.client.KubeClient.open`, wrapped here "
        "with a thread-safe counter: lists, watch opens, direct reads (the first "
        "`discover()` of a client, or one made while its cache is not synced; none are "
        "made during the restart) and whether a response came back. Bytes are response "
        "bodies as kdisco reads them (list pages, watch event streams, error bodies) from "
        "the restart until every client is synced again.",
        "Times are from the restart's start (SIGTERM; SIGKILL 2 s later). 'First "
        "answer': the restarted apiserver's first response to the fleet (it serves "
        "before its /readyz says ready, which the lab polls every 0.1 s). 'All synced': "
        "every informer of every client has re-listed and is synced. 'Initial sync': "
        "from building the first client to every informer synced. The fleet, the lab "
        "and the counting share 2 cores: client-side CPU (TLS handshakes, JSON) is part "
        "of every time here, and the fleet's reconnect attempts slow the apiserver's own "
        "start.",
        "Backoff: informers retry after `min(backoff_max, backoff_initial * 2**n) * rng()` "
        "(`WatchCachePolicy` defaults 0.2 s and 30 s), counted from their first failure. "
        "'No jitter' makes `rng()` return 1.0. Patching `kdisco._policies._random` would "
        "not do it (the attrs default of `RetryPolicy.rng` is the function object, "
        "bound when the class was defined), so the run replaces "
        "`kdisco._k8s.informer.RetryPolicy` with `partial(RetryPolicy, rng=lambda: 1.0)` "
        "in this process while its clients exist.",
        "The kubeconfig is the lab's admin (group system:masters), which API Priority and "
        "Fairness exempts from queuing; service accounts are not exempt. Right after a "
        "restart kube-apiserver answers service accounts 403 until its RBAC cache has "
        "loaded, and kdisco's informers wait `backoff_max` (30 s) after a 403 before "
        "trying again: see docs/reliability.md.",
    ]
    if skipped:
        notes.append(f"Skipped to stay within the {BUDGET:.0f} s budget: {'; '.join(skipped)}.")
    notes.append(f"Whole benchmark, lab start and stop included: {seconds:.0f} s.")
    return Section(
        11,
        f"Fleet: {clients} clients through a kube-apiserver restart (the re-list storm)",
        [
            "backoff",
            "credentials",
            "initial sync",
            "restart to /readyz",
            "restart to first answer",
            "restart to all synced",
            "first answer to all synced",
            "most answered in 1 s (sent)",
            "most answered in 0.1 s (sent)",
            "LISTs per client",
            "WATCH opens per client",
            "no-response attempts per client",
            "bytes per client (of which lists)",
            "informers not synced again",
        ],
        rows,
        notes=notes,
        extra_tables=extra,
    )
