"""kdisco.aio against the real servers: every async path, with the loop watched.

Each test runs its event loop in asyncio's debug mode with a low
``slow_callback_duration``: any step of a kdisco task that holds the loop longer
fails the test (``checked``). Answers are compared with the sync API's on the same
lab, and attempts must show that the async strategies ran on the loop (no "worker
thread" note). Addresses are resolved and compared, never connected to.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

import kdisco
from kdisco import Outcome, ServiceKind, WatchCachePolicy
from kdisco._chain import IN_A_THREAD
from kdisco.aio import AsyncDiscoverer
from lab.objects import Cluster, port

from .conftest import BIG_ENDPOINTS, DB_READY, PROPAGATION_TIMEOUT, converged
from .test_lab import api, api_port, dns, endpoints

T = TypeVar("T")

#: A kdisco step longer than this on the loop fails the test. Debug mode itself
#: doubles or triples a step's time (it records a traceback for every callback and
#: task), and in the full suite other tests' threads (informers, servers) hold the
#: GIL now and then: a step measured at 3 ms alone reads 8 ms in debug mode and up to
#: ~25 ms in the full run. 50 ms catches a step that waits on a server or does bulk
#: work on the loop; the unit tests (test_dns_async, test_api_async) hold the
#: strategies to tighter bounds against servers they control.
SLOW = 0.05


class _SlowSteps(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Executing") and " took " in text:
            self.found.append(text)


@pytest.fixture
def checked() -> Iterator[Callable[[Callable[[], Awaitable[T]]], T]]:
    """``checked(main)``: ``asyncio.run(main())`` in debug mode; fails on any slow step.

    The tests' coroutines only await kdisco (their sync comparisons and API writes
    run outside the loop or in a thread), so every step the log names is kdisco's.
    Discoverers are built before the loop starts, as an application builds one at
    start-up; their first lookup, the cold start, runs on the loop."""
    handler = _SlowSteps()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)

    def run(main: Callable[[], Awaitable[T]], *, slow: float = SLOW) -> T:
        async def watched() -> T:
            asyncio.get_running_loop().slow_callback_duration = slow
            return await main()

        # A full collection of this long test session's objects takes 60-120 ms and
        # would read as kdisco blocking: the survivors so far are frozen first.
        gc.collect()
        gc.freeze()
        try:
            return asyncio.run(watched(), debug=True)
        finally:
            gc.unfreeze()

    try:
        yield run
    finally:
        logger.removeHandler(handler)
    assert handler.found == [], "kdisco blocked the event loop"


def adns(lab_info: Any, ns: str, **kw: Any) -> AsyncDiscoverer:
    return AsyncDiscoverer(
        strategies=["dns"],
        dns_server=f"{lab_info.dns_host}:{lab_info.dns_port}",
        cluster_domain=lab_info.cluster_domain,
        namespace=ns,
        environ={},
        **kw,
    )


def aapi(lab_info: Any, ns: str, **kw: Any) -> AsyncDiscoverer:
    kw.setdefault("reach", "cluster")  # as test_lab's api(): the view from a pod
    return AsyncDiscoverer(
        strategies=["api"], kubeconfig=str(lab_info.kubeconfig), namespace=ns, environ={}, **kw
    )


async def eventually(fn: Callable[[], Awaitable[T]], *, timeout: float = PROPAGATION_TIMEOUT) -> T:
    """Until ``fn`` stops raising (CoreDNS and the caches need a moment for new objects)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except (AssertionError, kdisco.DiscoveryError):
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)


def on_the_loop(res: kdisco.Resolution | kdisco.DiscoveryError) -> None:
    """The async strategies answered themselves: no turn went to a worker thread."""
    assert all(IN_A_THREAD not in a.reason for a in res.attempts), res.attempts


# -- dns against CoreDNS -------------------------------------------------------------


class TestDns:
    def test_records_as_the_sync_api_reads_them(
        self, lab_info: Any, cluster: Cluster, app: str, checked: Any
    ) -> None:
        cases: list[tuple[str, str | int | None]] = [
            ("single", None),
            ("web", "http"),
            ("web", 9090),
            ("dual", "http"),
            ("dns-like", "dns"),
            ("db", "postgres"),
            ("db", None),
        ]
        d = adns(lab_info, app, cache=False)

        async def main() -> list[kdisco.Resolution]:
            async with d:
                return [await eventually(partial(d.discover, n, port=p)) for n, p in cases]

        answers = checked(main)
        with dns(lab_info, app, cache=False) as s:
            pairs = [
                (got, s.discover(n, port=p)) for got, (n, p) in zip(answers, cases, strict=True)
            ]
        for got, want in pairs:
            on_the_loop(got)
            assert got.source == "dns"
            assert endpoints(got) == endpoints(want)
            assert (got.kind, got.port, got.ttl is not None) == (
                want.kind,
                want.port,
                want.ttl is not None,
            )
        headless = pairs[5][0]  # db, port "postgres"
        assert {(ep.host, ep.hostname) for ep in headless} == DB_READY

    def test_a_truncated_answer_is_asked_again_over_tcp(
        self, lab_info: Any, app: str, checked: Any
    ) -> None:
        # 120 endpoints: too big for UDP. Parsing 240 records is CPU work no driver can
        # move off the loop (a thread would hold the GIL as long): dnspython takes
        # ~30 ms here, so this case alone is held to 100 ms, which still catches any
        # blocking round trip to the server.
        d = adns(lab_info, app, cache=False)

        async def main() -> kdisco.Resolution:
            async with d:
                return await eventually(lambda: d.discover("big", port="http"))

        got = checked(main, slow=0.1)
        on_the_loop(got)
        with dns(lab_info, app, cache=False) as s:
            assert endpoints(got) == endpoints(s.discover("big", port="http"))
        assert len(got) == BIG_ENDPOINTS

    def test_misses_and_errors_as_the_sync_api_raises_them(
        self, lab_info: Any, app: str, checked: Any
    ) -> None:
        cases: list[tuple[str, int | str | None]] = [
            ("web", "grpc"),
            ("web", 8080),
            ("idle", None),
            ("nope", None),
        ]
        d = adns(lab_info, app, cache=False)

        async def main() -> list[kdisco.DiscoveryError]:
            out = []
            async with d:
                await eventually(lambda: d.discover("web"))
                for name, p in cases:
                    with pytest.raises(kdisco.DiscoveryError) as got:
                        await d.discover(name, port=p)
                    out.append(got.value)
            return out

        errors = checked(main)
        with dns(lab_info, app, cache=False) as s:
            for got, (name, p) in zip(errors, cases, strict=True):
                with pytest.raises(kdisco.DiscoveryError) as want:
                    s.discover(name, port=p)
                on_the_loop(got)
                assert type(got) is type(want.value)
                assert got.attempts == want.value.attempts
        assert [type(e).__name__ for e in errors] == [
            "PortNotFound",
            "PortNotFound",
            "ServiceNotFound",
            "ServiceNotFound",
        ]

    def test_external_names(self, lab_info: Any, cluster: Cluster, app: str, checked: Any) -> None:
        cluster_ip = cluster.read_service(app, "web")["spec"]["clusterIP"]

        d = adns(lab_info, app)

        async def main() -> tuple[kdisco.Resolution, kdisco.Resolution]:
            async with d:
                outside = await eventually(lambda: d.discover("outside"))
                alias = await eventually(lambda: d.discover("alias", port="http"))
                return outside, alias

        outside, alias = checked(main)
        assert outside.kind is ServiceKind.EXTERNAL_NAME
        assert outside.external_name == "db.example.test"
        # The alias is followed into the cluster: web's ClusterIP and named port.
        assert endpoints(alias) == {(cluster_ip, 80)}
        assert [ref.name for ref in alias.via] == ["alias"]
        on_the_loop(alias)


# -- api against kube-apiserver ------------------------------------------------------


@pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
class TestApi:
    def test_every_kind_as_the_sync_api_reads_it(
        self, lab_info: Any, app: str, watch: bool, checked: Any
    ) -> None:
        cases: list[tuple[str, str | None]] = [
            ("web", "http"),
            ("np", "https"),
            ("lb", "https"),
            ("dual", "http"),
            ("db", "postgres"),
            ("big", "http"),
            ("outside", None),
            ("alias", "http"),
        ]

        d = aapi(lab_info, app, api_watch=watch, cache=False)

        async def main() -> list[kdisco.Resolution]:
            # The first lookup is a cold start: credentials, a connection, and with the
            # watch cache the first list, all awaited without blocking the loop.
            async with d:
                return [await d.discover(n, port=p) for n, p in cases]

        answers = checked(main)
        with api(lab_info, app, api_watch=watch, cache=False) as s:
            pairs = [
                (got, s.discover(n, port=p)) for got, (n, p) in zip(answers, cases, strict=True)
            ]
        for got, want in pairs:
            on_the_loop(got)
            assert got.source == "api"
            assert got == want  # values compare on their data: endpoints, ports, kind, via
        assert {(ep.host, ep.hostname) for ep in pairs[4][0]} == DB_READY

    def test_not_ready_missing_and_loops(
        self, lab_info: Any, app: str, watch: bool, checked: Any
    ) -> None:
        d = aapi(lab_info, app, api_watch=watch)

        async def main() -> list[str]:
            out = []
            async with d:
                for name in ["idle", "nope", "loop-a"]:
                    with pytest.raises(kdisco.DiscoveryError) as got:
                        await d.discover(name)
                    on_the_loop(got.value)
                    out.append(type(got.value).__name__)
                res = await d.discover("idle", include_not_ready=True)
                assert [ep.hostname for ep in res] == ["idle-0"]
            return out

        assert checked(main) == ["NoReadyEndpoints", "ServiceNotFound", "DiscoveryUnavailable"]

    def test_rbac_denial_names_the_permission(
        self,
        lab_info: Any,
        cluster: Cluster,
        app: str,
        watch: bool,
        creds: Path,
        checked: Any,
    ) -> None:
        other = cluster.namespace("aio-other")
        cluster.service(other, "web", ports=[port(80, "http")])
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port(lab_info),
            "KDISCO_SERVICEACCOUNT_DIR": str(creds),
        }

        d = AsyncDiscoverer(strategies=["api"], environ=environ, api_watch=watch)

        async def main() -> tuple[kdisco.Resolution, kdisco.AccessDenied]:
            async with d:
                allowed = await d.discover("db", port="postgres")
                with pytest.raises(kdisco.AccessDenied) as denied:
                    await d.discover(f"web.{other}")
                return allowed, denied.value

        allowed, err = checked(main)
        assert {(ep.host, ep.hostname) for ep in allowed} == DB_READY
        assert (err.verb, err.resource, err.namespace) == ("get", "services", other)
        assert "forbidden" in str(err)

    def test_watch_sees_a_slice_change(
        self, lab_info: Any, cluster: Cluster, nodes: Any, watch: bool, checked: Any
    ) -> None:
        ns = cluster.namespace("aio-watch")
        labels = {"app": "db"}
        cluster.service(ns, "db", headless=True, ports=[port(5432, "pg")], selector=labels)
        cluster.pod(ns, "db-1", labels=labels, node="node-1", ip="192.0.2.1")
        converged(cluster, ns, "db", ["192.0.2.1"])
        # Without the watch cache, changes are seen when the answer's time is up.
        policy = kdisco.CachePolicy(min_ttl=0.2, max_ttl=0.5)

        d = aapi(lab_info, ns, api_watch=watch, cache=policy)

        async def main() -> list[set[str]]:
            seen: list[set[str]] = []
            async with d, d.watch("db") as w:
                async for res in w:
                    on_the_loop(res)
                    seen.append({ep.host for ep in res})
                    if len(seen) > 1:
                        break
                    # The test's own API write, off the loop: a second Pod, which the
                    # EndpointSlice controller adds to the slice.
                    await asyncio.to_thread(
                        partial(cluster.pod, labels=labels, node="node-1", ip="192.0.2.2"),
                        ns,
                        "db-2",
                    )
            return seen

        assert checked(lambda: asyncio.wait_for(main(), PROPAGATION_TIMEOUT)) == [
            {"192.0.2.1"},
            {"192.0.2.1", "192.0.2.2"},
        ]


# -- the whole chain -----------------------------------------------------------------


def test_dead_coredns_the_api_answers_within_the_deadline(
    lab_info: Any, cluster: Cluster, app: str, checked: Any
) -> None:
    d = AsyncDiscoverer(
        strategies=["dns", "api"],
        dns_server=f"{lab_info.dns_host}:{lab_info.dns_port}",
        kubeconfig=str(lab_info.kubeconfig),
        namespace=app,
        environ={},
        timeout=3.0,
        api_watch=WatchCachePolicy(),
        reach="cluster",  # as in a pod (test_reach_lab.py has the view from outside)
    )

    async def main() -> tuple[kdisco.Resolution, float]:
        async with d:
            start = time.monotonic()
            res = await d.discover("db", port="postgres")
            return res, time.monotonic() - start

    lab_info.stop_dns()
    try:
        res, took = checked(main)
    finally:
        lab_info.start_dns()
    assert res.source == "api"
    assert took <= 3.0 * 1.1
    # Past the warning that pod IPs work only inside the cluster (this test runs outside).
    dns_attempt = next(a for a in res.attempts if a.outcome is not Outcome.WARNING)
    assert dns_attempt.strategy == "dns", res.attempts
    assert dns_attempt.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
    on_the_loop(res)


def test_many_concurrent_lookups_share_the_loop(lab_info: Any, app: str, checked: Any) -> None:
    # 200 lookups at once through DNS, cache off: all answered, none blocking another.
    d = adns(lab_info, app, cache=False)

    async def main() -> list[kdisco.Resolution]:
        async with d:
            await eventually(lambda: d.discover("web"))
            names = ["web", "single", "dual", "db", "dns-like"]
            tasks = []
            for i in range(200):
                tasks.append(asyncio.create_task(d.discover(names[i % 5])))
                if i % 10 == 9:
                    # Debug mode records a traceback per task made: making 200 in one
                    # step would be a slow step of this test's own.
                    await asyncio.sleep(0)
            return list(await asyncio.gather(*tasks))

    results = checked(main)
    assert len(results) == 200
    assert all(len(r) >= 1 for r in results)
