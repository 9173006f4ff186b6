"""kdisco-hosts: a kdisco strategy named ``hosts`` that answers from an ``/etc/hosts``-style file.

On a laptop or in CI there is no cluster DNS and no API server, yet the code under
test still calls ``kdisco.discover("payments")``. A hosts file is the one format
everybody already knows for "this name is at that address", so this strategy reads
one, from the path in ``KDISCO_HOSTS_FILE``::

    # IP           name[.namespace]   [name...]
    192.0.2.10     payments                      # payments in any namespace
    198.51.100.7   payments.billing              # only in billing; wins there
    192.0.2.20     web  web-canary

With ``KDISCO_STRATEGIES=hosts,dns,env,api`` the same image runs everywhere: where
the variable is unset (in the cluster) the strategy says "not applicable" and the
chain moves on to the real sources.

It is also the worked example of kdisco's "Writing a strategy" guide, which includes
this file whole, so it uses only the public ``kdisco`` names a plugin may rely on.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import kdisco

__all__ = ["DEFAULT_TTL", "ENV_VAR", "HostsStrategy", "from_settings", "read_hosts"]

#: Where the strategy finds its file; read from ``settings.environ``, never ``os.environ``.
ENV_VAR = "KDISCO_HOSTS_FILE"

#: Seconds an answer holds. Short, so that kdisco's answer cache (and ``kdisco.watch``)
#: re-reads the file soon after it is edited; long enough that a busy caller does not
#: re-read it on every request.
DEFAULT_TTL = 5.0


def read_hosts(path: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """Read a hosts file: each name (lower-cased) to its addresses, in file order.

    A name on several lines collects every address, so one file can describe a
    Service with several endpoints. A line whose first word is not an IP address
    raises ``ConfigurationError`` naming the file and line: such a typo would
    otherwise surface as a confusing connection failure much later. So does a file
    that cannot be read, since a path set on purpose that leads nowhere is a
    configuration mistake, not an absent Service.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise kdisco.ConfigurationError(
            f"cannot read hosts file {os.fspath(path)!r}: {reason}"
        ) from exc
    found: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"hosts file {os.fspath(path)!r}, line {number}"
        try:
            # Normalised (2001:DB8::1 -> 2001:db8::1) so equal addresses compare equal.
            address = str(ipaddress.ip_address(words[0]))
        except ValueError:
            raise kdisco.ConfigurationError(f"{where}: {words[0]!r} is not an IP address") from None
        if len(words) == 1:
            raise kdisco.ConfigurationError(f"{where}: {words[0]} is given no name")
        for name in words[1:]:
            addresses = found.setdefault(name.lower().rstrip("."), [])
            if address not in addresses:
                addresses.append(address)
    return {name: tuple(addresses) for name, addresses in found.items()}


class HostsStrategy:
    """Answer from a hosts file; with no file configured, step aside.

    A line naming ``svc`` answers for that Service in every namespace; a line naming
    ``svc.ns`` only in that namespace, and wins there over ``svc``, as a more specific
    rule should. Other names (``localhost``, ``db.example.com``) can never match a
    Service query and are simply never asked for, so even ``/etc/hosts`` itself works.

    A hosts file holds addresses, not ports: a port number asked for is given to every
    endpoint (the caller knows it, the file need not), a port asked for by name cannot
    be answered here, and with no port asked the endpoints have ``port=None``, as cluster
    DNS answers do.

    The file is read on every lookup rather than kept: kdisco caches each answer for
    its ``ttl``, so the file is read at most once per TTL per Service, and an edited
    file is seen without a restart. A local read finishes long before any deadline, so
    ``deadline`` goes unused; a strategy that does network I/O must size its timeouts
    from ``deadline.remaining()``. There is no ``close()``: nothing is held between
    lookups.
    """

    name = "hosts"

    def __init__(self, path: str | os.PathLike[str] | None, *, ttl: float = DEFAULT_TTL) -> None:
        self._path = None if path is None else Path(path)
        self._ttl = ttl

    def __repr__(self) -> str:
        shown = None if self._path is None else os.fspath(self._path)
        return f"HostsStrategy({shown!r})"

    def lookup(
        self, query: kdisco.Query, deadline: kdisco.Deadline
    ) -> kdisco.Resolution | kdisco.Miss:
        if self._path is None:
            # Not an error: the same strategy list is used where no file is wanted.
            return kdisco.Miss(kdisco.Outcome.NOT_APPLICABLE, f"{ENV_VAR} is unset")
        service = query.service
        specific = f"{service.name}.{service.namespace}"
        hosts = read_hosts(self._path)
        addresses = hosts.get(specific) or hosts.get(service.name)
        if not addresses:
            return kdisco.Miss(
                kdisco.Outcome.NOT_FOUND,
                f"neither {specific!r} nor {service.name!r} in {os.fspath(self._path)!r}",
            )
        if isinstance(query.port, str):
            # NO_SUCH_PORT, not NOT_FOUND: the Service may well exist, and a later
            # strategy (DNS SRV records, the API) can still resolve the port's name.
            return kdisco.Miss(
                kdisco.Outcome.NO_SUCH_PORT,
                f"a hosts file has no port names: ask for {query.port!r} by number",
            )
        return kdisco.Resolution(
            service=service,
            # A bare address says nothing about how the Service is set up.
            kind=kdisco.ServiceKind.UNKNOWN,
            endpoints=tuple(kdisco.Endpoint(host=a, port=query.port) for a in addresses),
            source=self.name,
            # Without a TTL (or a Freshness that says when it is out of date) kdisco
            # would not cache the answer at all.
            ttl=self._ttl,
        )


def from_settings(settings: kdisco.Settings, notifier: kdisco.Notifier) -> HostsStrategy:
    """The factory the ``kdisco.strategies`` entry point names; kdisco calls it.

    The path comes from ``settings.environ``, not ``os.environ``: a ``Discoverer``
    built with ``environ={...}`` (a test, a tool) must configure every strategy from
    the same place. The file is read once here so that a wrong path fails when the
    ``Discoverer`` is built, like kdisco's own configuration errors, rather than as a
    failed attempt on every lookup. ``notifier`` goes unused: this source does not
    learn of changes, it is re-read when an answer's TTL runs out.
    """
    path = settings.environ.get(ENV_VAR, "").strip() or None
    if path is not None:
        read_hosts(path)
    return HostsStrategy(path)
