"""``kdisco.watch()`` / ``Discoverer.watch()``: a Resolution per change, stops cleanly.

API-driven watches run against the streaming fake apiserver; TTL-driven watches
against a scripted strategy with TTL 0 (clamped to a zero ``CachePolicy``), so
nothing waits on a real clock.
"""

from __future__ import annotations

import queue
import threading

import pytest

import kdisco
from kdisco import (
    CachePolicy,
    Deadline,
    Discoverer,
    Endpoint,
    Miss,
    Outcome,
    Query,
    Resolution,
    ServiceKind,
)
from kdisco._discoverer import use_discoverer
from tests._helpers_api import (
    FakeApiServer,
    FakeNamespace,
    Reply,
    _status,
    eps_slice,
    svc,
)
from tests.test_watchcache import FAST, kdisco_threads, make, wait_until

#: Longest a test waits for a watch thread to deliver (bounded; not a timing assertion).
LIMIT = 5.0


@pytest.fixture
def ns(server: FakeApiServer) -> FakeNamespace:
    fake = FakeNamespace(server)
    fake.put("services", svc("db"))
    fake.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    return fake


def hosts(res: Resolution) -> set[str]:
    return {ep.host for ep in res}


def collector() -> tuple[queue.Queue[Resolution], kdisco._watch.Callback]:
    got: queue.Queue[Resolution] = queue.Queue()
    return got, got.put


# -- driven by the API watch cache ------------------------------------------------------


def test_watch_yields_the_current_answer_then_each_change(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    got, callback = collector()
    with make(server) as d, d.watch("db", callback=callback) as w:
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.1", "192.0.2.2"}
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.3"]))
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.1", "192.0.2.3"}
        ns.put("endpointslices", eps_slice("db-b", "db", ["192.0.2.4"]))
        changed = got.get(timeout=LIMIT)
        assert hosts(changed) == {"192.0.2.1", "192.0.2.3", "192.0.2.4"}
        assert w.last is changed
    assert ns.direct_reads() == []


def test_watch_skips_changes_that_leave_the_endpoints_alone(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    got, callback = collector()
    with make(server) as d, d.watch("db", callback=callback):
        first = got.get(timeout=LIMIT)
        # Same endpoints in another order, then a new resourceVersion of the same spec:
        # the answer is rebuilt, but nothing the user sees changed.
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.2", "192.0.2.1"]))
        ns.put("services", svc("db"))
        ns.put("endpointslices", eps_slice("db-z", "db", ["192.0.2.9"]))
        last = got.get(timeout=LIMIT)
        assert hosts(last) == {"192.0.2.1", "192.0.2.2", "192.0.2.9"}
        assert got.empty()
    assert hosts(first) == {"192.0.2.1", "192.0.2.2"}


def test_watch_reports_losing_every_endpoint_and_the_service(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    got, callback = collector()
    with make(server) as d, d.watch("db", callback=callback):
        assert len(got.get(timeout=LIMIT)) == 2
        ns.put("endpointslices", eps_slice("db-a", "db", []))
        empty = got.get(timeout=LIMIT)
        assert (len(empty), empty.kind) == (0, ServiceKind.HEADLESS)
        assert empty.attempts[-1].outcome is Outcome.NO_READY_ENDPOINTS
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.5"]))
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.5"}
        ns.delete("services", "db")
        gone = got.get(timeout=LIMIT)
        assert (len(gone), gone.kind) == (0, ServiceKind.UNKNOWN)
        assert gone.attempts[-1].outcome is Outcome.NOT_FOUND


def test_answers_read_directly_are_followed_once_the_cache_syncs(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    # The first slice lists fail: the first answer is read directly (no validity check,
    # no TTL). The watch must pick up the cache once it syncs, not sleep max_ttl (30 s).
    down = Reply(503, _status(503, "ServiceUnavailable", "starting"))
    ns.list_replies["endpointslices"] = [down, down]
    got, callback = collector()
    with make(server) as d, d.watch("db", callback=callback):
        first = got.get(timeout=LIMIT)
        assert first.freshness is not None
        assert first.freshness.valid is None  # read directly: nothing vouches for it
        assert ns.direct_reads() != []
        wait_until(lambda: ns.watches("endpointslices") >= 1, "cache synced")
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.6"]))
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.6"}


def test_iterating_in_the_callers_thread_and_breaking_out(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    seen: list[set[str]] = []
    with make(server) as d:
        w = d.watch("db")
        for res in w:
            seen.append(hosts(res))
            if len(seen) == 1:
                ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.7"]))
            else:
                break
        assert w.stopped is False  # breaking out needs nothing else: no thread of its own
    assert seen == [{"192.0.2.1", "192.0.2.2"}, {"192.0.2.7"}]


def test_stop_from_another_thread_ends_a_blocked_iteration(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        w = d.watch("db")
        assert hosts(next(w)) == {"192.0.2.1", "192.0.2.2"}
        ended = threading.Event()

        def consume() -> None:
            for _ in w:
                pass
            ended.set()

        t = threading.Thread(target=consume)
        t.start()
        w.stop()
        t.join(LIMIT)
        assert ended.is_set()
        assert list(w) == []  # a stopped watch stays stopped


def test_close_stops_callback_watches_and_leaves_no_threads(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    got, callback = collector()
    d = make(server)
    watches = [d.watch("db", callback=callback), d.watch("db", port="http", callback=callback)]
    got.get(timeout=LIMIT)
    got.get(timeout=LIMIT)
    assert any(t.name.startswith("kdisco-watch-callback") for t in kdisco_threads())
    d.close()
    assert all(w.stopped for w in watches)
    assert kdisco_threads() == []


def test_a_failing_callback_is_logged_and_the_watch_goes_on(
    server: FakeApiServer, ns: FakeNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    got: queue.Queue[Resolution] = queue.Queue()

    def callback(res: Resolution) -> None:
        got.put(res)
        raise RuntimeError("user bug")

    with make(server) as d, d.watch("db", callback=callback):
        got.get(timeout=LIMIT)
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.8"]))
        assert hosts(got.get(timeout=LIMIT)) == {"192.0.2.8"}
    assert any("callback for db.billing failed" in r.getMessage() for r in caplog.records)


def test_invalid_name_fails_at_once(server: FakeApiServer) -> None:
    with make(server) as d, pytest.raises(kdisco.InvalidServiceName):
        d.watch("Not A Name")
    assert kdisco_threads() == []


# -- driven by TTLs (DNS-like sources) -----------------------------------------------------


class Scripted:
    """A strategy answering from a script with TTL 0: each call is a fresh resolution."""

    name = "scripted"

    def __init__(self, script: list[list[str] | Exception]) -> None:
        self.script = script
        self.calls = 0

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        if not step:
            return Miss(Outcome.NO_READY_ENDPOINTS, "scripted: none ready")
        return Resolution(
            service=query.service,
            kind=ServiceKind.HEADLESS,
            endpoints=tuple(Endpoint(host=h, port=80) for h in step),
            source="scripted",
            ttl=0.0,
        )


def ttl_discoverer(strategy: Scripted, *, enabled: bool = True) -> Discoverer:
    return Discoverer(
        strategies=[strategy],
        namespace="billing",
        environ={},
        cache=CachePolicy(enabled=enabled, min_ttl=0.0, max_ttl=0.0),
        sleep=lambda _s: None,
        api_watch=FAST,
    )


def test_ttl_sources_are_re_resolved_and_only_changes_yielded() -> None:
    a, b = ["192.0.2.1"], ["192.0.2.1", "192.0.2.2"]
    strategy = Scripted([a, a, a, b, b, ["192.0.2.2", "192.0.2.1"], [], []])
    with ttl_discoverer(strategy) as d:
        w = d.watch("db")
        first, second, third = next(w), next(w), next(w)
        w.stop()
    assert [hosts(first), hosts(second)] == [{"192.0.2.1"}, {"192.0.2.1", "192.0.2.2"}]
    assert len(third) == 0  # the reordered answer was no change; "none ready" was
    assert strategy.calls == 7


def test_failures_go_to_on_error_and_the_watch_recovers() -> None:
    boom = RuntimeError("server unreachable")  # not retried: the chain gives up at once
    strategy = Scripted([["192.0.2.1"], boom, ["192.0.2.3"]])
    errors: list[kdisco.DiscoveryError] = []
    # Without the answer cache: with it, the Discoverer would bridge the failure with
    # the last good answer (stale=True), which is no change to report.
    with ttl_discoverer(strategy, enabled=False) as d:
        w = d.watch("db", on_error=errors.append)
        assert hosts(next(w)) == {"192.0.2.1"}
        assert hosts(next(w)) == {"192.0.2.3"}
    (error,) = errors
    assert isinstance(error, kdisco.DiscoveryUnavailable)
    assert "server unreachable" in str(error)


def test_module_level_watch_uses_the_default_discoverer() -> None:
    strategy = Scripted([["192.0.2.1"], ["192.0.2.2"]])
    with ttl_discoverer(strategy) as d, use_discoverer(d):
        w = kdisco.watch("db")
        assert [hosts(next(w)), hosts(next(w))] == [{"192.0.2.1"}, {"192.0.2.2"}]
        assert repr(w) == "Watch(db.billing, running)"
        w.stop()
        assert repr(w) == "Watch(db.billing, stopped)"
