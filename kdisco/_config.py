"""What kdisco learns from its environment: settings, namespace, cluster DNS.

Every reader takes the environment mapping and file paths as arguments, so tests
build any pod or laptop they like without touching the real process environment.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._api import DEFAULT_SERVICEACCOUNT_DIR, kubeconfig_namespace
from ._dns import DnsTarget
from ._exceptions import ConfigurationError, InvalidServiceName
from ._names import check_cluster_domain, check_namespace

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_TIMEOUT = 5.0
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
STRATEGY_NAMES = ("static", "dns", "env", "api")


@attrs.frozen
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str | Path) -> ResolvConf:
        try:
            text = Path(path).read_text()
        except OSError:
            return cls()
        nameservers: list[str] = []
        search: list[str] = []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                # The last search/domain line wins, as in glibc.
                search = [w.lower().rstrip(".") for w in words[1:]]
        return cls(tuple(nameservers), tuple(search))

    def cluster_domain(self) -> str | None:
        """The zone from the kubelet's search list ``<ns>.svc.<zone> svc.<zone> <zone>``.

        Matching the kubelet's pattern, not just the first ``svc`` label, keeps a
        namespace called ``svc`` (search ``svc.svc.cluster.local``) from looking like
        the zone ``svc.cluster.local``.
        """
        for first, second in zip(self.search, self.search[1:], strict=False):
            ns, sep, zone = first.partition(".svc.")
            if sep and ns and "." not in ns and second == f"svc.{zone}":
                return zone
        for entry in self.search:
            labels = entry.split(".")
            if len(labels) >= 3 and labels[1] == "svc":
                return ".".join(labels[2:])
        return None


def parse_dns_server(text: str, *, where: str = "KDISCO_DNS_SERVER") -> DnsTarget:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 literal."""
    raw = text.strip()
    host, port_text = raw, ""
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"{where}={text!r}: expected '[ipv6]:port'")
        port_text = rest[1:]
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigurationError(
            f"{where}={text!r}: {host!r} is not an IP address (a nameserver must be an IP)"
        ) from None
    port = 53
    if port_text or raw.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigurationError(f"{where}={text!r}: port must be 1-65535")
        port = int(port_text)
    return DnsTarget(host, port)


def parse_timeout(value: object, *, where: str = "timeout") -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigurationError(f"{where}={value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{where} must be a positive, finite number of seconds, not {value!r}"
        )
    return seconds


def parse_strategy_list(text: str, *, where: str = "KDISCO_STRATEGIES") -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigurationError(f"{where}={text!r}: no strategies named")
    for n in names:
        if n not in STRATEGY_NAMES:
            raise ConfigurationError(
                f"{where}: unknown strategy {n!r} (known: {', '.join(STRATEGY_NAMES)})"
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}={text!r}: a strategy is named twice")
    return names


def pod_namespace(environ: Mapping[str, str], serviceaccount_dir: str | Path) -> str | None:
    """The pod's own namespace (downward-API ``POD_NAMESPACE``, else the service-account
    ``namespace`` file), or None. Unlike ``detect_namespace`` this ignores
    ``KDISCO_NAMESPACE``: that picks which namespace to search, not where the pod runs,
    and the kubelet's variables describe only the pod's own namespace."""
    found = _pod_namespace(environ, serviceaccount_dir)
    return None if found is None else found[0]


def _pod_namespace(
    environ: Mapping[str, str], serviceaccount_dir: str | Path
) -> tuple[str, str] | None:
    """(namespace, where it came from) from POD_NAMESPACE or the service-account file."""
    value = environ.get("POD_NAMESPACE", "").strip()
    if value:
        return _namespace(value, "POD_NAMESPACE"), "POD_NAMESPACE"
    ns_file = Path(serviceaccount_dir) / "namespace"
    try:
        value = ns_file.read_text().strip()
    except OSError:
        return None
    return (_namespace(value, str(ns_file)), str(ns_file)) if value else None


def detect_namespace(
    environ: Mapping[str, str],
    serviceaccount_dir: str | Path,
    kubeconfig: str | None,
    context: str | None = None,
) -> tuple[str, str]:
    """(namespace, where it came from), in client-go's order, KDISCO_NAMESPACE first.

    The kubeconfig namespace is that of ``context`` when one is chosen (as with
    ``kubectl --context``), else of the current context.
    """
    value = environ.get("KDISCO_NAMESPACE", "").strip()
    if value:
        return _namespace(value, "KDISCO_NAMESPACE"), "KDISCO_NAMESPACE"
    in_pod = _pod_namespace(environ, serviceaccount_dir)
    if in_pod is not None:
        return in_pod
    path = kubeconfig or environ.get("KUBECONFIG")
    if path is None and Path("~/.kube/config").expanduser().is_file():
        path = str(Path("~/.kube/config").expanduser())
    if path:
        value = kubeconfig_namespace(path, context) or ""
        if value:
            return _namespace(value, "kubeconfig context"), "kubeconfig context"
    return "default", "default"


def _namespace(value: str, where: str) -> str:
    try:
        return check_namespace(value)
    except InvalidServiceName as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def checked_cluster_domain(value: str, where: str) -> str:
    try:
        return check_cluster_domain(value)
    except InvalidServiceName as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def serviceaccount_dir(environ: Mapping[str, str], explicit: str | os.PathLike[str] | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(environ.get("KDISCO_SERVICEACCOUNT_DIR") or DEFAULT_SERVICEACCOUNT_DIR)
