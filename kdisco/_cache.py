"""The answer cache in front of the chain, with stale-if-error.

A warm ``discover()`` is one dict lookup and one freshness check: discovery sits on
the request path of the applications that use it, so the hit path is kept free of
parsing, locking and allocation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import attrs

from ._exceptions import ConfigurationError, DiscoveryTimeout, DiscoveryUnavailable
from ._models import Resolution

Clock = Callable[[], float]


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
    """

    enabled: bool = True
    min_ttl: float = 1.0
    max_ttl: float = 30.0
    max_stale: float = 300.0

    def __attrs_post_init__(self) -> None:
        for name in ("min_ttl", "max_ttl", "max_stale"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (value >= 0 and not math.isnan(value))
            ):
                raise ConfigurationError(f"CachePolicy.{name} must be a number >= 0, not {value!r}")
        if self.min_ttl > self.max_ttl:
            raise ConfigurationError("CachePolicy.min_ttl is larger than max_ttl")


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
        valid = res._valid
        if res.ttl is not None:
            # A TTL bounds the answer even when a validity check comes with it (an
            # ExternalName from DNS in front of a watched Service).
            ttl = min(max(res.ttl, self.policy.min_ttl), self.policy.max_ttl)
            expires_at = res.fetched_at + ttl
        elif valid is not None:
            expires_at = math.inf
        else:
            return  # the source gave no way to know how long it holds
        self._entries[key] = _Entry(res, expires_at, valid)

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
            self._entries.pop(key, None)
            raise error
        now = self._clock()
        last = entry.resolution
        if last.age > self.policy.max_stale:
            self._entries.pop(key, None)
            raise error
        stale = attrs.evolve(
            last,
            stale=True,
            attempts=getattr(error, "attempts", ()),
            # Pin the age to the last confirmation: nothing confirms it any more.
            fetched_at=now - last.age,
            confirmed=None,
            valid=None,
        )
        # Serve it without asking again for a little while: a dead backend must not
        # cost every caller a full deadline.
        self._entries[key] = _Entry(stale, now + self.policy.min_ttl, None)
        return stale

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
