"""Pickers: each algorithm's spread, checked with seeded generators and bounded counts.

Distribution checks use a chi-square statistic against the uniform spread; with fixed
seeds they are deterministic, and the bound (27.9, p = 0.001 at 9 degrees of freedom)
leaves a fair generator a wide margin while catching a skewed one.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path

import pytest

from kdisco import ConfigurationError, Endpoint
from kdisco._pickers import (
    Key,
    LeastResponseTime,
    Picker,
    PowerOfTwo,
    Random,
    RendezvousHash,
    RoundRobin,
    Stats,
)

ROOT = Path(__file__).resolve().parents[1]
CHI2_9DF_P001 = 27.88


class FakeStats:
    """Stats a test sets by hand."""

    def __init__(
        self,
        group: Hashable = None,
        in_flight: dict[str, int] | None = None,
        latency: dict[str, float] | None = None,
    ) -> None:
        self.group = group
        self.flight = in_flight or {}
        self.latencies = latency or {}

    def in_flight(self, endpoint: Endpoint) -> int:
        return self.flight.get(endpoint.host, 0)

    def latency(self, endpoint: Endpoint) -> float | None:
        return self.latencies.get(endpoint.host)


def endpoints(n: int, prefix: str = "10.0.0.") -> tuple[Endpoint, ...]:
    return tuple(Endpoint(host=f"{prefix}{i}", port=8080) for i in range(n))


def counts(
    picker: Picker, eps: Sequence[Endpoint], n: int, stats: Stats | None = None
) -> Counter[str]:
    stats = stats or FakeStats()
    return Counter(picker.choose(eps, None, stats).host for _ in range(n))


def chi_square(observed: Counter[str], keys: Sequence[str]) -> float:
    total = sum(observed.values())
    expected = total / len(keys)
    return sum((observed[k] - expected) ** 2 / expected for k in keys)


def test_every_picker_meets_the_protocol() -> None:
    for picker in (RoundRobin(), Random(), PowerOfTwo(), LeastResponseTime(), RendezvousHash()):
        assert isinstance(picker, Picker)
    assert isinstance(FakeStats(), Stats)


# -- round robin ------------------------------------------------------------------------


def test_round_robin_is_exactly_even() -> None:
    eps = endpoints(10)
    seen = counts(RoundRobin(seed=1), eps, 100_000)
    assert set(seen.values()) == {10_000}


def test_round_robin_visits_in_order_from_a_seeded_start() -> None:
    eps = endpoints(5)
    stats = FakeStats()
    first = [RoundRobin(seed=7).choose(eps, None, stats).host for _ in range(1)]
    rr = RoundRobin(seed=7)
    run = [rr.choose(eps, None, stats).host for _ in range(10)]
    start = int(run[0].rsplit(".", 1)[1])
    assert run == [eps[(start + i) % 5].host for i in range(10)]
    assert first == run[:1]  # the same seed starts at the same place


def test_round_robin_starts_are_spread() -> None:
    # Clients started together do not all send their first request to the same endpoint.
    eps = endpoints(10)
    firsts = {RoundRobin(seed=s).choose(eps, None, FakeStats()).host for s in range(50)}
    assert len(firsts) >= 5


def test_round_robin_keeps_one_turn_per_group() -> None:
    # Two Services through one picker, interleaved: each is still exactly even (a
    # shared counter would send every request of a 2-endpoint Service to one of them).
    a, b = endpoints(2, "10.0.1."), endpoints(3, "10.0.2.")
    rr = RoundRobin(seed=3)
    sa, sb = FakeStats(group="a"), FakeStats(group="b")
    seen: Counter[str] = Counter()
    for _ in range(6000):
        seen[rr.choose(a, None, sa).host] += 1
        seen[rr.choose(b, None, sb).host] += 1
    assert [seen[ep.host] for ep in a] == [3000, 3000]
    assert [seen[ep.host] for ep in b] == [2000, 2000, 2000]


def test_round_robin_goes_on_from_the_next_endpoint_when_candidates_change() -> None:
    rr, stats = RoundRobin(seed=0), FakeStats()
    a, b, c, d, e = endpoints(5)
    old = (a, b, c, d)
    while rr.choose(old, None, stats) is not a:
        pass
    assert rr.choose(old, None, stats) is b
    # c is next; a new answer (new objects, one more endpoint) goes on with c.
    new = tuple(Endpoint(host=ep.host, port=ep.port) for ep in (a, b, c, d, e))
    assert [rr.choose(new, None, stats).host for _ in range(5)] == [
        ep.host for ep in (c, d, e, a, b)
    ]
    # The next one (c) is gone: the turn goes on with the one after it.
    smaller = (new[0], new[1], new[3], new[4])
    assert [rr.choose(smaller, None, stats).host for _ in range(4)] == [
        ep.host for ep in (d, e, a, b)
    ]


# -- random -------------------------------------------------------------------------------


def test_random_is_uniform_within_tolerance() -> None:
    eps = endpoints(10)
    seen = counts(Random(seed=42), eps, 100_000)
    assert chi_square(seen, [ep.host for ep in eps]) < CHI2_9DF_P001
    assert max(seen.values()) / min(seen.values()) < 1.06


def test_random_is_repeatable_with_a_seed() -> None:
    eps = endpoints(10)
    one = [Random(seed=5).choose(eps, None, FakeStats()) for _ in range(1)]
    a, b = Random(seed=5), Random(seed=5)
    assert [a.choose(eps, None, FakeStats()) for _ in range(100)] == [
        b.choose(eps, None, FakeStats()) for _ in range(100)
    ]
    assert one[0] is Random(seed=5).choose(eps, None, FakeStats())


# -- power of two choices ------------------------------------------------------------------


def test_power_of_two_is_uniform_when_nothing_is_in_flight() -> None:
    eps = endpoints(10)
    seen = counts(PowerOfTwo(seed=42), eps, 100_000)
    assert chi_square(seen, [ep.host for ep in eps]) < CHI2_9DF_P001
    assert max(seen.values()) / min(seen.values()) < 1.06


def test_power_of_two_prefers_fewer_in_flight() -> None:
    eps = endpoints(10)
    busy = FakeStats(in_flight={"10.0.0.0": 3, "10.0.0.1": 1})
    seen = counts(PowerOfTwo(seed=1), eps, 10_000, busy)
    assert seen["10.0.0.0"] == 0  # loses every comparison
    # 10.0.0.1 wins only when drawn with 10.0.0.0: one draw in 45.
    assert 150 < seen["10.0.0.1"] < 300
    two = endpoints(2)
    assert counts(PowerOfTwo(seed=1), two, 100, FakeStats(in_flight={"10.0.0.0": 1})) == {
        "10.0.0.1": 100
    }


def test_power_of_two_with_one_candidate() -> None:
    (only,) = endpoints(1)
    assert PowerOfTwo().choose((only,), None, FakeStats()) is only


# -- least response time ---------------------------------------------------------------------


def test_least_response_time_avoids_the_slow_endpoint() -> None:
    eps = endpoints(10)
    latency = {ep.host: 0.010 for ep in eps} | {"10.0.0.0": 0.500}
    seen = counts(LeastResponseTime(seed=1), eps, 10_000, FakeStats(latency=latency))
    assert seen["10.0.0.0"] == 0
    assert chi_square(seen, [ep.host for ep in eps[1:]]) < 27.88


def test_least_response_time_counts_in_flight_against_an_endpoint() -> None:
    a, b = endpoints(2)
    lrt = LeastResponseTime(seed=1)
    # a is twice as fast but has two requests out: cost 0.01 x 3 > 0.02 x 1.
    stats = FakeStats(latency={a.host: 0.01, b.host: 0.02}, in_flight={a.host: 2})
    assert {lrt.choose((a, b), None, stats).host for _ in range(50)} == {b.host}
    # Equal cost: fewer in flight wins (the tie-breaker).
    stats = FakeStats(latency={a.host: 0.0, b.host: 0.0}, in_flight={b.host: 1})
    assert {lrt.choose((a, b), None, stats).host for _ in range(50)} == {a.host}


def test_least_response_time_takes_an_unmeasured_endpoint_as_fast_as_its_rival() -> None:
    a, b = endpoints(2)
    lrt = LeastResponseTime(seed=1)
    # b has no measurement: it is not a free win (cost 0), it is compared by in flight.
    stats = FakeStats(latency={a.host: 0.05}, in_flight={b.host: 4})
    assert {lrt.choose((a, b), None, stats).host for _ in range(50)} == {a.host}


@pytest.mark.parametrize("decay", [0, -1.0, float("nan"), float("inf"), "10", True])
def test_least_response_time_rejects_a_bad_decay(decay: object) -> None:
    with pytest.raises(ConfigurationError, match=r"LeastResponseTime\.decay"):
        LeastResponseTime(decay=decay)  # type: ignore[arg-type]


# -- rendezvous hashing ------------------------------------------------------------------------


def owners(picker: RendezvousHash, eps: Sequence[Endpoint], keys: Sequence[Key]) -> list[str]:
    stats = FakeStats()
    return [picker.choose(eps, key, stats).host for key in keys]


KEYS = [f"user-{i}" for i in range(10_000)]


def test_rendezvous_sends_a_key_to_the_same_endpoint_whatever_the_order() -> None:
    eps = endpoints(10)
    shuffled = list(eps)
    random.Random(3).shuffle(shuffled)
    assert owners(RendezvousHash(), eps, KEYS[:2000]) == owners(
        RendezvousHash(), tuple(shuffled), KEYS[:2000]
    )


def test_rendezvous_spreads_keys_evenly() -> None:
    eps = endpoints(10)
    seen = Counter(owners(RendezvousHash(), eps, [f"k{i}" for i in range(100_000)]))
    assert chi_square(seen, [ep.host for ep in eps]) < CHI2_9DF_P001


def test_rendezvous_removing_an_endpoint_moves_only_its_keys() -> None:
    eps = endpoints(10)
    before = owners(RendezvousHash(), eps, KEYS)
    gone = eps[4].host
    after = owners(RendezvousHash(), eps[:4] + eps[5:], KEYS)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(before[i] == gone for i in moved)
    assert len(moved) == before.count(gone)
    assert 0.08 < len(moved) / len(KEYS) < 0.12  # about 1/10


def test_rendezvous_adding_an_endpoint_takes_about_one_nth_for_itself() -> None:
    eps = endpoints(11)
    before = owners(RendezvousHash(), eps[:10], KEYS)
    after = owners(RendezvousHash(), eps, KEYS)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(after[i] == eps[10].host for i in moved)
    assert 0.07 < len(moved) / len(KEYS) < 0.11  # about 1/11


def test_rendezvous_follows_a_statefulset_pod_to_its_new_address() -> None:
    # Behind a headless Service, db-1's keys stay with db-1 when its pod comes back
    # with a new IP: endpoints are named by hostname, not address.
    pods = tuple(Endpoint(host=f"10.0.0.{i}", port=5432, hostname=f"db-{i}") for i in range(5))
    before = owners(RendezvousHash(), pods, KEYS[:2000])
    moved = (pods[0], Endpoint(host="10.0.9.99", port=5432, hostname="db-1"), *pods[2:])
    after = owners(RendezvousHash(), moved, KEYS[:2000])
    assert [a if a != "10.0.9.99" else "10.0.0.1" for a in after] == before


def test_rendezvous_accepts_bytes_and_str_alike() -> None:
    eps = endpoints(10)
    r = RendezvousHash()
    assert owners(r, eps, ["abc", "é"]) == owners(r, eps, [b"abc", "é".encode()])


def test_rendezvous_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="needs a key"):
        RendezvousHash().choose(endpoints(3), None, FakeStats())


def test_rendezvous_answers_are_pinned() -> None:
    # Changing the hash changes which shard every key goes to, across a rolling
    # upgrade: these figures may change only on purpose.
    eps = endpoints(10)
    r = RendezvousHash()
    assert r.endpoint_hash(eps[0]) == PINNED_HASH
    assert owners(r, eps, ["alpha", "beta", "gamma", "delta"]) == PINNED_OWNERS


def test_rendezvous_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process; the picker's hash is not.
    code = (
        "from kdisco import Endpoint\n"
        "from kdisco._pickers import RendezvousHash\n"
        "eps = tuple(Endpoint(host=f'10.0.0.{i}', port=8080) for i in range(10))\n"
        "class S:\n    group = None\n"
        "r = RendezvousHash()\n"
        "print(','.join(r.choose(eps, f'user-{i}', S()).host for i in range(500)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert out.split(",") == owners(RendezvousHash(), endpoints(10), KEYS[:500])


#: BLAKE2b-64 of b"10.0.0.0:8080", little-endian.
PINNED_HASH = 0xCFE4F756F0DDBB5F
PINNED_OWNERS = ["10.0.0.9", "10.0.0.2", "10.0.0.5", "10.0.0.5"]
