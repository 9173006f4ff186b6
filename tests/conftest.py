"""Shared test configuration.

Tests marked ``lab`` need the local lab (real kube-apiserver, etcd, CoreDNS). Under
``CI=true`` a lab that cannot be built or started fails the run; elsewhere those
tests skip with a message that says how to get the lab.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._helpers_api import FakeApiServer, fake_apiserver

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under tests/integration/ talk to the lab; mark them so `-m "not lab"`
    # gives a quick unit-only run.
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # urllib3 and the kubernetes client honour proxy variables; a proxy must never see
    # requests meant for a test's own 127.0.0.1 servers.
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    """A stand-in kube-apiserver on 127.0.0.1 (see tests/_helpers_api.py)."""
    with fake_apiserver() as s:
        yield s
