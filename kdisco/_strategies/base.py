"""The one contract every discovery strategy implements."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs

from kdisco._attempts import Outcome
from kdisco._deadline import Deadline
from kdisco._models import Resolution
from kdisco._names import Query

_MISS_OUTCOMES = frozenset(
    {
        Outcome.NOT_FOUND,
        Outcome.NOT_APPLICABLE,
        Outcome.NO_SUCH_PORT,
        Outcome.NO_READY_ENDPOINTS,
        Outcome.NO_EXTERNAL_ROUTE,
    }
)


def _as_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class Miss:
    """A strategy's definitive "no answer from me", with the reason.

    ``outcome`` is one of NOT_FOUND, NOT_APPLICABLE, NO_SUCH_PORT, NO_READY_ENDPOINTS,
    NO_EXTERNAL_ROUTE.
    A miss is never retried; the chain moves on to the next strategy.

    Args:
        outcome: Which kind of "no" (an `Outcome`, one of those above).
        reason: Why, in words: it ends up in the `Attempt` and in error messages.
        decisive: A NOT_FOUND from a source that publishes every Service (cluster
            DNS's NXDOMAIN, the API's 404): it outranks another strategy's refusal
            (`kdisco.AccessDenied`) in the error raised, so a typo is reported as a
            missing Service, not as missing permissions. Default False.
        elsewhere: With NOT_FOUND: other namespaces where a Service of the same name
            exists, when the strategy could see them; the error's first line names
            them. Default none.

    Attributes:
        outcome: Which kind of "no".
        reason: Why.
        decisive: Whether the source is authoritative for this "not found".
        elsewhere: Namespaces where the same name exists.

    Raises:
        ValueError: ``outcome`` is not one a miss can have (ANSWERED, FAILED...).

    Example:
        >>> kdisco.Miss(kdisco.Outcome.NOT_FOUND, "no entry for cart.shop")
        Miss(outcome=<Outcome.NOT_FOUND: 'not found'>, reason='no entry for cart.shop', \
decisive=False, elsewhere=())
    """

    outcome: Outcome = attrs.field()
    reason: str
    decisive: bool = attrs.field(default=False, kw_only=True)
    elsewhere: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_as_tuple)

    @outcome.validator
    def _check(self, _: attrs.Attribute[Outcome], value: Outcome) -> None:
        if value not in _MISS_OUTCOMES:
            raise ValueError(f"a Miss cannot have outcome {value!r}")


@runtime_checkable
class Strategy(Protocol):
    """One way to find a Service.

    ``lookup`` returns a ``Resolution`` (an answer) or a ``Miss`` (a definitive no, with
    the reason). It raises ``kdisco.TransientError`` for a failure worth retrying, and
    ``kdisco.AccessDenied`` when it was refused. Any I/O it does must finish by
    ``deadline``. ``close()`` releases what the strategy holds (threads, connections);
    a strategy without any may leave it out. The chain that calls strategies in order
    knows nothing else about them.

    For ``kdisco.aio`` a strategy may also provide ``async def alookup(query,
    deadline)``, with the same contract, and ``async def aclose()``. Without
    ``alookup`` the async chain runs ``lookup`` in a worker thread (so a blocking
    strategy never blocks the event loop) and says so in the attempts; without
    ``aclose``, ``close()`` runs in a worker thread too. ``prepare_async()``, if
    present, is called once before the first async use, off the event loop: the place
    to import what ``alookup`` needs, so that nothing is imported on the loop.

    ``views``, if present, says which views of the cluster a strategy gives (see
    ``kdisco.Discoverer``'s ``reach``): ``("cluster",)`` for one that only knows
    cluster-internal addresses (dns, env: the chain does not ask it for
    ``reach="external"``), ``("cluster", "external")`` for one that gives either as
    ``query.reach`` asks (api). Without it, a strategy's answers are taken as they are,
    whatever the reach (static, plugins): the chain asks it once, with
    ``query.reach`` set to the reach it prefers.

    A strategy may also say up front that it cannot apply here with a
    ``not_applicable`` attribute (a str, the reason, or None): it then takes no share
    of the deadline from the others. Strategies are found by name through
    `StrategyFactory` entry points; see docs/strategies.md.
    """

    @property
    def name(self) -> str:
        """The strategy's name, as attempts and ``Resolution.source`` show it."""
        ...

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        """Answer ``query``, or say why not.

        Args:
            query: What is asked: the Service, port, readiness, backends and the
                view (``query.reach``).
            deadline: When the answer is due: size every I/O timeout with
                ``deadline.remaining()``.

        Returns:
            Resolution | Miss: The answer (``source`` set to this strategy's name),
            or a definitive no with the reason.

        Raises:
            TransientError: A failure worth retrying (a timeout, SERVFAIL, HTTP 5xx
                or 429); the chain retries within the strategy's share of the
                deadline.
            AccessDenied: The source refused (the chain records it and moves on).
        """
        ...


def close_strategy(strategy: object) -> None:
    """Call ``strategy.close()`` when it has one (it is optional in the contract)."""
    close = getattr(strategy, "close", None)
    if callable(close):
        close()


async def aclose_strategy(strategy: object) -> None:
    """``close_strategy`` for the event loop: ``aclose()`` when the strategy has one,
    else its ``close()`` in a worker thread (it may join threads or wait on sockets)."""
    aclose = getattr(strategy, "aclose", None)
    if callable(aclose):
        await aclose()
        return
    if callable(getattr(strategy, "close", None)):
        import asyncio

        await asyncio.to_thread(close_strategy, strategy)
