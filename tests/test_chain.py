"""Chain semantics: order, misses, error precedence, retries and the shared deadline.

Every strategy here is scripted and every clock is fake: time moves only when a
strategy "does I/O" (advances the clock) or the retry policy sleeps.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kdisco import (
    AccessDenied,
    Attempt,
    Deadline,
    DiscoveryError,
    DiscoveryTimeout,
    DiscoveryUnavailable,
    Miss,
    NoReadyEndpoints,
    Outcome,
    PortNotFound,
    Query,
    Resolution,
    RetryPolicy,
    ServiceKind,
    ServiceNotFound,
    ServiceRef,
    Strategy,
    TransientError,
)
from kdisco._chain import MAX_EXTERNAL_NAME_HOPS, ChainRun, run_async, run_sync
from kdisco._names import parse_query
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.env import EnvStrategy
from tests._helpers_chain import FakeClock, Scripted, answer_for, burn, by_service, names

QUERY = parse_query(
    "payments.billing", namespace=None, default_namespace="default", cluster_domain="cluster.local"
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _run_async(
    strategies: Sequence[Strategy], query: Query, deadline: Deadline, policy: RetryPolicy
) -> Resolution:
    return asyncio.run(run_async(strategies, query, deadline, policy))


def run_chain(
    strategies: Sequence[Strategy], query: Query, deadline: Deadline, policy: RetryPolicy
) -> Resolution:
    raise AssertionError("replaced by the driver fixture")


@pytest.fixture(autouse=True, params=["sync", "async"])
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every scenario here runs through both drivers of the one ``ChainRun``."""
    chosen = run_sync if request.param == "sync" else _run_async
    monkeypatch.setattr(sys.modules[__name__], "run_chain", chosen)
    return str(request.param)


def run(
    strategies: list[Scripted],
    clock: FakeClock,
    *,
    timeout: float = 5.0,
    query: Query = QUERY,
    rng: float = 1.0,
) -> Resolution:
    policy = RetryPolicy(sleep=clock.sleep, rng=lambda: rng)
    chain: list[Strategy] = list(strategies)
    return run_chain(chain, query, Deadline(timeout, clock=clock), policy)


def fail(strategies: list[Scripted], clock: FakeClock, *, timeout: float = 5.0) -> DiscoveryError:
    with pytest.raises(DiscoveryError) as caught:
        run(strategies, clock, timeout=timeout)
    return caught.value


NOT_FOUND = Miss(Outcome.NOT_FOUND, "NXDOMAIN for payments.billing.svc.cluster.local.")
#: Cluster DNS's NXDOMAIN: it publishes every Service, so its "no" is decisive.
NXDOMAIN = Miss(
    Outcome.NOT_FOUND, "NXDOMAIN for payments.billing.svc.cluster.local.", decisive=True
)
NOT_APPLICABLE = Miss(Outcome.NOT_APPLICABLE, "not in a cluster")
NO_PORT = Miss(Outcome.NO_SUCH_PORT, "no port 'grpc' (ports: http=80)")
NO_READY = Miss(Outcome.NO_READY_ENDPOINTS, "3 endpoints, none ready")
DENIED = AccessDenied(
    "forbidden: needs 'get' on 'services' in namespace 'billing' (a Role rule: ...); "
    "the API said: User 'system:anonymous' cannot get services",
    verb="get",
    resource="services",
    namespace="billing",
)


# -- order ---------------------------------------------------------------------------


def test_first_answer_wins_and_later_strategies_are_not_called(clock: FakeClock) -> None:
    dns = Scripted("dns", NOT_FOUND)
    env = Scripted("env", answer_for(QUERY, "env"))
    api = Scripted("api", answer_for(QUERY, "api"))
    res = run([dns, env, api], clock)
    assert res.source == "env"
    assert (len(dns.calls), len(env.calls), len(api.calls)) == (1, 1, 0)
    assert clock.sleeps == []


def test_misses_are_recorded_in_order_with_their_reasons(clock: FakeClock) -> None:
    res = run(
        [
            Scripted("dns", NOT_APPLICABLE),
            Scripted("env", NOT_FOUND),
            Scripted("api", answer_for(QUERY, "api")),
        ],
        clock,
    )
    assert res.attempts == (
        Attempt(strategy="dns", outcome=Outcome.NOT_APPLICABLE, reason="not in a cluster"),
        Attempt(strategy="env", outcome=Outcome.NOT_FOUND, reason=NOT_FOUND.reason),
    )


def test_access_denied_is_recorded_and_the_next_strategy_still_answers(clock: FakeClock) -> None:
    api = Scripted("api", DENIED)
    res = run([api, Scripted("static", answer_for(QUERY, "static"))], clock)
    assert res.source == "static"
    assert len(api.calls) == 1  # never retried
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("api", Outcome.DENIED)]
    assert res.attempts[0].reason == DENIED.message


# -- the final error -------------------------------------------------------------------------

PRECEDENCE = [
    # (what each strategy does, the error expected)
    ([NOT_FOUND, DENIED, NO_PORT, NO_READY], NoReadyEndpoints),
    ([NO_READY, "timeout", "boom"], NoReadyEndpoints),
    ([NOT_FOUND, NO_PORT, DENIED], PortNotFound),
    ([DENIED, NOT_FOUND, "boom"], AccessDenied),
    ([NOT_FOUND, NOT_APPLICABLE, NOT_FOUND], ServiceNotFound),
    ([NOT_FOUND, "boom"], DiscoveryUnavailable),
    ([NOT_FOUND, "timeout"], DiscoveryTimeout),
    (["timeout", NOT_APPLICABLE, "boom"], DiscoveryTimeout),
    ([NOT_APPLICABLE, "boom"], DiscoveryUnavailable),
    ([NOT_APPLICABLE], DiscoveryUnavailable),
    # A decisive "no such Service" outranks a refusal (a typo is no missing Role rule)...
    ([NXDOMAIN, NOT_APPLICABLE, DENIED], ServiceNotFound),
    ([DENIED, NXDOMAIN], ServiceNotFound),
    # ... but not what is known about an existing Service, nor a strategy that could
    # not answer (then the refusal is the headline, as without the NXDOMAIN).
    ([NXDOMAIN, NO_READY], NoReadyEndpoints),
    ([NXDOMAIN, DENIED, "timeout"], AccessDenied),
    ([NXDOMAIN, "timeout"], DiscoveryTimeout),
]


def _scripted(index: int, what: object, clock: FakeClock) -> Scripted:
    name = f"s{index}"
    if what == "timeout":
        return Scripted(name, burn(clock, TransientError("timed out after 1.7 s")), clock=clock)
    if what == "boom":
        return Scripted(name, RuntimeError("boom"), clock=clock)
    return Scripted(name, what, clock=clock)


@pytest.mark.parametrize(("script", "expected"), PRECEDENCE)
def test_final_error_precedence(
    clock: FakeClock, script: list[object], expected: type[DiscoveryError]
) -> None:
    strategies = [_scripted(i, what, clock) for i, what in enumerate(script)]
    err = fail(strategies, clock)
    assert type(err) is expected
    assert err.service == QUERY.service
    # Data and message both account for every strategy.
    assert [a.strategy for a in err.attempts] == [s.name for s in strategies]
    text = str(err)
    for attempt in err.attempts:
        assert attempt.describe() in text


def test_service_not_found_message_names_service_and_reasons(clock: FakeClock) -> None:
    err = fail([Scripted("dns", NOT_FOUND), Scripted("api", Miss(Outcome.NOT_FOUND, "404"))], clock)
    assert isinstance(err, ServiceNotFound)
    assert str(err) == (
        "payments.billing (payments.billing.svc.cluster.local.) not found\n"
        "  tried:\n"
        "    dns: not found (NXDOMAIN for payments.billing.svc.cluster.local.)\n"
        "    api: not found (404)"
    )
    # Misses only: there is no exception to chain.
    assert err.__cause__ is None


def test_access_denied_keeps_the_missing_permission(clock: FakeClock) -> None:
    err = fail([Scripted("dns", NOT_FOUND), Scripted("api", DENIED)], clock)
    assert isinstance(err, AccessDenied)
    assert (err.verb, err.resource, err.namespace, err.status) == (
        "get",
        "services",
        "billing",
        403,
    )
    assert err.__cause__ is DENIED
    assert len(err.attempts) == 2


def test_access_denied_headline_names_the_one_missing_permission(clock: FakeClock) -> None:
    err = fail([Scripted("dns", NOT_FOUND), Scripted("api", DENIED)], clock)
    assert err.message == (
        "payments.billing (payments.billing.svc.cluster.local.): "
        "forbidden: needs 'get' on 'services' in namespace 'billing' (a Role rule: ...)"
    )
    # The API's own words stay in the attempt, once.
    assert str(err).count("User 'system:anonymous' cannot get") == 1


def test_nxdomain_and_a_refusal_is_not_found_naming_both(clock: FakeClock) -> None:
    err = fail([Scripted("dns", NXDOMAIN), Scripted("api", DENIED)], clock)
    assert isinstance(err, ServiceNotFound)
    assert err.message == (
        "payments.billing (payments.billing.svc.cluster.local.) not found (dns says so; "
        "the API could not check: needs 'get' on 'services' in namespace 'billing')"
    )


def test_not_found_names_the_namespace_where_the_name_exists(clock: FakeClock) -> None:
    api = Miss(
        Outcome.NOT_FOUND,
        "the API has no Service 'payments' in namespace 'billing'",
        decisive=True,
        elsewhere=("payments-prod", "finance"),
    )
    err = fail([Scripted("dns", NXDOMAIN), Scripted("api", api)], clock)
    assert isinstance(err, ServiceNotFound)
    assert err.message == (
        "payments.billing (payments.billing.svc.cluster.local.) not found in namespace "
        "'billing', but a Service 'payments' exists in namespace 'finance', "
        "'payments-prod': ask for payments.finance"
    )


def test_no_strategies(clock: FakeClock) -> None:
    err = fail([], clock)
    assert type(err) is DiscoveryUnavailable
    assert "no strategies configured" in str(err)


# -- errors that are not answers ------------------------------------------------------------


def test_non_transient_exception_is_recorded_once_and_chained(clock: FakeClock) -> None:
    boom = ValueError("unexpected field 'spec.ports'")
    api = Scripted("api", boom)
    err = fail([Scripted("dns", NOT_FOUND), api], clock)
    assert len(api.calls) == 1
    assert clock.sleeps == []
    assert err.attempts[1] == Attempt(
        strategy="api",
        outcome=Outcome.FAILED,
        reason="ValueError: unexpected field 'spec.ports'",
    )
    assert err.__cause__ is boom


def test_earlier_failure_stays_the_cause_after_a_later_miss(clock: FakeClock) -> None:
    boom = RuntimeError("socket closed")
    err = fail([Scripted("dns", boom), Scripted("env", NOT_FOUND)], clock)
    assert type(err) is DiscoveryUnavailable
    assert err.__cause__ is boom


def test_failure_before_an_answer_shows_in_its_attempts(clock: FakeClock) -> None:
    res = run(
        [Scripted("dns", OSError("no route")), Scripted("api", answer_for(QUERY, "api"))], clock
    )
    assert res.attempts == (
        Attempt(strategy="dns", outcome=Outcome.FAILED, reason="OSError: no route"),
    )


@pytest.mark.parametrize("returned", ["10.0.0.1", None, {"host": "10.0.0.1"}])
def test_strategy_returning_something_else_fails(clock: FakeClock, returned: object) -> None:
    err = fail([Scripted("custom", returned)], clock)
    assert type(err) is DiscoveryUnavailable
    (attempt,) = err.attempts
    assert attempt.outcome is Outcome.FAILED
    assert f"returned {type(returned).__name__}, not a Resolution or Miss" in attempt.reason
    assert isinstance(err.__cause__, TypeError)


# -- retries ------------------------------------------------------------------------


def test_transient_errors_are_retried_with_exponential_backoff(clock: FakeClock) -> None:
    flaky = Scripted(
        "api",
        TransientError("HTTP 503"),
        TransientError("HTTP 503"),
        TransientError("connection reset"),
        answer_for(QUERY, "api"),
    )
    res = run([flaky], clock, rng=1.0)
    assert res.source == "api"
    assert len(flaky.calls) == 4
    assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2])


def test_backoff_is_jittered_and_capped() -> None:
    draws = iter([0.0, 0.5, 0.25, 1.0])
    policy = RetryPolicy(initial=0.1, maximum=0.3, rng=lambda: next(draws))
    # ceilings 0.1, 0.2, 0.3 (capped from 0.4), 0.3; each wait is ceiling * a random draw.
    assert [policy.wait_for(n) for n in (1, 2, 3, 10)] == pytest.approx([0.0, 0.1, 0.075, 0.3])


def test_jitter_comes_from_the_policy_rng(clock: FakeClock) -> None:
    draws = iter([0.5, 0.1])
    flaky = Scripted("api", TransientError("x"), TransientError("x"), answer_for(QUERY, "api"))
    run_chain(
        [flaky],
        QUERY,
        Deadline(5.0, clock=clock),
        RetryPolicy(sleep=clock.sleep, rng=lambda: next(draws)),
    )
    assert clock.sleeps == pytest.approx([0.025, 0.01])


def test_retries_stay_inside_the_strategy_share(clock: FakeClock) -> None:
    # A dead DNS server: each try waits 0.3 s for nothing.
    dns = Scripted("dns", TransientError("DNS timeout"), clock=clock, cost=0.3)
    api = Scripted("api", answer_for(QUERY, "api"), clock=clock)
    start = clock.now
    res = run([dns, api], clock, timeout=2.0)
    share_end = start + 1.0
    assert len(dns.calls) > 1  # it was retried...
    for began, length in clock.naps:
        assert began + length <= share_end + 1e-9  # ...but no sleep ran past its share
    assert api.calls[0].remaining >= 1.0 - 1e-9
    assert res.source == "api"
    assert res.attempts[0].outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
    assert res.attempts[0].tries == len(dns.calls)
    assert "DNS timeout" in res.attempts[0].reason


def test_dead_dns_leaves_env_and_api_their_turn(clock: FakeClock) -> None:
    dns = Scripted("dns", burn(clock, TransientError("DNS timeout")), clock=clock)
    env = Scripted("env", NOT_FOUND, clock=clock)
    api = Scripted("api", answer_for(QUERY, "api"), clock=clock)
    res = run([dns, env, api], clock, timeout=3.0)
    assert res.source == "api"
    # dns gets a third; env half of what is left; api everything that remains.
    assert [c.remaining for c in (dns.calls[0], env.calls[0], api.calls[0])] == pytest.approx(
        [1.0, 1.0, 2.0]
    )
    dns_attempt = res.attempts[0]
    assert (dns_attempt.strategy, dns_attempt.outcome) == ("dns", Outcome.TIMED_OUT)
    assert "share of the deadline" in dns_attempt.reason
    assert clock.elapsed <= 3.0 * 1.1


def test_everything_dead_still_ends_within_the_deadline(clock: FakeClock) -> None:
    strategies = [
        Scripted(name, TransientError(f"{name} down"), clock=clock, cost=0.35)
        for name in ("dns", "env", "api")
    ]
    err = fail(strategies, clock, timeout=5.0)
    assert clock.elapsed <= 5.0 * 1.1
    assert [a.strategy for a in err.attempts] == ["dns", "env", "api"]
    assert all(a.tries > 1 for a in err.attempts)
    assert all(len(s.calls) > 1 for s in strategies)
    assert isinstance(err.__cause__, TransientError)


def test_deadline_gone_before_a_turn_is_timed_out_with_no_tries(clock: FakeClock) -> None:
    # A strategy that ignores its deadline and blocks past the whole call's budget.
    def overrun(_query: Query, _deadline: Deadline) -> object:
        clock.advance(10.0)
        return NOT_FOUND

    env = Scripted("env", NOT_FOUND)
    api = Scripted("api", answer_for(QUERY, "api"))
    err = fail([Scripted("dns", overrun), env, api], clock, timeout=5.0)
    assert type(err) is DiscoveryTimeout
    assert (env.calls, api.calls) == ([], [])
    assert err.attempts[1:] == (
        Attempt(
            strategy="env",
            outcome=Outcome.TIMED_OUT,
            reason="deadline passed before its turn",
            tries=0,
        ),
        Attempt(
            strategy="api",
            outcome=Outcome.TIMED_OUT,
            reason="deadline passed before its turn",
            tries=0,
        ),
    )
    assert "before the deadline" in str(err)


def test_chain_run_hands_out_equal_shares(clock: FakeClock) -> None:
    strategies: list[Strategy] = [Scripted(n, NOT_FOUND) for n in ("a", "b", "c", "d")]
    run_state = ChainRun(strategies, QUERY, Deadline(4.0, clock=clock))
    step = run_state.next_step()
    assert step is not None
    assert step.strategy is strategies[0]
    assert step.deadline.remaining() == pytest.approx(1.0)
    clock.advance(0.25)  # finished early: the rest is shared by the other three
    run_state.record_result(step, NOT_FOUND, tries=1)
    step = run_state.next_step()
    assert step is not None
    assert step.deadline.remaining() == pytest.approx(3.75 / 3)


# -- ExternalName ----------------------------------------------------------------------


def test_external_name_into_the_cluster_is_followed(clock: FakeClock) -> None:
    api = Scripted(
        "api",
        by_service(
            "api",
            {"payments.billing": "payments.core.svc.cluster.local.", "payments.core": None},
        ),
    )
    res = run([Scripted("dns", Miss(Outcome.NOT_APPLICABLE, "outside")), api], clock)
    assert res.service == ServiceRef(name="payments", namespace="core")
    assert res.kind is ServiceKind.CLUSTER_IP
    assert names(res.via) == ["payments.billing"]
    assert [str(c.query.service) for c in api.calls] == ["payments.billing", "payments.core"]
    following = [a for a in res.attempts if a.outcome is Outcome.ANSWERED]
    assert len(following) == 1
    assert "payments.billing -> payments.core" in following[0].reason


def test_following_keeps_the_port_and_restarts_the_chain(clock: FakeClock) -> None:
    query = parse_query(
        "front.web:http",
        namespace=None,
        default_namespace="default",
        cluster_domain="cluster.local",
    )
    dns = Scripted("dns", by_service("dns", {"front.web": "back.web.svc.cluster.local"}))
    api = Scripted("api", by_service("api", {"back.web": None}))
    policy = RetryPolicy(sleep=clock.sleep)
    res = run_chain([dns, api], query, Deadline(5.0, clock=clock), policy)
    assert res.source == "api"
    # After the hop every strategy gets its turn again, with the same port asked for.
    assert [str(c.query.service) for c in dns.calls] == ["front.web", "back.web"]
    assert {c.query.port for c in dns.calls + api.calls} == {"http"}


@pytest.mark.parametrize(
    ("table", "chain"),
    [
        (
            {"payments.billing": "payments.billing.svc.cluster.local"},
            "payments.billing -> payments.billing",
        ),
        (
            {
                "payments.billing": "a.billing.svc.cluster.local",
                "a.billing": "payments.billing.svc.cluster.local",
            },
            "payments.billing -> a.billing -> payments.billing",
        ),
    ],
)
def test_external_name_loop_is_detected(
    clock: FakeClock, table: dict[str, str | None], chain: str
) -> None:
    api = Scripted("api", by_service("api", table))
    err = fail([api], clock)
    assert type(err) is DiscoveryUnavailable
    assert f"ExternalName loop: {chain}" in str(err)
    assert len(api.calls) == chain.count("->")


def hops(count: int) -> dict[str, str | None]:
    """s0 -> s1 -> ... -> s<count>, each an ExternalName, the last a ClusterIP."""
    table: dict[str, str | None] = {
        f"s{i}.ns": f"s{i + 1}.ns.svc.cluster.local" for i in range(count)
    }
    table[f"s{count}.ns"] = None
    return table


def test_external_name_hops_up_to_the_limit_are_followed(clock: FakeClock) -> None:
    query = parse_query(
        "s0.ns", namespace=None, default_namespace="d", cluster_domain="cluster.local"
    )
    api = Scripted("api", by_service("api", hops(MAX_EXTERNAL_NAME_HOPS)))
    res = run([api], clock, query=query)
    assert str(res.service) == f"s{MAX_EXTERNAL_NAME_HOPS}.ns"
    assert names(res.via) == [f"s{i}.ns" for i in range(MAX_EXTERNAL_NAME_HOPS)]


def test_external_name_too_many_hops(clock: FakeClock) -> None:
    query = parse_query(
        "s0.ns", namespace=None, default_namespace="d", cluster_domain="cluster.local"
    )
    api = Scripted("api", by_service("api", hops(MAX_EXTERNAL_NAME_HOPS + 1)))
    with pytest.raises(DiscoveryUnavailable) as caught:
        run([api], clock, query=query)
    text = str(caught.value)
    assert "too many hops" in text
    assert " -> ".join(f"s{i}.ns" for i in range(MAX_EXTERNAL_NAME_HOPS + 2)) in text


@pytest.mark.parametrize(
    "external",
    [
        "db.example.com",
        # A Service name, but of another cluster's domain: not ours to follow.
        "payments.core.svc.other.example",
        # Looks in-cluster but is not svc.ns.svc.<domain>.
        "payments.svc.cluster.local",
    ],
)
def test_external_name_outside_the_cluster_is_returned_as_is(
    clock: FakeClock, external: str
) -> None:
    api = Scripted(
        "api", answer_for(QUERY, "api", kind=ServiceKind.EXTERNAL_NAME, external_name=external)
    )
    res = run([api], clock)
    assert res.kind is ServiceKind.EXTERNAL_NAME
    assert res.external_name == external
    assert res.endpoints[0].host == external
    assert res.via == ()
    assert len(api.calls) == 1


def test_strategies_that_cannot_apply_take_no_share_of_the_deadline(tmp_path: Path) -> None:
    # Not in a pod and no kubeconfig: env and api say so up front, so the one strategy
    # that can apply gets the whole deadline, not a third of it (issue 10, item 16).
    seen: list[float] = []

    class Recording:
        name = "dns"

        def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
            seen.append(deadline.remaining())
            return Miss(Outcome.NOT_FOUND, "no")

    env = EnvStrategy({}, namespace="default")
    api = ApiStrategy(serviceaccount_dir=tmp_path, environ={})
    assert env.not_applicable is not None
    assert api.not_applicable is not None
    clock = FakeClock()
    with pytest.raises(ServiceNotFound):
        run_chain([Recording(), env, api], QUERY, Deadline(2.0, clock=clock), RetryPolicy())
    assert seen == [pytest.approx(2.0)]


def test_an_answer_after_the_deadline_is_a_timeout_not_an_answer() -> None:
    # A strategy that overran the deadline (a huge response still being parsed when
    # time ran out) must not hand the caller an answer it stopped waiting for.
    clock = FakeClock()
    slow = Scripted("api", burn_then(clock, 3.0, answer_for(QUERY, "api")), clock=clock)
    with pytest.raises(DiscoveryTimeout) as info:
        run_chain([slow], QUERY, Deadline(2.0, clock=clock), RetryPolicy(sleep=clock.sleep))
    (attempt,) = info.value.attempts
    assert attempt.outcome is Outcome.TIMED_OUT
    assert "after the deadline" in attempt.reason


def burn_then(
    clock: FakeClock, seconds: float, then: object
) -> Callable[[Query, Deadline], object]:
    def step(query: Query, deadline: Deadline) -> object:
        clock.advance(seconds)
        return then

    return step
