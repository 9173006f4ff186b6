"""The chain: try strategies in order under one deadline, retry what is transient.

All decisions live in ``ChainRun``, a state object with no I/O of its own. Two thin
drivers loop around it: ``run_sync`` calls each strategy's ``lookup`` and sleeps its
backoff; ``run_async`` awaits each strategy's ``alookup`` (or runs a sync-only
strategy's ``lookup`` in a worker thread) and sleeps its backoff with ``asyncio.sleep``. So the
logic is never copied, and the same scenarios are tested through both. The chain
knows strategies only by the ``Strategy`` contract.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._attempts import Attempt, Outcome
from ._deadline import Deadline
from ._exceptions import (
    API_SAID,
    AccessDenied,
    DiscoveryError,
    DiscoveryTimeout,
    DiscoveryUnavailable,
    NoReadyEndpoints,
    NotReachable,
    PortNotFound,
    ServiceNotFound,
    TransientError,
)
from ._models import Freshness, Resolution, ServiceKind
from ._names import Query, in_cluster_target
from ._policies import RetryPolicy
from ._service_ref import ServiceRef
from ._strategies.base import Miss, Strategy

if TYPE_CHECKING:
    import tenacity

#: A strategy's lookup as the async driver calls it.
ALookup = Callable[[Query, Deadline], Awaitable[object]]

#: How many ExternalName hops into the cluster are followed before giving up.
MAX_EXTERNAL_NAME_HOPS = 5


#: What the async driver says of a strategy it had to run in a worker thread.
IN_A_THREAD = "sync-only strategy: run in a worker thread"
#: How long past its share the async driver lets a strategy's turn run before it
#: cancels it. Strategies keep their deadlines themselves; this only stops one that
#: does not from holding the caller.
_GRACE = 0.05


def _retrying(policy: RetryPolicy, deadline: Deadline, *, asynchronous: bool = False) -> Any:
    # Imported here, not at the top: processes whose every answer comes from a cache
    # or a first-try success should not pay for loading tenacity at start-up.
    import tenacity

    def stop(state: tenacity.RetryCallState) -> bool:
        # Never start a sleep that would end past the deadline: the next strategy
        # in the chain is owed that time.
        return deadline.remaining() <= state.upcoming_sleep

    def wait(state: tenacity.RetryCallState) -> float:
        return policy.wait_for(state.attempt_number)

    retry = tenacity.retry_if_exception_type(TransientError)
    if asynchronous:
        return tenacity.AsyncRetrying(
            retry=retry, wait=wait, stop=stop, sleep=_async_sleep(policy), reraise=True
        )
    return tenacity.Retrying(retry=retry, wait=wait, stop=stop, sleep=policy.sleep, reraise=True)


def _async_sleep(policy: RetryPolicy) -> Callable[[float], Awaitable[None]]:
    """``asyncio.sleep`` for the real clock; a sleep injected for tests (which moves a
    fake clock and returns at once) is called as it is."""
    import asyncio

    if policy.sleep is time.sleep:
        return asyncio.sleep
    injected = policy.sleep

    async def sleep(seconds: float) -> None:
        injected(seconds)
        await asyncio.sleep(0)

    return sleep


@attrs.define
class Step:
    strategy: Strategy
    query: Query
    deadline: Deadline
    #: The view the strategy's answer gives: "cluster", "external", or None when the
    #: strategy does not say (its answers are taken as they are).
    view: str | None = None


@attrs.frozen
class Turn:
    """One place in the chain's order: a strategy, and the view it is asked for
    (None: a strategy without ``views``, asked once; "skip": one that cannot give the
    view asked for, whose attempt says so)."""

    strategy: Strategy
    reach: str
    view: str | None


#: What an attempt says of its view, for a strategy asked for both.
VIEW_NOTES = {
    "external": "looking for a way in from outside the cluster",
    "cluster": "the cluster-internal view",
}
#: Why a strategy that knows only cluster addresses is not asked for reach="external".
CLUSTER_ONLY = "gives cluster-internal addresses only, and reach='external' was asked for"
#: The note on a cluster-internal answer given to a caller outside the cluster.
OUTSIDE_WARNING = (
    "cluster-internal addresses ({what}), and this process runs outside the cluster "
    "(no KUBERNETES_SERVICE_HOST, no service-account token): they work only from the "
    "cluster's network; reach='external' (KDISCO_REACH=external) answers with a "
    "LoadBalancer address, node port or Ingress URL instead"
)


def views(strategy: Strategy) -> tuple[str, ...] | None:
    """The views ``strategy`` says it gives (its optional ``views``), or None."""
    given = getattr(strategy, "views", None)
    return tuple(given) if isinstance(given, tuple | list) else None


def turns(strategies: Sequence[Strategy], reach: str) -> tuple[Turn, ...]:
    """The chain's order for a caller's ``reach``.

    ``cluster``: each strategy in order, for the cluster view. ``external``: each in
    order for the external view, those that know only the cluster's skipped (with an
    attempt that says so). ``auto`` (a caller outside the cluster): first every
    strategy that can give the external view, then those that give the cluster's, so
    a way in from outside wins and a cluster address (with a warning) is the fallback.
    """
    out: list[Turn] = []
    if reach == "cluster":
        return tuple(Turn(s, "cluster", "cluster" if views(s) else None) for s in strategies)
    for s in strategies:
        given = views(s)
        if given is None:
            out.append(Turn(s, "external", None))
        elif "external" in given:
            out.append(Turn(s, "external", "external"))
        elif reach == "external":
            out.append(Turn(s, "external", "skip"))
    if reach == "auto":
        asked = {id(t.strategy) for t in out}
        out.extend(
            Turn(s, "cluster", "cluster")
            for s in strategies
            if "cluster" in (views(s) or ())
            # One that cannot apply here says so once, not once per view.
            and not (id(s) in asked and not_applicable(s) is not None)
        )
    return tuple(out)


class ChainRun:
    """Everything one discovery decides, without doing any I/O.

    ``outside``: the caller runs outside the cluster, so a cluster-internal answer
    carries a warning in its attempts.
    """

    def __init__(
        self,
        strategies: Sequence[Strategy],
        query: Query,
        deadline: Deadline,
        *,
        outside: bool = False,
    ) -> None:
        self._turns = turns(strategies, query.reach)
        self._outside = outside
        self._deadline = deadline
        self._query = query
        self._index = 0
        self._attempts: list[Attempt] = []
        self._errors: dict[int, BaseException] = {}
        self._via: list[ServiceRef] = []
        self._hops: list[Resolution] = []
        self._seen = {query.service}
        self._answer: Resolution | None = None
        self._last_error: BaseException | None = None
        #: The misses met on the way, for the error's headline.
        self._misses: list[tuple[str, Miss]] = []

    @property
    def query(self) -> Query:
        return self._query

    def next_step(self) -> Step | None:
        if self._answer is not None:
            return None
        while self._index < len(self._turns) and self._turns[self._index].view == "skip":
            self._attempts.append(
                Attempt(
                    strategy=self._turns[self._index].strategy.name,
                    outcome=Outcome.NOT_APPLICABLE,
                    reason=CLUSTER_ONLY,
                )
            )
            self._index += 1
        if self._index >= len(self._turns):
            return None
        if self._deadline.expired():
            for turn in self._turns[self._index :]:
                self._attempts.append(
                    Attempt(
                        strategy=turn.strategy.name,
                        outcome=Outcome.TIMED_OUT,
                        reason="deadline passed before its turn",
                        tries=0,
                    )
                )
            self._index = len(self._turns)
            return None
        turn = self._turns[self._index]
        # Each strategy that may apply gets an equal share of what is left, and the
        # last one all of it; a strategy that finishes early hands its unused time on.
        # This keeps a dead DNS server from starving env and api of their turn, and a
        # strategy that says up front it cannot apply here (not in a pod, no
        # kubeconfig) takes no share from the others.
        left = sum(
            1
            for t in self._turns[self._index :]
            if t.view != "skip" and not_applicable(t.strategy) is None
        )
        share = self._deadline.remaining() / max(left, 1)
        query = self._query
        if query.reach != turn.reach:
            query = attrs.evolve(query, reach=turn.reach)
        return Step(turn.strategy, query, self._deadline.slice(share), turn.view)

    def record_result(
        self, step: Step, result: object, tries: int, note: str | None = None
    ) -> None:
        """``note``: how the strategy was run, when the attempts should say so."""
        if isinstance(result, Resolution) and self._deadline.expired():
            # An answer the caller no longer waits for is not an answer: the deadline
            # is a promise to the caller, and a strategy that overran it (a huge
            # response parsed after the last byte came in) has broken it.
            error = TransientError("its answer came after the deadline had passed")
            self.record_error(step, error, tries, note)
            return
        if not isinstance(result, Resolution | Miss):
            wrong = TypeError(
                f"strategy {step.strategy.name!r} returned {type(result).__name__}, "
                "not a Resolution or Miss"
            )
            self.record_error(step, wrong, tries, note)
            return
        self._index += 1
        if isinstance(result, Miss):
            self._misses.append((step.strategy.name, result))
            self._attempts.append(
                Attempt(
                    strategy=step.strategy.name,
                    outcome=result.outcome,
                    reason=_noted(
                        result.reason,
                        # "No route from outside" already says which view it was.
                        note
                        if result.outcome is Outcome.NO_EXTERNAL_ROUTE
                        else self._view_noted(step, note),
                    ),
                    tries=tries,
                )
            )
            return
        fresh = result.freshness
        if fresh is None or fresh.fetched_at is None:
            # Stamped with the chain's clock, the one the cache and watch read.
            clock = self._deadline.clock
            result = attrs.evolve(
                result,
                freshness=attrs.evolve(fresh or Freshness(), clock=clock, fetched_at=clock()),
            )
        if (
            step.view == "cluster"
            and result.reach is None
            and result.kind is not ServiceKind.EXTERNAL_NAME
        ):
            result = attrs.evolve(result, reach="cluster")
        target = self._in_cluster_target(result)
        if target is None:
            if note is not None:
                self._attempts.append(
                    Attempt(
                        strategy=step.strategy.name,
                        outcome=Outcome.ANSWERED,
                        reason=note,
                        tries=tries,
                    )
                )
            if self._outside and result.reach == "cluster":
                self._attempts.append(_outside_warning(step.strategy.name, _kind_of(result)))
            self._answer = _combine(
                [*self._hops, result], tuple(self._attempts), tuple(self._via), self._deadline.clock
            )
            return
        self._hops.append(result)
        self._attempts.append(
            Attempt(
                strategy=step.strategy.name,
                outcome=Outcome.ANSWERED,
                reason=_noted(f"ExternalName {result.service} -> {target}; following it", note),
                tries=tries,
            )
        )
        if target in self._seen or len(self._via) >= MAX_EXTERNAL_NAME_HOPS:
            problem = "loop" if target in self._seen else "too many hops"
            self._last_error = DiscoveryUnavailable(
                f"ExternalName {problem}: "
                + " -> ".join(str(s) for s in [*self._via, result.service, target]),
                service=self._query.service,
                attempts=tuple(self._attempts),
            )
            self._index = len(self._turns)
            return
        self._seen.add(target)
        self._via.append(result.service)
        self._query = attrs.evolve(self._query, service=target)
        self._index = 0

    def record_error(
        self, step: Step, error: BaseException, tries: int, note: str | None = None
    ) -> None:
        note = self._view_noted(step, note)
        self._index += 1
        self._last_error = error
        if isinstance(error, AccessDenied):
            outcome, reason = Outcome.DENIED, error.message
        elif step.deadline.expired():
            outcome = Outcome.TIMED_OUT
            reason = f"its share of the deadline ran out; last error: {_describe(error)}"
        else:
            outcome, reason = Outcome.FAILED, _describe(error)
        self._errors[len(self._attempts)] = error
        self._attempts.append(
            Attempt(
                strategy=step.strategy.name,
                outcome=outcome,
                reason=_noted(reason, note),
                tries=tries,
            )
        )

    def _view_noted(self, step: Step, note: str | None) -> str | None:
        """A strategy asked for two views (reach "auto" outside the cluster) says which
        view each of its attempts was for: the same name twice reads as a repeat.
        (Counted only for an attempt that is recorded, not on every lookup.)"""
        if step.view not in VIEW_NOTES:
            return note
        if sum(1 for t in self._turns if t.strategy is step.strategy) < 2:
            return note
        return VIEW_NOTES[step.view] if note is None else f"{note}; {VIEW_NOTES[step.view]}"

    def result(self) -> Resolution:
        if self._answer is not None:
            return self._answer
        error = self._final_error()
        if error is self._last_error:
            raise error
        raise error from self._last_error

    def _in_cluster_target(self, result: Resolution) -> ServiceRef | None:
        if result.kind is not ServiceKind.EXTERNAL_NAME:
            return None
        return in_cluster_target(result.external_name, result.service.cluster_domain)

    def _final_error(self) -> BaseException:
        if isinstance(self._last_error, DiscoveryUnavailable):
            return self._last_error
        attempts = tuple(self._attempts)
        service = self._query.service
        outcomes = {a.outcome for a in attempts}
        what = f"{service} ({service.fqdn})"
        if Outcome.NO_READY_ENDPOINTS in outcomes:
            return NoReadyEndpoints(
                f"{what} exists but has no ready endpoints", service=service, attempts=attempts
            )
        if Outcome.NO_SUCH_PORT in outcomes:
            return PortNotFound(
                f"{what} has no {self._query.describe_port()}",
                service=service,
                attempts=attempts,
            )
        if Outcome.NO_EXTERNAL_ROUTE in outcomes:
            return NotReachable(
                f"{what} exists, but nothing routes to it from outside the cluster",
                service=service,
                attempts=attempts,
            )
        decisive = [name for name, m in self._misses if m.decisive]
        if decisive and not outcomes & {Outcome.TIMED_OUT, Outcome.FAILED}:
            # A source that publishes every Service says there is none: that outranks
            # another strategy's refusal (a typo is not a missing Role rule).
            headline = self._not_found(what)
            refused = [e for e in self._errors.values() if isinstance(e, AccessDenied)]
            if refused:
                headline += (
                    f" ({' and '.join(dict.fromkeys(decisive))} says so; the API could not "
                    f"check: {refused[0].permission})"
                )
            return ServiceNotFound(headline, service=service, attempts=attempts)
        if Outcome.DENIED in outcomes:
            denied = next(e for e in self._errors.values() if isinstance(e, AccessDenied))
            return AccessDenied(
                # The refusal and the rule that fixes it; the API's own words (long,
                # and quoting the user) stay in the attempt.
                f"{what}: {denied.message.partition(API_SAID)[0]}",
                verb=denied.verb,
                resource=denied.resource,
                namespace=denied.namespace,
                status=denied.status,
                service=service,
                attempts=attempts,
            )
        if Outcome.NOT_FOUND in outcomes and not outcomes & {Outcome.TIMED_OUT, Outcome.FAILED}:
            return ServiceNotFound(self._not_found(what), service=service, attempts=attempts)
        if Outcome.TIMED_OUT in outcomes:
            return DiscoveryTimeout(
                f"no answer for {what} before the deadline", service=service, attempts=attempts
            )
        if not attempts:
            return DiscoveryUnavailable(
                "no strategies configured", service=service, attempts=attempts
            )
        return DiscoveryUnavailable(
            f"no strategy could answer for {what}", service=service, attempts=attempts
        )

    def _not_found(self, what: str) -> str:
        """ "Not found", and where the same name does exist when a strategy saw it."""
        service = self._query.service
        elsewhere = sorted({ns for _, m in self._misses for ns in m.elsewhere})
        if not elsewhere:
            return f"{what} not found"
        where = ", ".join(repr(ns) for ns in elsewhere)
        return (
            f"{what} not found in namespace {service.namespace!r}, but a Service "
            f"{service.name!r} exists in namespace {where}: ask for "
            f"{service.name}.{elsewhere[0]}"
        )


@functools.lru_cache(maxsize=64)
def _outside_warning(strategy: str, what: str) -> Attempt:
    # One value per (strategy, kind): every uncached answer outside a cluster has
    # one, and building (and redacting) it anew each time is wasted work.
    return Attempt(
        strategy=strategy, outcome=Outcome.WARNING, reason=OUTSIDE_WARNING.format(what=what)
    )


def _kind_of(result: Resolution) -> str:
    """What a cluster-internal answer's addresses are, for the warning."""
    if result.kind is ServiceKind.HEADLESS or (
        result.kind is not ServiceKind.UNKNOWN and any(ep.pod for ep in result.endpoints)
    ):
        return "pod IPs"
    return f"the ClusterIP of a {result.kind.value} Service"


def not_applicable(strategy: Strategy) -> str | None:
    """Why ``strategy`` cannot apply here at all, if it says so (optional in the
    contract: a ``not_applicable`` attribute or property, None when it may apply)."""
    reason = getattr(strategy, "not_applicable", None)
    return reason if isinstance(reason, str) else None


def _combine(
    hops: list[Resolution],
    attempts: tuple[Attempt, ...],
    via: tuple[ServiceRef, ...],
    clock: Callable[[], float],
) -> Resolution:
    """The final answer; after ExternalName hops it holds only as long as every hop."""
    final = hops[-1]
    if len(hops) == 1:
        return attrs.evolve(final, attempts=attempts, via=via)
    freshness = [h.freshness or Freshness(clock=clock) for h in hops]
    # A hop with neither a TTL nor a validity check cannot be cached: neither can the
    # answer built on it.
    if any(h.ttl is None and f.valid is None for h, f in zip(hops, freshness, strict=True)):
        ttl, valid = None, None
    else:
        ttls = [h.ttl for h in hops if h.ttl is not None]
        ttl = min(ttls) if ttls else None
        checks = [f.valid for f in freshness if f.valid is not None]
        valid = None if not checks else (lambda: all(c() for c in checks))
    return attrs.evolve(
        final,
        attempts=attempts,
        via=via,
        ttl=ttl,
        # The oldest knowledge among the hops, on the chain's clock.
        freshness=Freshness(clock=clock, fetched_at=min(f.since() for f in freshness), valid=valid),
    )


def _noted(reason: str, note: str | None) -> str:
    return reason if note is None else f"{reason}; {note}"


def _describe(error: BaseException) -> str:
    if isinstance(error, DiscoveryError | TransientError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_sync(
    strategies: Sequence[Strategy],
    query: Query,
    deadline: Deadline,
    retry: RetryPolicy,
    *,
    outside: bool = False,
) -> Resolution:
    """Drive one discovery to an answer or to the error that explains why there is none."""
    run = ChainRun(strategies, query, deadline, outside=outside)
    while (step := run.next_step()) is not None:
        result, error, tries = _try_sync(step, retry)
        if error is not None:
            run.record_error(step, error, tries)
        else:
            run.record_result(step, result, tries)
    return run.result()


def _try_sync(step: Step, retry: RetryPolicy) -> tuple[object, BaseException | None, int]:
    """One strategy's turn: (result, None, tries) or (None, error, tries).

    The first try is a plain call: most turns end there, and they need not pay for
    the retry machinery. Only a transient failure hands over to tenacity, which
    retries it with backoff inside the step's deadline.
    """
    try:
        return step.strategy.lookup(step.query, step.deadline), None, 1
    except TransientError as exc:
        first: BaseException = exc
    except Exception as exc:
        return None, exc, 1
    retrying = _retrying(retry, step.deadline)
    calls = 0

    def attempt() -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise first  # the try already made, so tenacity counts and waits from it
        return step.strategy.lookup(step.query, step.deadline)

    try:
        result = retrying(attempt)
    except Exception as exc:
        return None, exc, retrying.statistics.get("attempt_number", calls)
    return result, None, retrying.statistics.get("attempt_number", calls)


async def run_async(
    strategies: Sequence[Strategy],
    query: Query,
    deadline: Deadline,
    retry: RetryPolicy,
    *,
    outside: bool = False,
) -> Resolution:
    """``run_sync``'s twin for asyncio: the same ``ChainRun`` decides everything."""
    run = ChainRun(strategies, query, deadline, outside=outside)
    while (step := run.next_step()) is not None:
        result, error, tries, note = await _try_async(step, retry)
        if error is not None:
            run.record_error(step, error, tries, note)
        else:
            run.record_result(step, result, tries, note)
    return run.result()


def async_lookup(strategy: Strategy) -> tuple[ALookup, str | None]:
    """How the async driver calls ``strategy``: its ``alookup`` when it has one, else its
    ``lookup`` in a worker thread (so a blocking plugin never blocks the event loop),
    with the note that says so in the attempts."""
    alookup = getattr(strategy, "alookup", None)
    if callable(alookup):
        return alookup, None
    import asyncio

    async def in_a_thread(query: Query, deadline: Deadline) -> object:
        return await asyncio.to_thread(strategy.lookup, query, deadline)

    return in_a_thread, IN_A_THREAD


async def _try_async(
    step: Step, retry: RetryPolicy
) -> tuple[object, BaseException | None, int, str | None]:
    """``_try_sync`` for asyncio, plus a backstop: a turn still running ``_GRACE`` after
    its share ran out is cancelled (a strategy's own timeouts come first)."""
    import asyncio

    lookup, note = async_lookup(step.strategy)
    calls = 0

    async def attempt() -> object:
        nonlocal calls
        calls += 1
        if calls == 1 and first is not None:
            raise first  # the try already made, so tenacity counts and waits from it
        return await lookup(step.query, step.deadline)

    first: TransientError | None = None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + step.deadline.remaining() + _GRACE):
            try:
                return await lookup(step.query, step.deadline), None, 1, note
            except TransientError as exc:
                first = exc
            except Exception as exc:
                return None, exc, 1, note
            retrying = _retrying(retry, step.deadline, asynchronous=True)
            try:
                result = await retrying(attempt)
            except Exception as exc:
                return None, exc, retrying.statistics.get("attempt_number", calls), note
            return result, None, retrying.statistics.get("attempt_number", calls), note
    except TimeoutError:
        error = TransientError("still running when its share of the deadline ran out; cancelled")
        return None, error, max(calls, 1), note
