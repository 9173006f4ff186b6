"""One deadline per discovery, with an injectable clock so tests never really wait."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """A point in time by which the work must be done.

    Strategies read ``remaining()`` to size their own I/O timeouts, so one deadline
    bounds everything under a discovery call, retries included.

    Args:
        seconds: How long from now, on ``clock``.
        clock: A monotonic clock in seconds (a fake one in tests). Default:
            ``time.monotonic``.

    Attributes:
        expires_at: The point in time, on ``clock``.

    Example:
        >>> now = [100.0]
        >>> d = kdisco.Deadline(2.0, clock=lambda: now[0])
        >>> now[0] += 0.5
        >>> d.remaining(), d.expired()
        (1.5, False)
    """

    __slots__ = ("_clock", "expires_at")

    def __init__(self, seconds: float, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.expires_at = clock() + seconds

    @classmethod
    def at(cls, expires_at: float, *, clock: Clock) -> Deadline:
        """A deadline at a given point in time rather than a number of seconds away.

        Args:
            expires_at: The point in time, on ``clock``.
            clock: The clock ``expires_at`` is on.

        Returns:
            Deadline: The deadline.
        """
        d = cls(0.0, clock=clock)
        d.expires_at = expires_at
        return d

    @property
    def clock(self) -> Clock:
        """The clock the deadline is measured on."""
        return self._clock

    def remaining(self) -> float:
        """Seconds left, 0.0 once expired: size I/O timeouts with it."""
        return max(0.0, self.expires_at - self._clock())

    def expired(self) -> bool:
        """Whether the point in time has been reached."""
        return self._clock() >= self.expires_at

    def slice(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, but never later than this one.

        Args:
            seconds: How long from now the share may last.

        Returns:
            Deadline: On the same clock.
        """
        return Deadline.at(min(self.expires_at, self._clock() + seconds), clock=self._clock)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
