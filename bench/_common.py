"""What every benchmark shares: timing, statistics, the report's shape."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    """One target of the issue, and whether this run met it."""

    what: str
    goal: str
    measured: str
    met: bool


@dataclass
class Section:
    """One benchmark's result: a table, its targets, notes that explain it."""

    number: int
    title: str
    headers: list[str]
    rows: list[list[str]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)


@dataclass
class Settings:
    quick: bool
    lab: Any  # lab.LabInfo
    cluster: Any  # lab.objects.Cluster
    namespaces: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # fixtures shared between benchmarks

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collector pauses off while timing, so they land in no one side's figures."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_calls(fn: Callable[[], object], n: int, *, budget: float = 60.0) -> list[float]:
    """Seconds per call of ``fn``, one perf_counter_ns pair per call, at most ``budget`` s."""
    out: list[float] = []
    stop = time.monotonic() + budget
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1e9)
        if time.monotonic() > stop:
            break
    return out


def interleaved(
    cases: dict[str, Callable[[], object]], rounds: int, *, budget: float = 120.0
) -> dict[str, list[float]]:
    """Time every case once per round, in turn, so drift in the machine hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    stop = time.monotonic() + budget
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = clock()
            fn()
            out[name].append((clock() - t0) / 1e9)
        if time.monotonic() > stop:
            break
    return out


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f} µs" if seconds < 1e-5 else f"{seconds * 1e6:,.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:,.0f} ms"


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.2f} MB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def progress(message: str) -> None:
    print(f"[bench] {message}", flush=True)
