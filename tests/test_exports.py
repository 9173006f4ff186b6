"""The public surface: ``__all__`` lists exactly what the modules show (httpx's check)."""

from __future__ import annotations

import types

import pytest

import kdisco
import kdisco.testing

# Dunder names that are part of the API on purpose.
PUBLIC_DUNDERS = {"__version__"}


def public_attributes(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        # Submodules (kdisco.testing) are reached by import, not re-exported.
        if (not name.startswith("_") or name in PUBLIC_DUNDERS)
        and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("module", [kdisco, kdisco.testing], ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(set(module.__all__))


@pytest.mark.parametrize("module", [kdisco, kdisco.testing], ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module: types.ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", [kdisco, kdisco.testing], ids=lambda m: m.__name__)
def test_all_equals_the_public_attributes(module: types.ModuleType) -> None:
    assert set(module.__all__) == public_attributes(module)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from kdisco.testing import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == ["FakeResolver", "override"]


def test_public_classes_present_themselves_as_kdisco() -> None:
    # Tracebacks and reprs say kdisco.X, where users import X from.
    classes = [getattr(kdisco, n) for n in kdisco.__all__ if isinstance(getattr(kdisco, n), type)]
    assert classes  # the loop below must check something
    assert {c.__module__ for c in classes} == {"kdisco"}
    assert repr(kdisco.ServiceKind.HEADLESS) == "<ServiceKind.HEADLESS: 'Headless'>"
    assert kdisco.InvalidServiceName.__module__ == "kdisco"


def test_issue_contract_names_are_exported() -> None:
    # The names issue 2 promises users; the rest of __all__ may grow.
    promised = {
        "discover",
        "Discoverer",
        "Resolution",
        "Endpoint",
        "ServiceKind",
        "DiscoveryError",
        "InvalidServiceName",
        "ServiceNotFound",
        "NoReadyEndpoints",
        "PortNotFound",
        "AccessDenied",
        "DiscoveryTimeout",
    }
    assert promised <= set(kdisco.__all__)
    assert {"FakeResolver", "override"} == set(kdisco.testing.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(kdisco.__version__, str)
    assert kdisco.__version__[0].isdigit()
