"""The pytest plugin kdisco registers: the ``kdisco_fake`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeResolver, override


@pytest.fixture
def kdisco_fake() -> Iterator[FakeResolver]:
    """An empty ``FakeResolver`` that plain ``kdisco.discover()`` uses for this test.

    Add Services with ``kdisco_fake.add("payments", ["192.0.2.10:5432"])``.
    """
    fake = FakeResolver()
    with override(fake):
        yield fake
