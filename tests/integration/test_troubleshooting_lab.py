"""docs/troubleshooting.md against the lab: every output on the page is what ``kdisco
resolve`` and ``kdisco doctor`` print for its case now, and the page's fixes fix.

The cases are built by lab/troubleshooting.py (``python -m lab.troubleshooting``
rewrites the page when this test fails because the output changed on purpose).
Addresses are read and compared, never connected to: no case probes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdisco._doctor.report import Check, Status
from lab import troubleshooting as page
from lab.troubleshooting import CASES, Case, Lab

from .conftest import eventually

TEXT = page.PAGE.read_text()


@pytest.fixture
def lab(lab_info: Any, tmp_path: Path) -> Iterator[Lab]:
    """The page's namespaces, built afresh (each test changes them)."""
    with page.built(lab_info, tmp_path, TEXT) as built:
        yield built


def case(key: str) -> Case:
    (found,) = [c for c in CASES if c.key == key]
    return found


def manifest(name: str) -> dict[str, Any]:
    (found,) = [doc for doc in page.manifests(TEXT) if doc["metadata"]["name"] == name]
    return found


def test_every_output_on_the_page_is_what_the_commands_print(lab: Lab) -> None:
    fresh: dict[str, str] = {}
    for c in CASES:
        fresh |= lab.blocks(c)
    shown = page.page_blocks(TEXT)
    assert sorted(shown) == sorted(fresh)
    stale = [key for key in fresh if shown[key] != fresh[key]]
    for key in stale:
        print(f"==== {key}: the page shows\n{shown[key]}==== the lab prints\n{fresh[key]}")
    assert not stale, "out of date (python -m lab.troubleshooting rewrites them): " + ", ".join(
        stale
    )
    # Every case is a failure the page explains, except the healthy one, and those where
    # kdisco still answers another way: a DNS server down (from the API), and the
    # missing Role rules (from DNS; the rbac check is then a warning).
    verdicts = {
        key.partition(":")[2]: "verdict:" + text.rsplit("\nverdict:", 1)[-1].rstrip("\n")
        for key, text in fresh.items()
        if key.startswith("doctor:")
    }
    assert verdicts.pop("healthy") == "verdict: would connect"
    for key in ("dns-down", "rbac-list", "rbac-namespace"):
        assert verdicts.pop(key).startswith("verdict: would connect as far as checked")
    assert all(v.startswith("verdict: would not connect: ") for v in verdicts.values()), verdicts


def test_the_page_marks_every_case_once() -> None:
    keys = [f"doctor:{c.key}" for c in CASES]
    keys += [f"resolve:{c.key}" for c in CASES if c.resolve is not None]
    assert sorted(page.page_blocks(TEXT)) == sorted(keys)
    assert len(set(keys)) == len(keys)
    # Rewriting with the blocks it has gives the page back; a missing block is refused.
    assert page.rewrite(TEXT, page.page_blocks(TEXT)) == TEXT
    with pytest.raises(KeyError, match="lacks"):
        page.rewrite(TEXT, {**page.page_blocks(TEXT), "doctor:nowhere": "x\n"})


def _check(lab: Lab, key: str, name: str, status: Status) -> Check:
    def settled() -> Check:
        (found,) = [c for c in lab.doctor(case(key)).checks if c.name == name]
        assert found.status is status, found  # RBAC catches up with new bindings
        return found

    return eventually(settled)


def test_the_role_fixes_grant_what_kdisco_needs(lab: Lab) -> None:
    _check(lab, "rbac-list", "rbac", Status.FAILED)
    page.apply(lab.cluster, manifest("reports-kdisco"))
    _check(lab, "rbac-list", "rbac", Status.PASSED)
    _check(lab, "rbac-list", "endpointslices", Status.PASSED)

    _check(lab, "rbac-namespace", "rbac", Status.FAILED)
    for doc in page.manifests(TEXT):
        if doc["metadata"]["name"] == "orders-kdisco":  # the Role and its binding
            page.apply(lab.cluster, doc)
    _check(lab, "rbac-namespace", "rbac", Status.PASSED)
    _check(lab, "rbac-namespace", "service", Status.PASSED)


def test_the_policy_fix_admits_checkout(lab: Lab) -> None:
    for key in ("deny-all", "other-labels"):
        c = case(key)
        assert c.setup is not None
        c.setup(lab.cluster)
        _check(lab, key, "networkpolicy", Status.FAILED)
    # With the page's policy added, past either policy.
    page.apply(lab.cluster, manifest("invoices-from-checkout"))
    for key in ("other-labels", "deny-all"):
        c = case(key)
        assert c.setup is not None
        c.setup(lab.cluster)
        check = _check(lab, key, "networkpolicy", Status.PASSED)
        assert any("policy 'invoices-from-checkout' admits" in d for d in check.details), check


def test_the_dns_egress_policy_is_accepted(lab: Lab) -> None:
    # The doctor evaluates ingress only; the apiserver validates the manifest.
    page.apply(lab.cluster, manifest("allow-dns"))
    response: Any = lab.cluster.networking.read_namespaced_network_policy(
        "allow-dns", page.SHOP, _preload_content=False
    )
    spec = json.loads(response.data)["spec"]
    assert spec["policyTypes"] == ["Egress"]
    assert [(p["protocol"], p["port"]) for p in spec["egress"][0]["ports"]] == [
        ("UDP", 53),
        ("TCP", 53),
    ]
