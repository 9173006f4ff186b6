"""The answer cache in front of the chain, with stale-if-error, bounded in size.

A warm ``discover()`` is one dict lookup and one freshness check: discovery sits on
the request path of the applications that use it, so the hit path is kept free of
parsing, locking and allocation. Writes take a lock; when the cache is full,
expired answers are purged first and then the oldest ones go (insertion order, so
the hit path never has to reorder anything).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable

import attrs

from ._exceptions import DiscoveryTimeout, DiscoveryUnavailable
from ._forksafe import after_fork_in_child
from ._models import Freshness, Resolution
from ._policies import CachePolicy

Clock = Callable[[], float]

#: How often, at most, a write scans for expired answers even when not full.
_PURGE_EVERY = 60.0


@attrs.define(slots=True)
class _Entry:
    resolution: Resolution
    expires_at: float
    valid: Callable[[], bool] | None


#: Errors after which the last good answer may be served stale: they say nothing
#: about the Service, only that it could not be asked about. A "not found" or
#: "nothing ready" is an answer and is never papered over.
_STALE_OK = (DiscoveryTimeout, DiscoveryUnavailable)


class AnswerCache:
    def __init__(self, policy: CachePolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()
        self._next_purge = -math.inf
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at the fork

    def get(self, key: Hashable) -> Resolution | None:
        """The cached answer when still fresh; the hot path of a warm discover()."""
        try:
            entry = self._entries.get(key)
        except TypeError:  # unhashable input: let validation name the problem
            return None
        if entry is None or entry.expires_at <= self._clock():
            return None
        if entry.valid is not None and not entry.valid():
            return None
        return entry.resolution

    def put(self, key: Hashable, res: Resolution) -> None:
        if not self.policy.enabled:
            return
        fresh = res.freshness
        valid = None if fresh is None else fresh.valid
        if res.ttl is not None:
            # A TTL bounds the answer even when a validity check comes with it (an
            # ExternalName from DNS in front of a watched Service).
            ttl = min(max(res.ttl, self.policy.min_ttl), self.policy.max_ttl)
            expires_at = res.fetched_at + ttl
        elif valid is not None:
            expires_at = math.inf
        else:
            return  # the source gave no way to know how long it holds
        self._store(key, _Entry(res, expires_at, valid))

    def _store(self, key: Hashable, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(key, None)  # re-inserted last: the newest
            self._entries[key] = entry
            now = self._clock()
            if len(self._entries) > self.policy.max_entries or now >= self._next_purge:
                self._purge(now)

    def _purge(self, now: float) -> None:
        # Caller holds the lock. Expired answers go first; while still over three
        # quarters of the limit, the oldest go too, so a full cache purges rarely.
        self._next_purge = now + _PURGE_EVERY
        entries = self._entries
        # An expired entry is kept while it could still be served stale.
        horizon = now - self.policy.max_stale
        for k in [k for k, e in entries.items() if _dead(e, now, horizon)]:
            del entries[k]
        limit = self.policy.max_entries
        if len(entries) > limit:
            for k in list(entries)[: len(entries) - (limit * 3) // 4]:
                del entries[k]

    def stale_or_raise(self, key: Hashable, error: Exception) -> Resolution:
        """After a failed refresh: the last good answer marked stale, or ``error``."""
        try:
            entry = self._entries.get(key)
        except TypeError:
            entry = None
        if entry is None:
            raise error
        if not isinstance(error, _STALE_OK):
            # An answer ("not found", "nothing ready", "denied"): the old one is void.
            with self._lock:
                self._entries.pop(key, None)
            raise error
        now = self._clock()
        last = entry.resolution
        age = last.age
        if age > self.policy.max_stale:
            with self._lock:
                self._entries.pop(key, None)
            raise error
        stale = attrs.evolve(
            last,
            stale=True,
            attempts=getattr(error, "attempts", ()),
            # Pin the age to the last confirmation: nothing confirms it any more.
            freshness=Freshness(clock=self._clock, fetched_at=now - age),
        )
        # Serve it without asking again for a little while: a dead backend must not
        # cost every caller a full deadline. Never past max_stale, though.
        until = min(now + self.policy.min_ttl, now - age + self.policy.max_stale)
        self._store(key, _Entry(stale, until, None))
        return stale

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _dead(entry: _Entry, now: float, horizon: float) -> bool:
    """Expired, and too old to be served stale either."""
    if entry.expires_at > now and (entry.valid is None or entry.valid()):
        return False
    return entry.resolution.fetched_at < horizon or entry.expires_at <= horizon
