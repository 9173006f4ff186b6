"""A fake clock and scripted strategies, so chain tests never really wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from kdisco import (
    Deadline,
    Endpoint,
    Miss,
    Outcome,
    Query,
    Resolution,
    ServiceKind,
    ServiceRef,
)


class FakeClock:
    """Monotonic time that only moves when something sleeps or burns time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.start = start
        self.now = start
        self.sleeps: list[float] = []
        #: (time a sleep started, its length), to check no sleep overran a deadline.
        self.naps: list[tuple[float, float]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.naps.append((self.now, seconds))
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def elapsed(self) -> float:
        return self.now - self.start


#: What one call of a scripted strategy does: return a Resolution or Miss (or any
#: other object, to test the chain's type check), raise an exception, or run a
#: function of (query, deadline).
Step = object


@attrs.define
class Call:
    query: Query
    remaining: float


class Scripted:
    """A strategy that plays ``script`` one call at a time (the last step repeats).

    ``cost`` seconds pass on the fake clock in every call, capped at what the step's
    deadline leaves, like real I/O sized from ``deadline.remaining()``.
    """

    def __init__(
        self, name: str, *script: Step, clock: FakeClock | None = None, cost: float = 0.0
    ) -> None:
        self._name = name
        self._script = list(script)
        self._clock = clock
        self._cost = cost
        self.calls: list[Call] = []

    @property
    def name(self) -> str:
        return self._name

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        # The async driver's way in: the same script.
        return self.lookup(query, deadline)

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        self.calls.append(Call(query, deadline.remaining()))
        if self._clock is not None and self._cost:
            self._clock.advance(min(self._cost, deadline.remaining()))
        step = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if callable(step):
            step = step(query, deadline)
        if isinstance(step, BaseException):
            raise step
        return step  # type: ignore[return-value]  # non-answers are part of the tests


def burn(clock: FakeClock, error: BaseException) -> Callable[[Query, Deadline], object]:
    """A step that uses up the whole step deadline (a dead server), then raises."""

    def step(_query: Query, deadline: Deadline) -> object:
        clock.advance(deadline.remaining())
        raise error

    return step


def answer_for(
    query: Query,
    source: str,
    *,
    kind: ServiceKind = ServiceKind.CLUSTER_IP,
    external_name: str | None = None,
    host: str = "10.96.0.10",
) -> Resolution:
    if kind is ServiceKind.EXTERNAL_NAME:
        assert external_name is not None
        endpoints = (Endpoint(host=external_name.removesuffix("."), port=None),)
    else:
        endpoints = (Endpoint(host=host, port=80),)
    return Resolution(
        service=query.service,
        kind=kind,
        endpoints=endpoints,
        source=source,
        external_name=external_name,
    )


def by_service(
    source: str, table: dict[str, str | None], *, host: str = "10.96.0.10"
) -> Callable[[Query, Deadline], object]:
    """Answer ``svc.ns`` from ``table``: an external name, or None for a ClusterIP."""

    def step(query: Query, _deadline: Deadline) -> object:
        key = str(query.service)
        if key not in table:
            return Miss(Outcome.NOT_FOUND, f"{source} has no {key}")
        target = table[key]
        if target is None:
            return answer_for(query, source, host=host)
        return answer_for(query, source, kind=ServiceKind.EXTERNAL_NAME, external_name=target)

    return step


def names(refs: Sequence[ServiceRef]) -> list[str]:
    return [str(r) for r in refs]
