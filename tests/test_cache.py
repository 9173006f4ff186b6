"""The answer cache in front of the chain: TTLs, validity, stale-if-error."""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import pytest

import kdisco
from kdisco import CachePolicy, Endpoint, Freshness, Miss, Outcome, Resolution, ServiceKind
from kdisco._cache import AnswerCache
from kdisco.testing import FakeResolver

from ._helpers_chain import FakeClock, Scripted


def answer(
    ttl: float | None = 5.0,
    host: str = "192.0.2.1",
    *,
    valid: Callable[[], bool] | None = None,
    confirmed: Callable[[], float] | None = None,
) -> object:
    def step(query: kdisco.Query, deadline: kdisco.Deadline) -> Resolution:
        return Resolution(
            service=query.service,
            kind=ServiceKind.CLUSTER_IP,
            endpoints=(Endpoint(host=host, port=80),),
            source="fake-dns",
            ttl=ttl,
            freshness=Freshness(valid=valid, confirmed=confirmed),
        )

    return step


def make(
    *script: object, clock: FakeClock, cache: CachePolicy | bool = True
) -> tuple[kdisco.Discoverer, Scripted]:
    strategy = Scripted("fake-dns", *script, clock=clock)
    d = kdisco.Discoverer(
        strategies=[strategy],
        namespace="default",
        environ={},
        clock=clock,
        sleep=clock.sleep,
        cache=cache,
        timeout=2.0,
    )
    return d, strategy


def test_answer_is_reused_for_its_ttl_then_asked_again() -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=5.0), clock=clock)
    first = d.discover("web")
    clock.advance(4.9)
    assert d.discover("web") is first
    assert len(s.calls) == 1
    clock.advance(0.2)
    d.discover("web")
    assert len(s.calls) == 2


@pytest.mark.parametrize(("ttl", "kept"), [(0.0, 1.0), (0.5, 1.0), (1000.0, 30.0)])
def test_ttl_is_clamped_to_floor_and_ceiling(ttl: float, kept: float) -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=ttl), clock=clock)
    d.discover("web")
    clock.advance(kept - 0.01)
    d.discover("web")
    assert len(s.calls) == 1
    clock.advance(0.02)
    d.discover("web")
    assert len(s.calls) == 2


def test_answers_without_ttl_or_validity_are_not_cached() -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=None), clock=clock)
    d.discover("web")
    d.discover("web")
    assert len(s.calls) == 2


def test_cache_can_be_turned_off() -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=5.0), clock=clock, cache=False)
    d.discover("web")
    d.discover("web")
    assert len(s.calls) == 2


def test_validity_callback_keeps_an_answer_until_it_says_no() -> None:
    clock = FakeClock()
    still = [True]
    d, s = make(answer(ttl=None, valid=lambda: still[0]), clock=clock)
    d.discover("web")
    clock.advance(3600)
    d.discover("web")
    assert len(s.calls) == 1
    still[0] = False
    d.discover("web")
    assert len(s.calls) == 2


def test_different_arguments_are_different_entries() -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=5.0), clock=clock)
    d.discover("web")
    d.discover("web", port=80)
    d.discover("web", include_not_ready=True)
    assert len(s.calls) == 3


def test_fake_resolver_changes_are_seen_at_once() -> None:
    fake = FakeResolver({"web": ["192.0.2.1:80"]})
    d = kdisco.Discoverer(strategies=[fake], namespace="default", environ={})
    assert d.discover("web").first().host == "192.0.2.1"
    fake.add("web", ["192.0.2.2:80"])
    assert d.discover("web").first().host == "192.0.2.2"
    fake.remove("web")
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("web")


def test_age_and_fetched_at_follow_the_clock() -> None:
    clock = FakeClock()
    d, _ = make(answer(ttl=5.0), clock=clock)
    res = d.discover("web")
    assert res.fetched_at == clock.start
    clock.advance(2.5)
    assert d.discover("web").age == pytest.approx(2.5)
    assert res.stale is False


class TestStaleIfError:
    def failing(self) -> object:
        return kdisco.TransientError("SERVFAIL from 127.0.0.1:53")

    def test_last_good_answer_is_served_stale_with_its_age_and_the_reason(self) -> None:
        clock = FakeClock()
        d, _ = make(answer(ttl=5.0), self.failing(), clock=clock)
        good = d.discover("web")
        clock.advance(10)
        stale = d.discover("web")
        assert stale.stale is True
        assert stale.endpoints == good.endpoints
        assert stale.age >= 10
        assert [a.strategy for a in stale.attempts] == ["fake-dns"]
        assert "SERVFAIL" in stale.attempts[0].reason

    def test_a_failing_backend_is_not_asked_on_every_call(self) -> None:
        clock = FakeClock()
        d, s = make(answer(ttl=5.0), self.failing(), clock=clock)
        d.discover("web")
        clock.advance(10)
        d.discover("web")
        calls = len(s.calls)
        d.discover("web")  # within min_ttl of the failed refresh: served as is
        assert len(s.calls) == calls
        clock.advance(1.1)
        assert d.discover("web").stale is True
        assert len(s.calls) > calls

    def test_after_max_stale_the_error_is_raised(self) -> None:
        clock = FakeClock()
        d, _ = make(
            answer(ttl=5.0),
            self.failing(),
            clock=clock,
            cache=CachePolicy(max_stale=60.0),
        )
        d.discover("web")
        clock.advance(30)
        assert d.discover("web").stale
        clock.advance(31)
        with pytest.raises((kdisco.DiscoveryTimeout, kdisco.DiscoveryUnavailable)):
            d.discover("web")

    def test_a_definitive_answer_is_never_papered_over(self) -> None:
        clock = FakeClock()
        d, _ = make(answer(ttl=5.0), Miss(Outcome.NOT_FOUND, "NXDOMAIN"), clock=clock)
        d.discover("web")
        clock.advance(10)
        with pytest.raises(kdisco.ServiceNotFound):
            d.discover("web")

    def test_nothing_cached_means_the_error(self) -> None:
        clock = FakeClock()
        d, _ = make(self.failing(), clock=clock)
        with pytest.raises((kdisco.DiscoveryTimeout, kdisco.DiscoveryUnavailable)):
            d.discover("web")


def test_env_answers_are_kept_for_max_ttl() -> None:
    clock = FakeClock()
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "POD_NAMESPACE": "default",
        "WEB_SERVICE_HOST": "10.96.0.20",
        "WEB_SERVICE_PORT": "80",
    }
    d = kdisco.Discoverer(
        strategies=["env"],
        namespace="default",
        environ=environ,
        clock=clock,
        cache=CachePolicy(max_ttl=30.0),
    )
    res = d.discover("web")
    assert res.ttl == math.inf
    assert d.discover("web") is res
    clock.advance(31)
    assert d.discover("web") is not res


def test_external_name_hops_hold_only_as_long_as_the_shortest_ttl() -> None:
    clock = FakeClock()

    def step(query: kdisco.Query, deadline: kdisco.Deadline) -> Resolution:
        if query.service.name == "alias":
            return Resolution(
                service=query.service,
                kind=ServiceKind.EXTERNAL_NAME,
                endpoints=(Endpoint(host="web.default.svc.cluster.local"),),
                external_name="web.default.svc.cluster.local",
                source="fake-dns",
                ttl=2.0,
            )
        return Resolution(
            service=query.service,
            kind=ServiceKind.CLUSTER_IP,
            endpoints=(Endpoint(host="10.96.0.20", port=80),),
            source="fake-dns",
            ttl=20.0,
        )

    d, s = make(step, clock=clock)
    res = d.discover("alias")
    assert (res.service.name, res.ttl) == ("web", 2.0)
    clock.advance(1.5)
    d.discover("alias")
    assert len(s.calls) == 2  # one lookup per hop, then cached
    clock.advance(1.0)
    d.discover("alias")
    assert len(s.calls) == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"min_ttl": -1}, {"max_ttl": math.nan}, {"max_stale": "5"}, {"min_ttl": 10, "max_ttl": 5}],
)
def test_bad_policy_is_a_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(kdisco.ConfigurationError):
        CachePolicy(**kwargs)  # type: ignore[arg-type]


def test_cache_argument_must_be_bool_or_policy() -> None:
    with pytest.raises(kdisco.ConfigurationError):
        kdisco.Discoverer(strategies=["static"], static={}, cache="yes")  # type: ignore[arg-type]


def test_unhashable_name_still_gets_the_validation_error() -> None:
    d = kdisco.Discoverer(strategies=["static"], static={"web": ["192.0.2.1:80"]}, environ={})
    with pytest.raises(kdisco.InvalidServiceName):
        d.discover(["web"])  # type: ignore[arg-type]


def test_evolve_keeps_the_freshness() -> None:
    # attrs.evolve must carry the clock/validity through (the chain and cache use it).
    def valid() -> bool:
        return True

    def clock() -> float:
        return 42.0

    res = Resolution(
        service=kdisco.ServiceRef(name="a", namespace="b"),
        kind=ServiceKind.UNKNOWN,
        endpoints=(),
        source="x",
        freshness=Freshness(valid=valid, clock=clock, fetched_at=40.0),
    )
    evolved = attrs.evolve(res, stale=True)
    assert evolved.freshness is not None
    assert evolved.freshness.valid is valid
    assert evolved.age == 2.0


def test_age_of_a_confirmed_answer_follows_its_confirmations_until_it_goes_stale() -> None:
    clock = FakeClock()
    confirmed = [clock.now]
    still = [True]
    d, _ = make(
        answer(ttl=None, valid=lambda: still[0], confirmed=lambda: confirmed[0]),
        kdisco.TransientError("watch broken, API unreachable"),
        clock=clock,
    )
    d.discover("web")
    clock.advance(100)
    confirmed[0] = clock.now - 1  # the watch confirmed the data a second ago
    assert d.discover("web").age == pytest.approx(1.0)
    last_confirmed = confirmed[0]
    still[0] = False  # the watch lost sync; the refresh fails (retried on the fake clock)
    clock.advance(5)
    stale = d.discover("web")
    assert stale.stale
    assert stale.age == pytest.approx(clock.now - last_confirmed)
    confirmed[0] = clock.now  # confirmations no longer reach a stale copy
    clock.advance(0.5)
    assert d.discover("web").age == pytest.approx(clock.now - last_confirmed)


def test_a_ttl_bounds_an_answer_that_also_has_a_validity_check() -> None:
    # ExternalName from DNS (TTL) in front of a watched Service (validity check).
    clock = FakeClock()
    d, s = make(answer(ttl=5.0, valid=lambda: True), clock=clock)
    d.discover("web")
    clock.advance(4.0)
    d.discover("web")
    assert len(s.calls) == 1
    clock.advance(2.0)
    d.discover("web")
    assert len(s.calls) == 2


def test_not_found_voids_the_old_answer_for_later_stale_serving() -> None:
    clock = FakeClock()
    d, _ = make(
        answer(ttl=5.0),
        Miss(Outcome.NOT_FOUND, "deleted"),
        kdisco.TransientError("SERVFAIL"),
        clock=clock,
    )
    d.discover("web")
    clock.advance(10)
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("web")
    clock.advance(1)
    # The Service was deleted: a later outage must not resurrect its old address.
    with pytest.raises((kdisco.DiscoveryTimeout, kdisco.DiscoveryUnavailable)):
        d.discover("web")


def test_bool_and_int_arguments_do_not_share_cache_entries() -> None:
    d = kdisco.Discoverer(strategies=["static"], static={"web": ["192.0.2.1"]}, environ={})
    assert d.discover("web", port=1).first().port == 1
    with pytest.raises(kdisco.InvalidServiceName):
        d.discover("web", port=True)
    d.discover("web", include_not_ready=True)
    with pytest.raises(kdisco.InvalidServiceName):
        d.discover("web", include_not_ready=1)  # type: ignore[arg-type]


# -- bounded --------------------------------------------------------------------------


def cached_answer(name: str, clock: FakeClock, ttl: float | None = 5.0) -> Resolution:
    return Resolution(
        service=kdisco.ServiceRef(name=name, namespace="default"),
        kind=ServiceKind.CLUSTER_IP,
        endpoints=(Endpoint(host="192.0.2.1", port=80),),
        source="fake-dns",
        ttl=ttl,
        freshness=Freshness(clock=clock, fetched_at=clock.now),
    )


def test_the_cache_never_holds_more_than_max_entries() -> None:
    # Names from user input (or typos) must not grow memory without bound.
    clock = FakeClock()
    cache = AnswerCache(CachePolicy(max_entries=1000), clock)
    for i in range(20_000):
        cache.put(f"svc-{i}", cached_answer(f"svc-{i}", clock))
        assert len(cache) <= 1000
    # The newest answers are the ones kept.
    assert cache.get("svc-19999") is not None
    assert cache.get("svc-0") is None


def test_expired_answers_are_purged_even_when_not_full() -> None:
    clock = FakeClock()
    cache = AnswerCache(CachePolicy(max_ttl=30, max_stale=300), clock)
    for i in range(100):
        cache.put(f"svc-{i}", cached_answer(f"svc-{i}", clock))
    assert len(cache) == 100
    # Past the TTL but within max_stale: still kept, to be served stale if need be.
    clock.advance(120)
    cache.put("fresh-1", cached_answer("fresh-1", clock))
    assert len(cache) == 101
    # An hour later they can serve no purpose at all: the next write purges them.
    clock.advance(3600)
    cache.put("fresh-2", cached_answer("fresh-2", clock))
    assert len(cache) == 1


def test_max_entries_is_validated() -> None:
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(kdisco.ConfigurationError, match="max_entries"):
            CachePolicy(max_entries=bad)  # type: ignore[arg-type]


def test_a_discoverer_keeps_its_cache_bounded() -> None:
    clock = FakeClock()
    d, s = make(answer(ttl=30.0), clock=clock, cache=CachePolicy(max_entries=50))
    for i in range(500):
        d.discover(f"web.ns{i}")
    d.discover("web.ns499")  # recent: still cached
    assert len(s.calls) == 500
    d.discover("web.ns0")  # long since dropped to stay within 50: asked again
    assert len(s.calls) == 501


def test_a_stale_answer_is_never_served_past_max_stale() -> None:
    # The failing refresh is retried at most every min_ttl, but the stale copy kept
    # meanwhile must not outlive max_stale (found by tests/integration/test_lab_faults).
    clock = FakeClock()
    d, _ = make(
        answer(ttl=5.0),
        kdisco.TransientError("SERVFAIL"),
        clock=clock,
        cache=CachePolicy(min_ttl=5.0, max_ttl=5.0, max_stale=8.0),
    )
    d.discover("web")
    clock.advance(5.0)
    stale = d.discover("web")  # the refresh fails (its retries pass on the fake clock)
    assert stale.stale
    assert stale.age <= 8.0
    clock.advance(2.0)  # within min_ttl of the failed refresh, but past max_stale
    with pytest.raises(kdisco.DiscoveryUnavailable):
        d.discover("web")
