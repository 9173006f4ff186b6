"""The ``env`` strategy: the service variables the kubelet writes at container start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from kdisco._attempts import Outcome
from kdisco._deadline import Deadline
from kdisco._models import Endpoint, Resolution, ServiceKind, ServicePort, choose_port, port_labels
from kdisco._names import Query

from .base import Miss

if TYPE_CHECKING:
    from kdisco._notify import Notifier
    from kdisco._settings import Settings

_PROTOCOLS = ("TCP", "UDP", "SCTP")
# Docker-link names of *another* Service can look like named ports of this one
# (Service "foo-service" exports FOO_SERVICE_PORT_80_TCP); these are never port names.
_LINK_SUFFIX = re.compile(r"\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?")
#: ``tcp://10.96.0.1:443`` or ``udp://[fd00::a]:53``, as the kubelet writes ``<SVC>_PORT``.
_LINK_URL = re.compile(r"(?:tcp|udp|sctp)://(?:\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)")


def env_prefix(service_name: str) -> str:
    """The kubelet's variable prefix: upper-case, '-' becomes '_'."""
    return service_name.upper().replace("-", "_")


class EnvStrategy:
    """Read ``<SVC>_SERVICE_HOST`` / ``_SERVICE_PORT[_<NAME>]`` / ``<SVC>_PORT_<n>_<PROTO>``.

    The kubelet writes these only for Services with a ClusterIP in the pod's own
    namespace that existed when the container started, so answers are marked as a
    snapshot, and a missing variable is only weak evidence that the Service is absent.
    """

    name = "env"
    #: Only cluster-internal addresses (ClusterIPs, pod IPs): not asked for
    #: ``reach="external"``.
    views = ("cluster",)

    def __init__(self, environ: Mapping[str, str], *, namespace: str | None) -> None:
        self._environ = environ
        #: The pod's own namespace, None when it cannot be known.
        self._namespace = namespace

    @property
    def not_applicable(self) -> str | None:
        """Why this strategy cannot apply here at all, or None (see the chain)."""
        if not self._environ.get("KUBERNETES_SERVICE_HOST"):
            return (
                "not in a pod: KUBERNETES_SERVICE_HOST is unset, so the kubelet wrote no "
                "service variables"
            )
        if self._namespace is None:
            return (
                "the pod's namespace is unknown (no POD_NAMESPACE, no service-account "
                "namespace file), so the variables cannot be matched to a namespace"
            )
        return None

    def __repr__(self) -> str:
        return f"EnvStrategy(namespace={self._namespace!r})"

    async def alookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        # Variables in memory: nothing to wait for, so the event loop runs it directly.
        return self.lookup(query, deadline)

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        env = self._environ
        unavailable = self.not_applicable
        if unavailable is not None:
            return Miss(Outcome.NOT_APPLICABLE, unavailable)
        service = query.service
        if query.backends:
            return Miss(
                Outcome.NOT_APPLICABLE,
                "backends: the kubelet's variables name a Service's ClusterIP, not its pods",
            )
        if service.namespace != self._namespace:
            return Miss(
                Outcome.NOT_APPLICABLE,
                f"service variables cover only the pod's own namespace "
                f"{self._namespace!r}, not {service.namespace!r}",
            )
        prefix = env_prefix(service.name)
        host = env.get(f"{prefix}_SERVICE_HOST", "").strip()
        if not host:
            return Miss(
                Outcome.NOT_FOUND,
                f"no {prefix}_SERVICE_HOST (headless and ExternalName Services, and those "
                "created after the container started, get no variables)",
            )
        ports = self._ports(prefix)
        chosen, _ = choose_port(ports, query.port)
        if chosen is None:
            if query.port is None:
                # A ClusterIP Service without ports: the address alone is the answer.
                return self._resolution(query, host, ports, None)
            return Miss(
                Outcome.NO_SUCH_PORT,
                f"{prefix}_* variables declare no {query.describe_port()} "
                f"(ports: {port_labels(ports)})",
            )
        return self._resolution(query, host, ports, chosen)

    def _resolution(
        self, query: Query, host: str, ports: tuple[ServicePort, ...], chosen: ServicePort | None
    ) -> Resolution:
        return Resolution(
            service=query.service,
            # Only Services with a ClusterIP get variables; NodePort and LoadBalancer
            # Services have one too, which env cannot tell apart.
            kind=ServiceKind.CLUSTER_IP,
            endpoints=(Endpoint(host=host, port=chosen.port if chosen else None),),
            ports=ports,
            port=chosen,
            snapshot=True,
            source=self.name,
            # The variables never change for the life of the process.
            ttl=float("inf"),
        )

    def _ports(self, prefix: str) -> tuple[ServicePort, ...]:
        env = self._environ
        protocols: dict[int, set[str]] = {}
        link = re.compile(rf"{re.escape(prefix)}_PORT_(\d+)_({'|'.join(_PROTOCOLS)})")
        for key in env:
            m = link.fullmatch(key)
            number = _port_number(m.group(1)) if m else None
            if m and number is not None:
                protocols.setdefault(number, set()).add(m.group(2))
        # Services whose variable names start with this one's: "web-service-port"
        # writes WEB_SERVICE_PORT_SERVICE_PORT(_HTTP) and WEB_SERVICE_PORT_PORT_9000_TCP_PORT,
        # which read like ports of "web" named "service-port", "service-port-http" and
        # "port-9000-tcp-port". Every Service writes <PREFIX>_SERVICE_HOST, so the
        # others are known, and so are the shapes of their variables.
        others = [
            other
            for key in env
            if key.endswith("_SERVICE_HOST")
            and (other := key[: -len("_SERVICE_HOST")]).startswith(prefix + "_")
        ]

        def belongs_to_another(key: str) -> bool:
            for other in others:
                if key.startswith(other + "_SERVICE_"):
                    return True
                link = key[len(other) + len("_PORT_") :]
                if key.startswith(other + "_PORT_") and _LINK_SUFFIX.fullmatch(link):
                    return True
            return False

        names: dict[int, list[str]] = {}
        named = f"{prefix}_SERVICE_PORT_"
        for key, value in env.items():
            if not key.startswith(named) or belongs_to_another(key):
                continue
            suffix = key[len(named) :]
            number = _port_number(value)
            if _LINK_SUFFIX.fullmatch(suffix) or number is None:
                continue
            # Port names are lower-case RFC 1123 labels: '_' can only have been '-'.
            names.setdefault(number, []).append(suffix.lower().replace("_", "-"))
        first = _first_port(env, prefix)

        numbers = sorted(set(protocols) | set(names) | ({first} if first else set()))
        if first is not None:
            numbers.remove(first)
            numbers.insert(0, first)
        ports: list[ServicePort] = []
        for number in numbers:
            for port_name, protocol in _pair(sorted(names.get(number, [])), protocols.get(number)):
                ports.append(ServicePort(port=number, name=port_name, protocol=protocol))
        return tuple(ports)


def _first_port(env: Mapping[str, str], prefix: str) -> int | None:
    """``<SVC>_SERVICE_PORT``, or the port of the Docker-link ``<SVC>_PORT`` URL.

    Service "foo-service" writes its Docker-link variable ``FOO_SERVICE_PORT=tcp://...``
    under the very name that holds "foo"'s first port; the kubelet keeps whichever it
    wrote last. ``FOO_PORT`` (only "foo" writes it) also names the first port.
    """
    number = _port_number(env.get(f"{prefix}_SERVICE_PORT", ""))
    if number is not None:
        return number
    m = _LINK_URL.fullmatch(env.get(f"{prefix}_PORT", "").strip())
    return _port_number(m.group(1)) if m else None


def _port_number(text: str) -> int | None:
    """A port the kubelet could have written (1-65535), else None: the variables are
    the environment's, and anything may have been set there by hand."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    number = int(text)
    return number if 1 <= number <= 65535 else None


def _pair(names: list[str], protocols: set[str] | None) -> list[tuple[str | None, str]]:
    """Give each name of one port number its protocol.

    The variables say which protocols a number is served on, not which name goes with
    which; when a number has several (kube-dns: 53/UDP "dns", 53/TCP "dns-tcp"), a
    name that mentions a protocol gets it, and a single name left over gets the single
    protocol left over. Anything still ambiguous is paired in a fixed order, so the
    answer never depends on the order of the environment.
    """
    available = [p for p in _PROTOCOLS if p in (protocols or {"TCP"})]
    if not names:
        return [(None, available[0])]
    if len(available) == 1:
        return [(n, available[0]) for n in names]
    paired: dict[str, str] = {}
    for n in names:
        hinted = [p for p in available if p.lower() in n.split("-")]
        if len(hinted) == 1:
            paired[n] = hinted[0]
    left_protocols = [p for p in available if p not in paired.values()] or available
    left_names = [n for n in names if n not in paired]
    for i, n in enumerate(left_names):
        paired[n] = left_protocols[min(i, len(left_protocols) - 1)]
    return [(n, paired[n]) for n in names]


def from_settings(settings: Settings, notifier: Notifier) -> EnvStrategy:
    """The registry's factory.

    Without POD_NAMESPACE or a service-account file the pod's namespace is unknown. A
    namespace that was only detected or defaulted is then the best guess there is; one
    chosen by the user (KDISCO_NAMESPACE, an argument) says what to search, not where
    the pod runs, so the variables cannot be matched to it.
    """
    namespace = settings.pod_namespace
    if namespace is None and settings.sources.get("namespace") not in (
        "argument",
        "KDISCO_NAMESPACE",
    ):
        namespace = settings.namespace
    return EnvStrategy(settings.environ, namespace=namespace)
