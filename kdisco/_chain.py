"""The chain: try strategies in order under one deadline, retry what is transient.

All decisions live in ``ChainRun``, a state object with no I/O of its own; ``run_sync``
is a thin loop around it. An async variant would be another thin loop (awaiting the
strategy and ``asyncio.sleep``) over the same state object, so the logic is never
copied. The chain knows strategies only by the ``Strategy`` contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from ._attempts import Attempt, Outcome
from ._deadline import Deadline
from ._exceptions import (
    AccessDenied,
    DiscoveryError,
    DiscoveryTimeout,
    DiscoveryUnavailable,
    NoReadyEndpoints,
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

#: How many ExternalName hops into the cluster are followed before giving up.
MAX_EXTERNAL_NAME_HOPS = 5


def _retrying(policy: RetryPolicy, deadline: Deadline) -> tenacity.Retrying:
    # Imported here, not at the top: processes whose every answer comes from a cache
    # or a first-try success should not pay for loading tenacity at start-up.
    import tenacity

    def stop(state: tenacity.RetryCallState) -> bool:
        # Never start a sleep that would end past the deadline: the next strategy
        # in the chain is owed that time.
        return deadline.remaining() <= state.upcoming_sleep

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        wait=lambda state: policy.wait_for(state.attempt_number),
        stop=stop,
        sleep=policy.sleep,
        reraise=True,
    )


@attrs.define
class Step:
    strategy: Strategy
    query: Query
    deadline: Deadline


class ChainRun:
    """Everything one discovery decides, without doing any I/O."""

    def __init__(self, strategies: Sequence[Strategy], query: Query, deadline: Deadline) -> None:
        self._strategies = tuple(strategies)
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

    @property
    def query(self) -> Query:
        return self._query

    def next_step(self) -> Step | None:
        if self._answer is not None or self._index >= len(self._strategies):
            return None
        if self._deadline.expired():
            for strategy in self._strategies[self._index :]:
                self._attempts.append(
                    Attempt(
                        strategy=strategy.name,
                        outcome=Outcome.TIMED_OUT,
                        reason="deadline passed before its turn",
                        tries=0,
                    )
                )
            self._index = len(self._strategies)
            return None
        strategy = self._strategies[self._index]
        # Each strategy that may apply gets an equal share of what is left, and the
        # last one all of it; a strategy that finishes early hands its unused time on.
        # This keeps a dead DNS server from starving env and api of their turn, and a
        # strategy that says up front it cannot apply here (not in a pod, no
        # kubeconfig) takes no share from the others.
        left = sum(1 for s in self._strategies[self._index :] if not_applicable(s) is None)
        share = self._deadline.remaining() / max(left, 1)
        return Step(strategy, self._query, self._deadline.slice(share))

    def record_result(self, step: Step, result: object, tries: int) -> None:
        if isinstance(result, Resolution) and self._deadline.expired():
            # An answer the caller no longer waits for is not an answer: the deadline
            # is a promise to the caller, and a strategy that overran it (a huge
            # response parsed after the last byte came in) has broken it.
            error = TransientError("its answer came after the deadline had passed")
            self.record_error(step, error, tries)
            return
        self._index += 1
        if isinstance(result, Miss):
            self._attempts.append(
                Attempt(
                    strategy=step.strategy.name,
                    outcome=result.outcome,
                    reason=result.reason,
                    tries=tries,
                )
            )
            return
        if not isinstance(result, Resolution):
            self.record_error(
                step,
                TypeError(
                    f"strategy {step.strategy.name!r} returned {type(result).__name__}, "
                    "not a Resolution or Miss"
                ),
                tries,
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
        target = self._in_cluster_target(result)
        if target is None:
            self._answer = _combine(
                [*self._hops, result], tuple(self._attempts), tuple(self._via), self._deadline.clock
            )
            return
        self._hops.append(result)
        self._attempts.append(
            Attempt(
                strategy=step.strategy.name,
                outcome=Outcome.ANSWERED,
                reason=f"ExternalName {result.service} -> {target}; following it",
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
            self._index = len(self._strategies)
            return
        self._seen.add(target)
        self._via.append(result.service)
        self._query = attrs.evolve(self._query, service=target)
        self._index = 0

    def record_error(self, step: Step, error: BaseException, tries: int) -> None:
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
            Attempt(strategy=step.strategy.name, outcome=outcome, reason=reason, tries=tries)
        )

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
        if Outcome.DENIED in outcomes:
            denied = next(e for e in self._errors.values() if isinstance(e, AccessDenied))
            return AccessDenied(
                denied.message,
                verb=denied.verb,
                resource=denied.resource,
                namespace=denied.namespace,
                status=denied.status,
                service=service,
                attempts=attempts,
            )
        if Outcome.NOT_FOUND in outcomes and not outcomes & {Outcome.TIMED_OUT, Outcome.FAILED}:
            return ServiceNotFound(f"{what} not found", service=service, attempts=attempts)
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


def _describe(error: BaseException) -> str:
    if isinstance(error, DiscoveryError | TransientError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_sync(
    strategies: Sequence[Strategy], query: Query, deadline: Deadline, retry: RetryPolicy
) -> Resolution:
    """Drive one discovery to an answer or to the error that explains why there is none."""
    run = ChainRun(strategies, query, deadline)
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
