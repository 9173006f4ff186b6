"""One deadline per discovery, with an injectable clock so tests never really wait."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """A point in time by which the work must be done.

    Strategies read ``remaining()`` to size their own I/O timeouts, so one deadline
    bounds everything under a discovery call, retries included.
    """

    __slots__ = ("_clock", "expires_at")

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = clock() + seconds

    @classmethod
    def at(cls, expires_at: float, *, clock: Clock) -> Deadline:
        d = cls(0.0, clock=clock)
        d.expires_at = expires_at
        return d

    @property
    def clock(self) -> Clock:
        return self._clock

    def remaining(self) -> float:
        return max(0.0, self.expires_at - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self.expires_at

    def slice(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, but never later than this one."""
        return Deadline.at(min(self.expires_at, self._clock() + seconds), clock=self._clock)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
