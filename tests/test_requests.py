"""kdisco.requests against real HTTP servers on 127.0.0.1 standing for pods."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import kdisco
import kdisco.requests
from kdisco.testing import FakeResolver
from tests._helpers_api import make_certs
from tests._pods import IngressRoutes, Pod, free_port, pods


def session_for(
    mapping: dict[str, object], **kw: object
) -> tuple[requests.Session, kdisco.requests.Adapter]:
    d = kdisco.Discoverer(
        strategies=[FakeResolver(mapping)],  # type: ignore[arg-type]
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )
    adapter = kdisco.requests.Adapter(d, **kw)  # type: ignore[arg-type]
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, adapter


@pytest.fixture
def three() -> Iterator[list[Pod]]:
    with pods(3) as started:
        yield started


def test_spread_host_header_and_failover(three: list[Pod]) -> None:
    session, adapter = session_for({"payments.billing": [p.address for p in three]})
    with session:
        first = [session.get("http://payments.billing/charge") for _ in range(9)]
        three[0].kill()
        rest = [session.get("http://payments.billing/charge") for _ in range(30)]
    assert all(r.status_code == 200 for r in first + rest)
    assert collections.Counter(r.json()["pod"] for r in first) == {0: 3, 1: 3, 2: 3}
    assert {r.json()["pod"] for r in rest} == {1, 2}
    assert first[0].json()["host"] == "payments.billing"
    assert first[0].url == "http://payments.billing/charge"
    dead = kdisco.Endpoint(host="127.0.0.1", port=three[0].port)
    assert adapter.balancer.health(dead).ejected_until is not None


def test_a_post_is_not_retried(three: list[Pod]) -> None:
    session, _ = session_for({"payments.billing": [f"127.0.0.1:{free_port()}", three[0].address]})
    outcomes: list[str] = []
    with session:
        for _ in range(2):
            try:
                outcomes.append(
                    str(session.post("http://payments.billing/", data=b"x").status_code)
                )
            except requests.ConnectionError:
                outcomes.append("refused")
    assert sorted(outcomes) == ["200", "refused"]


def test_other_hosts_pass_through(three: list[Pod]) -> None:
    session, _ = session_for({"payments.billing": [three[0].address]})
    with session:
        direct = session.get(f"http://127.0.0.1:{three[1].port}/x")
    assert direct.json()["pod"] == 1
    assert direct.json()["host"] == f"127.0.0.1:{three[1].port}"


def test_tls_against_the_service_name(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, server_names=("payments.billing",))
    with pods(2, tls=(certs.server_cert, certs.server_key)) as started:
        session, _ = session_for({"payments.billing": [p.address for p in started]})
        with session:
            replies = [
                session.get("https://payments.billing/", verify=str(certs.ca)) for _ in range(4)
            ]
        assert {r.json()["pod"] for r in replies} == {0, 1}
        other, _ = session_for({"orders.billing": [p.address for p in started]})
        with other, pytest.raises(requests.exceptions.SSLError):
            other.get("https://orders.billing/", verify=str(certs.ca))


def test_an_ingress_route_gets_its_url_path_prefix_and_host(three: list[Pod]) -> None:
    d = kdisco.Discoverer(
        strategies=[IngressRoutes(three[:1], "/shop")],
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", kdisco.requests.Adapter(d))
    with session:
        reply = session.get("http://web.shop/items", headers={"Host": "kept"})
    assert reply.json()["path"] == "/shop/items"
    assert reply.json()["host"] == f"127.0.0.1:{three[0].port}"
    assert reply.request.headers["Host"] == "kept"
