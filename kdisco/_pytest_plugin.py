"""The pytest plugin kdisco registers: the ``kdisco_fake`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeResolver, override


@pytest.fixture
def kdisco_fake() -> Iterator[FakeResolver]:
    """An empty ``FakeResolver`` that plain ``kdisco.discover()`` uses for this test.

    Add Services with ``kdisco_fake.add("payments", ["192.0.2.10:5432"])``.
    ``kdisco.discover()``, ``kdisco.watch()`` and ``kdisco.aio`` answer from it
    alone (namespace ``default``, no DNS, environment or API) until the test ends:
    see `kdisco.testing.override`.

    Yields:
        kdisco.testing.FakeResolver: Empty; a name not added raises
        `kdisco.ServiceNotFound`.

    Example:
        A test, with kdisco installed (the fixture needs no import)::

            def test_checkout(kdisco_fake):
                kdisco_fake.add("payments", ["192.0.2.10:5432"])
                assert checkout() == "paid"
    """
    fake = FakeResolver()
    with override(fake):
        yield fake
