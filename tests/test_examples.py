"""The runnable examples the docs point to, run as a user would run them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_http_failover_example() -> None:
    # docs/http.md: three local "pods" of payments.billing, one killed half-way.
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "http_failover.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "killed payments-1"
    served = ast.literal_eval(lines[1].removeprefix("served: "))
    assert sum(served.values()) == 30  # no request failed
    assert served["payments-1"] < 10 < min(served["payments-0"], served["payments-2"])
    assert lines[2] == "Host header the pods saw: payments.billing"
    assert lines[3] == "payments-1 ejected: True"


def test_grpc_spread_example() -> None:
    # docs/grpc.md: calls spread over two, then three grpcio servers.
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "grpc_spread.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    two, three = done.stdout.splitlines()
    before = ast.literal_eval(two.removeprefix("two pods: "))
    after = ast.literal_eval(three.removeprefix("three pods: "))
    assert set(before) == {"payments-0", "payments-1"}
    assert sum(before.values()) == 20
    assert set(after) == {"payments-0", "payments-1", "payments-2"}
    assert min(after.values()) >= 5  # round_robin: each pod its share


def test_fastapi_checkout_example() -> None:
    # docs/http.md: a FastAPI application calling payments.billing through
    # kdisco.httpx.AsyncTransport, balanced over two local pods.
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fastapi_checkout.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    replies = [ast.literal_eval(line) for line in done.stdout.splitlines()]
    assert len(replies) == 4
    assert sorted(r["charged_by"] for r in replies) == ["payments-0"] * 2 + ["payments-1"] * 2
