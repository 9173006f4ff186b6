"""kdisco for asyncio: the same chain, answers, errors and cache, never blocking the loop.

    >>> import kdisco.aio
    >>> res = await kdisco.aio.discover("payments.billing", port="http")  # doctest: +SKIP
    >>> async for res in kdisco.aio.watch("payments.billing"):           # doctest: +SKIP
    ...     print(res.endpoints)

``AsyncDiscoverer`` takes the same arguments and environment variables as
``kdisco.Discoverer``; ``kdisco.testing.FakeResolver`` and ``override()`` work for
async code unchanged. See docs/asyncio.md.
"""

from ._aio import AsyncDiscoverer, AsyncWatch, default_discoverer, discover, watch

__all__ = ["AsyncDiscoverer", "AsyncWatch", "default_discoverer", "discover", "watch"]

for _name in ("AsyncDiscoverer", "AsyncWatch"):
    globals()[_name].__module__ = __name__
del _name
