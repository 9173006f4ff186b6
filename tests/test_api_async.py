"""The api strategy on asyncio: ``alookup`` and ``aclose``.

Each answer is checked against the sync ``lookup`` of the same strategy on the same
fake apiserver: same answers, same misses, same errors with the same texts. The
event loop is watched by a ticker task (how late each 1 ms sleep wakes up): waits
on kdisco's threads (credentials, a first list, the informers' end) must not block
it. Bounds on that lateness are far below the time a blocking wait would take; no
test asserts how fast anything is. Every test runs its own ``asyncio.run`` and the
suite runs with warnings as errors, so an unclosed session or socket fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdisco
from kdisco import (
    AccessDenied,
    Deadline,
    Miss,
    Outcome,
    Query,
    Resolution,
    ServiceRef,
    TransientError,
    WatchCachePolicy,
)
from kdisco._k8s.client import KubeClient, loads_in_steps
from kdisco._k8s.objects import MERGE_STEP, finish
from kdisco._strategies import api as api_module
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import (
    Certs,
    FakeApiServer,
    FakeNamespace,
    Reply,
    TrickleServer,
    big_slices,
    client_for,
    eps_slice,
    fake_apiserver,
    https_url,
    load,
    make_certs,
    service_path,
    slices_path,
    slow_lists,
    svc,
    tls_apiserver,
    write_tls_kubeconfig,
)

T = TypeVar("T")

#: Fast reconnects; generous timeouts so nothing depends on the machine's speed.
FAST = WatchCachePolicy(backoff_initial=0.001, backoff_max=0.01, read_timeout=30.0)


def query(name: str, namespace: str = "billing", port: int | str | None = None) -> Query:
    return Query(service=ServiceRef(name=name, namespace=namespace), port=port)


def direct(server: FakeApiServer) -> ApiStrategy:
    """Direct reads only (no watch cache), through kdisco's client for ``server``."""
    return ApiStrategy(client_factory=lambda: client_for(server.url))


def outcome(call: Callable[[], T]) -> T | BaseException:
    try:
        return call()
    except Exception as exc:
        return exc


async def aoutcome(call: Awaitable[T]) -> T | BaseException:
    try:
        return await call
    except Exception as exc:
        return exc


def sync_and_async(strategy: ApiStrategy, q: Query, seconds: float = 5.0) -> tuple[object, object]:
    """The sync and the async outcome (answer, miss or exception) of one query."""
    sync = outcome(lambda: strategy.lookup(q, Deadline(seconds)))

    async def main() -> object:
        try:
            return await aoutcome(strategy.alookup(q, Deadline(seconds)))
        finally:
            await strategy.aclose()

    try:
        return sync, asyncio.run(main())
    finally:
        strategy.close()


def same_error(a: object, b: object) -> None:
    assert isinstance(a, Exception), a
    assert type(a) is type(b)
    assert str(a) == str(b)


class Ticker:
    """A task that sleeps 1 ms at a time and keeps the worst lateness: how long the
    event loop was kept from running it."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.ticks = 0
        self._since = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.01)
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        # The tick in progress counts too (a stall just before leaving the block).
        self._late(asyncio.get_running_loop().time())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _late(self, now: float) -> None:
        self.worst = max(self.worst, now - self._since - 0.001)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._since = loop.time()
            await asyncio.sleep(0.001)
            self._late(loop.time())
            self.ticks += 1


async def wait_for(pred: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Wait (on the loop, bounded; not a timing assertion) for something to happen."""
    end = time.monotonic() + limit
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.002)


def kdisco_threads() -> list[threading.Thread]:
    # The process-wide cut-off thread serves every Discoverer; the rest are someone's.
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("kdisco") and t.name not in ("kdisco-cutoff", "kdisco-credentials")
    ]


# -- the same answers as lookup -------------------------------------------------------------


def test_cluster_ip(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    sync, async_ = sync_and_async(direct(server), query("payments", port="grpc"))
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert async_.endpoints[0].port == 9090


def test_headless_pages_through_every_slice(server: FakeApiServer) -> None:
    server.serve_service(load("service-headless.json"))
    server.serve_slices("streaming", "kafka", load("endpointslices-headless.json"), page_size=1)
    sync, async_ = sync_and_async(direct(server), query("kafka", "streaming"))
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert len(async_.endpoints) > 1
    lists = [r for r in server.requests if r.path == slices_path("streaming")]
    # Each reader follows ``continue`` to the end: sync with its pages, async with its own.
    assert [r.query.get("continue") for r in lists] == [None, ["1"], ["2"], ["3"]] * 2
    assert {r.query["labelSelector"][0] for r in lists} == {"kubernetes.io/service-name=kafka"}
    assert [r.query["limit"] for r in lists] == [["500"]] * 4 + [
        [str(api_module.ASYNC_SLICE_PAGE)]
    ] * 4


def test_external_name(server: FakeApiServer) -> None:
    server.serve_service(load("service-externalname.json"))
    sync, async_ = sync_and_async(direct(server), query("legacy-db"))
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert async_.external_name


def test_missing_service_is_the_same_miss(server: FakeApiServer) -> None:
    server.route(service_path("billing", "nope"), Reply(404, load("status-404-service.json")))
    sync, async_ = sync_and_async(direct(server), query("nope"))
    assert isinstance(async_, Miss)
    assert async_ == sync
    assert async_.outcome is Outcome.NOT_FOUND


def test_forbidden_is_access_denied_with_the_same_message(server: FakeApiServer) -> None:
    server.route(
        service_path("billing", "payments"), Reply(403, load("status-403-get-services.json"))
    )
    sync, async_ = sync_and_async(direct(server), query("payments"))
    same_error(sync, async_)
    assert isinstance(async_, AccessDenied)
    assert (async_.verb, async_.resource, async_.namespace, async_.status) == (
        "get",
        "services",
        "billing",
        403,
    )
    assert "system:serviceaccount:billing:checkout" in str(async_)


def test_forbidden_slices_name_the_api_group(server: FakeApiServer) -> None:
    server.serve_service(load("service-headless.json"))
    server.route(slices_path("streaming"), Reply(403, load("status-403-list-endpointslices.json")))
    sync, async_ = sync_and_async(direct(server), query("kafka", "streaming"))
    same_error(sync, async_)
    assert "apiGroups ['discovery.k8s.io']" in str(async_)


def test_server_error_is_transient_with_the_same_message(server: FakeApiServer) -> None:
    server.route(service_path("billing", "payments"), Reply(500, load("status-500.json")))
    sync, async_ = sync_and_async(direct(server), query("payments"))
    same_error(sync, async_)
    assert isinstance(async_, TransientError)
    assert "HTTP 500" in str(async_)
    assert "etcdserver: request timed out" in str(async_)


def test_a_body_that_is_not_json_is_transient(server: FakeApiServer) -> None:
    server.route(service_path("billing", "payments"), Reply(200, b"<html>proxy</html>"))
    sync, async_ = sync_and_async(direct(server), query("payments"))
    same_error(sync, async_)
    assert "response is not JSON" in str(async_)


def test_redirects_are_not_followed(server: FakeApiServer) -> None:
    server.route(
        service_path("billing", "payments"),
        Reply(302, b"", headers={"Location": "http://192.0.2.1/steal"}),
    )
    sync, async_ = sync_and_async(direct(server), query("payments"))
    same_error(sync, async_)
    assert "unexpected HTTP 302" in str(async_)
    assert server.paths() == [service_path("billing", "payments")] * 2


def test_connection_refused_is_transient() -> None:
    with fake_apiserver() as gone:
        url = gone.url
    strategy = ApiStrategy(client_factory=lambda: client_for(url))
    sync, async_ = sync_and_async(strategy, query("payments"))
    assert isinstance(sync, TransientError)
    assert isinstance(async_, TransientError)
    assert str(async_).startswith("get services: ")


def test_no_credentials_is_not_applicable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    strategy = ApiStrategy(serviceaccount_dir=tmp_path, environ={})
    sync, async_ = sync_and_async(strategy, query("payments"))
    assert isinstance(async_, Miss)
    assert async_ == sync
    assert async_.outcome is Outcome.NOT_APPLICABLE


# -- deadlines and cancellation --------------------------------------------------------------


def test_a_trickled_body_ends_at_the_deadline() -> None:
    # One byte every 50 ms, forever: only a bound on the whole response ends it.
    with TrickleServer(every=0.05) as trickle:
        strategy = ApiStrategy(client_factory=lambda: client_for(trickle.url))

        async def main() -> tuple[BaseException | object, float]:
            # (Everything counts against the deadline: credentials, the session, the
            # import of aiohttp if this is the first.)
            started = time.monotonic()
            got = await aoutcome(strategy.alookup(query("payments"), Deadline(0.6)))
            elapsed = time.monotonic() - started
            await strategy.aclose()
            return got, elapsed

        got, elapsed = asyncio.run(main())
    assert isinstance(got, TransientError)
    assert str(got) == "get services: no complete response before the deadline"
    assert 0.54 <= elapsed <= 0.66


def test_a_server_that_sends_headers_and_then_nothing_costs_the_deadline() -> None:
    with TrickleServer(every=None) as silent:
        strategy = ApiStrategy(client_factory=lambda: client_for(silent.url))
        sync, async_ = sync_and_async(strategy, query("payments"), seconds=0.3)
    same_error(sync, async_)
    assert str(async_) == "get services: no complete response before the deadline"


def test_no_time_left_says_so(server: FakeApiServer) -> None:
    strategy = direct(server)

    async def main() -> object:
        await strategy.alookup(query("payments"), Deadline(5))  # a 404: builds the client
        try:
            return await aoutcome(strategy.alookup(query("payments"), Deadline(0)))
        finally:
            await strategy.aclose()

    got = asyncio.run(main())
    assert isinstance(got, TransientError)
    assert str(got) == "no time left to get services"


def test_cancelling_a_lookup_mid_body_leaves_no_connection_behind() -> None:
    with TrickleServer(every=0.01) as trickle:
        strategy = ApiStrategy(client_factory=lambda: client_for(trickle.url))

        async def main() -> None:
            task = asyncio.create_task(strategy.alookup(query("payments"), Deadline(30)))
            await wait_for(lambda: trickle.bytes_sent > 3, "the body started")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The half-read response's connection is closed, not pooled; nothing of
            # the lookup goes on in the background.
            await wait_for(trickle.all_closed, "the client closed its connection")
            assert asyncio.all_tasks() == {asyncio.current_task()}
            await strategy.aclose()

        asyncio.run(main())
        assert trickle.accepted == 1


def test_cancelling_a_wait_for_the_first_list_leaves_nothing_registered(
    server: FakeApiServer,
) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    release = slow_lists(ns, "services", 10.0)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=FAST)

    async def main() -> None:
        task = asyncio.create_task(strategy.alookup(query("db"), Deadline(30)))
        cache = strategy.watch_cache
        assert cache is not None
        await wait_for(lambda: cache.namespace("billing") is not None, "the namespace cache")
        namespace = cache.namespace("billing")
        assert namespace is not None
        await wait_for(lambda: bool(namespace._waiters), "the lookup waits")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert namespace._waiters == []
        release.set()
        await wait_for(lambda: namespace.synced, "the first list")
        await strategy.aclose()

    asyncio.run(main())


# -- never blocking the loop -----------------------------------------------------------------


def test_waiting_for_a_first_list_does_not_block_the_loop(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    slow_lists(ns, "endpointslices", 0.5)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=FAST)

    async def main() -> Resolution | Miss:
        async with Ticker() as ticker:
            got = await strategy.alookup(query("db"), Deadline(10))
        await strategy.aclose()
        # A blocking wait would have held the loop for the whole 0.5 s list.
        assert ticker.worst < 0.25, ticker.worst
        assert ticker.ticks > 20
        return got

    got = asyncio.run(main())
    assert isinstance(got, Resolution)
    assert {ep.host for ep in got} == {"192.0.2.1", "192.0.2.2"}
    assert got.freshness is not None
    assert got.freshness.valid is not None  # an answer from the cache
    assert ns.direct_reads() == []


def test_answers_from_the_watch_cache_never_load_aiohttp(server: FakeApiServer) -> None:
    # aiohttp is loaded (in a worker thread) by the first direct read only.
    import subprocess

    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1"]))
    code = (
        "import asyncio, sys\n"
        "from kdisco import Deadline, Query, ServiceRef, WatchCachePolicy\n"
        "from kdisco._strategies.api import ApiStrategy\n"
        "from tests._helpers_api import client_for\n"
        f"s = ApiStrategy(client_factory=lambda: client_for({server.url!r}),"
        " watch=WatchCachePolicy())\n"
        "async def main():\n"
        "    q = Query(service=ServiceRef(name='db', namespace='billing'))\n"
        "    res = await s.alookup(q, Deadline(10))\n"
        "    assert [ep.host for ep in res.endpoints] == ['192.0.2.1'], res\n"
        "    await s.aclose()\n"
        "asyncio.run(main())\n"
        "print('aiohttp' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["False"]
    assert ns.direct_reads() == []


def test_a_failed_first_list_ends_the_wait_and_reads_directly(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("web", headless=False))
    ns.put("endpointslices", eps_slice("web-1", "web", ["192.0.2.1"]))
    ns.list_replies["services"] = [Reply(500, b"boom")] * 1000
    # A long backoff: the informers fail once, then wait (and stop at once on close).
    policy = WatchCachePolicy(backoff_initial=5.0, backoff_max=5.0)
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=policy)

    async def main() -> object:
        started = time.monotonic()
        got = await strategy.alookup(query("web"), Deadline(20))
        # Not the sync_wait share of 20 s: every informer tried, so the wait ended.
        assert time.monotonic() - started < 5
        await strategy.aclose()
        return got

    got = asyncio.run(main())
    assert isinstance(got, Resolution)
    assert got.endpoints[0].host == "10.96.0.10"
    assert ns.direct_reads() == [service_path("billing", "web"), slices_path("billing")]


def test_slow_credentials_do_not_block_the_loop(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)

    def slow_factory() -> KubeClient:
        time.sleep(0.4)  # a kubeconfig exec plugin at work, in the credentials thread
        return client_for(server.url)

    strategy = ApiStrategy(client_factory=slow_factory)

    async def main() -> tuple[object, object]:
        async with Ticker() as ticker:
            early = await aoutcome(strategy.alookup(query("payments"), Deadline(0.1)))
            later = await aoutcome(strategy.alookup(query("payments"), Deadline(5)))
        await strategy.aclose()
        assert ticker.worst < 0.2, ticker.worst
        return early, later

    early, later = asyncio.run(main())
    assert isinstance(early, TransientError)
    assert str(early) == (
        "loading the API credentials did not finish before the deadline "
        "(a slow kubeconfig exec plugin?); it goes on in the background"
    )
    assert isinstance(later, Resolution)


def test_an_exec_plugin_refresh_runs_off_the_loop(server: FakeApiServer, tmp_path: Path) -> None:
    # A token that is always expired: the kubeconfig loader re-runs the plugin inside
    # the headers callable before every request (0.3 s each).
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, time\n"
        "time.sleep(0.3)\n"
        'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",'
        ' "kind": "ExecCredential", "status": {"token": "from-plugin",'
        ' "expirationTimestamp": "2000-01-01T00:00:00Z"}}))\n'
    )
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        f"clusters:\n- name: lab\n  cluster: {{server: '{server.url}'}}\n"
        "contexts:\n- name: lab\n  context: {cluster: lab, user: dev, namespace: billing}\n"
        "users:\n- name: dev\n  user:\n    exec:\n"
        "      apiVersion: client.authentication.k8s.io/v1beta1\n"
        f"      command: {sys.executable}\n      args: [{str(plugin)!r}]\n"
        "      interactiveMode: Never\n"
    )
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = ApiStrategy(kubeconfig=[str(config)], environ={})

    async def main() -> object:
        await strategy.alookup(query("payments"), Deadline(10))  # the credentials thread
        async with Ticker() as ticker:
            got = await strategy.alookup(query("payments"), Deadline(10))
        await strategy.aclose()
        assert ticker.worst < 0.2, ticker.worst
        return got

    got = asyncio.run(main())
    assert isinstance(got, Resolution)
    assert {r.headers.get("authorization") for r in server.requests} == {"Bearer from-plugin"}


# -- closing ---------------------------------------------------------------------------------


def test_aclose_stops_every_informer_without_blocking_the_loop(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1"]))
    other = FakeNamespace(server, "shop")
    other.put("services", svc("web", namespace="shop", headless=False))
    # The next watches of ``shop`` hang: headers, then silence, until cut.
    other.script_watch("services", "hang")
    other.script_watch("endpointslices", "hang")
    strategy = ApiStrategy(client_factory=lambda: client_for(server.url), watch=FAST)

    async def main() -> None:
        await strategy.alookup(query("db"), Deadline(10))
        await strategy.alookup(query("web", "shop"), Deadline(10))
        await wait_for(lambda: other.watches("endpointslices") >= 1, "the hanging watch")
        assert len(kdisco_threads()) == 4
        async with Ticker() as ticker:
            await strategy.aclose()
        assert ticker.worst < 0.2, ticker.worst
        assert kdisco_threads() == []
        # Closed, the strategy still answers, by reading directly.
        got = await strategy.alookup(query("db"), Deadline(10))
        assert isinstance(got, Resolution)
        assert kdisco_threads() == []
        await strategy.aclose()

    asyncio.run(main())


def test_aclose_awaits_informers_that_take_a_while_to_end(server: FakeApiServer) -> None:
    # The informers wait for credentials that take 0.5 s to load: nothing to cut,
    # they end only once the credentials are there. aclose() awaits that; a join()
    # would hold the loop for the rest of the 0.5 s.
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))

    def slow_factory() -> KubeClient:
        time.sleep(0.5)
        return client_for(server.url)

    strategy = ApiStrategy(client_factory=slow_factory, watch=FAST)

    async def main() -> None:
        got = await aoutcome(strategy.alookup(query("db"), Deadline(0.05)))
        assert isinstance(got, TransientError)
        assert len(kdisco_threads()) == 2
        async with Ticker() as ticker:
            await strategy.aclose()
        assert ticker.worst < 0.2, ticker.worst
        assert kdisco_threads() == []

    asyncio.run(main())
    assert ns.lists("services") == 0


def test_each_loop_gets_its_own_session_closed_with_its_loop(server: FakeApiServer) -> None:
    # Two asyncio.run in turn and no aclose(): each loop's session is closed as its
    # loop shuts down (an unclosed one would warn, and warnings fail this suite).
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = direct(server)
    for _ in range(2):
        got = asyncio.run(strategy.alookup(query("payments"), Deadline(5)))
        assert isinstance(got, Resolution)
    gc.collect()
    strategy.close()


def test_sync_close_closes_a_session_on_its_running_loop(server: FakeApiServer) -> None:
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    strategy = direct(server)

    async def main() -> None:
        await strategy.alookup(query("payments"), Deadline(5))
        # From sync code in another thread, while this loop runs.
        await asyncio.to_thread(strategy.close)
        await asyncio.sleep(0.05)  # the scheduled close runs here
        got = await strategy.alookup(query("payments"), Deadline(5))
        assert isinstance(got, Resolution)
        await strategy.aclose()

    asyncio.run(main())


# -- credentials: kubeconfig and in-cluster, over TLS -----------------------------------------


@pytest.fixture(scope="module")
def certs_for_name(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A server certificate for ``kubernetes.default.svc`` only: 127.0.0.1 verifies
    only when the client checks the certificate against the kubeconfig's
    tls-server-name."""
    return make_certs(tmp_path_factory.mktemp("certs-name"), ("kubernetes.default.svc",))


@pytest.fixture(scope="module")
def certs_for_ip(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs-ip"), ("127.0.0.1",))


def test_kubeconfig_with_ca_client_certificate_and_tls_server_name(
    certs_for_name: Certs, tmp_path: Path
) -> None:
    with tls_apiserver(certs_for_name, client_certs=True) as server:
        server.serve_service(load("service-clusterip.json"), ready_pod=True)
        config = write_tls_kubeconfig(
            tmp_path / "kubeconfig",
            https_url(server),
            certs_for_name,
            tls_server_name="kubernetes.default.svc",
        )
        strategy = ApiStrategy(kubeconfig=[str(config)], environ={})
        assert strategy.mode == "kubeconfig"
        sync, async_ = sync_and_async(strategy, query("payments"))
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert [r.headers.get("authorization") for r in server.requests] == [
        "Bearer kubeconfig-token"
    ] * 4  # the Service and its slices, sync then async


def test_kubeconfig_with_an_untrusted_server_is_transient_both_ways(
    certs_for_name: Certs, certs_for_ip: Certs, tmp_path: Path
) -> None:
    # The server's certificate is from another CA than the kubeconfig trusts.
    with tls_apiserver(certs_for_ip) as server:
        config = write_tls_kubeconfig(tmp_path / "kubeconfig", https_url(server), certs_for_name)
        strategy = ApiStrategy(kubeconfig=[str(config)], environ={})
        sync, async_ = sync_and_async(strategy, query("payments"))
    assert isinstance(sync, TransientError)
    assert isinstance(async_, TransientError)
    assert "certificate verify failed" in str(async_)
    assert server.requests == []


def test_kubeconfig_proxy_url_is_used(certs_for_ip: Certs, tmp_path: Path) -> None:
    # The apiserver's address is never contacted (TEST-NET-1); the proxy answers.
    with fake_apiserver() as proxy:
        proxy.serve_service(load("service-clusterip.json"), ready_pod=True)
        config = tmp_path / "kubeconfig"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
            "clusters:\n- name: lab\n  cluster:\n    server: http://192.0.2.1:6443\n"
            f"    proxy-url: {proxy.url}\n"
            "contexts:\n- name: lab\n  context: {cluster: lab, user: dev}\n"
            "users:\n- name: dev\n  user: {}\n"
        )
        strategy = ApiStrategy(kubeconfig=[str(config)], environ={})
        sync, async_ = sync_and_async(strategy, query("payments"), seconds=3)
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert [r.headers.get("host") for r in proxy.requests] == ["192.0.2.1:6443"] * 4


def serviceaccount(tmp_path: Path, certs: Certs, token: str) -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_bytes(certs.ca.read_bytes())
    (sa / "token").write_text(token)
    (sa / "namespace").write_text("billing")
    return sa


def test_in_cluster_credentials_over_tls_with_a_rotated_token(
    certs_for_ip: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sync client takes no proxy from the environment in a pod; neither may this.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    sa = serviceaccount(tmp_path, certs_for_ip, "token-one")
    with tls_apiserver(certs_for_ip) as server:
        server.serve_service(load("service-clusterip.json"), ready_pod=True)
        port = https_url(server).rsplit(":", 1)[1]
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
        strategy = ApiStrategy(serviceaccount_dir=sa, environ=env)
        assert strategy.mode == "in-cluster"

        async def main() -> tuple[object, object]:
            first = await aoutcome(strategy.alookup(query("payments"), Deadline(5)))
            token = sa / "token"
            token.write_text("token-two-rotated")
            stat = token.stat()
            os.utime(token, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
            second = await aoutcome(strategy.alookup(query("payments"), Deadline(5)))
            await strategy.aclose()
            return first, second

        first, second = asyncio.run(main())
        sync = strategy.lookup(query("payments"), Deadline(5))
        strategy.close()
    assert isinstance(first, Resolution)
    assert first == second == sync
    # (Each lookup is a GET of the Service and a LIST of its slices.)
    assert [r.headers.get("authorization") for r in server.requests] == [
        "Bearer token-one",
        "Bearer token-one",
        "Bearer token-two-rotated",
        "Bearer token-two-rotated",
        "Bearer token-two-rotated",
        "Bearer token-two-rotated",
    ]


# -- a big Service: the loop keeps running while it is read -------------------------------------


def test_a_big_headless_service_gives_the_same_answer(server: FakeApiServer) -> None:
    # 12,000 endpoints in 120 slices: more than one page either way (the sync pages
    # are 500 slices, the async ones ASYNC_SLICE_PAGE).
    ns = FakeNamespace(server)
    ns.put("services", svc("big"))
    for sl in big_slices("big", slices=120):
        ns.put("endpointslices", sl)
    strategy = direct(server)
    sync, async_ = sync_and_async(strategy, query("big"), seconds=60)
    assert isinstance(async_, Resolution)
    assert async_ == sync
    assert len(async_.endpoints) == 12_000
    lists = [r for r in server.requests if "=" in r.query.get("labelSelector", [""])[0]]
    assert len(lists) == 1 + -(-120 // api_module.ASYNC_SLICE_PAGE)


def test_a_direct_read_pauses_between_slices_and_merges_in_steps() -> None:
    # The plan itself, driven by hand: after the Service, one page of 30 slices of
    # 100 endpoints. Between requests it yields PAUSE: once per slice decoded, once
    # per slice parsed, and once per MERGE_STEP endpoints merged.
    q = query("big")
    plan = api_module.direct_read(q, 50)
    get = next(plan)
    assert isinstance(get, api_module.Get)
    assert get.path == service_path("billing", "big")
    get = plan.send(json.dumps(svc("big")).encode())
    assert isinstance(get, api_module.Get)
    assert dict(get.query)["limit"] == "50"
    page = {"metadata": {}, "items": big_slices("big", slices=30)}
    answer, pauses = drain(plan, json.dumps(page, indent=1).encode())
    assert isinstance(answer, Resolution)
    assert len(answer.endpoints) == 3000
    assert pauses == 30 + 30 + 3000 // MERGE_STEP


def drain(steps: Generator[Any, Any, T], first: Any = None) -> tuple[T, int]:
    """Run a computation that pauses (yields None) to its end: (result, pauses).
    ``first`` is sent to start it (a generator already at a yield)."""
    pauses = 0
    send = first
    while True:
        try:
            step = steps.send(send)
        except StopIteration as done:
            result: T = done.value
            return result, pauses
        assert step is None
        pauses += 1
        send = None


@settings(max_examples=300, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["items", "metadata", "kind", "x"]) | st.text(), inner
            )
        ),
        max_leaves=20,
    ),
    indent=st.sampled_from([None, 0, 1, "\t"]),
    cut=st.integers(min_value=0, max_value=400),
)
def test_loads_in_steps_is_json_loads(doc: Any, indent: int | str | None, cut: int) -> None:
    # Whatever the body, the same value or a ValueError, as json.loads; and one pause
    # per item of a top-level "items" list.
    body = json.dumps(doc, indent=indent).encode()
    for candidate in (body, body[:cut], b" " + body + b"\n", body + b"x"):
        try:
            expected: Any = json.loads(candidate)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                finish(loads_in_steps(candidate))
            continue
        value, pauses = drain(loads_in_steps(candidate))
        assert value == expected
        items = expected.get("items") if isinstance(expected, dict) else None
        assert pauses == (len(items) if isinstance(items, list) else 0)


def test_the_discoverer_api_answers_through_alookup(server: FakeApiServer) -> None:
    # What kdisco.aio drives: the same strategy object, awaited.
    server.serve_service(load("service-clusterip.json"), ready_pod=True)
    d = kdisco.Discoverer(strategies=[direct(server)], namespace="billing", environ={})
    with d:
        (strategy,) = d.strategies
        assert isinstance(strategy, ApiStrategy)
        got = asyncio.run(strategy.alookup(query("payments"), Deadline(5)))
    assert isinstance(got, Resolution)


# -- the loop-stall figure ---------------------------------------------------------------------

_SERVE_BIG = """
import sys
from tests._helpers_api import FakeNamespace, big_slices, fake_apiserver, svc
with fake_apiserver() as server:
    ns = FakeNamespace(server)
    ns.put("services", svc("big"))
    for sl in big_slices("big", slices=100, per_slice=100):
        ns.put("endpointslices", sl)
    print(server.url, flush=True)
    sys.stdin.read()
"""


def measure_loop_stalls(runs: int, *, watch: bool) -> None:
    """The longest event-loop stall (a 1 ms ticker's worst lateness) while ``alookup``
    reads a headless Service of 10,000 endpoints (100 slices of 100) from a fake
    apiserver in a process of its own, with a new strategy each run (no client, no
    session, nothing cached; the first run also imports aiohttp). Each run starts
    after a ``gc.collect()``. Prints the worst stall of each run, with the garbage
    collector on, then off (what is left is kdisco's own work, and the machine's)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    serve = subprocess.Popen(
        [sys.executable, "-c", _SERVE_BIG],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert serve.stdout is not None
    url = serve.stdout.readline().strip()

    async def once(collect: bool) -> tuple[float, float]:
        strategy = ApiStrategy(
            client_factory=lambda: client_for(url), watch=WatchCachePolicy() if watch else False
        )
        gc.collect()
        if not collect:
            gc.disable()
        try:
            started = time.perf_counter()
            async with Ticker() as ticker:
                got = await strategy.alookup(query("big"), Deadline(60))
            took = time.perf_counter() - started
        finally:
            gc.enable()
            await strategy.aclose()
        assert isinstance(got, Resolution)
        assert len(got.endpoints) == 10_000
        return ticker.worst, took

    try:
        for collect in (True, False):
            stalls = [asyncio.run(once(collect)) for _ in range(runs)]
            print(
                f"{'watch cache' if watch else 'direct reads'}, gc {'on' if collect else 'off'}, "
                f"pages of {api_module.ASYNC_SLICE_PAGE}: worst stall per run (ms) "
                f"{[round(s * 1e3, 1) for s, _ in stalls]}; lookup took (ms) "
                f"{[round(t * 1e3) for _, t in stalls]}"
            )
    finally:
        assert serve.stdin is not None
        serve.stdin.close()
        serve.wait()


if __name__ == "__main__":
    # /tmp/v/bin/python -m tests.test_api_async [runs] [watch]
    measure_loop_stalls(
        int(sys.argv[1]) if len(sys.argv) > 1 else 10, watch="watch" in sys.argv[2:]
    )
