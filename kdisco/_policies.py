"""The tunable policies: plain, validated values that the machinery reads.

They live apart from that machinery so that ``Settings`` (and ``import kdisco``)
need none of it: the watch cache, tenacity and the answer cache load when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from ._exceptions import ConfigurationError
from ._validation import check_non_negative, check_positive_int

Sleep = Callable[[float], None]


def _random() -> float:
    # random is imported on the first retry, not by every process that imports kdisco.
    import random

    return random.random()


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures, inside the deadline.

    A strategy's transient failure (a timeout, SERVFAIL, HTTP 5xx or 429) is retried
    while its share of the call's deadline lasts; the wait before try ``n + 1`` is
    random between 0 and ``min(maximum, initial * 2 ** (n - 1))`` seconds. Pass one
    to ``Discoverer(retry=...)``.

    Attributes:
        initial: The ceiling of the first wait, in seconds (>= 0). Default 0.05.
        maximum: The ceiling of every wait, in seconds (>= 0). Default 1.0.
        sleep: How to wait: tests pass one that moves a fake clock (left out of
            equality). Default: ``time.sleep``.
        rng: A source of random numbers in [0, 1), for the jitter (left out of
            equality). Default: ``random.random``.

    Raises:
        ConfigurationError: ``initial`` or ``maximum`` is negative or not a number.
    """

    initial: float = 0.05
    maximum: float = 1.0
    # Injection points for tests, not part of the policy's value.
    sleep: Sleep = attrs.field(default=time.sleep, eq=False)
    rng: Callable[[], float] = attrs.field(default=_random, eq=False)

    def __attrs_post_init__(self) -> None:
        check_non_negative(self, "initial", "maximum")

    def wait_for(self, attempt_number: int) -> float:
        """Seconds to wait after try number ``attempt_number`` failed.

        Args:
            attempt_number: The try that failed, from 1.

        Returns:
            float: Between 0 and ``min(maximum, initial * 2 ** (attempt_number - 1))``.
        """
        # Full jitter (AWS architecture blog): spreads retries of many clients that
        # failed together, which is the usual case when a DNS server or API blips.
        # The exponent is capped: past ~1000 tries 2.0**n overflows a float.
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt_number - 1, 64))
        return ceiling * self.rng()


@attrs.frozen(kw_only=True)
class CachePolicy:
    """How ``Discoverer`` reuses answers.

    DNS answers are kept for their TTL, clamped to ``[min_ttl, max_ttl]``; answers
    from the API watch cache for as long as the watch says they hold; the kubelet's
    variables (which never change) for ``max_ttl``. When a refresh fails for a reason
    that is not an answer (timeouts, nothing reachable), the last good answer is
    served with ``stale=True`` and its ``age`` for up to ``max_stale`` seconds after it
    was fetched, and the failing refresh is retried at most every ``min_ttl`` seconds.
    After that the error is raised. Answers are never served stale silently.
    ``max_entries`` bounds the cache: past it the oldest answers (the least recently
    stored) go, and expired answers are purged as the cache fills.

    Pass one to ``Discoverer(cache=...)``; ``cache=False`` is ``enabled=False``.

    Attributes:
        enabled: Whether answers are cached at all. Default True.
        min_ttl: The shortest time a DNS answer is kept, and how often at most a
            failing refresh is retried while a stale answer is served, in seconds.
            Default 1.0.
        max_ttl: The longest time a DNS answer (or the kubelet's variables) is
            kept, in seconds. Default 30.0.
        max_stale: How long after it was fetched the last good answer may be served
            ``stale=True`` while refreshes fail (timeouts, nothing reachable), in
            seconds. Default 300.0.
        max_entries: How many answers are kept at most (>= 1). Default 4096.

    Raises:
        ConfigurationError: A value is negative or not a number, ``min_ttl`` is
            larger than ``max_ttl``, or ``max_entries`` is not an int >= 1.

    Example:
        >>> kdisco.CachePolicy(max_ttl=10, max_stale=60)
        CachePolicy(enabled=True, min_ttl=1.0, max_ttl=10, max_stale=60, max_entries=4096)
    """

    enabled: bool = True
    min_ttl: float = 1.0
    max_ttl: float = 30.0
    max_stale: float = 300.0
    max_entries: int = 4096

    def __attrs_post_init__(self) -> None:
        check_non_negative(self, "min_ttl", "max_ttl", "max_stale")
        if self.min_ttl > self.max_ttl:
            raise ConfigurationError("CachePolicy.min_ttl is larger than max_ttl")
        check_positive_int(self, "max_entries")


@attrs.frozen(kw_only=True)
class WatchCachePolicy:
    """How the ``api`` strategy's shared list+watch cache behaves.

    ``relist_interval``: a full re-list this often, which catches anything a watch
    could have missed. ``watch_timeout``: the server ends each watch after this many
    seconds (it is then re-opened from the last resourceVersion). ``read_timeout``:
    the longest silence tolerated on an open connection before it is assumed dead and
    re-opened (the API sends a bookmark about every minute). ``page_size``: items per
    list page. ``backoff_initial``/``backoff_max``: reconnect backoff (full jitter).
    ``sync_wait``: the share of a caller's remaining deadline spent waiting for the
    first list of a namespace before reading the API directly. ``max_namespaces``:
    at most this many namespaces are watched (two threads and two watches each);
    lookups in further namespaces read the API directly, so names from user input or
    typos cannot grow the threads without bound.

    Pass one to ``Discoverer(api_watch=...)``; ``api_watch=False`` is
    ``enabled=False``.

    Attributes:
        enabled: Whether the api strategy keeps a list+watch cache at all (else it
            reads the API on every uncached call). Default True.
        relist_interval: Seconds between full re-lists. Default 600.0.
        watch_timeout: Seconds after which the server ends each watch request.
            Default 300.0.
        read_timeout: The longest silence, in seconds, tolerated on an open watch.
            Default 90.0.
        connect_timeout: Seconds to connect to the API server. Default 10.0.
        page_size: Items per list page (>= 1). Default 500.
        backoff_initial: The ceiling of the first reconnect wait, in seconds.
            Default 0.2.
        backoff_max: The ceiling of every reconnect wait, in seconds. Default 30.0.
        sync_wait: The share (0 to 1) of a call's remaining deadline spent waiting
            for a namespace's first list. Default 0.5.
        max_namespaces: How many namespaces are watched at most (>= 1). Default 32.

    Raises:
        ConfigurationError: A value is negative or not a number, ``sync_wait`` is
            over 1, or ``page_size`` or ``max_namespaces`` is not an int >= 1.
    """

    enabled: bool = True
    relist_interval: float = 600.0
    watch_timeout: float = 300.0
    read_timeout: float = 90.0
    connect_timeout: float = 10.0
    page_size: int = 500
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    sync_wait: float = 0.5
    max_namespaces: int = 32

    def __attrs_post_init__(self) -> None:
        check_non_negative(
            self,
            "relist_interval",
            "watch_timeout",
            "read_timeout",
            "connect_timeout",
            "backoff_initial",
            "backoff_max",
            "sync_wait",
        )
        check_positive_int(self, "page_size", "max_namespaces")
        if self.sync_wait > 1:
            raise ConfigurationError("WatchCachePolicy.sync_wait is a share: between 0 and 1")
