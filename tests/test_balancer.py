"""Balancer: candidate rules, passive health, topology, state across answers, threads.

Every time-dependent check runs on a fake clock; nothing here waits or times itself.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs
import pytest

import kdisco._candidates
from kdisco import (
    ConfigurationError,
    Endpoint,
    NoReadyEndpoints,
    Resolution,
    ServiceKind,
    ServicePort,
    ServiceRef,
)
from kdisco._balancer import Balancer, EndpointHealth, OutlierPolicy, Pick
from kdisco._candidates import Topology, candidate_layers, usable
from kdisco._pickers import Key, LeastResponseTime, PowerOfTwo, Random, RendezvousHash, RoundRobin
from kdisco._pickers import Stats as PickerStats


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def eps(n: int, prefix: str = "10.0.0.", **fields: object) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(host=f"{prefix}{i}", port=8080, **fields) for i in range(n))  # type: ignore[arg-type]


def answer(endpoints: Iterable[Endpoint], name: str = "web", port: int | None = 8080) -> Resolution:
    return Resolution(
        service=ServiceRef(name=name, namespace="shop"),
        kind=ServiceKind.HEADLESS,
        endpoints=tuple(endpoints),
        source="static",
        port=None if port is None else ServicePort(port=port, name="http"),
    )


def spread(
    lb: Balancer, res: Resolution | Sequence[Endpoint], n: int, key: Key | None = None
) -> Counter[str]:
    return Counter(lb.pick(res, key).host for _ in range(n))


def fail(lb: Balancer, ep: Endpoint, times: int) -> None:
    for _ in range(times):
        lb.report(ep, ok=False)


# -- candidate rules -------------------------------------------------------------------


def test_not_ready_and_terminating_endpoints_are_skipped() -> None:
    ready = eps(3)
    res = answer(
        [
            *ready,
            Endpoint(host="10.0.1.1", port=8080, ready=False),
            Endpoint(host="10.0.1.2", port=8080, ready=False, serving=True, terminating=True),
            # publishNotReadyAddresses: ready stays true while terminating.
            Endpoint(host="10.0.1.3", port=8080, ready=True, terminating=True),
        ]
    )
    assert set(spread(Balancer(), res, 300)) == {ep.host for ep in ready}


def test_serving_terminating_endpoints_are_the_fallback() -> None:
    res = answer(
        [
            Endpoint(host="10.0.1.1", port=8080, ready=False),
            Endpoint(host="10.0.1.2", port=8080, ready=False, serving=True, terminating=True),
            Endpoint(host="10.0.1.3", port=8080, ready=False, serving=False, terminating=True),
        ]
    )
    assert set(spread(Balancer(), res, 50)) == {"10.0.1.2"}


def test_nothing_usable_raises_no_ready_endpoints_naming_the_service() -> None:
    res = answer(
        [
            Endpoint(host="10.0.1.1", port=8080, ready=False),
            Endpoint(host="10.0.1.2", port=8080, ready=False, serving=False, terminating=True),
        ]
    )
    lb = Balancer()
    with pytest.raises(NoReadyEndpoints) as caught:
        lb.pick(res)
    assert caught.value.service == res.service
    message = str(caught.value)
    assert message.startswith("web.shop has no ready endpoint")
    assert "1 not ready" in message
    assert "1 terminating and not serving" in message
    with pytest.raises(NoReadyEndpoints, match=r"web\.shop"):
        lb.choose(res)
    with pytest.raises(NoReadyEndpoints, match=r"web\.shop has no ready endpoint.*no endpoints"):
        lb.pick(answer([]))


def test_nothing_usable_in_a_bare_sequence() -> None:
    with pytest.raises(NoReadyEndpoints, match="no ready endpoint to pick from") as caught:
        Balancer().pick([Endpoint(host="10.0.1.1", ready=False)])
    assert caught.value.service is None


def test_an_address_listed_twice_gets_one_share() -> None:
    a, b = eps(2)
    twice = answer([a, b, Endpoint(host=a.host, port=a.port, zone="z")])
    assert spread(Balancer(), twice, 1000) == {a.host: 500, b.host: 500}


def test_candidate_rules_as_pure_functions() -> None:
    a, b = eps(2)
    down = Endpoint(host="10.0.1.1", ready=False)
    draining = Endpoint(host="10.0.1.2", ready=False, serving=True, terminating=True)
    assert usable([down, a, draining, b]) == (a, b)
    assert usable([down, draining]) == (draining,)
    assert usable([down]) == ()
    assert candidate_layers((a, down), Topology(), None) == ((a,),)


# -- the picks and what they report ----------------------------------------------------


def test_choose_counts_in_flight_and_reports_success_on_normal_exit() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, picker=LeastResponseTime())
    res = answer(eps(1))
    with lb.choose(res) as pick:
        assert isinstance(pick, Pick)
        assert lb.health(pick.endpoint).in_flight == 1
        clock.advance(0.25)
    health = lb.health(pick.endpoint)
    assert health.in_flight == 0
    assert health.latency == pytest.approx(0.25)
    assert health.consecutive_failures == 0


def test_an_exception_counts_as_a_failure_and_goes_on() -> None:
    lb = Balancer()
    res = answer(eps(1))
    with pytest.raises(OSError, match="reset"), lb.choose(res) as pick:
        raise OSError("connection reset")
    assert lb.health(pick.endpoint).consecutive_failures == 1
    assert lb.health(pick.endpoint).in_flight == 0


def test_explicit_outcomes_win_and_only_the_first_counts() -> None:
    lb = Balancer()
    res = answer(eps(1))
    with lb.choose(res) as pick:
        pick.failed()  # an HTTP 503, say
        pick.succeeded()  # ignored: the outcome is already known
    assert lb.health(pick.endpoint).consecutive_failures == 1
    pick = lb.choose(res)

    def handle_response() -> None:
        with pick:
            pick.succeeded()
            raise KeyError("after the response")  # not the endpoint's doing

    with pytest.raises(KeyError):
        handle_response()
    assert lb.health(pick.endpoint).consecutive_failures == 0


def test_cancellation_ends_the_request_without_an_outcome() -> None:
    lb = Balancer()
    res = answer(eps(1))
    lb.report(res.endpoints[0], ok=False)
    with pytest.raises(asyncio.CancelledError), lb.choose(res):
        raise asyncio.CancelledError
    assert lb.health(res.endpoints[0]) == EndpointHealth(consecutive_failures=1)


def test_async_with_works_the_same() -> None:
    lb = Balancer()
    res = answer(eps(2))

    async def main() -> tuple[Endpoint, int]:
        async with lb.choose(res) as pick:
            inside = lb.health(pick.endpoint).in_flight
        try:
            async with lb.choose(res) as failing:
                raise ConnectionError
        except ConnectionError:
            pass
        assert lb.health(failing.endpoint).consecutive_failures == 1
        return pick.endpoint, inside

    endpoint, inside = asyncio.run(main())
    assert inside == 1
    assert lb.health(endpoint).in_flight == 0


def test_asyncio_tasks_share_a_balancer() -> None:
    # 100 requests out at once from tasks: power of two choices keeps them even, and
    # every count is back to zero when they are done.
    lb = Balancer(picker=PowerOfTwo(seed=4))
    res = answer(eps(10))

    async def main() -> list[int]:
        all_out, release = asyncio.Event(), asyncio.Event()
        started = 0

        async def request() -> None:
            nonlocal started
            async with lb.choose(res):
                started += 1
                if started == 100:
                    all_out.set()
                await release.wait()

        tasks = [asyncio.create_task(request()) for _ in range(100)]
        await all_out.wait()
        peak = [lb.health(ep).in_flight for ep in res.endpoints]
        release.set()
        await asyncio.gather(*tasks)
        return peak

    peak = asyncio.run(main())
    assert sum(peak) == 100
    # Random choice leaves a gap of 8 or more in most runs; P2C usually 2 or 3.
    assert max(peak) - min(peak) <= 4, peak
    assert {lb.health(ep).in_flight for ep in res.endpoints} == {0}


def test_report_without_the_context_manager() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, picker=LeastResponseTime(decay=10.0))
    ep = eps(1)[0]
    lb.report(ep, ok=True, seconds=0.1)
    clock.advance(10.0)
    lb.report(ep, ok=True, seconds=0.3)
    # Time-weighted: after one decay constant the old average keeps e**-1 of its weight.
    assert lb.health(ep).latency == pytest.approx(0.3 + (0.1 - 0.3) * 0.36787944, rel=1e-6)
    clock.advance(10.0)
    # Not fed, the average fades towards zero.
    assert lb.health(ep).latency == pytest.approx((0.3 + (0.1 - 0.3) * 0.36787944) * 0.36787944)


def test_a_fast_failure_does_not_look_fast() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock)
    ep = eps(1)[0]
    lb.report(ep, ok=True, seconds=0.2)
    clock.advance(100.0)  # the old average would have almost no weight left
    lb.report(ep, ok=False, seconds=0.001)
    latency = lb.health(ep).latency
    assert latency is not None
    assert latency > 0.2


def test_pick_alone_is_not_tracked() -> None:
    lb = Balancer()
    res = answer(eps(3))
    picked = lb.pick(res)
    assert lb.health(picked) == EndpointHealth()


# -- passive health --------------------------------------------------------------------


def test_ejected_after_consecutive_failures_and_back_when_the_time_is_up() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock)
    res = answer(eps(4))
    bad = res.endpoints[0]
    fail(lb, bad, 4)
    assert bad.host in spread(lb, res, 40)
    fail(lb, bad, 1)
    assert lb.health(bad).ejected_until == clock.now + 30.0
    assert bad.host not in spread(lb, res, 40)
    clock.advance(29.9)
    assert bad.host not in spread(lb, res, 40)
    clock.advance(0.1)
    assert spread(lb, res, 40)[bad.host] == 10
    assert lb.health(bad).ejected_until is None


def test_a_success_resets_the_count() -> None:
    lb = Balancer(clock=FakeClock())
    res = answer(eps(4))
    bad = res.endpoints[0]
    fail(lb, bad, 4)
    lb.report(bad, ok=True)
    fail(lb, bad, 4)
    assert lb.health(bad).ejected_until is None
    assert bad.host in spread(lb, res, 40)


def test_each_ejection_lasts_longer_up_to_the_maximum() -> None:
    clock = FakeClock()
    policy = OutlierPolicy(consecutive_failures=2, base_ejection=30.0, max_ejection=100.0)
    lb = Balancer(clock=clock, outliers=policy)
    bad = eps(4)[0]
    for expected in (30.0, 60.0, 90.0, 100.0, 100.0):
        fail(lb, bad, 2)
        assert lb.health(bad).ejected_until == pytest.approx(clock.now + expected)
        clock.advance(expected)  # back, and failing again at once
    assert lb.health(bad).ejections == 5


def test_time_back_without_ejections_shortens_the_next_one() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, outliers=OutlierPolicy(consecutive_failures=1))
    bad = eps(4)[0]
    fail(lb, bad, 1)
    clock.advance(30.0)
    fail(lb, bad, 1)
    assert lb.health(bad).ejections == 2
    clock.advance(60.0 + 45.0)  # back for 45 s: one base_ejection (30 s) forgiven
    fail(lb, bad, 1)
    assert lb.health(bad).ejections == 2
    assert lb.health(bad).ejected_until == pytest.approx(clock.now + 60.0)


def test_never_more_than_the_maximum_share_is_ejected() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock)
    res = answer(eps(10))
    for ep in res.endpoints:
        clock.advance(1.0)
        fail(lb, ep, 5)
        assert lb.health(ep).ejected_until is not None  # each failed its way out...
    picked = spread(lb, res, 1000)
    # ...but only half are left out: the five ejected first.
    assert set(picked) == {ep.host for ep in res.endpoints[5:]}
    assert set(picked.values()) == {200}


@pytest.mark.parametrize(
    ("n", "share", "left_out"),
    [(1, 0.5, 0), (2, 0.5, 1), (3, 0.5, 1), (3, 1.0, 2), (10, 0.0, 0), (10, 0.3, 3)],
)
def test_the_share_rounds_down_and_one_endpoint_always_stays(
    n: int, share: float, left_out: int
) -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, outliers=OutlierPolicy(max_ejection_share=share))
    res = answer(eps(n))
    for ep in res.endpoints:
        fail(lb, ep, 5)
    assert len(spread(lb, res, 100)) == n - left_out


def test_outliers_can_be_turned_off() -> None:
    lb = Balancer(outliers=False)
    res = answer(eps(2))
    fail(lb, res.endpoints[0], 100)
    assert len(spread(lb, res, 10)) == 2
    assert lb.outliers == OutlierPolicy(enabled=False)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"consecutive_failures": True}, "consecutive_failures"),
        ({"consecutive_failures": 2.5}, "consecutive_failures"),
        ({"base_ejection": -1.0}, "base_ejection"),
        ({"base_ejection": float("nan")}, "base_ejection"),
        ({"max_ejection": "60"}, "max_ejection"),
        ({"max_ejection": float("inf")}, "max_ejection"),
        ({"max_ejection_share": 1.5}, "max_ejection_share"),
        ({"max_ejection_share": -0.1}, "max_ejection_share"),
        ({"base_ejection": 120.0, "max_ejection": 60.0}, "base_ejection"),
    ],
)
def test_outlier_policy_rejects_bad_fields_by_name(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"OutlierPolicy\.{named}"):
        OutlierPolicy(**fields)  # type: ignore[arg-type]


def test_outlier_policy_is_a_frozen_value() -> None:
    policy = OutlierPolicy()
    assert attrs.evolve(policy, consecutive_failures=3) == OutlierPolicy(consecutive_failures=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.base_ejection = 1.0  # type: ignore[misc]
    assert policy.ejection_time(2) == 60.0
    assert policy.ejection_time(50) == 300.0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"outliers": "yes"}, "Balancer.outliers"),
        ({"preference": "Nearby"}, "Balancer.preference"),
        ({"zone": 3}, "Balancer.zone"),
        ({"picker": object()}, "Balancer.picker"),
        ({"forget_after": -1}, "Balancer.forget_after"),
        ({"clock": 5}, "Balancer.clock"),
    ],
)
def test_balancer_rejects_bad_settings_by_name(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Balancer(**kwargs)  # type: ignore[arg-type]


# -- state across answers --------------------------------------------------------------


def test_round_robin_goes_on_fairly_across_answers() -> None:
    lb = Balancer(picker=RoundRobin(seed=1))
    first = answer(eps(4))
    turn = [lb.pick(first).host for _ in range(6)]  # one and a half turns
    assert turn[4:] == turn[:2]
    # The next answer (new objects, one endpoint more) goes on with the endpoint that
    # was next, then in its own order: no endpoint gets an extra turn or loses one.
    second = answer(eps(5))
    hosts = [ep.host for ep in second.endpoints]
    after = [lb.pick(second).host for _ in range(500)]
    start = hosts.index(turn[2])
    assert after == [hosts[(start + i) % 5] for i in range(500)]
    seen = Counter(turn + after)
    assert max(seen.values()) - min(seen.values()) <= 2


def test_another_services_ejections_leave_a_turn_alone() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, picker=RoundRobin(seed=1))
    web, db = answer(eps(3)), answer(eps(4, "10.9.0."), name="db")
    seen: Counter[str] = Counter()
    for i in range(300):
        seen[lb.pick(web).host] += 1
        if i % 30 == 0:
            fail(lb, db.endpoints[i % 4], 5)  # ejections start and end in db
            clock.advance(20.0)
        lb.pick(db)
    assert set(seen.values()) == {100}


def test_figures_and_ejections_carry_over_to_the_next_answer() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock)
    first = answer(eps(4))
    fail(lb, first.endpoints[0], 5)
    lb.report(first.endpoints[1], ok=True, seconds=0.5)
    second = answer([*(attrs.evolve(ep, zone="z") for ep in eps(3)), eps(5)[4]])
    assert first.endpoints[0].host not in spread(lb, second, 40)
    assert lb.health(second.endpoints[1]).latency == pytest.approx(0.5)
    clock.advance(30.0)
    assert first.endpoints[0].host in spread(lb, second, 40)


def test_figures_of_addresses_gone_for_a_while_are_forgotten() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, forget_after=600.0)
    a, b, c = eps(3)
    lb.pick(answer([a, b]))
    lb.report(a, ok=False)
    lb.report(b, ok=False)
    lb.pick(answer([b, c]))  # a is gone from every answer the balancer holds
    clock.advance(599.0)
    lb.pick(answer([b, c]))
    assert lb.health(a).consecutive_failures == 1  # not yet
    # Forgotten by the first new answer after forget_after (the sweep runs at most
    # every quarter of it, so within 1.25 x forget_after).
    clock.advance(151.0)
    lb.pick(answer([c, b]))
    assert lb.health(a) == EndpointHealth()
    assert lb.health(b).consecutive_failures == 1  # still listed: kept


def test_an_address_in_flight_is_never_forgotten() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, forget_after=10.0)
    a, b = eps(2)
    with lb.choose([a]) as pick:
        for _ in range(5):
            clock.advance(10.0)
            lb.pick(answer([b]))
        assert lb.health(a).in_flight == 1
    assert lb.health(pick.endpoint).in_flight == 0


def test_a_repeated_answer_is_judged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    real = kdisco._candidates.candidate_layers

    def counting(*args: object) -> object:
        calls["layers"] += 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("kdisco._balancer.candidate_layers", counting)
    lb = Balancer()
    res = answer(eps(10))
    spread(lb, res, 100)
    spread(lb, res.endpoints, 100)  # a tuple is kept too
    assert calls["layers"] == 2
    spread(lb, list(res.endpoints), 3)  # a list may change: judged afresh
    assert calls["layers"] == 5


def test_a_new_answer_replaces_the_one_kept_for_its_service() -> None:
    lb = Balancer()
    for _ in range(50):
        lb.pick(answer(eps(3)))
        lb.pick(answer(eps(3), name="other"))
        lb.pick(answer(eps(3), port=9090))
    assert len(lb._entries) == 3


# -- topology --------------------------------------------------------------------------


def zoned() -> Resolution:
    return answer(
        [
            Endpoint(host="10.0.0.1", port=80, zone="a", node="n1"),
            Endpoint(host="10.0.0.2", port=80, zone="a", node="n2"),
            Endpoint(host="10.0.0.3", port=80, zone="b", node="n3"),
            Endpoint(host="10.0.0.4", port=80, zone="b", node="n4"),
            Endpoint(host="10.0.0.5", port=80, zone=None, node=None),
        ]
    )


def test_prefer_same_zone() -> None:
    lb = Balancer(zone="a", preference="PreferSameZone")
    assert set(spread(lb, zoned(), 100)) == {"10.0.0.1", "10.0.0.2"}
    # PreferClose is Kubernetes' first name for it.
    lb = Balancer(zone="b", preference="PreferClose")
    assert set(spread(lb, zoned(), 100)) == {"10.0.0.3", "10.0.0.4"}


def test_prefer_same_node_then_zone_then_all() -> None:
    lb = Balancer(zone="a", node="n2", preference="PreferSameNode")
    assert set(spread(lb, zoned(), 100)) == {"10.0.0.2"}
    res = zoned()
    not_ready_n2 = answer(
        attrs.evolve(ep, ready=False) if ep.node == "n2" else ep for ep in res.endpoints
    )
    assert set(spread(lb, not_ready_n2, 100)) == {"10.0.0.1"}
    none_in_a = answer(ep for ep in res.endpoints if ep.zone != "a")
    assert set(spread(lb, none_in_a, 100)) == {"10.0.0.3", "10.0.0.4", "10.0.0.5"}


def test_no_preference_or_no_zone_means_all() -> None:
    everyone = {f"10.0.0.{i}" for i in range(1, 6)}
    assert set(spread(Balancer(zone="a"), zoned(), 100)) == everyone
    assert set(spread(Balancer(preference="PreferSameZone"), zoned(), 100)) == everyone
    # Same node asked for, node unknown: the zone still counts.
    lb = Balancer(zone="b", preference="PreferSameNode")
    assert set(spread(lb, zoned(), 100)) == {"10.0.0.3", "10.0.0.4"}


def test_local_endpoints_that_are_ejected_spill_over_to_the_rest() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, zone="a", node="n1", preference="PreferSameNode")
    res = zoned()
    fail(lb, res.endpoints[0], 5)  # n1's endpoint: the same zone takes over
    assert set(spread(lb, res, 100)) == {"10.0.0.2"}
    fail(lb, res.endpoints[1], 5)  # zone a's other one: all the rest
    assert set(spread(lb, res, 100)) == {"10.0.0.3", "10.0.0.4", "10.0.0.5"}
    clock.advance(30.0)
    assert set(spread(lb, res, 100)) == {"10.0.0.1"}


def test_topology_layers_as_a_pure_function() -> None:
    res = zoned()
    one, two, three, *_ = res.endpoints
    layers = Topology(zone="a", node="n1", preference="PreferSameNode").layers(res.endpoints, res)
    assert layers == ((one,), (one, two), res.endpoints)
    # A node-local endpoint with no zone label is still local by node.
    odd = (attrs.evolve(one, zone=None), two, three)
    assert Topology(zone="a", node="n1", preference="PreferSameNode").layers(odd, None) == (
        (odd[0],),
        (two,),
        odd,
    )
    assert Topology(zone="c", preference="PreferSameZone").layers(res.endpoints, res) == (
        res.endpoints,
    )


# -- every picker through the balancer -------------------------------------------------


@pytest.mark.parametrize(
    "picker",
    [RoundRobin(seed=1), Random(seed=1), PowerOfTwo(seed=1), LeastResponseTime(seed=1)],
    ids=repr,
)
def test_every_picker_spreads_through_the_balancer(picker: object) -> None:
    lb = Balancer(picker=picker)  # type: ignore[arg-type]
    seen = spread(lb, answer(eps(10)), 20_000)
    assert len(seen) == 10
    assert max(seen.values()) / min(seen.values()) < 1.2


def test_rendezvous_through_two_balancers_agrees() -> None:
    keys = [f"order-{i}" for i in range(500)]
    one, two = Balancer(picker=RendezvousHash()), Balancer(picker=RendezvousHash())
    res = answer(eps(10))
    again = answer(reversed(eps(10)))
    assert [one.pick(res, k) for k in keys] == [two.pick(again, k) for k in keys]


def test_rendezvous_skips_an_ejected_endpoint_and_returns_its_keys_after() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, picker=RendezvousHash())
    res = answer(eps(10))
    keys = [f"order-{i}" for i in range(2000)]
    before = [lb.pick(res, k).host for k in keys]
    fail(lb, res.endpoints[3], 5)
    during = [lb.pick(res, k).host for k in keys]
    assert [i for i in range(len(keys)) if before[i] != during[i]] == [
        i for i in range(len(keys)) if before[i] == res.endpoints[3].host
    ]
    clock.advance(30.0)
    assert [lb.pick(res, k).host for k in keys] == before


def test_power_of_two_avoids_an_endpoint_with_requests_held_open() -> None:
    lb = Balancer(picker=PowerOfTwo(seed=2))
    res = answer(eps(4))
    # 20 requests held open on one address (counted by address, whatever the list).
    held = [lb.choose([res.endpoints[0]]) for _ in range(20)]
    assert res.endpoints[0].host not in spread(lb, res, 1000)
    for pick in held:
        pick.succeeded()
    assert lb.health(res.endpoints[0]).in_flight == 0


def test_least_response_time_moves_traffic_away_from_a_slow_endpoint_and_back() -> None:
    clock = FakeClock()
    lb = Balancer(clock=clock, picker=LeastResponseTime(decay=10.0, seed=3))
    res = answer(eps(10))
    slow = {res.endpoints[0].host: 0.5}

    def run(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            with lb.choose(res) as pick:
                clock.advance(slow.get(pick.endpoint.host, 0.01))
            seen[pick.endpoint.host] += 1
        return seen

    run(500)  # everyone measured
    seen = run(10_000)
    assert seen[res.endpoints[0].host] < 10_000 * 0.1 / 5  # under a fifth of a fair share
    slow.clear()  # it recovers: faded, it is tried again and wins back its share
    seen = run(20_000)
    assert seen[res.endpoints[0].host] > 20_000 * 0.1 / 2


class First:
    """A user's own picker: the protocol is one method."""

    def choose(
        self, candidates: Sequence[Endpoint], key: Key | None, stats: PickerStats
    ) -> Endpoint:
        return min(candidates, key=lambda ep: (stats.in_flight(ep), ep.host))


def test_a_users_own_picker() -> None:
    lb = Balancer(picker=First())
    res = answer(eps(3))
    with lb.choose(res) as a, lb.choose(res) as b, lb.choose(res) as c:
        assert [a.endpoint, b.endpoint, c.endpoint] == list(res.endpoints)


# -- threads, forks --------------------------------------------------------------------


def test_threads_picking_and_reporting_leave_nothing_in_flight() -> None:
    clock = FakeClock()
    lb = Balancer(
        clock=clock, picker=PowerOfTwo(seed=1), outliers=OutlierPolicy(consecutive_failures=3)
    )
    answers = [answer(eps(10)), answer(eps(12))]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for i in range(10_000):
                res = answers[(i // 1000) % 2]  # the answer changes under the threads
                if i % 3 == 0:
                    ep = lb.pick(res)
                    lb.report(ep, ok=rng.random() > 0.3, seconds=rng.random() / 10)
                else:
                    with lb.choose(res) as pick:
                        if rng.random() < 0.3:
                            pick.failed()
                if i % 500 == 0:
                    clock.advance(7.0)  # ejections end while others start
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [t for t in threads if t.is_alive()]
    assert errors == []
    assert {lb.health(ep).in_flight for ep in answers[1].endpoints} == {0}


@pytest.mark.skipif(
    not getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="exact turns across threads rely on the GIL",
)
def test_round_robin_turns_are_exact_across_threads() -> None:
    lb = Balancer(picker=RoundRobin())
    res = answer(eps(10))
    seen: list[Counter[str]] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        seen.append(spread(lb, res, 10_000))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    total = sum(seen, Counter[str]())
    assert set(total.values()) == {8_000}


def test_after_a_fork_nothing_is_in_flight() -> None:
    lb = Balancer()
    res = answer(eps(1))
    pick = lb.choose(res)
    lb._after_fork()  # what the child runs (kdisco._forksafe)
    assert lb.health(pick.endpoint).in_flight == 0
    with lb.choose(res):
        pick.succeeded()  # the parent's request ending does not touch the child's count
        assert lb.health(pick.endpoint).in_flight == 1
    assert lb.health(pick.endpoint).in_flight == 0


@pytest.mark.parametrize("make", [PowerOfTwo, LeastResponseTime, RoundRobin])
def test_built_in_pickers_decide_as_their_public_choose_does(make: type) -> None:
    """The balancer's fast path for the built-ins (figures read directly) picks what
    ``choose(candidates, key, stats)`` picks, with ejections, latencies and in flight."""
    clock = FakeClock()
    fast = Balancer(clock=clock, picker=make(seed=3))
    slow = Balancer(clock=clock, picker=make(seed=3))
    slow._choose = slow._picker.choose  # the generic path, through Stats
    res = answer(eps(8))
    rng = random.Random(5)
    held: list[Pick] = []
    for ep in res.endpoints[1:6]:
        for lb in (fast, slow):
            lb.report(ep, ok=True, seconds=0.01 + 0.01 * res.endpoints.index(ep))
    for step in range(400):
        if step == 100:
            for lb in (fast, slow):
                for _ in range(5):
                    lb.report(res.endpoints[2], ok=False)
        a, b = fast.choose(res), slow.choose(res)
        assert a.endpoint == b.endpoint
        held.append(a)
        held.append(b)
        if len(held) > 12:
            k = rng.randrange(len(held) // 2) * 2
            held.pop(k).succeeded()
            held.pop(k).succeeded()
        clock.advance(rng.random())
