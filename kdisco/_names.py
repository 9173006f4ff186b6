"""Parsing and validating what users ask for, before any network call."""

from __future__ import annotations

import re

import attrs

from ._exceptions import InvalidServiceName
from ._service_ref import ServiceRef

# Service names are RFC 1035 labels (must start with a letter); namespaces and
# cluster-domain labels are RFC 1123 labels (may start with a digit). Both are what
# the API server validates, so anything else cannot name a real Service.
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_MAX_LABEL = 63
_MAX_NAME = 253

PortSpec = int | str | None


@attrs.frozen(kw_only=True)
class Query:
    """One validated discovery request, as strategies receive it.

    `Strategy.lookup` gets one; the chain builds it from a ``discover()`` call after
    checking every part, so a strategy can trust it.

    Attributes:
        service: The Service asked for (namespace and cluster domain settled).
        port: The port asked for: a name (lower case), a number, or None for the
            Service's first declared port. Default None.
        include_not_ready: Whether endpoints that are not ready are wanted too.
            Default False.
        backends: Whether the pods behind a ClusterIP Service are wanted rather
            than its virtual IP. Default False.
        reach: The view asked for on this turn: ``"cluster"`` or ``"external"``.
            Default ``"cluster"``.
    """

    service: ServiceRef
    port: int | str | None = None
    include_not_ready: bool = False
    #: The pods behind a ClusterIP (NodePort, LoadBalancer) Service rather than its
    #: virtual IP; a headless Service's answer is its pods anyway.
    backends: bool = False
    #: The view the strategy is asked for: ``"cluster"`` (addresses inside the cluster)
    #: or ``"external"`` (ways in from outside it). The chain sets it per turn from the
    #: caller's ``reach``.
    reach: str = "cluster"

    def describe_port(self) -> str:
        """The port asked for, in words, for messages.

        Returns:
            str: ``port 'http'``, ``port 8080`` or ``the first declared port``.
        """
        if self.port is None:
            return "the first declared port"
        return f"port {self.port!r}" if isinstance(self.port, str) else f"port {self.port}"


def _check_label(label: str, what: str, pattern: re.Pattern[str], original: str) -> None:
    if not label:
        raise InvalidServiceName(f"{original!r}: empty {what}")
    if len(label) > _MAX_LABEL:
        raise InvalidServiceName(
            f"{original!r}: {what} {label[:20]!r}... is {len(label)} characters, over {_MAX_LABEL}"
        )
    if not pattern.fullmatch(label):
        start = "a letter" if pattern is _DNS1035 else "a letter or digit"
        raise InvalidServiceName(
            f"{original!r}: {what} {label!r} must be lower-case letters, digits and '-', "
            f"start with {start} and end with a letter or digit"
        )


def check_namespace(namespace: str, original: str | None = None) -> str:
    # ASCII is checked before folding: some non-ASCII letters lower() to ASCII
    # (KELVIN SIGN -> "k"), and would otherwise pass as a different name.
    _check_ascii(namespace, original or namespace)
    ns = namespace.lower()
    _check_label(ns, "namespace", _DNS1123, original or namespace)
    return ns


def check_cluster_domain(domain: str, original: str | None = None) -> str:
    shown = original or domain
    _check_ascii(domain, shown)
    d = domain.lower().removesuffix(".")
    if len(d) > _MAX_NAME:
        raise InvalidServiceName(f"{shown!r}: cluster domain is over {_MAX_NAME} characters")
    for label in d.split("."):
        _check_label(label, "cluster-domain label", _DNS1123, shown)
    return d


def _check_ascii(text: str, original: str) -> None:
    if not text.isascii():
        raise InvalidServiceName(f"{original!r}: only ASCII is allowed in Service names")


def check_port(port: object, original: str) -> int | str:
    """A port number (1-65535) or a port name (an RFC 1123 label with a letter)."""
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise InvalidServiceName(
            f"{original!r}: port must be an int or a str, not {type(port).__name__}"
        )
    if isinstance(port, str):
        _check_ascii(port, original)
        text = port.lower()
        if not text:
            raise InvalidServiceName(f"{original!r}: empty port")
        if text.isdigit():
            # int() refuses over 4300 digits with a bare ValueError; anything past
            # five digits (leading zeros aside) is out of range anyway.
            digits = text.lstrip("0") or "0"
            if len(digits) > 5:
                raise InvalidServiceName(f"{original!r}: port {text[:10]}... is outside 1-65535")
            port = int(digits)
        else:
            _check_label(text, "port name", _DNS1123, original)
            return text
    if not 1 <= port <= 65535:
        raise InvalidServiceName(f"{original!r}: port {port} is outside 1-65535")
    return port


def parse_query(
    name: object,
    *,
    namespace: str | None,
    default_namespace: str,
    cluster_domain: str,
    port: object = None,
    include_not_ready: bool = False,
    backends: bool = False,
) -> Query:
    """Turn ``name`` (``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.<domain>[.]``,
    each optionally ``:port``) and the keyword arguments into a ``Query``.

    Raises InvalidServiceName naming what is wrong.
    """
    if not isinstance(name, str):
        raise InvalidServiceName(f"service name must be a str, not {type(name).__name__}")
    original = name
    _check_ascii(name, original)
    text = name.lower()
    if not text:
        raise InvalidServiceName("empty service name")

    name_port: int | str | None = None
    if ":" in text:
        text, _, port_text = text.partition(":")
        if ":" in port_text:
            raise InvalidServiceName(f"{original!r}: two ports given")
        if not port_text:
            raise InvalidServiceName(f"{original!r}: empty port after ':'")
        name_port = check_port(port_text, original)

    absolute = text.endswith(".")
    if absolute:
        text = text[:-1]
    labels = text.split(".")
    for label in labels:
        if not label:
            raise InvalidServiceName(f"{original!r}: empty label")

    svc = labels[0]
    _check_label(svc, "service name", _DNS1035, original)

    name_ns: str | None = None
    domain = cluster_domain
    if len(labels) >= 2:
        name_ns = labels[1]
        _check_label(name_ns, "namespace", _DNS1123, original)
    if len(labels) >= 3 and labels[2] != "svc":
        raise InvalidServiceName(
            f"{original!r}: third label must be 'svc' (svc.ns.svc.<cluster-domain>), "
            f"not {labels[2]!r}"
        )
    if len(labels) >= 4:
        domain = check_cluster_domain(".".join(labels[3:]), original)
    if absolute and len(labels) < 4:
        raise InvalidServiceName(
            f"{original!r}: a trailing dot marks a fully-qualified name; "
            "write svc.ns.svc.<cluster-domain>. or drop the dot"
        )
    if len(text) > _MAX_NAME:
        raise InvalidServiceName(f"{original!r}: name is over {_MAX_NAME} characters")

    if namespace is not None:
        if not isinstance(namespace, str):
            raise InvalidServiceName(f"namespace must be a str, not {type(namespace).__name__}")
        kw_ns = check_namespace(namespace)
        if name_ns is not None and name_ns != kw_ns:
            raise InvalidServiceName(
                f"{original!r} names namespace {name_ns!r} but namespace={namespace!r} was given"
            )
        name_ns = kw_ns

    final_port = name_port
    if port is not None:
        kw_port = check_port(port, original)
        if name_port is not None and name_port != kw_port:
            raise InvalidServiceName(
                f"two ports given: {original!r} names {name_port!r} but port={port!r}"
            )
        final_port = kw_port

    if not isinstance(include_not_ready, bool):
        raise InvalidServiceName("include_not_ready must be a bool")
    if not isinstance(backends, bool):
        raise InvalidServiceName("backends must be a bool")

    return Query(
        service=ServiceRef(
            name=svc,
            namespace=name_ns if name_ns is not None else default_namespace,
            cluster_domain=domain,
        ),
        port=final_port,
        include_not_ready=include_not_ready,
        backends=backends,
    )


def parse_service_fqdn(target: str) -> ServiceRef | None:
    """``svc.ns.svc.<domain>[.]`` as a ServiceRef, or None when it is not one.

    Used to tell an ExternalName that points back into the cluster.
    """
    labels = target.lower().removesuffix(".").split(".")
    if len(labels) < 4 or labels[2] != "svc":
        return None
    if not (_DNS1035.fullmatch(labels[0]) and _DNS1123.fullmatch(labels[1])):
        return None
    return ServiceRef(name=labels[0], namespace=labels[1], cluster_domain=".".join(labels[3:]))


def in_cluster_target(external_name: str | None, cluster_domain: str) -> ServiceRef | None:
    """The Service an ExternalName aliases when it points back into this cluster.

    ``svc.ns.svc.<zone>`` with the cluster's own zone names a Service the chain can
    follow; anything else (a name outside the cluster) is the answer itself.
    """
    if not external_name:
        return None
    target = parse_service_fqdn(external_name)
    if target is None or target.cluster_domain != cluster_domain:
        return None
    return target


#: An RFC 1123 subdomain, as the API validates spec.externalName (any case here: DNS
#: answers may carry upper case).
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
)


def is_dns_name(text: str) -> bool:
    """Whether ``text`` (without a trailing dot) is a host name an ExternalName may hold."""
    return bool(_DNS_NAME.fullmatch(text))
