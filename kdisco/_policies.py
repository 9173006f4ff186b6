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
    """Exponential backoff with full jitter for transient failures, inside the deadline."""

    initial: float = 0.05
    maximum: float = 1.0
    # Injection points for tests, not part of the policy's value.
    sleep: Sleep = attrs.field(default=time.sleep, eq=False)
    rng: Callable[[], float] = attrs.field(default=_random, eq=False)

    def __attrs_post_init__(self) -> None:
        check_non_negative(self, "initial", "maximum")

    def wait_for(self, attempt_number: int) -> float:
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
    ``max_entries`` bounds the cache: past it the least recently used answer goes,
    and expired answers are purged as the cache fills.
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
