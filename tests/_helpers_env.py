"""Build a pod's environment the way the kubelet does (FACTS.md §3).

Mirrors ``FromServices`` / ``makeLinkVariables`` in kubelet's
``pkg/kubelet/envvars/envvars.go``: for each Service with a ClusterIP,
``<SVC>_SERVICE_HOST``, ``<SVC>_SERVICE_PORT`` (first port),
``<SVC>_SERVICE_PORT_<NAME>`` per named port, and Docker-link variables for every
port, with ``net.JoinHostPort`` bracketing IPv6 in the URL-style values. Headless
(``None``) and ExternalName (no ClusterIP) Services get nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen
class Port:
    port: int
    name: str = ""
    protocol: str = "TCP"


@attrs.frozen
class Service:
    name: str
    cluster_ip: str
    ports: tuple[Port, ...]


#: The ``kubernetes`` Service of ``default`` is injected into every pod.
KUBERNETES = Service("kubernetes", "10.96.0.1", (Port(443, "https"),))


def env_name(text: str) -> str:
    return text.upper().replace("-", "_")


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def service_variables(service: Service) -> list[tuple[str, str]]:
    """The variables one Service contributes, in the kubelet's order."""
    if service.cluster_ip in ("", "None"):
        return []
    prefix = env_name(service.name)
    out = [(f"{prefix}_SERVICE_HOST", service.cluster_ip)]
    out.append((f"{prefix}_SERVICE_PORT", str(service.ports[0].port)))
    for p in service.ports:
        if p.name:
            out.append((f"{prefix}_SERVICE_PORT_{env_name(p.name)}", str(p.port)))
    for i, p in enumerate(service.ports):
        proto = p.protocol or "TCP"
        url = f"{proto.lower()}://{join_host_port(service.cluster_ip, p.port)}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        link = f"{prefix}_PORT_{p.port}_{proto.upper()}"
        out += [
            (link, url),
            (f"{link}_PROTO", proto.lower()),
            (f"{link}_PORT", str(p.port)),
            (f"{link}_ADDR", service.cluster_ip),
        ]
    return out


def pod_environ(*services: Service, extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """A pod's environment with ``kubernetes`` first and then ``services`` in order.

    The kubelet collects the variables into a map, so when two Services write the same
    name (``foo``'s ``FOO_SERVICE_PORT`` and ``foo-service``'s Docker-link
    ``FOO_SERVICE_PORT``) the one written later wins; which one that is depends on map
    order in the kubelet, so tests try both orders.
    """
    env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin", "HOSTNAME": "app-7d9f-abcde"}
    for service in (KUBERNETES, *services):
        env.update(service_variables(service))
    env.update(extra)
    return env
