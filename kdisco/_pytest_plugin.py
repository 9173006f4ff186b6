"""The pytest plugin kdisco registers: the ``kdisco_fake`` fixture, the
``kdisco_fake`` marker and the ``kdisco_fake_mode`` ini option that configure it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeResolver, override

_MARKER = (
    "kdisco_fake(mode=None, namespace='default'): how the kdisco_fake fixture answers "
    "in this test: mode 'static', 'dns', 'env' or 'api' (see kdisco.testing.FakeResolver; "
    "default: the kdisco_fake_mode ini option), and the namespace of names given "
    "without one (in mode 'env' also the pod's)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ``kdisco_fake_mode`` ini option (the mode of every ``kdisco_fake``)."""
    parser.addini(
        "kdisco_fake_mode",
        "mode of the kdisco_fake fixture's FakeResolver: static (default), dns, env or api",
        default="static",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``kdisco_fake`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line("markers", _MARKER)


def _fake_options(mode: str | None = None, namespace: str = "default") -> tuple[str | None, str]:
    # The marker's arguments, by name: a misspelt one is a TypeError naming it.
    return mode, namespace


@pytest.fixture
def kdisco_fake(request: pytest.FixtureRequest) -> Iterator[FakeResolver]:
    """An empty ``FakeResolver`` that plain ``kdisco.discover()`` uses for this test.

    Add Services with ``kdisco_fake.add("payments", ["192.0.2.10:5432"])``.
    ``kdisco.discover()``, ``kdisco.watch()`` and ``kdisco.aio`` answer from it
    alone (namespace ``default``, no DNS, environment or API) until the test ends:
    see `kdisco.testing.override`.

    The fake answers as the ``static`` strategy does unless told otherwise: for a
    whole project with the ini option ``kdisco_fake_mode = dns`` (``dns`` is
    recommended for code that runs with the default chain), for one test (or module,
    with ``pytestmark``) with the marker ``@pytest.mark.kdisco_fake(mode="dns")``,
    which wins. The marker's ``namespace=`` sets the namespace of names given without
    one (default ``"default"``; in mode ``env`` also the pod's namespace).

    Yields:
        kdisco.testing.FakeResolver: Empty; a name not added raises
        `kdisco.ServiceNotFound`.

    Raises:
        kdisco.ConfigurationError: The mode (marker or ini option) or the namespace
            is not one FakeResolver takes.
        TypeError: The marker has an argument other than ``mode`` and ``namespace``.

    Example:
        A test, with kdisco installed (the fixture needs no import)::

            @pytest.mark.kdisco_fake(mode="dns")
            def test_checkout(kdisco_fake):
                kdisco_fake.add("payments", ["192.0.2.10:5432"])
                assert checkout() == "paid"
    """
    marker = request.node.get_closest_marker("kdisco_fake")
    mode, namespace = _fake_options(**marker.kwargs) if marker else (None, "default")
    if mode is None:
        mode = str(request.config.getini("kdisco_fake_mode")).strip() or "static"
    fake = FakeResolver(mode=mode, pod_namespace=namespace if mode == "env" else None)
    with override(fake, namespace=namespace):
        yield fake
