"""What a forked child must redo: threads do not survive ``fork()``, locks may be held.

gunicorn ``--preload``, celery prefork and multiprocessing's fork start method fork a
process that may already have discovered Services: its watch threads, pooled
connections and locks were the parent's. Objects that hold such state register a
method here; in the child, right after the fork, each is called to drop it, so the
child starts its own watches and connections instead of serving the parent's last
list for ever. A leaf module.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []
_lock = threading.Lock()


def after_fork_in_child(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every forked child while its object lives."""
    with _lock:
        _hooks[:] = [h for h in _hooks if h() is not None]
        _hooks.append(weakref.WeakMethod(method))


def _run_hooks() -> None:
    global _lock
    _lock = threading.Lock()  # the parent may have held it at the fork
    for hook in list(_hooks):
        method = hook()
        if method is not None:
            method()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_hooks)
