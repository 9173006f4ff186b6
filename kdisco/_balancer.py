"""``Balancer``: from an answer's endpoints to the one a request goes to, and back.

    >>> lb = kdisco.Balancer()                               # doctest: +SKIP
    >>> with lb.choose(res) as pick:                         # doctest: +SKIP
    ...     send(pick.endpoint.address)

Each pick runs three steps. The candidate rules (``kdisco._candidates``) keep ready
endpoints that are not terminating (serving terminating ones when nothing else is
left) and order them by locality. Passive health leaves out endpoints ejected for
failing, never more than ``OutlierPolicy.max_ejection_share`` of them. The picker
(``kdisco._pickers``) chooses among what is left.

The first two steps depend only on the answer and on ejections, so their result is
kept per answer (by identity: ``discover()`` hands back the same ``Resolution`` while
it is cached) and the common path is a dict lookup and the picker's own work. What
the balancer learns (in-flight counts, latency averages, failures, ejections) is kept
per address, ``(host, port)``, so it carries over to the next answer for the Service;
addresses absent from every answer the balancer holds for ``forget_after`` seconds are
forgotten (checked on the slow path, at most every quarter of that).

One lock guards that state, held for a few updates at a time and never across a call
out, so a balancer is shared by threads and asyncio tasks alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from math import exp
from types import TracebackType

import attrs

from ._candidates import Layers, Topology, candidate_layers
from ._exceptions import ConfigurationError
from ._forksafe import after_fork_in_child
from ._models import Clock, Endpoint, Resolution
from ._pickers import (
    DEFAULT_DECAY,
    Cursor,
    Key,
    LeastResponseTime,
    Picker,
    PowerOfTwo,
    RoundRobin,
)
from ._validation import as_policy, check_non_negative, check_positive_int

Ident = tuple[str, int | None]

#: At most this many answers' candidate lists are kept (one per Service and port
#: anyway: a new answer replaces the previous one for the same Service and port).
_MAX_ENTRIES = 1024

#: Added to share x endpoints before rounding down, so that 0.3 x 10 (2.9999... in
#: floating point) still allows 3 ejections.
_EPSILON = 1e-9


@attrs.frozen(kw_only=True)
class OutlierPolicy:
    """Passive health: endpoints that keep failing are left out for a while.

    After ``consecutive_failures`` failures in a row an endpoint is ejected for
    ``base_ejection`` seconds times the number of times it has been ejected, at most
    ``max_ejection``; then it comes back by itself. Each ``base_ejection`` seconds it
    spends back without being ejected again takes one off that count. Of the endpoints
    a pick chooses from, at most ``max_ejection_share`` are left out (the ones ejected
    first), and never all of them: one that fails is better than none (Envoy's
    ``max_ejection_percent``). A failure is an exception inside ``with
    balancer.choose(...)``, ``Pick.failed()``, ``Balancer.report(ok=False)``, or for
    the HTTP integrations a connection that failed, a body cut short, or a status in
    their ``failure_statuses``.

    A frozen value, made with keyword arguments; change one with ``attrs.evolve``.

    Attributes:
        enabled: Eject at all. Default True (``Balancer(outliers=False)`` is the
            same as ``OutlierPolicy(enabled=False)``).
        consecutive_failures: Failures in a row that eject an endpoint (a whole
            number, 1 or more). Default 5.
        base_ejection: Seconds out for a first ejection, and the step each later
            one adds (0 or more). Default 30.
        max_ejection: The longest ejection, in seconds (finite, at least
            ``base_ejection``). Default 300.
        max_ejection_share: The largest share of a pick's usable endpoints left out
            at once, between 0 and 1. Default 0.5.

    Raises:
        ConfigurationError: A value is out of its range.

    Example:
        >>> import kdisco
        >>> policy = kdisco.OutlierPolicy(consecutive_failures=3, base_ejection=10.0)
        >>> [policy.ejection_time(n) for n in (1, 2, 40)]
        [10.0, 20.0, 300.0]
        >>> lb = kdisco.Balancer(outliers=policy)
    """

    enabled: bool = True
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejection_share: float = 0.5

    def __attrs_post_init__(self) -> None:
        check_positive_int(self, "consecutive_failures")
        check_non_negative(self, "base_ejection", "max_ejection", "max_ejection_share")
        if self.max_ejection_share > 1:
            raise ConfigurationError(
                "OutlierPolicy.max_ejection_share is a share: between 0 and 1, "
                f"not {self.max_ejection_share!r}"
            )
        if self.base_ejection > self.max_ejection:
            raise ConfigurationError("OutlierPolicy.base_ejection is larger than max_ejection")
        if math.isinf(self.max_ejection):
            raise ConfigurationError("OutlierPolicy.max_ejection must be finite")

    def ejection_time(self, ejections: int) -> float:
        """Seconds out for an endpoint's ``ejections``-th ejection.

        Args:
            ejections: Which ejection this is for the endpoint (1 for the first).

        Returns:
            float: ``base_ejection * ejections``, at most ``max_ejection``.
        """
        return min(self.base_ejection * ejections, self.max_ejection)


@attrs.frozen(kw_only=True)
class EndpointHealth:
    """What a `Balancer` knows about one address, at one moment (for metrics, tests).

    Returned by `Balancer.health`; an address the balancer has no figures for gets
    the defaults. While more than ``max_ejection_share`` of a Service's endpoints are
    ejected, the ones ejected last are still picked.

    Attributes:
        in_flight: Requests picked with `Balancer.choose` and not yet finished.
        latency: Seconds per request, the time-weighted average pickers see (it fades
            towards zero while the endpoint gets no reports); None before the first
            report with a time.
        consecutive_failures: Failures since the last success or ejection.
        ejections: How many times it has been ejected, less one for each
            ``base_ejection`` seconds since it last came back.
        ejected_until: When the current ejection ends, on the balancer's clock; None
            when it is not ejected.

    Example:
        >>> import kdisco
        >>> lb = kdisco.Balancer(clock=lambda: 100.0)     # a stopped clock: no fading
        >>> ep = kdisco.Endpoint(host="192.0.2.1", port=80)
        >>> lb.report(ep, ok=False, seconds=0.2)
        >>> lb.health(ep)  # doctest: +NORMALIZE_WHITESPACE
        EndpointHealth(in_flight=0, latency=0.2, consecutive_failures=1, ejections=0,
                       ejected_until=None)
    """

    in_flight: int = 0
    latency: float | None = None
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None


class _State:
    """One address's figures. Mutated under the balancer's lock only."""

    __slots__ = (
        "ejected_at",
        "ejections",
        "ewma",
        "ewma_at",
        "failures",
        "ident",
        "in_flight",
        "returned_at",
        "seen",
        "until",
    )

    def __init__(self, ident: Ident, now: float) -> None:
        self.ident = ident
        self.in_flight = 0
        self.ewma: float | None = None
        self.ewma_at = now
        self.failures = 0
        self.ejections = 0
        self.ejected_at = 0.0
        self.until = -math.inf
        self.returned_at: float | None = None
        #: When an answer the balancer holds last listed the address.
        self.seen = now


class _View:
    """The ``Stats`` pickers get: read-only, lock-free (one dict lookup per question).

    The two questions are closures stored on the instance rather than methods: pickers
    ask them on every pick, and a closure call skips binding ``self`` (about 45 ns of
    the 150 a question costs).

    The built-in pickers skip the questions: ``states`` holds the candidates' figures,
    position for position (so a pick reads attributes of the two it drew), with the
    ``clock`` and ``tau`` to fade latencies by; ``cursor`` is where ``RoundRobin``
    keeps the group's turn for this candidate set, sparing it a lookup by ``group``.
    """

    __slots__ = ("clock", "cursor", "group", "in_flight", "latency", "states", "tau")

    in_flight: Callable[[Endpoint], int]
    latency: Callable[[Endpoint], float | None]

    def __init__(
        self,
        group: Hashable,
        states: dict[Ident, _State],
        clock: Clock,
        tau: float,
        aligned: tuple[_State, ...],
    ) -> None:
        self.group = group
        self.states = aligned
        self.clock = clock
        self.tau = tau
        self.cursor: Cursor | None = None
        get = states.get

        def in_flight(endpoint: Endpoint) -> int:
            st = get((endpoint.host, endpoint.port))
            return 0 if st is None else st.in_flight

        def latency(endpoint: Endpoint) -> float | None:
            st = get((endpoint.host, endpoint.port))
            if st is None:
                return None
            ewma = st.ewma
            if ewma is None:
                return None
            idle = clock() - st.ewma_at  # _faded(), inlined
            return ewma if idle <= 0 else ewma * exp(-idle / tau)

        self.in_flight = in_flight
        self.latency = latency


def _faded(ewma: float, idle: float, tau: float) -> float:
    # An average not fed fades towards zero (as a stream of zero samples would move
    # it), so a slow endpoint the pickers avoid is tried again after a while.
    return ewma if idle <= 0 else ewma * exp(-idle / tau)


class _Entry:
    """One answer's candidates, valid while the balancer's ``epoch`` is unchanged."""

    __slots__ = ("candidates", "endpoints", "epoch", "layers", "owner", "resolution", "view")

    def __init__(
        self,
        owner: object,
        endpoints: tuple[Endpoint, ...],
        resolution: Resolution | None,
        layers: Layers,
        candidates: tuple[Endpoint, ...],
        view: _View,
        epoch: int,
    ) -> None:
        # ``owner`` is what the entry is keyed by (its id): held, so the id stays its own.
        self.owner = owner
        self.endpoints = endpoints
        self.resolution = resolution
        self.layers = layers
        self.candidates = candidates
        self.view = view
        self.epoch = epoch


class Pick:
    """One request's endpoint, counted in flight until the request is done.

    Made by `Balancer.choose`. Leaving the ``with`` (or ``async with``) block
    normally counts as a success, by an exception as a failure (the exception goes
    on). ``failed()`` or ``succeeded()`` decides first, for outcomes that are not
    exceptions (an HTTP 503). Cancellation and other ``BaseException`` exits only end
    the request: not the endpoint's doing. Only the first outcome counts. Latency is
    the time from `Balancer.choose` to the outcome.

    Attributes:
        endpoint: The `kdisco.Endpoint` to send the request to.

    Example:
        >>> import kdisco
        >>> lb = kdisco.Balancer()
        >>> with lb.choose([kdisco.Endpoint(host="192.0.2.1", port=80)]) as pick:
        ...     status = 503                     # send to pick.endpoint.address
        ...     if status >= 500:
        ...         pick.failed()
        >>> lb.health(pick.endpoint).consecutive_failures
        1
    """

    __slots__ = ("_balancer", "_done", "_generation", "_started", "_state", "endpoint")

    def __init__(
        self, balancer: Balancer, endpoint: Endpoint, state: _State, started: float, gen: int
    ) -> None:
        """Made by `Balancer.choose`, not by users.

        Args:
            balancer: The balancer the outcome is reported to.
            endpoint: The endpoint picked.
            state: The balancer's figures for the endpoint's address.
            started: When the request started, on the balancer's clock.
            gen: The balancer's generation (a fork starts a new one: a request of
                the parent is not in flight in the child).
        """
        self.endpoint = endpoint
        self._balancer = balancer
        self._state = state
        self._started = started
        self._generation = gen
        self._done = False

    def __repr__(self) -> str:
        return f"<Pick {self.endpoint.address}{' done' if self._done else ''}>"

    def succeeded(self) -> None:
        """Report that the request worked, and end it (only the first outcome counts)."""
        self._balancer._finish(self, True)

    def failed(self) -> None:
        """Report that the request failed because of the endpoint, and end it (only the
        first outcome counts)."""
        self._balancer._finish(self, False)

    def __enter__(self) -> Pick:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            ok: bool | None = True
        else:
            ok = False if issubclass(exc_type, Exception) else None
        self._balancer._finish(self, ok)

    async def __aenter__(self) -> Pick:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Balancer:
    """Chooses endpoints for requests and learns from how the requests went.

    For clients kdisco has no integration for (a database pool, a raw socket); the
    httpx, requests and gRPC integrations use one of their own. Each pick keeps the
    usable endpoints of the answer (ready and not terminating; else terminating but
    still serving), the nearest of them when a locality preference applies, leaves
    out those ejected for failing (`OutlierPolicy`), and lets the ``picker`` choose.
    One balancer serves every thread and asyncio task of a process and never blocks
    on I/O; what it learns is kept per address, so it carries over from one answer
    for a Service to the next.

    Args:
        picker: The algorithm that chooses among the candidates: `RoundRobin`,
            `Random`, `PowerOfTwo`, `LeastResponseTime`, `RendezvousHash`, or any
            object with a ``choose(candidates, key, stats)`` method (`Picker`).
            Default None: a new ``RoundRobin()``.
        outliers: Passive health: an `OutlierPolicy`, True for the default one,
            False for none. Default True.
        zone: The caller's zone, for locality preferences. Default None: unknown,
            so no endpoint is in the caller's zone. (The HTTP integrations' default
            balancer reads ``KDISCO_ZONE``, else the node's zone label.)
        node: The caller's node name, for ``"PreferSameNode"``. Default None (the
            HTTP integrations' default balancer reads ``KDISCO_NODE``, else
            ``NODE_NAME``).
        preference: ``"PreferSameZone"`` (``"PreferClose"`` is the same),
            ``"PreferSameNode"`` (then the same zone, then all), or None to follow
            each Service's ``trafficDistribution``. Near endpoints are used while
            one is usable, then all of them. Default None.
        clock: Monotonic seconds, for latencies and ejection times (a test passes a
            fake one). Default ``time.monotonic``.
        forget_after: Seconds after which what was learned about an address no
            answer lists any more is dropped (within a quarter more: addresses are
            swept when a new answer or address comes in). Default 600.

    Raises:
        ConfigurationError: ``picker`` has no ``choose`` method, ``clock`` is not
            callable, ``forget_after`` is negative, ``outliers`` is not an
            `OutlierPolicy` or a bool, or ``zone``, ``node`` or ``preference`` is
            malformed.

    Example:
        >>> import kdisco
        >>> from kdisco.testing import FakeResolver
        >>> fake = FakeResolver({"db": ["192.0.2.1:5432", "192.0.2.2:5432"]})
        >>> d = kdisco.Discoverer(strategies=[fake])
        >>> lb = kdisco.Balancer(picker=kdisco.RoundRobin(seed=1))
        >>> res = d.discover("db")
        >>> sorted(lb.pick(res).host for _ in range(4))
        ['192.0.2.1', '192.0.2.1', '192.0.2.2', '192.0.2.2']
        >>> with lb.choose(res) as pick:      # in flight until the block ends
        ...     address = pick.endpoint.address
    """

    def __init__(
        self,
        *,
        picker: Picker | None = None,
        outliers: OutlierPolicy | bool = True,
        zone: str | None = None,
        node: str | None = None,
        preference: str | None = None,
        clock: Clock = time.monotonic,
        forget_after: float = 600.0,
    ) -> None:
        if picker is None:
            picker = RoundRobin()
        elif not callable(getattr(picker, "choose", None)):
            raise ConfigurationError(
                f"Balancer.picker must have a choose(candidates, key, stats) method, not {picker!r}"
            )
        self._forget_after = forget_after
        check_non_negative(self, "forget_after")
        if not callable(clock):
            raise ConfigurationError(f"Balancer.clock must be callable, not {clock!r}")
        self._picker = picker
        self._outliers = as_policy(outliers, OutlierPolicy, where="Balancer.outliers")
        self._topology = Topology(zone=zone, node=node, preference=preference)
        self._clock = clock
        decay = getattr(picker, "decay", DEFAULT_DECAY)
        self._tau = decay if isinstance(decay, int | float) and decay > 0 else DEFAULT_DECAY
        # The built-ins (exactly: a subclass may change what they do) read the figures
        # the view lines up with the candidates; any other picker asks ``Stats``.
        self._choose: Callable[[tuple[Endpoint, ...], Key | None, _View], Endpoint]
        if type(picker) in (RoundRobin, PowerOfTwo, LeastResponseTime):
            self._choose = picker._choose_aligned  # type: ignore[attr-defined]
        else:
            self._choose = picker.choose
        self._lock = threading.Lock()
        self._states: dict[Ident, _State] = {}
        self._entries: dict[int, _Entry] = {}
        self._group_entry: dict[Hashable, int] = {}
        # Bumped whenever an ejection starts or ends: every entry's candidates are then
        # recomputed on their next pick.
        self._epoch = 0
        # The earliest end of an ejection, None while nothing is ejected: the common
        # path reads the clock only when this is set.
        self._expiry: float | None = None
        self._ejected: set[Ident] = set()
        self._last_sweep = clock()
        self._generation = 0
        after_fork_in_child(self._after_fork)

    def __repr__(self) -> str:
        t = self.topology
        return (
            f"Balancer(picker={self.picker!r}, outliers={self.outliers!r}, zone={t.zone!r}, "
            f"node={t.node!r}, preference={t.preference!r})"
        )

    # Read-only: the fast path and the kept candidates are built from them.
    @property
    def picker(self) -> Picker:
        """The `Picker` that chooses among the candidates."""
        return self._picker

    @property
    def outliers(self) -> OutlierPolicy:
        """The `OutlierPolicy` in force (``enabled=False`` when made with False)."""
        return self._outliers

    @property
    def topology(self) -> Topology:
        """Where the caller runs and what it prefers (``zone``, ``node`` and
        ``preference``)."""
        return self._topology

    @property
    def forget_after(self) -> float:
        """Seconds after which what was learned about an address no answer lists is
        dropped."""
        return self._forget_after

    # -- choosing -------------------------------------------------------------------

    def pick(self, endpoints: Resolution | Sequence[Endpoint], key: Key | None = None) -> Endpoint:
        """An endpoint for one request, not counted in flight.

        For callers that only want an address; use `choose` to report how the request
        went (what `PowerOfTwo`, `LeastResponseTime` and ejection learn from).

        Args:
            endpoints: A `kdisco.Resolution`, or a sequence of `kdisco.Endpoint`.
                What is derived from a Resolution or a tuple is kept for the next
                pick (by identity: `kdisco.discover` hands back the same Resolution
                while it is cached); other sequences are judged afresh each time.
            key: The routing key (``str`` or ``bytes``: a user id, a shard key) for
                `RendezvousHash`, which requires one; other pickers ignore it.
                Default None.

        Returns:
            Endpoint: One of the usable endpoints.

        Raises:
            NoReadyEndpoints: No endpoint is usable (none ready, none serving while
                terminating); the message says what the endpoints were.
            ConfigurationError: The picker is `RendezvousHash` and ``key`` is None.

        Example:
            >>> import kdisco
            >>> eps = (kdisco.Endpoint(host="192.0.2.1", port=80, ready=False),
            ...        kdisco.Endpoint(host="192.0.2.2", port=80))
            >>> kdisco.Balancer().pick(eps).address
            '192.0.2.2:80'
        """
        entry = self._entries.get(id(endpoints))
        if entry is None or entry.owner is not endpoints or entry.epoch != self._epoch:
            entry = self._entry(endpoints)
        else:
            expiry = self._expiry
            if expiry is not None and self._clock() >= expiry:
                entry = self._entry(endpoints)
        return self._choose(entry.candidates, key, entry.view)

    def choose(self, endpoints: Resolution | Sequence[Endpoint], key: Key | None = None) -> Pick:
        """An endpoint for one request, counted in flight until the request is done.

        Use the returned `Pick` as a context manager (``with`` or ``async with``: an
        exception is a failure), or call its ``succeeded()`` or ``failed()``. A pick
        never finished stays counted in flight.

        Args:
            endpoints: A `kdisco.Resolution` or a sequence of `kdisco.Endpoint`, as
                for `pick`.
            key: The routing key for `RendezvousHash`, as for `pick`. Default None.

        Returns:
            Pick: The endpoint (``pick.endpoint``) and the means to report the outcome.

        Raises:
            NoReadyEndpoints: No endpoint is usable.
            ConfigurationError: The picker is `RendezvousHash` and ``key`` is None.

        Example:
            >>> import kdisco
            >>> lb = kdisco.Balancer()
            >>> ep = kdisco.Endpoint(host="192.0.2.1", port=80)
            >>> pick = lb.choose([ep])
            >>> lb.health(ep).in_flight
            1
            >>> pick.succeeded()
            >>> lb.health(ep).in_flight
            0
        """
        ep = self.pick(endpoints, key)
        ident = (ep.host, ep.port)
        now = self._clock()
        with self._lock:
            st = self._states.get(ident)
            if st is None:
                st = self._new_state(ident, now)
            st.in_flight += 1
            generation = self._generation
        return Pick(self, ep, st, now, generation)

    def report(self, endpoint: Endpoint, *, ok: bool, seconds: float | None = None) -> None:
        """Report how a request to ``endpoint`` went, for callers that do not use
        `choose`.

        Args:
            endpoint: The endpoint the request went to (told apart by host and port).
            ok: True when it worked, False when it failed because of the endpoint (a
                failure counts towards ejection).
            seconds: How long it took, for the latency average. A failure counts as
                at least twice the endpoint's average, so an endpoint that fails fast
                does not look fast. Default None: no time.

        Example:
            >>> import kdisco
            >>> lb = kdisco.Balancer(clock=lambda: 100.0)     # a stopped clock: no fading
            >>> ep = kdisco.Endpoint(host="192.0.2.1", port=80)
            >>> lb.report(ep, ok=True, seconds=0.05)
            >>> lb.health(ep).latency
            0.05
        """
        ident = (endpoint.host, endpoint.port)
        now = self._clock()
        with self._lock:
            st = self._states.get(ident)
            if st is None:
                st = self._new_state(ident, now)
            self._record(st, ok, seconds, now)

    def health(self, endpoint: Endpoint) -> EndpointHealth:
        """What the balancer knows about ``endpoint``'s address now.

        Args:
            endpoint: The endpoint to ask about (told apart by host and port).

        Returns:
            EndpointHealth: Its requests in flight, latency, failures and ejection;
            the defaults for an address the balancer knows nothing of.
        """
        now = self._clock()
        with self._lock:
            st = self._states.get((endpoint.host, endpoint.port))
            if st is None:
                return EndpointHealth()
            return EndpointHealth(
                in_flight=st.in_flight,
                latency=None if st.ewma is None else _faded(st.ewma, now - st.ewma_at, self._tau),
                consecutive_failures=st.failures,
                ejections=st.ejections,
                ejected_until=st.until if st.until > now else None,
            )

    # -- the slow path: a new answer, or ejections changed -----------------------------

    def _entry(self, endpoints: Resolution | Sequence[Endpoint]) -> _Entry:
        now = self._clock()
        with self._lock:
            if self._expiry is not None and now >= self._expiry:
                self._expire(now)
            key = id(endpoints)
            cached = self._entries.get(key)
            if cached is not None and cached.owner is endpoints:
                if cached.epoch == self._epoch:
                    return cached
                candidates = self._candidates(cached.layers, now)
                view = cached.view
                if candidates == cached.candidates:
                    # Unchanged (another Service's ejection moved the epoch): the same
                    # object, so pickers keep what they derived from it.
                    candidates = cached.candidates
                else:
                    # Held (so never swept): the figures it lines up stay the balancer's.
                    view = self._view(view.group, candidates, now)
                entry = _Entry(
                    endpoints,
                    cached.endpoints,
                    cached.resolution,
                    cached.layers,
                    candidates,
                    view,
                    self._epoch,
                )
                self._entries[key] = entry
                return entry
            group: Hashable
            if isinstance(endpoints, Resolution):
                resolution: Resolution | None = endpoints
                eps = endpoints.endpoints
                group = (endpoints.service, endpoints.port)
            else:
                resolution, eps, group = None, tuple(endpoints), None
            layers = candidate_layers(eps, self._topology, resolution)
            candidates = self._candidates(layers, now)
            # A list may change under the same id: only immutable inputs are kept.
            keep = resolution is not None or isinstance(endpoints, tuple)
            if not keep:
                # Swept first: the sweep spares the figures of held answers only, and
                # the view must line up figures the balancer goes on updating.
                self._maybe_sweep(now)
            view = self._view(group, candidates, now)
            entry = _Entry(endpoints, eps, resolution, layers, candidates, view, self._epoch)
            if keep:
                self._keep(key, entry, group if resolution is not None else None, now)
                self._maybe_sweep(now)
            return entry

    def _view(self, group: Hashable, candidates: tuple[Endpoint, ...], now: float) -> _View:
        """The ``Stats`` for ``candidates``, with their figures lined up (created as
        needed, without a sweep: one could forget figures the view then holds). Lock held."""
        states = self._states
        aligned = []
        for ep in candidates:
            ident = (ep.host, ep.port)
            st = states.get(ident)
            if st is None:
                st = states[ident] = _State(ident, now)
            aligned.append(st)
        return _View(group, states, self._clock, self._tau, tuple(aligned))

    def _keep(self, key: int, entry: _Entry, group: Hashable | None, now: float) -> None:
        # Lock held. A new answer for a Service and port replaces the one before it.
        if group is not None:
            previous = self._group_entry.get(group)
            if previous is not None and previous != key:
                self._drop(previous, now)
            self._group_entry[group] = key
        if len(self._entries) >= _MAX_ENTRIES:
            self._drop(next(iter(self._entries)), now)
        self._entries[key] = entry

    def _drop(self, key: int, now: float) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.resolution is not None:
            group = entry.view.group
            if self._group_entry.get(group) == key:
                del self._group_entry[group]
        # Listed until now: the time to forget them starts here.
        states = self._states
        for ep in entry.endpoints:
            st = states.get((ep.host, ep.port))
            if st is not None:
                st.seen = now

    def _candidates(self, layers: Layers, now: float) -> tuple[Endpoint, ...]:
        """The first layer with an endpoint that is not ejected, without the ejected.

        Lock held. At most ``max_ejection_share`` of all usable endpoints (the last
        layer), and never all, are left out: the ones ejected first.
        """
        if not self._ejected:
            return layers[0]
        usable = layers[-1]
        states = self._states
        ejected: list[tuple[float, Ident]] = []
        for ep in usable:
            st = states.get((ep.host, ep.port))
            if st is not None and st.until > now:
                ejected.append((st.ejected_at, st.ident))
        allowed = min(
            int(self._outliers.max_ejection_share * len(usable) + _EPSILON), len(usable) - 1
        )
        if not ejected or allowed <= 0:
            return layers[0]
        ejected.sort()
        out = {ident for _, ident in ejected[:allowed]}
        for layer in layers:
            kept = tuple(ep for ep in layer if (ep.host, ep.port) not in out)
            if len(kept) == len(layer):
                return layer
            if kept:
                return kept
        raise AssertionError("unreachable: the last layer always keeps an endpoint")

    # -- outcomes and ejections ---------------------------------------------------------

    def _finish(self, pick: Pick, ok: bool | None) -> None:
        now = self._clock()
        with self._lock:
            if pick._done:
                return
            pick._done = True
            st = pick._state
            if pick._generation == self._generation and st.in_flight > 0:
                st.in_flight -= 1
            if ok is not None:
                self._record(st, ok, now - pick._started, now)

    def _record(self, st: _State, ok: bool, seconds: float | None, now: float) -> None:
        # Lock held.
        if self._expiry is not None and now >= self._expiry:
            self._expire(now)
        if seconds is not None and seconds >= 0 and math.isfinite(seconds):
            sample = float(seconds)
            if not ok and st.ewma is not None:
                sample = max(sample, 2 * st.ewma)
            if st.ewma is None:
                st.ewma = sample
            else:
                weight = math.exp(-(now - st.ewma_at) / self._tau) if now > st.ewma_at else 1.0
                st.ewma = sample + (st.ewma - sample) * weight
            st.ewma_at = now
        if ok:
            st.failures = 0
            return
        st.failures += 1
        policy = self._outliers
        if policy.enabled and st.failures >= policy.consecutive_failures and st.until <= now:
            self._eject(st, now)

    def _eject(self, st: _State, now: float) -> None:
        # Lock held.
        policy = self._outliers
        count = st.ejections
        if count and st.returned_at is not None and policy.base_ejection > 0:
            count = max(0, count - int((now - st.returned_at) // policy.base_ejection))
        count += 1
        st.failures = 0
        duration = policy.ejection_time(count)
        if duration <= 0:
            return
        st.ejections = count
        st.ejected_at = now
        st.until = now + duration
        self._ejected.add(st.ident)
        if self._expiry is None or st.until < self._expiry:
            self._expiry = st.until
        self._epoch += 1

    def _expire(self, now: float) -> None:
        # Lock held: ejections whose time is up end; the next end is found.
        expiry: float | None = None
        for ident in list(self._ejected):
            st = self._states.get(ident)
            if st is None:
                self._ejected.discard(ident)
            elif st.until <= now:
                self._ejected.discard(ident)
                st.returned_at = st.until
                st.failures = 0
            elif expiry is None or st.until < expiry:
                expiry = st.until
        self._expiry = expiry
        self._epoch += 1

    # -- bounded memory -------------------------------------------------------------------

    def _new_state(self, ident: Ident, now: float) -> _State:
        # Lock held.
        st = self._states[ident] = _State(ident, now)
        self._maybe_sweep(now)
        return st

    def _maybe_sweep(self, now: float) -> None:
        """Forget addresses no kept answer lists, unused for ``forget_after`` seconds.

        Lock held. Runs on the slow path only (a new answer, a new address), at most
        four times per ``forget_after``: O(addresses) each time.
        """
        if now - self._last_sweep < self._forget_after / 4:
            return
        self._last_sweep = now
        states = self._states
        for entry in self._entries.values():
            for ep in entry.endpoints:
                st = states.get((ep.host, ep.port))
                if st is not None:
                    st.seen = now
        horizon = now - self._forget_after
        for ident in [i for i, st in states.items() if st.seen < horizon]:
            st = states[ident]
            if st.in_flight == 0 and st.until <= now:
                del states[ident]
                self._ejected.discard(ident)

    def _after_fork(self) -> None:
        # The parent's requests are not the child's: nothing is in flight here.
        self._lock = threading.Lock()
        self._generation += 1
        for st in self._states.values():
            st.in_flight = 0
