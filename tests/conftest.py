"""Shared test configuration.

Tests marked ``lab`` need the local lab (real kube-apiserver, etcd, CoreDNS). Under
``CI=true`` a lab that cannot be built or started fails the run; elsewhere those
tests skip with a message that says how to get the lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under tests/integration/ talk to the lab; mark them so `-m "not lab"`
    # gives a quick unit-only run.
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.lab)
