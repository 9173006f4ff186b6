"""Test doubles for code that calls kdisco.

``FakeResolver`` answers from a mapping and is a strategy like any other;
``override`` makes plain ``kdisco.discover()`` use it. The pytest fixture
``kdisco_fake`` (installed with kdisco) does both for one test. See docs/testing.md.
"""

# Imports are bound to private names: this is a public module, and what it shows
# (dir(), tab completion, ``import *``) should be exactly ``__all__``.
import collections.abc as _abc
import contextlib as _contextlib
import os as _os

from . import _deadline, _discoverer, _models, _names
from ._strategies import base as _base
from ._strategies import static as _static

__all__ = ["FakeResolver", "override"]

_Answer = _models.Resolution | _base.Miss


class FakeResolver(_static.StaticStrategy):
    """A strategy that answers from ``mapping`` of ``"svc"`` / ``"svc.ns"`` to addresses.

    Values are lists of ``"host:port"`` strings (``"[2001:db8::1]:443"`` for IPv6) or
    ``Endpoint`` objects, or ``{"endpoints": [...], "ports": {"http": 8080}}`` to
    declare named ports. A bare ``"svc"`` key matches any namespace. Everything is
    validated when the fake is built, so a typo fails the test that made it.

    It answers as the ``static`` strategy does: a ``"svc.ns"`` key wins over a bare
    ``"svc"``; with no port asked, the first declared port; a port number must match
    the entry's; endpoints with ``ready=False`` are left out unless
    ``include_not_ready=True`` (none ready: `kdisco.NoReadyEndpoints`); a name not in
    the map: `kdisco.ServiceNotFound`. Its answers are of kind
    ``ServiceKind.UNKNOWN``, with ``source`` set to ``name``. Changes made with
    `add` and `remove` reach cached answers and ``kdisco.watch()`` at once.

    Args:
        mapping: ``"svc"`` or ``"svc.ns"`` to a list of addresses (``"host:port"``,
            ``"host"``, ``"[ipv6]:port"`` or `kdisco.Endpoint` objects), or to
            ``{"endpoints": [...], "ports": {"name": number}}``. Default: empty.
        name: The strategy's name, as ``Resolution.source`` and attempts show it.
            Default ``"fake"``.

    Attributes:
        notifier: Where `add` and `remove` publish their changes (a
            `kdisco.Notifier`; each Discoverer using the fake listens there).

    Raises:
        kdisco.ConfigurationError: An entry is malformed (a bad address, key or
            port).

    Example:
        >>> import kdisco
        >>> from kdisco.testing import FakeResolver, override
        >>> fake = FakeResolver({"payments": ["10.0.0.1:5432"]})
        >>> with override(fake):
        ...     kdisco.discover("payments.billing").first().address
        '10.0.0.1:5432'
    """

    def __init__(
        self,
        mapping: _abc.Mapping[str, _static.StaticEntry] | None = None,
        *,
        name: str = "fake",
    ) -> None:
        super().__init__(mapping or {}, name=name)

    @classmethod
    def from_file(
        cls, path: str | _os.PathLike[str], *, name: str = "static"
    ) -> _static.StaticStrategy:
        """A fake loaded from the ``[services]`` table of a TOML file.

        The table has the form of ``KDISCO_STATIC`` files (see docs/local-development.md).

        Args:
            path: The TOML file.
            name: The strategy's name. Default ``"static"``.

        Returns:
            FakeResolver: Answering from the file's map.

        Raises:
            kdisco.ConfigurationError: The file cannot be read, is not TOML, has no
                ``[services]`` table, or an entry is malformed.
        """
        return super().from_file(path, name=name)

    @property
    def name(self) -> str:
        """The strategy's name (``"fake"`` unless given), as attempts show it."""
        return super().name

    def lookup(self, query: _names.Query, deadline: _deadline.Deadline) -> _Answer:
        """Answer from the map (the `kdisco.Strategy` contract).

        Args:
            query: What is asked.
            deadline: Unused: a map in memory answers at once.

        Returns:
            kdisco.Resolution | kdisco.Miss: The entry's endpoints, or a miss
            saying why not (not found, no such port, none ready).
        """
        return super().lookup(query, deadline)

    async def alookup(self, query: _names.Query, deadline: _deadline.Deadline) -> _Answer:
        """``lookup()`` for ``kdisco.aio``, on the event loop (it never waits).

        Args:
            query: What is asked.
            deadline: Unused.

        Returns:
            kdisco.Resolution | kdisco.Miss: As ``lookup()``.
        """
        return await super().alookup(query, deadline)

    def add(self, name: str, entry: _static.StaticEntry) -> None:
        """Add or replace one Service.

        Args:
            name: ``"svc"`` (any namespace) or ``"svc.ns"``.
            entry: Its addresses, in the forms the constructor takes.

        Raises:
            kdisco.ConfigurationError: ``name`` or ``entry`` is malformed.

        Example:
            >>> from kdisco.testing import FakeResolver
            >>> fake = FakeResolver()
            >>> fake.add("web.shop", {"endpoints": ["10.0.0.9"], "ports": {"http": 8080}})
        """
        self._set(name, entry)

    def remove(self, name: str) -> None:
        """Forget one Service, so discovering it raises ServiceNotFound.

        Args:
            name: The key it was added under (``"svc"`` or ``"svc.ns"``); an unknown
                one is ignored.

        Raises:
            kdisco.ConfigurationError: ``name`` is malformed.
        """
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

    ``kdisco.aio.discover()`` and ``kdisco.watch()`` use it too. The environment is
    not read: the Discoverer is built with no variables and no resolv.conf.

    Args:
        resolver: The strategy to answer from (a `FakeResolver`, or any
            `kdisco.Strategy`).
        namespace: The namespace for names that carry none. Default ``"default"``.
        timeout: Seconds each call may take. Default 5.0.

    Yields:
        kdisco.Discoverer: The Discoverer ``kdisco.discover()`` uses inside the
        block.

    Raises:
        kdisco.ConfigurationError: ``namespace`` or ``timeout`` is malformed, or
            ``resolver`` is not a strategy.

    Example:
        >>> import kdisco
        >>> from kdisco.testing import FakeResolver, override
        >>> with override(FakeResolver({"cart": ["10.0.0.7:80"]}), namespace="shop"):
        ...     str(kdisco.discover("cart").service)
        'cart.shop'
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
