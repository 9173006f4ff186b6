"""The ``static`` strategy: a fixed map of Services to addresses, from code or a TOML file.

This is how an application that used to hard-code hosts runs on a laptop, and what
``kdisco.testing.FakeResolver`` builds on.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import attrs

from kdisco._attempts import Outcome
from kdisco._deadline import Deadline
from kdisco._exceptions import ConfigurationError, InvalidServiceName
from kdisco._models import (
    Endpoint,
    Freshness,
    Resolution,
    ServiceKind,
    ServicePort,
    choose_port,
    port_labels,
)
from kdisco._names import Query, check_port, parse_query
from kdisco._notify import Notifier
from kdisco._service_ref import ServiceRef
from kdisco._validation import parse_port_text

from .base import Miss

if TYPE_CHECKING:
    from kdisco._settings import Settings

#: What one entry of the map may be: addresses (``"host:port"``, ``"host"``,
#: ``"[v6]:port"``, or Endpoint objects), or a mapping with ``endpoints`` and named
#: ``ports`` (``{"endpoints": ["127.0.0.1"], "ports": {"http": 8080}}``).
StaticEntry = Iterable[str | Endpoint] | Mapping[str, Any]

# A DNS host name (letters, digits, '-', '_' labels, optional trailing dot): anything
# else in a host, such as whitespace, is a typo that would only fail at connect time.
_LABEL = r"[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


@attrs.frozen
class Entry:
    """One parsed entry of the map: its endpoints and declared ports, and, for
    ``kdisco.testing.FakeResolver``'s modes that answer as a real source would, what
    kind of Service it stands for (``cluster_ip``, ``headless``; unset: not said)."""

    endpoints: tuple[Endpoint, ...]
    ports: tuple[ServicePort, ...]
    cluster_ips: tuple[str, ...] = ()
    headless: bool | None = None

    def says_kind(self) -> str | None:
        """The key that says what kind of Service this is (``"cluster_ip"`` or
        ``"headless"``), or None."""
        if self.cluster_ips:
            return "cluster_ip"
        return "headless" if self.headless is not None else None


def parse_address(text: object, *, where: str) -> Endpoint:
    """``host``, ``host:port``, ``ip``, ``[ipv6]`` or ``[ipv6]:port`` as an Endpoint."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ConfigurationError(f"{where}: {text!r} is not a 'host:port' address")
    host, port_text = text, ""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] not in ("", ":"):
            raise ConfigurationError(f"{where}: {text!r} is not '[ipv6]:port'")
        host, port_text = text[1:close], text[close + 2 :]
        _ip(host, text, where, version=6)
        if text.endswith(":"):
            raise ConfigurationError(f"{where}: {text!r} has an empty port")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ConfigurationError(f"{where}: {text!r} has an empty port")
    elif ":" in text:
        _ip(text, text, where, version=6)  # a bare IPv6 literal, no port
    if not host:
        raise ConfigurationError(f"{where}: {text!r} has an empty host")
    if ":" not in host and not _HOSTNAME.fullmatch(host):
        raise ConfigurationError(f"{where}: {text!r}: {host!r} is not a host name or IP address")
    port = parse_port_text(port_text, f"{where}: {text[:60]!r}") if port_text else None
    return Endpoint(host=host, port=port)


def _ip(host: str, text: str, where: str, *, version: int) -> None:
    try:
        ok = ipaddress.ip_address(host).version == version
    except ValueError:
        ok = False
    if not ok:
        raise ConfigurationError(f"{where}: {text!r}: {host!r} is not an IPv{version} address")


#: The keys of an entry given as a mapping.
ENTRY_KEYS = ("endpoints", "ports", "cluster_ip", "headless")


def parse_entry(key: str, value: object) -> Entry:
    """One entry of the map, checked; ConfigurationError naming the entry and the key."""
    where = f"static entry {key!r}"
    ports: tuple[ServicePort, ...] = ()
    cluster_ips: tuple[str, ...] = ()
    headless: bool | None = None
    raw: object = value
    if isinstance(value, Mapping):
        unknown = set(value) - set(ENTRY_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown keys {sorted(unknown)} (expected {', '.join(ENTRY_KEYS)})"
            )
        cluster_ips = _cluster_ips(value.get("cluster_ip"), where)
        headless = value.get("headless")
        if headless is not None and not isinstance(headless, bool):
            raise ConfigurationError(f"{where}: 'headless' must be true or false, not {headless!r}")
        if headless and cluster_ips:
            raise ConfigurationError(
                f"{where}: 'cluster_ip' and 'headless': a headless Service has no ClusterIP"
            )
        raw = value.get("endpoints", ())
        named = value.get("ports", {})
        if not isinstance(named, Mapping):
            raise ConfigurationError(f"{where}: 'ports' must map port names to numbers")
        parsed: list[ServicePort] = []
        for port_name, number in named.items():
            try:
                checked_name = check_port(port_name, key)
                checked_number = check_port(number, key)
            except InvalidServiceName as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
            if not isinstance(checked_name, str) or not isinstance(checked_number, int):
                raise ConfigurationError(
                    f"{where}: ports must map a name to a number, not {port_name!r}={number!r}"
                )
            parsed.append(ServicePort(name=checked_name, port=checked_number))
        ports = tuple(parsed)
    if isinstance(raw, str | bytes) or not isinstance(raw, Iterable):
        raise ConfigurationError(f"{where}: expected a list of 'host:port' addresses")
    endpoints = tuple(
        item if isinstance(item, Endpoint) else parse_address(item, where=where) for item in raw
    )
    entry = Entry(endpoints=endpoints, ports=ports, cluster_ips=cluster_ips, headless=headless)
    if not endpoints and entry.says_kind() is None:
        # A Service said to be headless or to have a ClusterIP may have no pods (a
        # fake of "nothing ready"); a bare list of nothing is a mistake.
        raise ConfigurationError(f"{where}: no addresses")
    return entry


def _cluster_ips(value: object, where: str) -> tuple[str, ...]:
    """``cluster_ip``: one IP address, or a list of one per family (dual-stack)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigurationError(
            f"{where}: 'cluster_ip' must be an IP address or a list of one per family"
        )
    found: list[str] = []
    for item in items:
        try:
            found.append(str(ipaddress.ip_address(item)))
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{where}: 'cluster_ip' {item!r} is not an IP address"
            ) from None
    if len({":" in ip for ip in found}) != len(found):
        raise ConfigurationError(
            f"{where}: 'cluster_ip' {found!r}: a Service has one ClusterIP per address family"
        )
    return tuple(found)


def _key(text: object) -> tuple[str, str | None]:
    """``svc`` or ``svc.ns`` (or a full name) as (name, namespace-or-None)."""
    if not isinstance(text, str):
        raise ConfigurationError(f"static key {text!r} is not a str")
    if ":" in text:
        raise ConfigurationError(f"static key {text!r}: put ports in the addresses, not the key")
    try:
        q = parse_query(text, namespace=None, default_namespace="\0", cluster_domain="x")
    except InvalidServiceName as exc:
        raise ConfigurationError(f"static key {text!r}: {exc}") from None
    ns = None if q.service.namespace == "\0" else q.service.namespace
    return q.service.name, ns


class StaticStrategy:
    """Answer from a fixed map: ``{"svc": [...], "svc.ns": [...]}``.

    A bare ``svc`` key matches that Service in any namespace; ``svc.ns`` matches only
    there and wins over the bare key. With a port asked for: a number must match the
    entry's port (entries without a port take it, if the entry declares that number or
    no ports at all); a name is looked up in the entry's ``ports`` and, when the entry
    names no ports, the entry's own addresses are used as they are. With no port asked,
    the first declared port is used, as for a real Service. Everything is validated
    when the map is built, before any lookup. Endpoints with ``ready=False`` are
    left out unless ``include_not_ready`` is asked; when none is ready the answer is
    "no ready endpoints".
    """

    def __init__(self, mapping: Mapping[str, StaticEntry], *, name: str = "static") -> None:
        if not isinstance(mapping, Mapping):
            raise ConfigurationError(
                f"static map must be a mapping of names to addresses, not {type(mapping).__name__}"
            )
        self._name = name
        #: Edits (``FakeResolver.add``/``remove``) are published here, so a
        #: ``kdisco.watch()`` on the map wakes at once.
        self.notifier = Notifier()
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str | None], Entry] = {}
        # Bumped on every change, so cached answers from this map know when to go.
        self._version = 0
        for key, value in mapping.items():
            self._entries[_key(key)] = self._parse(key, value)

    @classmethod
    def from_file(cls, path: str | PathLike[str], *, name: str = "static") -> StaticStrategy:
        """Load ``[services]`` from a TOML file (the format: docs/local-development.md)."""
        import tomllib  # only static-file users pay for the TOML parser

        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigurationError(f"cannot read static file {str(path)!r}: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = "nested too deep" if isinstance(exc, RecursionError) else exc
            raise ConfigurationError(f"static file {str(path)!r} is not TOML: {reason}") from None
        services = data.get("services")
        if not isinstance(services, dict):
            raise ConfigurationError(f"static file {str(path)!r} has no [services] table")
        return cls(services, name=name)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._entries)} services)"

    def _still(self, version: int) -> Callable[[], bool]:
        # Answers from the map hold until it changes (FakeResolver.add/remove).
        return lambda: self._version == version

    def _parse(self, key: str, value: object) -> Entry:
        """One entry, checked. The static strategy answers with the endpoints as they
        are: what kind of Service an entry stands for is for FakeResolver's modes."""
        entry = parse_entry(key, value)
        said = entry.says_kind()
        if said is not None:
            raise ConfigurationError(
                f"static entry {key!r}: {said!r} is read only by kdisco.testing.FakeResolver "
                "in mode 'dns', 'env' or 'api' (the static strategy answers the endpoints "
                "as they are)"
            )
        return entry

    def _find(self, service: ServiceRef) -> tuple[Entry | None, Freshness]:
        """The entry for ``service`` (``svc.ns`` first, then a bare ``svc``), and how
        long an answer from it holds (until the map changes)."""
        with self._lock:
            entry = self._entries.get((service.name, service.namespace)) or self._entries.get(
                (service.name, None)
            )
            version = self._version
        return entry, Freshness(valid=self._still(version))

    def _all(self) -> dict[tuple[str, str | None], Entry]:
        """Every entry, by (name, namespace or None), as the map is now."""
        with self._lock:
            return dict(self._entries)

    def _set(self, key: str, value: StaticEntry) -> None:
        parsed = (_key(key), self._parse(key, value))
        with self._lock:
            self._entries[parsed[0]] = parsed[1]
            self._version += 1
        self._announce(parsed[0])

    def _remove(self, key: str) -> None:
        k = _key(key)
        with self._lock:
            self._entries.pop(k, None)
            self._version += 1
        self._announce(k)

    def _announce(self, key: tuple[str, str | None]) -> None:
        name, namespace = key
        if namespace is None:
            self.notifier.publish_all()  # a bare name stands for every namespace
        else:
            self.notifier.publish(namespace, name)

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        # A map in memory: nothing to wait for, so the event loop runs it directly.
        return self.lookup(query, deadline)

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        service = query.service
        entry, freshness = self._find(service)
        if entry is None:
            return Miss(Outcome.NOT_FOUND, f"no static entry for {service}")
        endpoints = entry.endpoints
        if not query.include_not_ready:
            # Same contract as the api strategy, so a FakeResolver given Endpoint objects
            # with ready=False can stand in for a Service whose pods are not up.
            endpoints = tuple(ep for ep in endpoints if ep.ready)
            if not endpoints:
                return Miss(
                    Outcome.NO_READY_ENDPOINTS,
                    f"static entry for {service}: {len(entry.endpoints)} endpoints, none ready",
                )
        wanted = query.port
        # As for a real Service: with no port asked, the first declared one.
        chosen, ok = choose_port(entry.ports, wanted)
        if isinstance(wanted, int):
            if any(ep.port not in (None, wanted) for ep in endpoints):
                return Miss(
                    Outcome.NO_SUCH_PORT,
                    f"static entry for {service} lists other ports than {wanted}",
                )
            if not ok and entry.ports and any(ep.port is None for ep in endpoints):
                return Miss(
                    Outcome.NO_SUCH_PORT,
                    f"static entry for {service} declares no port {wanted} "
                    f"(ports: {port_labels(entry.ports)})",
                )
            endpoints = tuple(attrs.evolve(ep, port=wanted) for ep in endpoints)
        elif not ok and entry.ports:
            return Miss(
                Outcome.NO_SUCH_PORT,
                f"static entry for {service} has no port {wanted!r} "
                f"(ports: {port_labels(entry.ports)})",
            )
        elif chosen is not None:
            endpoints = tuple(
                ep if ep.port is not None else attrs.evolve(ep, port=chosen.port)
                for ep in endpoints
            )
        return Resolution(
            service=service,
            kind=ServiceKind.UNKNOWN,
            endpoints=endpoints,
            ports=entry.ports,
            port=chosen,
            source=self._name,
            freshness=freshness,
        )


def from_settings(settings: Settings, notifier: Notifier) -> StaticStrategy:
    """The registry's factory: the map given in code, or the TOML file it names."""
    static = settings.static
    if static is None:
        raise ConfigurationError("strategy 'static' needs a map: pass static= or set KDISCO_STATIC")
    if isinstance(static, Mapping):
        return StaticStrategy(static)
    return StaticStrategy.from_file(static)
