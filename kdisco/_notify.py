"""Change notification, one ``Notifier`` per ``Discoverer``.

Sources that learn of changes (the API watch cache, a static map edited by a test)
publish the Service that changed, or a whole namespace when they cannot tell which
(a watch lost or regained). A ``kdisco.watch()`` subscribes to the Services its
answer was built from and wakes only for those.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

#: ``(namespace, name)`` of one Service, or ``(namespace, None)`` for a whole namespace.
Key = tuple[str, str | None]
Wake = Callable[[], None]


class Notifier:
    """Routes "this Service changed" from sources to the subscribers that care.

    Each `Discoverer` has one (`Discoverer.notifier`); a strategy's factory receives
    it (see `StrategyFactory`). A strategy that learns of changes publishes them
    here, so ``kdisco.watch()`` wakes at once instead of polling. Thread-safe.

    Example:
        >>> n = kdisco.Notifier()
        >>> woken = []
        >>> sub = n.subscribe([("shop", "cart")], wake=lambda: woken.append(1))
        >>> n.publish("shop", "cart")
        >>> n.publish("shop", "web")  # not followed
        >>> woken
        [1]
        >>> sub.close()
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[Key, set[Subscription]] = {}
        self._forwards: weakref.WeakSet[Notifier] = weakref.WeakSet()

    def forward_to(self, other: Notifier) -> None:
        """Publish everything published here on ``other`` too.

        A strategy built in code (not by a ``Discoverer``) publishes to a notifier of
        its own; each ``Discoverer`` that uses it listens there through this.

        Args:
            other: The notifier to forward to (held weakly; forwarding to itself is
                ignored).
        """
        if other is not self:
            self._forwards.add(other)

    def publish(self, namespace: str, name: str | None = None) -> None:
        """Announce a change of Service ``name`` (None: anything in ``namespace``).

        Args:
            namespace: The Service's namespace.
            name: The Service's name; None when the source cannot tell which
                changed (a watch lost or regained), which wakes every subscriber in
                ``namespace``. Default None.
        """
        for other in list(self._forwards):
            other.publish(namespace, name)
        with self._lock:
            if name is None:
                targets = {
                    s for (ns, _), subs in self._by_key.items() if ns == namespace for s in subs
                }
            else:
                targets = set(self._by_key.get((namespace, name), ()))
                targets |= self._by_key.get((namespace, None), set())
        for sub in targets:
            sub.wake()

    def publish_all(self) -> None:
        """Wake every subscriber (a source was closed, say)."""
        for other in list(self._forwards):
            other.publish_all()
        with self._lock:
            targets = set().union(*self._by_key.values())
        for sub in targets:
            sub.wake()

    def subscribe(self, keys: Iterable[Key] = (), *, wake: Wake | None = None) -> Subscription:
        """A subscription to ``keys``; ``wake`` is called from the publishing thread.

        Args:
            keys: ``(namespace, name)`` of each Service to follow, or
                ``(namespace, None)`` for a whole namespace. Default: none yet
                (``Subscription.follow`` sets them).
            wake: Called, from the publishing thread, on each change; keep it
                short. Default None: only ``Subscription.wait`` returns.

        Returns:
            Subscription: Close it when done.
        """
        sub = Subscription(self, wake)
        sub.follow(keys)
        return sub

    def _set(self, sub: Subscription, old: frozenset[Key], new: frozenset[Key]) -> None:
        with self._lock:
            for key in old - new:
                subs = self._by_key.get(key)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_key[key]
            for key in new - old:
                self._by_key.setdefault(key, set()).add(sub)

    def _drop(self, sub: Subscription) -> None:
        self._set(sub, sub.keys, frozenset())

    def __len__(self) -> int:
        with self._lock:
            return len(set().union(*self._by_key.values()))


class Subscription:
    """Woken by its ``Notifier``; ``wait()`` blocks until then (or a timeout).

    Made by `Notifier.subscribe`.

    Args:
        notifier: The notifier it is registered with.
        wake: Called on each change, besides waking ``wait()``.

    Attributes:
        keys: The Services followed.
    """

    def __init__(self, notifier: Notifier, wake: Wake | None) -> None:
        self._notifier = notifier
        self._event = threading.Event()
        self._extra = wake
        self.keys: frozenset[Key] = frozenset()

    def follow(self, keys: Iterable[Key]) -> None:
        """Replace the keys followed (an answer may now come through other Services).

        Args:
            keys: ``(namespace, name)`` or ``(namespace, None)`` pairs.
        """
        new = frozenset(keys)
        if new != self.keys:
            self._notifier._set(self, self.keys, new)
            self.keys = new

    def wake(self) -> None:
        """Wake ``wait()`` and call the ``wake`` callback (the notifier does)."""
        self._event.set()
        if self._extra is not None:
            self._extra()

    def wait(self, timeout: float | None) -> bool:
        """True when woken (the flag is then cleared), False on timeout.

        Args:
            timeout: Seconds to wait at most; None waits for a change.

        Returns:
            bool: Whether a change (or ``wake()``) came.
        """
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        """Stop following: the notifier forgets this subscription."""
        self._notifier._drop(self)
