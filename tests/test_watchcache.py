"""The api strategy's shared list+watch cache, against a fake apiserver that streams.

The fake (tests/_helpers_api.py ``FakeNamespace``) lists with paging, replays events
after a watch's resourceVersion, answers 410 after ``compact()``, and can hang a
watch. Tests wait (bounded, a few ms at a time) only for the cache's threads to catch
up; they assert what happened, never how long it took.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs
import pytest

import kdisco
from kdisco import Discoverer, WatchCachePolicy
from kdisco._k8s.objects import ALL_SERVICES_PATH
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import (
    FakeApiServer,
    FakeNamespace,
    Reply,
    _status,
    client_for,
    eps_slice,
    put_backed,
    service_path,
    svc,
)

#: Fast reconnects; generous timeouts so nothing depends on the machine's speed.
FAST = WatchCachePolicy(backoff_initial=0.001, backoff_max=0.01, read_timeout=30.0)


def wait_until(pred: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    """Wait for the cache's threads to catch up (bounded; not a timing assertion)."""
    end = time.monotonic() + limit
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.002)


def kdisco_threads() -> list[threading.Thread]:
    # The one process-wide cut-off thread (kdisco-cutoff) serves every Discoverer and
    # is not theirs to stop; every other kdisco thread belongs to one.
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("kdisco") and t.name != "kdisco-cutoff"
    ]


@pytest.fixture
def ns(server: FakeApiServer) -> FakeNamespace:
    fake = FakeNamespace(server)
    fake.put("services", svc("db"))
    fake.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    fake.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.3"]))
    put_backed(fake, svc("web", headless=False))
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    server: FakeApiServer,
    policy: WatchCachePolicy = FAST,
    clock: Callable[[], float] = time.monotonic,
    **kw: object,
) -> Discoverer:
    api = ApiStrategy(client_factory=lambda: client_for(server.url), watch=policy, clock=clock)

    def sleep(seconds: float) -> None:
        # Retry sleeps pass on the injected clock, so a call's deadline does run out.
        if isinstance(clock, Clock):
            clock.now += seconds

    # These tests are about the cluster view the watch cache serves (outside a
    # cluster, ``auto`` would look for a way in first: tests/test_reach.py).
    kw.setdefault("reach", "cluster")
    return Discoverer(
        strategies=[api],
        namespace="billing",
        environ={},
        clock=clock,
        sleep=sleep,
        **kw,  # type: ignore[arg-type]
    )


def hosts(res: kdisco.Resolution) -> set[str]:
    return {ep.host for ep in res}


def informer(d: Discoverer, resource: str) -> object:
    api = d.strategies[0]
    assert isinstance(api, ApiStrategy)
    assert api.watch_cache is not None
    cache = api.watch_cache.namespace("billing")
    assert cache is not None
    return next(t for t in cache.threads if t.resource == resource)


def synced(d: Discoverer) -> bool:
    api = d.strategies[0]
    assert isinstance(api, ApiStrategy)
    assert api.watch_cache is not None
    cache = api.watch_cache.namespace("billing")
    assert cache is not None
    return cache.synced


def both_watching(ns: FakeNamespace, count: int = 1) -> Callable[[], bool]:
    return lambda: ns.watches("services") >= count and ns.watches("endpointslices") >= count


# -- one list and one watch per resource, then memory ---------------------------------


def test_repeated_lookups_make_no_requests_after_the_first_list(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        first = d.discover("db", port="http")
        assert hosts(first) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
        assert {ep.port for ep in first} == {8080}
        wait_until(both_watching(ns), "both watches open")
        seen = len(server.requests)
        for _ in range(50):
            assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
            assert d.discover("web").first().host == "10.96.0.10"
            d.clear_cache()  # each call goes to the strategy, which answers from memory
        assert len(server.requests) == seen
        # A missing name: answered from memory, plus one look for the name in other
        # namespaces (for the error's headline), made once, not once per lookup.
        for _ in range(3):
            with pytest.raises(kdisco.ServiceNotFound):
                d.discover("nope")
            d.clear_cache()
        assert [r.path for r in server.requests[seen:]] == [ALL_SERVICES_PATH]
    assert (ns.lists("services"), ns.lists("endpointslices")) == (1, 1)
    assert ns.direct_reads() == []
    # The informer asks only for slices that belong to a Service, from the list's rv.
    watch = ns.requests("endpointslices", watch=True)[0]
    assert watch.query["labelSelector"] == ["kubernetes.io/service-name"]
    assert watch.query["allowWatchBookmarks"] == ["true"]
    assert watch.query["resourceVersion"] == [str(ns.rv)]
    assert "timeoutSeconds" in watch.query


def test_answers_from_memory_are_valid_until_their_service_changes(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        db = d.discover("db")
        web = d.discover("web")
        assert db.freshness is not None
        assert db.freshness.valid is not None
        assert db.freshness.valid()
        wait_until(both_watching(ns), "both watches open")
        ns.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.3", "192.0.2.4"]))
        valid = db.freshness.valid
        wait_until(lambda: not valid(), "db invalidated")
        # Another Service's answer is untouched by db's change.
        assert web.freshness is not None
        assert web.freshness.valid is not None
        assert web.freshness.valid()
        # The Discoverer's cache notices at once: the next call sees the new endpoint.
        assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}
        assert d.discover("web") is web


def test_services_created_and_deleted_after_startup_are_seen(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        with pytest.raises(kdisco.ServiceNotFound):
            d.discover("late")
        wait_until(both_watching(ns), "both watches open")
        put_backed(ns, svc("late", headless=False))
        wait_until(lambda: _answers(d, "late"), "late Service seen")
        ns.delete("services", "web")
        wait_until(lambda: not _answers(d, "web"), "web deletion seen")
        ns.delete("endpointslices", "db-a")
        wait_until(lambda: hosts(d.discover("db")) == {"192.0.2.3"}, "slice deletion seen")
        assert ns.direct_reads() == []


def _answers(d: Discoverer, name: str) -> bool:
    try:
        d.discover(name)
    except kdisco.ServiceNotFound:
        return False
    return True


def test_no_op_modifications_keep_answers_valid(server: FakeApiServer, ns: FakeNamespace) -> None:
    with make(server) as d:
        db = d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        # A new resourceVersion with the same spec (a label or status change).
        ns.put("services", svc("db"))
        put_backed(ns, svc("marker", headless=False))
        wait_until(lambda: _answers(d, "marker"), "events applied")
        assert db.freshness is not None
        assert db.freshness.valid is not None
        assert db.freshness.valid()


def test_initial_list_is_paginated(server: FakeApiServer, ns: FakeNamespace) -> None:
    for i in range(5):
        ns.put("endpointslices", eps_slice(f"big-{i}", "big", [f"198.51.100.{i}"]))
    ns.put("services", svc("big"))
    with make(server, WatchCachePolicy(page_size=2, backoff_initial=0.001)) as d:
        assert len(d.discover("big")) == 5
    slice_lists = ns.requests("endpointslices", watch=False)
    # 7 slices in pages of 2: 4 requests, each after the first with a continue token.
    assert len(slice_lists) == 4
    assert [r.query.get("continue") for r in slice_lists] == [None, ["2"], ["4"], ["6"]]


# -- keeping the watch alive ----------------------------------------------------------


def test_bookmark_moves_the_resource_version_for_the_next_watch(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        bookmark = ns.bookmark("endpointslices")
        # The stream ends after the bookmark, as timeoutSeconds would end it.
        ns.end_watches("endpointslices")
        wait_until(lambda: ns.watches("endpointslices") >= 2, "re-watch")
        again = ns.requests("endpointslices", watch=True)[1]
        assert again.query["resourceVersion"] == [str(bookmark)]
        assert ns.lists("endpointslices") == 1  # a watch that ends is re-opened, not re-listed


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event-410", "http-410"])
def test_gone_re_lists_and_catches_up(
    server: FakeApiServer, ns: FakeNamespace, as_event: bool
) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        # Changes the watch never delivers, then the history is compacted away.
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.9"]), announce=False)
        ns.compact()
        ns.gone_as_event = as_event
        ns.end_watches("endpointslices")
        wait_until(lambda: ns.lists("endpointslices") >= 2, "re-list after 410")
        wait_until(lambda: hosts(d.discover("db")) == {"192.0.2.9", "192.0.2.3"}, "caught up")
        wait_until(lambda: synced(d), "synced again")
    assert ns.lists("services") == 1  # only the resource that got 410 is re-listed


def test_periodic_relist_catches_what_the_watch_missed(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    clock = Clock()
    policy = WatchCachePolicy(relist_interval=600.0, backoff_initial=0.001, backoff_max=0.01)
    with make(server, policy, clock=clock) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        watch = ns.requests("endpointslices", watch=True)[0]
        assert watch.query["timeoutSeconds"] == ["300"]  # never past the next re-list
        ns.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.7"]), announce=False)
        clock.now += 601
        ns.end_watches("endpointslices")
        wait_until(lambda: ns.lists("endpointslices") == 2, "periodic re-list")
        wait_until(
            lambda: hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2", "192.0.2.7"},
            "missed change seen",
        )


def test_silent_watch_is_reopened_after_the_read_timeout(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    policy = WatchCachePolicy(read_timeout=0.05, backoff_initial=0.001, backoff_max=0.01)
    ns.script_watch("endpointslices", "hang")
    with make(server, policy) as d:
        d.discover("db")
        # The hanging watch is given up on and a new one opened from the same rv.
        wait_until(lambda: ns.watches("endpointslices") >= 2, "re-watch after silence")
        first, second = ns.requests("endpointslices", watch=True)[:2]
        assert first.query["resourceVersion"] == second.query["resourceVersion"]
        ns.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.8"]))
        wait_until(lambda: "192.0.2.8" in hosts(d.discover("db")), "change after re-watch")
    assert ns.lists("endpointslices") == 1


def test_watch_errors_reconnect_with_backoff_and_resume(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    boom = Reply(500, _status(500, "InternalError", "etcd hiccup"))
    ns.script_watch("endpointslices", boom, boom)
    with make(server) as d:
        d.discover("db")
        wait_until(lambda: ns.watches("endpointslices") >= 3, "reconnects")
        wait_until(lambda: synced(d), "synced after reconnect")
        ns.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.6"]))
        wait_until(lambda: "192.0.2.6" in hosts(d.discover("db")), "change after reconnect")
    # Resumed from the rv each time, without a re-list.
    assert ns.lists("endpointslices") == 1


def test_bad_event_line_reconnects(server: FakeApiServer, ns: FakeNamespace) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        ns.send("endpointslices", b"{not json")
        wait_until(lambda: ns.watches("endpointslices") >= 2, "re-watch after garbage")


# -- when the cache cannot answer -------------------------------------------------------


def test_broken_cache_falls_back_to_direct_reads(server: FakeApiServer, ns: FakeNamespace) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        # The watch ends and every reconnect fails: the cache is no longer trusted.
        ns.script_watch("endpointslices", *[Reply(503, _status(503, "x", "down"))] * 10_000)
        ns.end_watches("endpointslices")
        wait_until(lambda: not synced(d), "cache marked not synced")
        res = d.discover("db")
        assert hosts(res) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
        assert (
            res.freshness is None or res.freshness.valid is None
        )  # a direct answer is not kept as if watched
        assert ns.direct_reads() == [
            service_path("billing", "db"),
            "/apis/discovery.k8s.io/v1/namespaces/billing/endpointslices",
        ]


def test_broken_cache_and_failing_api_serves_stale_labelled(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    clock = Clock()
    with make(server, clock=clock) as d:
        good = d.discover("db")
        assert good.stale is False
        wait_until(both_watching(ns), "both watches open")
        down = Reply(503, _status(503, "ServiceUnavailable", "apiserver down"))
        ns.script_watch("endpointslices", *[down] * 10_000)
        server.route(service_path("billing", "db"), down)
        ns.end_watches("endpointslices")
        wait_until(lambda: not synced(d), "cache marked not synced")
        clock.now += 7
        stale = d.discover("db")
    assert stale.stale is True
    assert hosts(stale) == hosts(good)
    # Its age counts from when the watch last confirmed the data (7 s, plus the time
    # the failing refresh spent retrying on the injected clock).
    assert stale.fetched_at == good.fetched_at
    assert stale.age >= 7.0
    (attempt,) = stale.attempts
    assert "watch cache not synced" in attempt.reason
    assert "503" in attempt.reason


def test_forbidden_list_falls_back_to_direct_get_and_says_so(
    server: FakeApiServer, ns: FakeNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    forbidden = Reply(403, _status(403, "Forbidden", 'cannot list resource "services"'))
    ns.list_replies["services"] = [forbidden] * 100
    with caplog.at_level(logging.WARNING, logger="kdisco"), make(server) as d:
        res = d.discover("web")
        assert res.first().host == "10.96.0.10"
        wait_until(lambda: any("watch cache off" in r.message for r in caplog.records), "log")
    assert service_path("billing", "web") in ns.direct_reads()
    message = next(r.getMessage() for r in caplog.records if "watch cache off" in r.message)
    assert "'list' on 'services'" in message
    assert "billing" in message


def test_watch_off_uses_only_direct_reads(server: FakeApiServer, ns: FakeNamespace) -> None:
    with make(server, WatchCachePolicy(enabled=False)) as d:
        assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
        assert kdisco_threads() == []
    assert (ns.lists("services"), ns.lists("endpointslices")) == (0, 0)
    assert len(ns.direct_reads()) == 2


# -- threads ------------------------------------------------------------------------------


def test_close_stops_every_thread_even_a_blocked_watch(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    # A long read timeout: only cutting the socket can unblock these reads.
    policy = WatchCachePolicy(read_timeout=600.0)
    ns.script_watch("services", "hang")
    ns.script_watch("endpointslices", "hang")
    d = make(server, policy)
    d.discover("db")
    wait_until(both_watching(ns), "both watches open")
    assert len(kdisco_threads()) == 2
    d.close()
    assert kdisco_threads() == []


def test_context_manager_stops_threads_of_every_namespace(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    other = FakeNamespace(server, "shop")
    put_backed(other, svc("cart", namespace="shop", headless=False))
    with make(server) as d:
        d.discover("db")
        d.discover("cart.shop")
        assert {t.name for t in kdisco_threads()} == {
            "kdisco-watch-billing-services",
            "kdisco-watch-billing-endpointslices",
            "kdisco-watch-shop-services",
            "kdisco-watch-shop-endpointslices",
        }
    assert kdisco_threads() == []


def test_many_threads_get_consistent_answers_while_slices_change(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    sets = [{f"192.0.2.{i}", f"192.0.2.{i + 100}"} for i in range(1, 21)]
    allowed = [frozenset({"192.0.2.1", "192.0.2.2", "192.0.2.3"})]
    for hs in sets:
        allowed.append(frozenset({*sorted(hs)}))
    problems: list[str] = []
    with make(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        ns.delete("endpointslices", "db-b")
        allowed.append(frozenset({"192.0.2.1", "192.0.2.2"}))
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                got = frozenset(hosts(d.discover("db")))
                if got not in allowed:
                    problems.append(str(sorted(got)))

        readers = [threading.Thread(target=reader) for _ in range(6)]
        for t in readers:
            t.start()
        for hs in sets:
            ns.put("endpointslices", eps_slice("db-a", "db", sorted(hs)))
        wait_until(lambda: hosts(d.discover("db")) == sets[-1], "last change seen")
        stop.set()
        for t in readers:
            t.join()
    assert problems == []


# -- compact objects ----------------------------------------------------------------------


def test_endpoints_share_repeated_strings(server: FakeApiServer, ns: FakeNamespace) -> None:
    with make(server) as d:
        res = d.discover("db")
    nodes = {id(ep.node) for ep in res}
    zones = {id(ep.zone) for ep in res}
    assert len(res) == 3
    assert len(nodes) == 1
    assert len(zones) == 1


def test_policy_validation() -> None:
    with pytest.raises(kdisco.ConfigurationError):
        WatchCachePolicy(read_timeout=-1)
    with pytest.raises(kdisco.ConfigurationError):
        WatchCachePolicy(page_size=0)
    with pytest.raises(kdisco.ConfigurationError):
        WatchCachePolicy(sync_wait=2)
    with pytest.raises(kdisco.ConfigurationError):
        Discoverer(strategies=[], environ={}, namespace="x", api_watch="yes")  # type: ignore[arg-type]


def test_retry_backoff_survives_a_long_outage() -> None:
    # BUG (kdisco/_chain.py, not owned here): RetryPolicy.wait_for computes
    # ``initial * 2.0 ** (attempt - 1)`` before clamping to ``maximum``, which raises
    # OverflowError from attempt 1025 on. A chain that retries that often (a long
    # timeout, or a clock that does not move) fails with "OverflowError" instead of the
    # real error. Fix: clamp the exponent, e.g. ``2.0 ** min(attempt - 1, 64)``.
    # The watch cache caps its own attempt count for now.
    policy = kdisco.RetryPolicy(rng=lambda: 1.0)
    assert policy.wait_for(2000) == policy.maximum


def test_after_close_lookups_read_directly_and_start_no_threads(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    d = make(server, cache=False)
    d.discover("db")
    d.close()
    assert kdisco_threads() == []
    # Still answers (directly from the API), without bringing the watch threads back.
    assert {ep.host for ep in d.discover("db")} == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert kdisco_threads() == []


def test_watched_namespaces_are_capped(server: FakeApiServer, ns: FakeNamespace) -> None:
    others = [FakeNamespace(server, f"ns{i}") for i in range(3)]
    for i, other in enumerate(others):
        put_backed(other, svc("web", namespace=f"ns{i}", headless=False))
    with make(server, attrs.evolve(FAST, max_namespaces=2)) as d:
        for i in range(3):
            d.discover(f"web.ns{i}")
        d.discover("db")  # over the cap too: answered by a direct read
        assert {t.name for t in kdisco_threads()} == {
            "kdisco-watch-ns0-services",
            "kdisco-watch-ns0-endpointslices",
            "kdisco-watch-ns1-services",
            "kdisco-watch-ns1-endpointslices",
        }
        assert {ep.host for ep in d.discover("db")} == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert kdisco_threads() == []
