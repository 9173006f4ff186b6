"""kdisco.grpc against real grpcio servers on 127.0.0.1 standing for pods."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import kdisco
import kdisco.grpc
from kdisco.testing import FakeResolver

METHOD = "/kdisco.test.Echo/Who"


class GrpcPod:
    """A grpcio server answering METHOD with its own name (raw bytes, no protobuf)."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.calls = 0

        def who(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls += 1
            if request == b"slow":
                time.sleep(self.delay)
            return name.encode()

        handler = grpc.method_handlers_generic_handler(
            "kdisco.test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None).wait(5)


@pytest.fixture
def grpc_pods() -> Iterator[list[GrpcPod]]:
    started = [GrpcPod(f"pod-{i}", delay=0.5) for i in range(3)]
    try:
        yield started
    finally:
        for pod in started:
            pod.stop()


def discoverer(fake: FakeResolver) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=[fake], namespace="default", environ={}, resolv_conf="/nonexistent"
    )


def test_target_lists_every_ready_endpoint() -> None:
    fake = FakeResolver(
        {
            "pay": [
                kdisco.Endpoint(host="192.0.2.1", port=50051),
                kdisco.Endpoint(host="192.0.2.2", port=50051, ready=False),
                kdisco.Endpoint(host="192.0.2.3", port=50051),
            ],
            "v6": ["[2001:db8::1]:50051"],
            "noport": {"endpoints": ["192.0.2.9"]},
        }
    )
    d = discoverer(fake)
    assert kdisco.grpc.target("pay", discoverer=d) == "ipv4:192.0.2.1:50051,192.0.2.3:50051"
    assert kdisco.grpc.target("v6", discoverer=d) == "ipv6:[2001:db8::1]:50051"
    with pytest.raises(kdisco.PortNotFound):
        kdisco.grpc.target("noport", discoverer=d)


def test_a_target_of_host_names_lets_grpcio_resolve_them() -> None:
    # reach="external" answers with a load balancer's hostname, or an Ingress's host.
    fake = FakeResolver(
        {
            "lb": [
                kdisco.Endpoint(host="lb.example.test", port=443),
                kdisco.Endpoint(host="203.0.113.7", port=443),
            ],
            "named": [kdisco.Endpoint(host="lb.example.test", port=443)],
            "route": [
                kdisco.Endpoint(host="shop.example.test", port=443, scheme="https", path="/")
            ],
        }
    )
    d = discoverer(fake)
    # Addresses, when there are any, are listed (grpcio takes no mix of the two).
    assert kdisco.grpc.target("lb", discoverer=d) == "ipv4:203.0.113.7:443"
    assert kdisco.grpc.target("named", discoverer=d) == "dns:///lb.example.test:443"
    assert kdisco.grpc.target("route", discoverer=d) == "dns:///shop.example.test:443"


def test_calls_spread_over_the_pods(grpc_pods: list[GrpcPod]) -> None:
    d = discoverer(FakeResolver({"pay": [p.address for p in grpc_pods]}))
    target = kdisco.grpc.target("pay", discoverer=d)
    with grpc.insecure_channel(target, options=kdisco.grpc.ROUND_ROBIN) as channel:
        who: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        grpc.channel_ready_future(channel).result(timeout=10)
        served = collections.Counter(who(b"", timeout=5).decode() for _ in range(30))
    # round_robin over three subchannels: each pod gets calls, none gets them all.
    assert set(served) == {"pod-0", "pod-1", "pod-2"}
    assert max(served.values()) <= 20


def test_service_channel_follows_the_pods_without_dropping_calls(
    grpc_pods: list[GrpcPod],
) -> None:
    fake = FakeResolver({"pay": [grpc_pods[0].address]})
    d = discoverer(fake)
    with kdisco.grpc.ServiceChannel("pay", discoverer=d, grace=5.0) as channel:
        who = channel.unary_unary(METHOD)  # as a stub would keep it
        assert who(b"", timeout=5) == b"pod-0"
        first = channel.current
        # A call running on the first channel while the pod set changes...
        slow = who.future(b"slow", timeout=10)
        fake.add("pay", [grpc_pods[1].address, grpc_pods[2].address])
        deadline = time.monotonic() + 5
        while channel.current is first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert channel.current is not first
        # ...finishes there, and new calls go to the new pods.
        assert slow.result() == b"pod-0"
        served = {who(b"", timeout=5) for _ in range(20)}
        assert served == {b"pod-1", b"pod-2"}
        assert channel.target.count(",") == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("kdisco-watch")]


def test_the_target_serves_grpc_aio_too(grpc_pods: list[GrpcPod]) -> None:
    d = discoverer(FakeResolver({"pay": [p.address for p in grpc_pods]}))
    target = kdisco.grpc.target("pay", discoverer=d)

    async def main() -> set[bytes]:
        async with grpc.aio.insecure_channel(target, options=kdisco.grpc.ROUND_ROBIN) as channel:
            who: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
            await channel.channel_ready()
            return {await who(b"", timeout=5) for _ in range(30)}

    assert asyncio.run(main()) == {b"pod-0", b"pod-1", b"pod-2"}
