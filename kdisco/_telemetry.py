"""Logs and metrics: what each lookup did, and what the watch cache went through.

Logs go to the standard ``logging`` module:

- ``kdisco.discovery``: one record per lookup (``Discoverer.discover``,
  ``AsyncDiscoverer.discover`` and everything built on them): DEBUG, or WARNING when a
  refresh failed and the last good answer is served stale in its place. Each record
  carries the fields in ``extra`` (``kdisco_service``, ``kdisco_strategy``,
  ``kdisco_outcome``, ``kdisco_duration``, ``kdisco_cached``, ``kdisco_stale``,
  ``kdisco_error``) for structured handlers.
- ``kdisco.watch``: WARNING when the api strategy's watch cache re-opens a watch that
  failed or went silent, or re-lists after the server expired its resourceVersion
  (410 Gone); DEBUG for the routine periodic re-list.

Metrics go through the OpenTelemetry API, meter ``kdisco``, from the global
MeterProvider the application configures. kdisco never imports OpenTelemetry itself:
it starts recording once the application has (``opentelemetry.metrics`` is loaded:
configuring an SDK does that), checked when a ``Discoverer`` is built and on every
lookup the answer cache could not serve. Without it nothing is imported and nothing
is recorded.

- ``kdisco.watch`` also carries ``kdisco.watch()``'s failures when no ``on_error`` is
  given (kdisco/_watch.py).

Cost: while nothing listens, a lookup served from the answer cache pays one attribute
check and one read of logging's level cache (``Telemetry.quiet``, inlined in
``Discoverer.discover``); nothing is timed or built. Every message that quotes an error
goes through the redactor.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._exceptions import DiscoveryError
from ._forksafe import after_fork_in_child
from ._models import Resolution
from ._redact import redact

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider

DEBUG = logging.DEBUG
#: Per-lookup records.
LOOKUP_LOG = logging.getLogger("kdisco.discovery")
#: The watch cache's reconnects and re-lists, and ``kdisco.watch()``'s failures.
WATCH_LOG = logging.getLogger("kdisco.watch")

METER = "kdisco"
#: The OpenTelemetry module whose presence means the application uses metrics.
_OTEL = "opentelemetry.metrics"

#: Outcomes of a lookup that returned an answer (an error is named by its class).
ANSWERED = "answered"
CACHED = "cached"
STALE = "stale"
#: The ``strategy`` attribute of a lookup that no strategy answered.
NO_STRATEGY = "none"

#: Histogram buckets in seconds, from a cached answer (microseconds) to a deadline (the
#: SDK's default buckets are for milliseconds).
BUCKETS = (
    0.00001,
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


#: Each counter's name: its unit and description.
COUNTERS = {
    "kdisco.lookup.stale": (
        "{answer}",
        "Stale answers served: the last good answer, while refreshes fail",
    ),
    "kdisco.cache.hits": (
        "{lookup}",
        "Lookups answered by the answer cache, with no strategy asked",
    ),
    "kdisco.watch.reconnects": (
        "{reconnect}",
        "Watch cache requests re-opened after a failure or a silent watch",
    ),
    "kdisco.watch.relists": (
        "{relist}",
        "Full re-lists of the watch cache (expired resourceVersion, or periodic)",
    ),
}


class Instruments:
    """kdisco's instruments, made once from one meter."""

    def __init__(self, meter: Meter) -> None:
        self.duration: Histogram = _histogram(meter)
        made = {
            name: meter.create_counter(name, unit=unit, description=description)
            for name, (unit, description) in COUNTERS.items()
        }
        self.stale: Counter = made["kdisco.lookup.stale"]
        self.cache_hits: Counter = made["kdisco.cache.hits"]
        self.reconnects: Counter = made["kdisco.watch.reconnects"]
        self.relists: Counter = made["kdisco.watch.relists"]


def _histogram(meter: Meter) -> Histogram:
    name, unit = "kdisco.lookup.duration", "s"
    description = "Time each lookup took, by the strategy that answered and the outcome"
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=BUCKETS
        )
    except TypeError:  # opentelemetry-api < 1.23 takes no advice; its views still can
        return meter.create_histogram(name, unit=unit, description=description)


class Telemetry:
    """The process's logging switches and instruments (one, ``TELEMETRY``)."""

    def __init__(self) -> None:
        self.log = LOOKUP_LOG
        self.debug = LOOKUP_LOG.isEnabledFor
        #: The lookup logger's own level cache, which ``isEnabledFor`` fills and logging
        #: empties (in place) whenever a level changes: reading it is a dict lookup,
        #: where ``isEnabledFor`` is a Python call that would add a sixth to what a
        #: cached lookup costs. Empty (so never "quiet" for DEBUG by itself, and
        #: ``isEnabledFor`` decides) if a Python keeps no such cache.
        levels = getattr(LOOKUP_LOG, "_cache", None)
        self.levels: dict[int, bool] = levels if isinstance(levels, dict) else {}
        #: The instruments, once the application uses OpenTelemetry; else None.
        self.meters: Instruments | None = None
        self._provider: MeterProvider | None = None
        self._lock = threading.Lock()
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def quiet(self) -> bool:
        """Nothing listens to lookups: no instruments, no DEBUG on ``kdisco.discovery``
        (as logging last worked it out; when it has not yet, not quiet, and the lookup
        asks ``isEnabledFor``, which fills the cache for the next)."""
        return self.meters is None and (not self.levels.get(DEBUG, True) or self.log.disabled)

    def instruments(self) -> Instruments | None:
        """The instruments, made from the global MeterProvider when the application
        has loaded the OpenTelemetry API (never imported here otherwise)."""
        meters = self.meters
        if meters is not None or (self._provider is None and _OTEL not in sys.modules):
            return meters
        with self._lock:
            if self.meters is None:
                self.meters = Instruments(_meter(self._provider))
            return self.meters

    def use_provider(self, provider: MeterProvider | None) -> None:
        with self._lock:
            self._provider = provider
            self.meters = None if provider is None else Instruments(_meter(provider))

    # -- lookups ---------------------------------------------------------------------
    # Called with the Discoverer's clock readings; ``cached`` only while something
    # listens, the others on every lookup the answer cache could not serve.

    def cached(self, res: Resolution, started: float, now: float) -> None:
        """A lookup the answer cache served, with no strategy asked."""
        self._answer(res, started, now, cached=True)

    def answered(self, res: Resolution, started: float, now: float) -> None:
        """A lookup the strategies answered."""
        self.instruments()
        self._answer(res, started, now, cached=False)

    def bridged(self, res: Resolution, error: DiscoveryError, started: float, now: float) -> None:
        """A failed refresh, answered with the last good answer (``res``, stale)."""
        self.instruments()
        meters = self.meters
        if meters is not None:
            meters.duration.record(now - started, {"strategy": res.source, "outcome": STALE})
            meters.stale.add(1, {"strategy": res.source})
        name = type(error).__name__
        service = str(res.service)
        LOOKUP_LOG.warning(
            "%s: serving the last answer from %s, %.1f s old: the refresh failed with %s: %s",
            service,
            res.source,
            res.age,
            name,
            _why(error),
            extra=_fields(service, res.source, STALE, now - started, False, True, name),
        )

    def failed(self, error: DiscoveryError, service: object, started: float, now: float) -> None:
        """A lookup that raised ``error`` (nothing to bridge it with)."""
        self.instruments()
        name = type(error).__name__
        meters = self.meters
        if meters is not None:
            meters.duration.record(now - started, {"strategy": NO_STRATEGY, "outcome": name})
        if not self.debug(DEBUG):
            return
        who = str(error.service or service)
        LOOKUP_LOG.debug(
            "%s: %s in %s: %s",
            who,
            name,
            _ms(now - started),
            _why(error),
            extra=_fields(who, None, name, now - started, False, False, name),
        )

    def _answer(self, res: Resolution, started: float, now: float, *, cached: bool) -> None:
        outcome = STALE if res.stale else CACHED if cached else ANSWERED
        meters = self.meters
        if meters is not None:
            meters.duration.record(now - started, {"strategy": res.source, "outcome": outcome})
            if cached:
                meters.cache_hits.add(1, {"strategy": res.source})
            if res.stale:
                meters.stale.add(1, {"strategy": res.source})
        if not self.debug(DEBUG):
            return
        service = str(res.service)
        extra = _fields(service, res.source, outcome, now - started, cached, res.stale, None)
        if res.stale:
            # Served again from the cache after a bridged failure (which warned).
            LOOKUP_LOG.debug(
                "%s: stale answer from %s (%.1f s old), cached, in %s",
                service,
                res.source,
                res.age,
                _ms(now - started),
                extra=extra,
            )
        else:
            LOOKUP_LOG.debug(
                "%s: %s %s in %s",
                service,
                "cached answer from" if cached else "answered by",
                res.source,
                _ms(now - started),
                extra=extra,
            )

    # -- the watch cache -------------------------------------------------------------

    def reconnect(
        self, namespace: str, resource: str, reason: str, detail: str, *, warn: bool
    ) -> None:
        """The watch cache re-opens a request after ``reason`` (``silent``, ``error``,
        ``denied``); a WARNING when ``warn`` (the first of a run), else DEBUG."""
        meters = self.instruments()
        if meters is not None:
            meters.reconnects.add(1, {"resource": resource, "reason": reason})
        level = logging.WARNING if warn else DEBUG
        if WATCH_LOG.isEnabledFor(level):
            WATCH_LOG.log(
                level,
                "watch of %s in namespace %r: %s; reconnecting",
                resource,
                namespace,
                redact(detail),
                extra=_watch_fields(namespace, resource, reason),
            )

    def relist(self, namespace: str, resource: str, reason: str, detail: str) -> None:
        """The watch cache lists ``resource`` again: ``expired`` (410 Gone, events were
        lost: a WARNING) or ``interval`` (the periodic re-list: DEBUG)."""
        meters = self.instruments()
        if meters is not None:
            meters.relists.add(1, {"resource": resource, "reason": reason})
        level = logging.WARNING if reason == "expired" else DEBUG
        if WATCH_LOG.isEnabledFor(level):
            WATCH_LOG.log(
                level,
                "%s in namespace %r: re-listing (%s)",
                resource,
                namespace,
                redact(detail),
                extra=_watch_fields(namespace, resource, reason),
            )


def _meter(provider: MeterProvider | None) -> Meter:
    from opentelemetry import metrics

    if provider is None:
        return metrics.get_meter(METER)
    return provider.get_meter(METER)


def _why(error: DiscoveryError) -> str:
    """The error's headline and each attempt, on one line, redacted."""
    tried = "; ".join(a.describe() for a in error.attempts)
    return redact(f"{error.message} (tried: {tried})" if tried else error.message)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def _fields(
    service: str,
    strategy: str | None,
    outcome: str,
    duration: float,
    cached: bool,
    stale: bool,
    error: str | None,
) -> Mapping[str, Any]:
    return {
        "kdisco_service": service,
        "kdisco_strategy": strategy,
        "kdisco_outcome": outcome,
        "kdisco_duration": duration,
        "kdisco_cached": cached,
        "kdisco_stale": stale,
        "kdisco_error": error,
    }


def _watch_fields(namespace: str, resource: str, reason: str) -> Mapping[str, Any]:
    return {"kdisco_namespace": namespace, "kdisco_resource": resource, "kdisco_reason": reason}


#: The one instance: logging configuration and the MeterProvider are process-wide too.
TELEMETRY = Telemetry()


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Record into ``provider`` instead of the global MeterProvider (tests; None goes
    back to the global one). The global one can be set only once per process.

    Args:
        provider: An OpenTelemetry ``MeterProvider``, or None.
    """
    TELEMETRY.use_provider(provider)
