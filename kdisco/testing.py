"""Test doubles for code that calls kdisco.

``FakeResolver`` answers from a mapping and is a strategy like any other;
``override`` makes plain ``kdisco.discover()`` use it. The pytest fixture
``kdisco_fake`` (installed with kdisco) does both for one test. See docs/testing.md.
"""

# Imports are bound to private names: this is a public module, and what it shows
# (dir(), tab completion, ``import *``) should be exactly ``__all__``.
import collections.abc as _abc
import contextlib as _contextlib

from . import _discoverer
from ._strategies import base as _base
from ._strategies import static as _static

__all__ = ["FakeResolver", "override"]


class FakeResolver(_static.StaticStrategy):
    """A strategy that answers from ``mapping`` of ``"svc"`` / ``"svc.ns"`` to addresses.

    Values are lists of ``"host:port"`` strings (``"[2001:db8::1]:443"`` for IPv6) or
    ``Endpoint`` objects, or ``{"endpoints": [...], "ports": {"http": 8080}}`` to
    declare named ports. A bare ``"svc"`` key matches any namespace. Everything is
    validated when the fake is built, so a typo fails the test that made it.
    """

    def __init__(
        self,
        mapping: _abc.Mapping[str, _static.StaticEntry] | None = None,
        *,
        name: str = "fake",
    ) -> None:
        super().__init__(mapping or {}, name=name)

    def add(self, name: str, entry: _static.StaticEntry) -> None:
        """Add or replace one Service."""
        self._set(name, entry)

    def remove(self, name: str) -> None:
        """Forget one Service, so discovering it raises ServiceNotFound."""
        self._remove(name)


@_contextlib.contextmanager
def override(
    resolver: _base.Strategy, *, namespace: str = "default", timeout: float = 5.0
) -> _abc.Iterator[_discoverer.Discoverer]:
    """Inside the ``with`` block, ``kdisco.discover()`` answers from ``resolver`` only.

    ``resolver`` is usually a ``FakeResolver``, but any strategy will do. Nothing else
    is consulted (no DNS, no environment, no API), so tests are hermetic whatever
    machine they run on. Yields the Discoverer in use.

    The override holds in the current context: this thread, and asyncio tasks
    started inside the block. Threads and tasks elsewhere keep their own, so tests
    running concurrently never see each other's fakes.
    """
    discoverer = _discoverer.Discoverer(
        strategies=[resolver],
        namespace=namespace,
        timeout=timeout,
        environ={},
        resolv_conf="/nonexistent",
    )
    with _discoverer.use_discoverer(discoverer):
        yield discoverer
