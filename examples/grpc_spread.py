"""gRPC calls spread over a Service's pods, following the pod set as it changes.

    python examples/grpc_spread.py

Three grpcio servers on 127.0.0.1 stand for the pods of ``payments.billing``
(generic handlers, raw bytes: no protobuf code to generate); a ``FakeResolver``
stands for the cluster. A plain channel to a ClusterIP would send every call to one
pod; ``kdisco.grpc.ServiceChannel`` balances over all of them (grpcio's
``round_robin``) and moves to the new set when a pod is added.
"""

from __future__ import annotations

import collections
import time
from concurrent import futures

import grpc

import kdisco
import kdisco.grpc
from kdisco.testing import FakeResolver

METHOD = "/payments.Payments/Charge"


def start_pod(name: str) -> tuple[grpc.Server, str]:
    def charge(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "payments.Payments", {"Charge": grpc.unary_unary_rpc_method_handler(charge)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def main() -> None:
    pods = [start_pod(f"payments-{i}") for i in range(3)]
    fake = FakeResolver({"payments.billing": [address for _, address in pods[:2]]})
    discoverer = kdisco.Discoverer(strategies=[fake])
    # On a cluster: kdisco.grpc.ServiceChannel("payments.billing", port="grpc",
    # backends=True), which lists the pods behind a ClusterIP through the API.
    with kdisco.grpc.ServiceChannel("payments.billing", discoverer=discoverer) as channel:
        charge = channel.unary_unary(METHOD)  # what a generated stub holds
        served = collections.Counter(charge(b"", timeout=5).decode() for _ in range(20))
        print("two pods:", dict(sorted(served.items())))
        fake.add("payments.billing", [address for _, address in pods])  # a third pod
        deadline = time.monotonic() + 5
        while channel.target.count(",") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        served = collections.Counter(charge(b"", timeout=5).decode() for _ in range(30))
        print("three pods:", dict(sorted(served.items())))
    discoverer.close()
    for server, _ in pods:
        server.stop(None)


if __name__ == "__main__":
    main()
