"""Test doubles for code that calls kdisco.

``FakeResolver`` answers from a mapping and is a strategy like any other;
``override`` makes plain ``kdisco.discover()`` use it. The pytest fixture
``kdisco_fake`` (installed with kdisco) does both for one test. See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from ._discoverer import Discoverer, use_discoverer
from ._static import StaticEntry, StaticStrategy

__all__ = ["FakeResolver", "override"]


class FakeResolver(StaticStrategy):
    """A strategy that answers from ``mapping`` of ``"svc"`` / ``"svc.ns"`` to addresses.

    Values are lists of ``"host:port"`` strings (``"[2001:db8::1]:443"`` for IPv6) or
    ``Endpoint`` objects, or ``{"endpoints": [...], "ports": {"http": 8080}}`` to
    declare named ports. A bare ``"svc"`` key matches any namespace. Everything is
    validated when the fake is built, so a typo fails the test that made it.
    """

    def __init__(
        self, mapping: Mapping[str, StaticEntry] | None = None, *, name: str = "fake"
    ) -> None:
        super().__init__(mapping or {}, name=name)

    def add(self, name: str, entry: StaticEntry) -> None:
        """Add or replace one Service."""
        self._set(name, entry)

    def remove(self, name: str) -> None:
        """Forget one Service, so discovering it raises ServiceNotFound."""
        self._remove(name)


@contextmanager
def override(
    resolver: StaticStrategy, *, namespace: str = "default", timeout: float = 5.0
) -> Iterator[Discoverer]:
    """Inside the ``with`` block, ``kdisco.discover()`` answers from ``resolver`` only.

    Nothing else is consulted (no DNS, no environment, no API), so tests are
    hermetic whatever machine they run on. Yields the Discoverer in use.
    """
    discoverer = Discoverer(
        strategies=[resolver],
        namespace=namespace,
        timeout=timeout,
        environ={},
        resolv_conf="/nonexistent",
    )
    with use_discoverer(discoverer):
        yield discoverer
