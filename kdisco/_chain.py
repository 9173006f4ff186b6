"""The chain: try strategies in order under one deadline, retry what is transient.

All decisions live in ``_ChainRun``, a state object with no I/O of its own; ``run_sync``
is a thin loop around it. An async variant would be another thin loop (awaiting the
strategy and ``asyncio.sleep``) over the same state object, so the logic is never
copied. The chain knows strategies only by the ``Strategy`` contract.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import attrs
import tenacity

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
from ._models import Attempt, Outcome, Resolution, ServiceKind, ServiceRef
from ._names import Query, parse_service_fqdn
from ._strategy import Miss, Strategy

Sleep = Callable[[float], None]

#: How many ExternalName hops into the cluster are followed before giving up.
MAX_EXTERNAL_NAME_HOPS = 5


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures, inside the deadline."""

    initial: float = 0.05
    maximum: float = 1.0
    sleep: Sleep = time.sleep
    rng: Callable[[], float] = random.random

    def wait_for(self, attempt_number: int) -> float:
        # Full jitter (AWS architecture blog): spreads retries of many clients that
        # failed together, which is the usual case when a DNS server or API blips.
        # The exponent is capped: past ~1000 tries 2.0**n overflows a float.
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt_number - 1, 64))
        return ceiling * self.rng()

    def retrying(self, deadline: Deadline) -> tenacity.Retrying:
        def stop(state: tenacity.RetryCallState) -> bool:
            # Never start a sleep that would end past the deadline: the next strategy
            # in the chain is owed that time.
            return deadline.remaining() <= state.upcoming_sleep

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=lambda state: self.wait_for(state.attempt_number),
            stop=stop,
            sleep=self.sleep,
            reraise=True,
        )


@attrs.define
class _Step:
    strategy: Strategy
    query: Query
    deadline: Deadline


class _ChainRun:
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

    def next_step(self) -> _Step | None:
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
        left = len(self._strategies) - self._index
        # Each strategy gets an equal share of what is left, and the last one all of
        # it; a strategy that finishes early hands its unused time on. This is what
        # keeps a dead DNS server from starving env and api of their turn.
        share = self._deadline.remaining() / left
        strategy = self._strategies[self._index]
        return _Step(strategy, self._query, self._deadline.slice(share))

    def record_result(self, step: _Step, result: object, tries: int) -> None:
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
        if not result.fetched_at:
            result = attrs.evolve(result, fetched_at=self._deadline.clock())
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

    def record_error(self, step: _Step, error: BaseException, tries: int) -> None:
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
        if result.kind is not ServiceKind.EXTERNAL_NAME or not result.external_name:
            return None
        target = parse_service_fqdn(result.external_name)
        if target is None or target.cluster_domain != result.service.cluster_domain:
            return None
        return target

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


def _combine(
    hops: list[Resolution],
    attempts: tuple[Attempt, ...],
    via: tuple[ServiceRef, ...],
    clock: Callable[[], float],
) -> Resolution:
    """The final answer; after ExternalName hops it holds only as long as every hop."""
    final = hops[-1]
    if len(hops) == 1:
        return attrs.evolve(final, attempts=attempts, via=via, clock=clock)
    # A hop with neither a TTL nor a validity check cannot be cached: neither can the
    # answer built on it.
    if any(h.ttl is None and h._valid is None for h in hops):
        ttl, valid = None, None
    else:
        ttls = [h.ttl for h in hops if h.ttl is not None]
        ttl = min(ttls) if ttls else None
        checks = [h._valid for h in hops if h._valid is not None]
        valid = None if not checks else (lambda: all(c() for c in checks))
    return attrs.evolve(
        final,
        attempts=attempts,
        via=via,
        ttl=ttl,
        valid=valid,
        clock=clock,
        # The oldest knowledge among the hops, on the chain's clock.
        fetched_at=min(h.fetched_at if h._confirmed is None else h._confirmed() for h in hops),
        confirmed=None,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, DiscoveryError | TransientError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_sync(
    strategies: Sequence[Strategy], query: Query, deadline: Deadline, retry: RetryPolicy
) -> Resolution:
    """Drive one discovery to an answer or to the error that explains why there is none."""
    run = _ChainRun(strategies, query, deadline)
    while (step := run.next_step()) is not None:
        retrying = retry.retrying(step.deadline)
        try:
            result = retrying(step.strategy.lookup, step.query, step.deadline)
        except Exception as exc:
            run.record_error(step, exc, retrying.statistics.get("attempt_number", 1))
        else:
            run.record_result(step, result, retrying.statistics.get("attempt_number", 1))
    return run.result()
