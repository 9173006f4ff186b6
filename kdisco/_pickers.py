"""Pickers: which endpoint, out of the candidates a ``Balancer`` hands over, serves a request.

A picker is one small contract, ``Picker.choose(candidates, key, stats)``. It sees only
endpoints the balancer already judged usable (ready, not ejected, local first when
asked for), so it knows nothing about readiness, topology or health: only how to
spread requests. ``stats`` is the balancer's view of in-flight requests and latency.

    RoundRobin()          each candidate in turn (the default)
    Random(seed)          uniformly at random
    PowerOfTwo(seed)      the less busy of two random candidates
    LeastResponseTime()   the cheaper of two random candidates: latency x (in-flight + 1)
    RendezvousHash()      the same key to the same endpoint, in every process

Pickers are shared by threads and asyncio tasks and never block: what they keep (a
round-robin turn, hashes already computed) is updated by single atomic steps, or under
a lock held for a few updates when the candidates change.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from math import exp
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._exceptions import ConfigurationError
from ._forksafe import after_fork_in_child
from ._models import Endpoint
from ._validation import check_non_negative

if TYPE_CHECKING:
    import random

#: What a request is routed by: a user id, a shard key. ``str`` is hashed as UTF-8.
Key = str | bytes

#: Seconds over which ``LeastResponseTime`` averages latencies, unless told.
DEFAULT_DECAY = 10.0

# Bounds on what pickers remember, so no stream of inputs grows them without limit.
_MAX_GROUPS = 1024
_MAX_PREPARED = 64
_MAX_MEMO = 2048
_MAX_NAMES = 16384


@runtime_checkable
class Stats(Protocol):
    """What a ``Balancer`` knows about endpoints, for pickers that weigh them.

    The third argument of `Picker.choose`. Endpoints are told apart by
    ``(host, port)``: a new ``Endpoint`` object for the same address (the next answer
    for the Service) has the same figures.

    Attributes:
        group: Which set the candidates come from: the Service and port of a
            ``Resolution``, None for a bare sequence of endpoints. Pickers that keep
            a position keep one per group.
    """

    #: Which set the candidates come from: the Service and port of a ``Resolution``,
    #: None for a bare sequence. Pickers that keep a position keep one per group.
    group: Hashable

    def in_flight(self, endpoint: Endpoint) -> int:
        """Requests sent to ``endpoint`` through ``Balancer.choose()`` and not yet done.

        Args:
            endpoint: One of the candidates.

        Returns:
            int: The count, 0 for an address the balancer has no figures for.
        """
        ...

    def latency(self, endpoint: Endpoint) -> float | None:
        """Average seconds per request (an EWMA over time), None before the first report.

        While an endpoint gets no reports its average fades towards zero, so an
        endpoint that was once slow is tried again after a while.

        Args:
            endpoint: One of the candidates.

        Returns:
            float | None: The average, or None before the first report with a time.
        """
        ...


@runtime_checkable
class Picker(Protocol):
    """Chooses one endpoint for a request: the one method a load-balancing algorithm needs.

    A protocol: any object with this ``choose`` method is a picker, given to
    ``Balancer(picker=...)``. The balancer has already left out endpoints that are
    not ready, ejected or (with a locality preference) farther away, so a picker only
    decides how to spread requests.

    ``choose`` is called from many threads and tasks at once; it must not block (no
    I/O, no awaiting). A picker may define ``decay`` (seconds): the ``Balancer`` then
    averages latencies over that time constant (10 s otherwise).

    Example:
        >>> import kdisco
        >>> class First:
        ...     def choose(self, candidates, key, stats):
        ...         return candidates[0]
        >>> eps = [kdisco.Endpoint(host=f"192.0.2.{i}", port=80) for i in (2, 1)]
        >>> kdisco.Balancer(picker=First()).pick(eps).host
        '192.0.2.2'
        >>> isinstance(First(), kdisco.Picker)
        True
    """

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """The endpoint for this request.

        Args:
            candidates: The endpoints to choose from: never empty, each address once.
                The same object comes back while the usable set does not change, so
                a picker may cache what it derives from it by identity.
            key: The caller's routing key (``str`` or ``bytes``), None when none was
                given.
            stats: The balancer's figures: requests in flight and latency per
                endpoint, and the candidates' ``group``.

        Returns:
            Endpoint: One of ``candidates``.
        """
        ...


class _Figures(Protocol):
    """One endpoint's figures as the ``Balancer`` keeps them (read without its lock)."""

    @property
    def in_flight(self) -> int: ...

    @property
    def ewma(self) -> float | None: ...

    @property
    def ewma_at(self) -> float: ...


class _Aligned(Stats, Protocol):
    """The ``Stats`` a ``Balancer`` hands the built-in pickers, with a faster way in.

    ``states[i]`` is the figures of ``candidates[i]``; ``latency(ep)`` is ``ewma``
    faded by ``clock() - ewma_at`` over ``tau``. ``cursor``: ``RoundRobin``'s place for
    this candidate set (None until it sets it).
    """

    cursor: Cursor | None

    @property
    def states(self) -> Sequence[_Figures]: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def tau(self) -> float: ...


def _make_rng(seed: int | None) -> random.Random:
    # random is imported by processes that balance, not by every ``import kdisco``.
    import random

    return random.Random(seed)


class Cursor:
    """A group's turn: candidate ``(start + next(turns)) % len(candidates)`` is next.

    ``RoundRobin``'s bookkeeping, shared with the ``Balancer``'s view; not for users.

    Args:
        candidates: The candidate set the turn goes over.
        start: The index of the first candidate's turn.
    """

    __slots__ = ("candidates", "retired", "start", "turns")

    def __init__(self, candidates: Sequence[Endpoint], start: int) -> None:
        self.candidates = candidates
        self.start = start
        self.turns = itertools.count()
        #: No longer the group's cursor (replaced or evicted): views holding it look again.
        self.retired = False


def _identity(ep: Endpoint) -> tuple[str, int | None]:
    return (ep.host, ep.port)


class RoundRobin:
    """Each candidate in turn, one position per group (per Service and port).

    The default picker. When the candidates change (a new answer, an ejection, an
    endpoint back), the turn goes on from the endpoint that was next, so no endpoint
    gets an extra turn or loses one. A group's first turn starts at a random place:
    clients started together do not all begin with the same endpoint.

    Args:
        seed: Fixes where each group's turn starts (for tests). Default None: a
            random place from ``os.urandom``.

    Example:
        >>> import kdisco
        >>> eps = tuple(kdisco.Endpoint(host=f"192.0.2.{i}", port=80) for i in (1, 2, 3))
        >>> lb = kdisco.Balancer(picker=kdisco.RoundRobin())
        >>> turns = [lb.pick(eps).host for _ in range(6)]
        >>> turns[:3] == turns[3:] and sorted(turns[:3]) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        True
    """

    def __init__(self, *, seed: int | None = None) -> None:
        # Unseeded starts come from os.urandom: the default balancer imports no random.
        self._rng = None if seed is None else _make_rng(seed)
        self._cursors: dict[Hashable, Cursor] = {}
        self._lock = threading.Lock()
        after_fork_in_child(self._after_fork)

    def __repr__(self) -> str:
        return "RoundRobin()"

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """The candidate whose turn it is in ``stats.group``.

        Args:
            candidates: The endpoints to choose from (see `Picker.choose`).
            key: Ignored.
            stats: The balancer's figures; only ``stats.group`` is read.

        Returns:
            Endpoint: The next candidate in turn.
        """
        cursor = self._cursors.get(stats.group)
        if cursor is None or cursor.candidates is not candidates:
            cursor = self._rebase(stats.group, candidates)
        # No lock here: next() on a count is atomic under the GIL, so threads never
        # share a turn. (A free-threaded build may repeat one: less even, never wrong.)
        return candidates[(cursor.start + next(cursor.turns)) % len(candidates)]

    def _choose_aligned(
        self, candidates: Sequence[Endpoint], key: Key | None, stats: _Aligned
    ) -> Endpoint:
        """``choose()``, with the cursor remembered on the balancer's view: no lookup by
        group (hashing a Service and port costs more than the rest of a turn)."""
        cursor = stats.cursor
        if cursor is None or cursor.retired or cursor.candidates is not candidates:
            cursor = self._cursors.get(stats.group)
            if cursor is None or cursor.candidates is not candidates:
                cursor = self._rebase(stats.group, candidates)
            stats.cursor = cursor
        return candidates[(cursor.start + next(cursor.turns)) % len(candidates)]

    def _rebase(self, group: Hashable, candidates: Sequence[Endpoint]) -> Cursor:
        """A cursor over new candidates that goes on with the first endpoint, from the
        one that was next, still among them: O(n), once per change of the candidates."""
        with self._lock:
            old = self._cursors.get(group)
            if old is not None and old.candidates is candidates:
                return old  # another thread got here first
            start = -1
            if old is not None:
                where = {_identity(ep): i for i, ep in enumerate(candidates)}
                previous = old.candidates
                n = len(previous)
                following = old.start + next(old.turns)
                for step in range(n):
                    found = where.get(_identity(previous[(following + step) % n]))
                    if found is not None:
                        start = found
                        break
            if start < 0:
                n = len(candidates)
                if self._rng is None:
                    start = int.from_bytes(os.urandom(4), "little") % n
                else:
                    start = self._rng.randrange(n)
            cursor = Cursor(candidates, start)
            if group not in self._cursors and len(self._cursors) >= _MAX_GROUPS:
                self._cursors.pop(next(iter(self._cursors))).retired = True
            if old is not None:
                old.retired = True
            self._cursors[group] = cursor
            return cursor

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


class Random:
    """Uniformly at random.

    Args:
        seed: Makes the sequence repeatable (for tests). Default None.

    Example:
        >>> import kdisco
        >>> lb = kdisco.Balancer(picker=kdisco.Random(seed=7))
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._random = _make_rng(seed).random

    def __repr__(self) -> str:
        return "Random()"

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """A candidate drawn uniformly at random.

        Args:
            candidates: The endpoints to choose from (see `Picker.choose`).
            key: Ignored.
            stats: Ignored.

        Returns:
            Endpoint: One of ``candidates``.
        """
        return candidates[int(self._random() * len(candidates))]


class PowerOfTwo:
    """The one with fewer requests in flight, of two candidates drawn at random.

    Nearly as even as "least in flight" over all candidates, without the herd: many
    clients seeing the same idle endpoint do not all send to it at once (Mitzenmacher,
    "The Power of Two Choices"; Envoy's LEAST_REQUEST). Ties go to the first draw.
    Only requests made with `Balancer.choose` (and the integrations) are counted in
    flight.

    Args:
        seed: Makes the draws repeatable (for tests). Default None.

    Example:
        >>> import kdisco
        >>> eps = tuple(kdisco.Endpoint(host=f"192.0.2.{i}", port=80) for i in (1, 2))
        >>> lb = kdisco.Balancer(picker=kdisco.PowerOfTwo(seed=1))
        >>> busy = lb.choose(eps)                     # one request in flight there
        >>> lb.pick(eps) != busy.endpoint              # the other one is less busy
        True
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._random = _make_rng(seed).random

    def __repr__(self) -> str:
        return "PowerOfTwo()"

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """Of two candidates drawn at random, the one with fewer requests in flight.

        Args:
            candidates: The endpoints to choose from (see `Picker.choose`).
            key: Ignored.
            stats: The balancer's figures; ``stats.in_flight`` is read.

        Returns:
            Endpoint: One of ``candidates``.
        """
        n = len(candidates)
        if n == 1:
            return candidates[0]
        random = self._random
        i = int(random() * n)
        j = int(random() * (n - 1))
        a, b = candidates[i], candidates[j + 1 if j >= i else j]
        in_flight = stats.in_flight
        return a if in_flight(a) <= in_flight(b) else b

    def _choose_aligned(
        self, candidates: Sequence[Endpoint], key: Key | None, stats: _Aligned
    ) -> Endpoint:
        """``choose()`` reading the two draws' figures directly (the same draws)."""
        n = len(candidates)
        if n == 1:
            return candidates[0]
        random = self._random
        i = int(random() * n)
        j = int(random() * (n - 1))
        if j >= i:
            j += 1
        states = stats.states
        return candidates[i] if states[i].in_flight <= states[j].in_flight else candidates[j]


class LeastResponseTime:
    """The cheaper of two candidates drawn at random, cost = latency x (in flight + 1).

    Latency is the balancer's time-weighted average over ``decay`` seconds (the
    balancer reads ``decay`` from here); requests in flight count against an endpoint
    at once, before their latency is known. An endpoint without a measurement is
    taken to be as fast as the one it is compared with, so new endpoints get their
    share without a rush. Comparing two, not all (Finagle's and Linkerd's
    "P2C + EWMA"), keeps every client from sending all its traffic to the one endpoint
    that looks fastest, and leaves slow endpoints a trickle that notices recovery.
    Latencies come from `Balancer.choose` (time to the outcome) and
    `Balancer.report`.

    Args:
        decay: Seconds over which latencies are averaged (the time constant of the
            average, a positive finite number). Default 10.
        seed: Makes the draws repeatable (for tests). Default None.

    Attributes:
        decay: The averaging time constant, in seconds.

    Raises:
        ConfigurationError: ``decay`` is not a positive finite number.

    Example:
        >>> import kdisco
        >>> fast, slow = (kdisco.Endpoint(host=f"192.0.2.{i}", port=80) for i in (1, 2))
        >>> lb = kdisco.Balancer(picker=kdisco.LeastResponseTime(decay=30.0), clock=lambda: 0.0)
        >>> lb.report(fast, ok=True, seconds=0.01)
        >>> lb.report(slow, ok=True, seconds=0.50)
        >>> {lb.pick((fast, slow)).host for _ in range(5)}
        {'192.0.2.1'}
    """

    def __init__(self, *, decay: float = DEFAULT_DECAY, seed: int | None = None) -> None:
        self.decay = decay
        check_non_negative(self, "decay")
        if not 0 < decay < float("inf"):
            raise ConfigurationError(
                f"LeastResponseTime.decay must be a positive number of seconds, not {decay!r}"
            )
        self._random = _make_rng(seed).random

    def __repr__(self) -> str:
        return f"LeastResponseTime(decay={self.decay!r})"

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """Of two candidates drawn at random, the one with the lower latency x (in
        flight + 1).

        Args:
            candidates: The endpoints to choose from (see `Picker.choose`).
            key: Ignored.
            stats: The balancer's figures; ``latency`` and ``in_flight`` are read.

        Returns:
            Endpoint: One of ``candidates``.
        """
        n = len(candidates)
        if n == 1:
            return candidates[0]
        random = self._random
        i = int(random() * n)
        j = int(random() * (n - 1))
        a, b = candidates[i], candidates[j + 1 if j >= i else j]
        latency, in_flight = stats.latency, stats.in_flight
        la, lb = latency(a), latency(b)
        fa, fb = in_flight(a), in_flight(b)
        if la is None:
            la = lb
        if lb is None:
            lb = la
        if la is not None and lb is not None:
            cost_a, cost_b = la * (fa + 1), lb * (fb + 1)
            if cost_a != cost_b:
                return a if cost_a < cost_b else b
        return a if fa <= fb else b

    def _choose_aligned(
        self, candidates: Sequence[Endpoint], key: Key | None, stats: _Aligned
    ) -> Endpoint:
        """``choose()`` reading the two draws' figures directly (the same draws, the
        same decision). Latencies are faded only when both are known: when one is not,
        it is taken to be the other, and the costs compare as the in-flight counts do."""
        n = len(candidates)
        if n == 1:
            return candidates[0]
        random = self._random
        i = int(random() * n)
        j = int(random() * (n - 1))
        if j >= i:
            j += 1
        states = stats.states
        sa, sb = states[i], states[j]
        fa, fb = sa.in_flight, sb.in_flight
        la, lb = sa.ewma, sb.ewma
        if la is not None and lb is not None:
            now, tau = stats.clock(), stats.tau
            idle = now - sa.ewma_at
            if idle > 0:
                la = la * exp(-idle / tau)
            idle = now - sb.ewma_at
            if idle > 0:
                lb = lb * exp(-idle / tau)
            cost_a, cost_b = la * (fa + 1), lb * (fb + 1)
            if cost_a != cost_b:
                return candidates[i] if cost_a < cost_b else candidates[j]
        return candidates[i] if fa <= fb else candidates[j]


_M64 = (1 << 64) - 1


class _Prepared:
    __slots__ = ("candidates", "hashes", "memo")

    def __init__(self, candidates: Sequence[Endpoint], hashes: tuple[int, ...]) -> None:
        self.candidates = candidates
        self.hashes = hashes
        self.memo: dict[bytes, Endpoint] = {}


class RendezvousHash:
    """The same key to the same endpoint: highest-random-weight (rendezvous) hashing.

    Each endpoint scores ``mix64(hash(key) ^ hash(endpoint))`` and the highest wins, so
    removing an endpoint moves only the keys it had, and adding one takes about 1/n of
    the keys from the others. Hashes are BLAKE2b, the same in every process and on
    every machine (Python's ``hash()`` is salted per process).

    An endpoint is named by its ``hostname`` (a StatefulSet pod's stable name behind a
    headless Service, such as ``db-0``), else its pod, else its address, and its port:
    a shard's keys stay with ``db-0`` when its pod comes back with a new IP. (Addresses
    sharing a name, a dual-stack pod's, tie; the lowest address wins, in any order.)
    A key is required. What each key maps to is remembered per candidate set (bounded), so a
    repeated key costs a dict lookup. For sharded StatefulSets behind headless
    Services: ``lb.pick(res, key="customer-42")``.

    Example:
        >>> import kdisco
        >>> shards = tuple(kdisco.Endpoint(host=f"192.0.2.{i}", port=5432, hostname=f"db-{i}")
        ...                for i in range(3))
        >>> lb = kdisco.Balancer(picker=kdisco.RendezvousHash())
        >>> owner = lb.pick(shards, key="customer-42").hostname
        >>> all(lb.pick(shards, key="customer-42").hostname == owner for _ in range(5))
        True
        >>> other = next(ep for ep in shards if ep.hostname != owner)
        >>> left = tuple(ep for ep in shards if ep is not other)   # another shard is gone
        >>> lb.pick(left, key="customer-42").hostname == owner     # this key stays put
        True
    """

    def __init__(self) -> None:
        from hashlib import blake2b  # loaded by processes that hash, not by ``import kdisco``

        self._blake2b = blake2b
        self._prepared: dict[int, _Prepared] = {}
        self._names: dict[tuple[str, int | None], int] = {}

    def __repr__(self) -> str:
        return "RendezvousHash()"

    def _hash(self, data: bytes) -> int:
        return int.from_bytes(self._blake2b(data, digest_size=8).digest(), "little")

    def endpoint_hash(self, ep: Endpoint) -> int:
        """The 64-bit hash an endpoint is scored with (stable across processes).

        Args:
            ep: The endpoint, named by its ``hostname``, else its ``pod``, else its
                ``host``, with its port.

        Returns:
            int: The BLAKE2b hash of ``"<name>:<port>"``, 0 to 2**64 - 1.
        """
        name = ep.hostname or ep.pod or ep.host
        ident = (name, ep.port)
        h = self._names.get(ident)
        if h is None:
            if len(self._names) >= _MAX_NAMES:
                self._names.clear()
            h = self._names[ident] = self._hash(f"{name}:{ep.port or ''}".encode())
        return h

    def choose(self, candidates: Sequence[Endpoint], key: Key | None, stats: Stats) -> Endpoint:
        """The candidate with the highest score for ``key``.

        Args:
            candidates: The endpoints to choose from (see `Picker.choose`).
            key: The routing key: ``str`` (hashed as UTF-8) or ``bytes``. Required.
            stats: Ignored.

        Returns:
            Endpoint: The same endpoint for the same key while it is a candidate.

        Raises:
            ConfigurationError: ``key`` is None.
        """
        if key is None:
            raise ConfigurationError(
                "RendezvousHash needs a key: pass key=... to Balancer.choose() or pick()"
            )
        raw = key.encode() if isinstance(key, str) else bytes(key)
        prepared = self._prepared.get(id(candidates))
        if prepared is None or prepared.candidates is not candidates:
            prepared = self._prepare(candidates)
        memo = prepared.memo
        found = memo.get(raw)
        if found is not None:
            return found
        k = self._hash(raw)
        best, best_score = 0, -1
        for i, h in enumerate(prepared.hashes):
            # SplitMix64's finaliser (Steele, Lea and Flood, 2014), a well-known 64-bit
            # mix, written inline: this loop is the picker's whole cost.
            z = h ^ k
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
            z ^= z >> 31
            if z > best_score or (z == best_score and candidates[i].host < candidates[best].host):
                best, best_score = i, z
        found = candidates[best]
        if len(memo) >= _MAX_MEMO:
            memo.clear()
        memo[raw] = found
        return found

    def _prepare(self, candidates: Sequence[Endpoint]) -> _Prepared:
        # Keyed by identity and holding the candidates, so the id cannot be reused
        # while the entry lives. Races between threads only compute the same thing twice.
        prepared = _Prepared(candidates, tuple(self.endpoint_hash(ep) for ep in candidates))
        if len(self._prepared) >= _MAX_PREPARED:
            self._prepared.clear()
        self._prepared[id(candidates)] = prepared
        return prepared
