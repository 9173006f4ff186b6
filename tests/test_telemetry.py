"""Logs and metrics (kdisco/_telemetry.py): one record per lookup, warnings for stale
answers and watch reconnects, OpenTelemetry instruments, never a credential.

Durations come from the Discoverer's clock, so with a fake clock and a strategy that
"costs" a fixed time they are exact. Metrics are read through the SDK's
InMemoryMetricReader, from a MeterProvider given to kdisco through its private hook
(the global provider can be set only once per process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import kdisco
import kdisco.aio
from kdisco import WatchCachePolicy
from kdisco._telemetry import BUCKETS, COUNTERS, TELEMETRY, use_meter_provider
from kdisco.testing import FakeResolver, override

from ._helpers_api import FakeApiServer, FakeNamespace, Reply, _status, eps_slice
from ._helpers_chain import FakeClock, Scripted
from .test_cache import answer
from .test_watchcache import both_watching, wait_until
from .test_watchcache import make as make_watched
from .test_watchcache import ns as ns  # the fixture: Service db and its slices

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2hunter2"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def make(*script: object, clock: FakeClock, cost: float = 0.25) -> kdisco.Discoverer:
    """A Discoverer over one scripted strategy (``fake-dns``) that costs ``cost`` s."""
    strategy = Scripted("fake-dns", *script, clock=clock, cost=cost)
    return kdisco.Discoverer(
        strategies=[strategy],
        namespace="default",
        environ={},
        clock=clock,
        # Backoff without jitter: the same retries, so the same outcome, every run.
        retry=kdisco.RetryPolicy(sleep=clock.sleep, rng=lambda: 0.5),
        timeout=2.0,
    )


def lookups(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kdisco.discovery"]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k.startswith("kdisco_")}


@pytest.fixture
def debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="kdisco"):
        yield caplog


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    use_meter_provider(provider)
    try:
        yield metric_reader
    finally:
        use_meter_provider(None)
        provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, data point) of every point of the instrument ``name``."""
    data = reader.get_metrics_data()
    found: list[tuple[dict[str, Any], Any]] = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            assert sm.scope.name == "kdisco"
            for metric in sm.metrics:
                if metric.name == name:
                    found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
    return found


def counts(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(a.items())): p.value for a, p in points(reader, name)}


# -- logs -----------------------------------------------------------------------------


def test_a_lookup_answered_by_a_strategy_logs_one_debug_record(
    debug: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), clock=clock)
    d.discover("web")
    (record,) = lookups(debug)
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "web.default: answered by fake-dns in 250.000 ms"
    assert fields(record) == {
        "kdisco_service": "web.default",
        "kdisco_strategy": "fake-dns",
        "kdisco_outcome": "answered",
        "kdisco_duration": 0.25,
        "kdisco_cached": False,
        "kdisco_stale": False,
        "kdisco_error": None,
    }


def test_a_cached_lookup_says_so(debug: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), clock=clock)
    d.discover("web")
    debug.clear()
    d.discover("web")
    (record,) = lookups(debug)
    assert record.getMessage() == "web.default: cached answer from fake-dns in 0.000 ms"
    assert fields(record)["kdisco_outcome"] == "cached"
    assert fields(record)["kdisco_cached"] is True
    assert fields(record)["kdisco_duration"] == 0.0


def test_a_failed_lookup_names_the_error_class(debug: pytest.LogCaptureFixture) -> None:
    d = kdisco.Discoverer(strategies=[FakeResolver({})], namespace="shop", environ={})
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("web")
    (record,) = lookups(debug)
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("web.shop: ServiceNotFound in ")
    got = fields(record)
    assert (got["kdisco_strategy"], got["kdisco_outcome"], got["kdisco_error"]) == (
        None,
        "ServiceNotFound",
        "ServiceNotFound",
    )


def test_a_stale_answer_served_is_a_warning_then_debug_while_it_is_reused(
    debug: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), kdisco.TransientError("SERVFAIL from 127.0.0.1:53"), clock=clock)
    d.discover("web")
    clock.advance(10)
    debug.clear()
    assert d.discover("web").stale
    (warning,) = lookups(debug)
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    # Older than the 10 s: the failing refresh's retries took time on the fake clock.
    assert re.match(r"web\.default: serving the last answer from fake-dns, 1\d\.\d s old", message)
    assert "the refresh failed with DiscoveryUnavailable: no strategy could answer" in message
    assert "(tried: fake-dns: failed (SERVFAIL from 127.0.0.1:53, " in message
    assert fields(warning)["kdisco_outcome"] == "stale"
    assert fields(warning)["kdisco_error"] == "DiscoveryUnavailable"
    debug.clear()
    assert d.discover("web").stale  # within min_ttl: the stale answer, from the cache
    (again,) = lookups(debug)
    assert again.levelno == logging.DEBUG
    assert (fields(again)["kdisco_outcome"], fields(again)["kdisco_cached"]) == ("stale", True)


def test_a_stale_answer_warns_even_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), kdisco.TransientError("SERVFAIL"), clock=clock)
    with caplog.at_level(logging.WARNING, logger="kdisco"):
        d.discover("web")
        clock.advance(10)
        d.discover("web")
    assert [r.levelname for r in lookups(caplog)] == ["WARNING"]


def test_no_credential_reaches_a_log_record(debug: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    leak = kdisco.TransientError(f"401 password={SECRET} Authorization: Bearer {TOKEN}")
    d = make(answer(ttl=5.0), leak, clock=clock)
    d.discover("web")
    clock.advance(10)
    d.discover("web")  # bridged: the warning quotes the failure
    clock.advance(1000)
    with pytest.raises(kdisco.DiscoveryUnavailable):
        d.discover("web")  # past max_stale: the error's own record
    records = lookups(debug)
    assert {fields(r)["kdisco_outcome"] for r in records} >= {"stale", "DiscoveryUnavailable"}
    text = "\n".join([r.getMessage() for r in records] + [json.dumps(fields(r)) for r in records])
    assert "401" in text  # the failure is quoted...
    assert SECRET not in text  # ...without its credentials
    assert TOKEN not in text
    assert TOKEN.split(".")[0] not in text


@pytest.fixture
def no_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in an application that does not use OpenTelemetry (this process has loaded it)."""
    monkeypatch.setattr("kdisco._telemetry._OTEL", "opentelemetry.not-loaded")
    monkeypatch.setattr(TELEMETRY, "meters", None)


@pytest.mark.usefixtures("no_metrics")
def test_nothing_is_built_for_a_cached_lookup_while_nobody_listens(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), clock=clock)
    with caplog.at_level(logging.INFO, logger="kdisco"):
        d.discover("web")

        def never(*args: object) -> None:
            raise AssertionError("a record was built for a cached lookup")

        monkeypatch.setattr(TELEMETRY, "cached", never)
        assert TELEMETRY.quiet()
        d.discover("web")
        assert lookups(caplog) == []
        # Logging changed: the next cached lookup sees it at once.
        logging.getLogger("kdisco").setLevel(logging.DEBUG)
        assert not TELEMETRY.quiet()
        with pytest.raises(AssertionError, match="a record was built"):
            d.discover("web")


@pytest.mark.usefixtures("no_metrics")
def test_a_disabled_logger_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    # logging.config.dictConfig disables loggers that exist and it does not name.
    log = logging.getLogger("kdisco.discovery")
    with caplog.at_level(logging.DEBUG, logger="kdisco"):
        log.disabled = True
        try:
            assert TELEMETRY.quiet()
            fake = FakeResolver({"web": ["192.0.2.1:80"]})
            kdisco.Discoverer(strategies=[fake], environ={}).discover("web")
        finally:
            log.disabled = False
        assert not TELEMETRY.quiet()
    assert lookups(caplog) == []


def test_the_module_functions_and_the_async_driver_log_too(
    debug: pytest.LogCaptureFixture,
) -> None:
    with override(FakeResolver({"web": ["192.0.2.1:80"]}), namespace="shop") as d:
        kdisco.discover("web")
        kdisco.discover("web")

        async def twice() -> None:
            ad = kdisco.aio.AsyncDiscoverer.wrap(d)
            await ad.discover("web")
            await kdisco.aio.discover("web")

        asyncio.run(twice())
    records = lookups(debug)
    assert [fields(r)["kdisco_service"] for r in records] == ["web.shop"] * 4
    assert [fields(r)["kdisco_strategy"] for r in records] == ["fake"] * 4


def test_the_async_driver_logs_errors_and_stale_answers(
    debug: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    d = kdisco.aio.AsyncDiscoverer.wrap(
        make(answer(ttl=5.0), kdisco.TransientError("SERVFAIL"), clock=clock)
    )

    async def run() -> None:
        await d.discover("web")
        clock.advance(10)
        await d.discover("web")
        clock.advance(1000)
        with pytest.raises(kdisco.DiscoveryUnavailable):
            await d.discover("web")

    asyncio.run(run())
    outcomes = [(r.levelname, fields(r)["kdisco_outcome"]) for r in lookups(debug)]
    assert outcomes == [
        ("DEBUG", "answered"),
        ("WARNING", "stale"),
        ("DEBUG", "DiscoveryUnavailable"),
    ]


# -- metrics --------------------------------------------------------------------------


def test_lookup_durations_by_strategy_and_outcome(reader: InMemoryMetricReader) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), clock=clock)
    d.discover("web")
    d.discover("web")
    with pytest.raises(kdisco.ServiceNotFound):
        kdisco.Discoverer(strategies=[FakeResolver({})], environ={}).discover("gone")
    found = {(a["strategy"], a["outcome"]): p for a, p in points(reader, "kdisco.lookup.duration")}
    assert set(found) == {
        ("fake-dns", "answered"),
        ("fake-dns", "cached"),
        ("none", "ServiceNotFound"),
    }
    answered = found[("fake-dns", "answered")]
    assert (answered.count, answered.sum) == (1, 0.25)
    assert found[("fake-dns", "cached")].count == 1
    # Buckets in seconds, from a cached answer to a deadline.
    assert tuple(answered.explicit_bounds) == BUCKETS


def test_cache_hits_and_stale_answers_are_counted(reader: InMemoryMetricReader) -> None:
    clock = FakeClock()
    d = make(answer(ttl=5.0), kdisco.TransientError("SERVFAIL"), clock=clock)
    d.discover("web")
    d.discover("web")
    d.discover("web")
    clock.advance(10)
    d.discover("web")  # bridged
    d.discover("web")  # the stale answer again, from the cache
    assert counts(reader, "kdisco.cache.hits") == {(("strategy", "fake-dns"),): 3}
    assert counts(reader, "kdisco.lookup.stale") == {(("strategy", "fake-dns"),): 2}
    stale = [p for a, p in points(reader, "kdisco.lookup.duration") if a["outcome"] == "stale"]
    assert sum(p.count for p in stale) == 2


def test_the_docs_list_every_instrument() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    listed = set(re.findall(r"^\| `(kdisco\.[a-z.]+)` \| (?:counter|histogram) \|", page, re.M))
    assert listed == {"kdisco.lookup.duration", *COUNTERS}


def test_opentelemetry_is_never_imported_by_kdisco() -> None:
    # Installed here (the test extra), but an application that does not use it loads
    # none of it; once it has loaded the API, kdisco records.
    code = (
        "import sys, json, kdisco\n"
        "from kdisco import _telemetry\n"
        "from kdisco.testing import FakeResolver\n"
        "d = kdisco.Discoverer(strategies=[FakeResolver({'web': ['192.0.2.1:80']})])\n"
        "d.discover('web'); d.discover('web')\n"
        "before = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "import opentelemetry.metrics\n"
        "kdisco.Discoverer(strategies=[FakeResolver({})])\n"
        "print(json.dumps([before, _telemetry.TELEMETRY.meters is not None]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    before, instrumented = json.loads(out.splitlines()[-1])
    assert before == []
    assert instrumented is True


# -- the watch cache ------------------------------------------------------------------


def watch_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kdisco.watch"]


def test_a_silent_watch_reconnects_with_a_warning_and_a_count(
    server: FakeApiServer,
    ns: FakeNamespace,
    caplog: pytest.LogCaptureFixture,
    reader: InMemoryMetricReader,
) -> None:
    policy = WatchCachePolicy(read_timeout=0.05, backoff_initial=0.001, backoff_max=0.01)
    ns.script_watch("endpointslices", "hang")
    with caplog.at_level(logging.WARNING, logger="kdisco"), make_watched(server, policy) as d:
        d.discover("db")
        wait_until(lambda: ns.watches("endpointslices") >= 2, "re-watch after silence")
        wait_until(lambda: bool(watch_records(caplog)), "the warning")
    # The other resource's watch, idle, went silent as well (nothing was sent to it).
    record = next(r for r in watch_records(caplog) if "endpointslices" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "watch of endpointslices in namespace 'billing': no event for 0.05 s; reconnecting"
    )
    assert fields(record) == {
        "kdisco_namespace": "billing",
        "kdisco_resource": "endpointslices",
        "kdisco_reason": "silent",
    }
    got = counts(reader, "kdisco.watch.reconnects")
    assert got[(("reason", "silent"), ("resource", "endpointslices"))] >= 1


def test_an_expired_watch_re_lists_with_a_warning_and_a_count(
    server: FakeApiServer,
    ns: FakeNamespace,
    caplog: pytest.LogCaptureFixture,
    reader: InMemoryMetricReader,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kdisco"), make_watched(server) as d:
        d.discover("db")
        wait_until(both_watching(ns), "both watches open")
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.9"]), announce=False)
        ns.compact()
        ns.end_watches("endpointslices")
        wait_until(lambda: ns.lists("endpointslices") >= 2, "re-list after 410")
    (record,) = [r for r in watch_records(caplog) if "re-listing" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        "endpointslices in namespace 'billing': re-listing (watch ERROR 410: "
    )
    assert fields(record)["kdisco_reason"] == "expired"
    assert counts(reader, "kdisco.watch.relists") == {
        (("reason", "expired"), ("resource", "endpointslices")): 1
    }


def test_a_failing_watch_warns_once_per_outage_and_counts_every_retry(
    server: FakeApiServer,
    ns: FakeNamespace,
    caplog: pytest.LogCaptureFixture,
    reader: InMemoryMetricReader,
) -> None:
    down = Reply(503, _status(503, "ServiceUnavailable", f"down; token: {SECRET}"))
    ns.script_watch("endpointslices", *[down] * 5)
    with caplog.at_level(logging.WARNING, logger="kdisco"), make_watched(server) as d:
        d.discover("db")
        wait_until(lambda: ns.watches("endpointslices") >= 6, "retries")
    warnings = [r for r in watch_records(caplog) if fields(r).get("kdisco_reason") == "error"]
    assert len(warnings) == 1
    assert "503" in warnings[0].getMessage()
    assert SECRET not in caplog.text
    got = counts(reader, "kdisco.watch.reconnects")
    assert got[(("reason", "error"), ("resource", "endpointslices"))] == 5
