"""kdisco.httpx against real HTTP servers on 127.0.0.1 standing for pods.

Answers come from a FakeResolver (the strategies are tested elsewhere, against the
lab); every request here really crosses a socket to a server this test started.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import kdisco
import kdisco.httpx
from kdisco.aio import AsyncDiscoverer
from kdisco.testing import FakeResolver, override
from tests._helpers_api import make_certs
from tests._pods import IngressRoutes, Pod, free_port, pods


def discoverer(mapping: dict[str, object]) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=[FakeResolver(mapping)],  # type: ignore[arg-type]
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )


@pytest.fixture
def three() -> Iterator[list[Pod]]:
    with pods(3) as started:
        yield started


def served_by(response: httpx.Response) -> int:
    return int(response.json()["pod"])


def test_a_service_url_is_spread_over_its_pods_and_keeps_its_host(three: list[Pod]) -> None:
    d = discoverer({"payments.billing": [p.address for p in three]})
    with httpx.Client(transport=kdisco.httpx.Transport(d)) as client:
        replies = [client.get("http://payments.billing/charge?x=1") for _ in range(30)]
    assert all(r.status_code == 200 for r in replies)
    assert collections.Counter(served_by(r) for r in replies) == {0: 10, 1: 10, 2: 10}
    body = replies[0].json()
    assert body["host"] == "payments.billing"
    assert body["path"] == "/charge?x=1"
    # What the caller sees names the Service, not the address it went to.
    assert str(replies[0].request.url) == "http://payments.billing/charge?x=1"


def test_a_killed_pod_is_ejected_and_no_idempotent_request_fails(three: list[Pod]) -> None:
    d = discoverer({"payments.billing": [p.address for p in three]})
    transport = kdisco.httpx.Transport(d)
    with httpx.Client(transport=transport) as client:
        for _ in range(6):
            client.get("http://payments.billing/")
        three[1].kill()
        replies = [client.get("http://payments.billing/") for _ in range(60)]
        put = [client.put("http://payments.billing/", content=b"x") for _ in range(10)]
    assert all(r.status_code == 200 for r in replies + put)
    served = collections.Counter(served_by(r) for r in replies + put)
    assert set(served) == {0, 2}
    dead = kdisco.Endpoint(host="127.0.0.1", port=three[1].port)
    health = transport.balancer.health(dead)
    assert health.ejected_until is not None
    # Ejected after a handful of refused connections, not after every request.
    assert health.consecutive_failures <= kdisco.OutlierPolicy().consecutive_failures


def test_a_post_is_not_retried_on_another_pod(three: list[Pod]) -> None:
    refused = f"127.0.0.1:{free_port()}"
    d = discoverer({"payments.billing": [refused, three[0].address]})
    with httpx.Client(transport=kdisco.httpx.Transport(d)) as client:
        outcomes: list[str] = []
        for _ in range(2):
            try:
                response = client.post("http://payments.billing/", content=b"pay")
                outcomes.append(str(response.status_code))
            except httpx.ConnectError:
                outcomes.append("refused")
    # Round-robin: one POST went to the dead address and failed as it was.
    assert sorted(outcomes) == ["200", "refused"]
    assert three[0].requests == 1


def test_retries_are_bounded(three: list[Pod]) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(4)]
    d = discoverer({"payments.billing": dead})
    transport = kdisco.httpx.Transport(d, retries=2)
    with httpx.Client(transport=transport) as client, pytest.raises(httpx.ConnectError):
        client.get("http://payments.billing/")
    tried = [
        transport.balancer.health(kdisco.Endpoint(host="127.0.0.1", port=int(a.split(":")[1])))
        for a in dead
    ]
    assert sum(h.consecutive_failures for h in tried) == 3  # the try and two retries


def test_named_ports_and_the_default_port(tmp_path: Path) -> None:
    with pods(2) as (http_pod, admin_pod):
        d = discoverer(
            {
                "web": {
                    "endpoints": ["127.0.0.1"],
                    "ports": {"http": http_pod.port, "admin": admin_pod.port},
                },
                "single": {"endpoints": ["127.0.0.1"], "ports": {"metrics": admin_pod.port}},
                "two": {"endpoints": ["127.0.0.1"], "ports": {"a": 1, "b": 2}},
            }
        )
        with httpx.Client(transport=kdisco.httpx.Transport(d)) as client:
            assert served_by(client.get("http://web/")) == 0  # the port named http
            assert served_by(client.get("http://_admin._tcp.web/")) == 1  # SRV form
            assert served_by(client.get(f"http://web:{admin_pod.port}/")) == 1  # a number
            assert served_by(client.get("http://single/")) == 1  # the only port
            with pytest.raises(kdisco.PortNotFound, match="not exactly one port"):
                client.get("http://two/")
            with pytest.raises(kdisco.PortNotFound):
                client.get("http://_nope._tcp.web/")


def test_other_hosts_pass_through_untouched(three: list[Pod]) -> None:
    seen: list[str] = []

    def inner(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204)

    d = discoverer({"payments.billing": [three[0].address]})
    transport = kdisco.httpx.Transport(d, transport=httpx.MockTransport(inner))
    with httpx.Client(transport=transport) as client:
        for url in [
            f"http://127.0.0.1:{three[0].port}/",
            "http://[::1]:8080/",
            "http://localhost/",
            "https://api.example.com/v1",
            "http://unknown.billing/",  # looks like a Service, the cluster has none
        ]:
            client.get(url)
    assert seen == [
        f"http://127.0.0.1:{three[0].port}/",
        "http://[::1]:8080/",
        "http://localhost/",
        "https://api.example.com/v1",
        "http://unknown.billing/",
    ]


def test_tls_checks_the_certificate_against_the_service_name(tmp_path: Path) -> None:
    certs = make_certs(tmp_path, server_names=("payments.billing",))
    with pods(2, tls=(certs.server_cert, certs.server_key)) as started:
        d = discoverer({"payments.billing": [p.address for p in started]})
        transport = kdisco.httpx.Transport(
            d, verify=ssl.create_default_context(cafile=str(certs.ca))
        )
        with httpx.Client(transport=transport) as client:
            replies = [client.get("https://payments.billing/") for _ in range(4)]
        assert {served_by(r) for r in replies} == {0, 1}
        # A name the certificate does not carry fails verification, though the
        # connection goes to the same pods.
        d2 = discoverer({"orders.billing": [p.address for p in started]})
        other = kdisco.httpx.Transport(d2, verify=ssl.create_default_context(cafile=str(certs.ca)))
        with httpx.Client(transport=other) as client, pytest.raises(httpx.ConnectError):
            client.get("https://orders.billing/")


def test_failure_statuses_are_reported_and_the_response_returned(three: list[Pod]) -> None:
    d = discoverer({"payments.billing": [three[0].address]})
    transport = kdisco.httpx.Transport(d, failure_statuses={503})
    with httpx.Client(transport=transport) as client:
        assert client.get("http://payments.billing/unavailable").status_code == 503
    health = transport.balancer.health(kdisco.Endpoint(host="127.0.0.1", port=three[0].port))
    assert health.consecutive_failures == 1


def test_the_default_discoverer_and_override(three: list[Pod]) -> None:
    fake = FakeResolver({"payments.billing": [three[2].address]})
    with override(fake), httpx.Client(transport=kdisco.httpx.Transport()) as client:
        assert served_by(client.get("http://payments.billing/")) == 2


def test_the_async_transport_spreads_and_fails_over(three: list[Pod]) -> None:
    fake = FakeResolver({"payments.billing": [p.address for p in three]})
    d = AsyncDiscoverer(strategies=[fake], namespace="default", environ={}, resolv_conf="/x")

    async def main() -> list[httpx.Response]:
        transport = kdisco.httpx.AsyncTransport(d)
        async with httpx.AsyncClient(transport=transport) as client:
            first = await asyncio.gather(
                *(client.get("http://payments.billing/") for _ in range(9))
            )
            three[0].kill()
            rest = [await client.get("http://payments.billing/") for _ in range(30)]
        await d.aclose()
        return list(first) + rest

    replies = asyncio.run(main())
    assert all(r.status_code == 200 for r in replies)
    assert collections.Counter(served_by(r) for r in replies[:9]) == {0: 3, 1: 3, 2: 3}
    assert {served_by(r) for r in replies[9:]} == {1, 2}
    assert replies[0].json()["host"] == "payments.billing"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(kdisco.ConfigurationError, match="retries"):
        kdisco.httpx.Transport(retries=-1)


def test_a_host_that_is_no_service_is_asked_about_once() -> None:
    # example.com has the shape of svc.ns: asked once, then remembered for a while.
    asked: list[str] = []

    class Counting(FakeResolver):
        def lookup(
            self, query: kdisco.Query, deadline: kdisco.Deadline
        ) -> kdisco.Resolution | kdisco.Miss:
            asked.append(str(query.service))
            return super().lookup(query, deadline)

    d = kdisco.Discoverer(
        strategies=[Counting({})], namespace="default", environ={}, resolv_conf="/nonexistent"
    )
    transport = kdisco.httpx.Transport(
        d, transport=httpx.MockTransport(lambda r: httpx.Response(204))
    )
    with httpx.Client(transport=transport) as client:
        for _ in range(3):
            assert client.get("http://example.com/").status_code == 204
    assert asked == ["example.com"]


def test_a_request_is_in_flight_until_its_body_is_read(three: list[Pod]) -> None:
    d = discoverer({"payments.billing": [three[0].address]})
    transport = kdisco.httpx.Transport(d)
    pod = kdisco.Endpoint(host="127.0.0.1", port=three[0].port)
    with httpx.Client(transport=transport) as client:
        with client.stream("GET", "http://payments.billing/") as response:
            assert transport.balancer.health(pod).in_flight == 1
            response.read()
        assert transport.balancer.health(pod).in_flight == 0
        client.get("http://payments.billing/")
        assert transport.balancer.health(pod).in_flight == 0
    assert transport.balancer.health(pod).consecutive_failures == 0


def test_an_ingress_route_gets_its_url_path_prefix_and_host(three: list[Pod]) -> None:
    # reach="external" answers a Service behind an Ingress with URLs: the request goes
    # to the route (its scheme, host, port) under its path, with the Host it routes on.
    d = kdisco.Discoverer(
        strategies=[IngressRoutes(three[:2], "/shop/")],
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )

    async def via_async() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=kdisco.httpx.AsyncTransport(AsyncDiscoverer.wrap(d))
        ) as client:
            return await client.get("http://web.shop/items?page=2")

    with httpx.Client(transport=kdisco.httpx.Transport(d)) as client:
        replies = [client.get("http://web.shop/items?page=2") for _ in range(4)]
    replies.append(asyncio.run(via_async()))
    assert {served_by(r) for r in replies} == {0, 1}
    for r in replies:
        body = r.json()
        assert body["path"] == "/shop/items?page=2"
        assert body["host"] == f"127.0.0.1:{three[served_by(r)].port}"
        assert str(r.request.url) == "http://web.shop/items?page=2"
        assert r.request.headers["Host"] == "web.shop"
