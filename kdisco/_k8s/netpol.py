"""NetworkPolicy ingress rules evaluated for one connection (pure: no I/O).

``kdisco doctor`` asks "may this caller open this port of that Pod?" and answers from
the NetworkPolicies (networking.k8s.io/v1) of the Pod's namespace, evaluated rather
than listed:

- A Pod is isolated for ingress once a policy of its namespace selects it
  (``spec.podSelector``) with ``Ingress`` in ``policyTypes`` (which defaults to
  ``["Ingress"]``, plus ``"Egress"`` when the policy has egress rules).
- An isolated Pod accepts only what some ingress rule of some selecting policy
  admits; policies only ever add what they admit (there are no deny rules).
- A rule admits a peer when one of its ``from`` peers matches (no ``from``: every
  source) on one of its ``ports`` (no ``ports``: every port).

What is not known about the caller (its labels, its namespace's labels, its IP) is
reasoned about in three-valued logic: the verdict is ``None`` only when a rule's
outcome depends on it, and the reason says which fact was missing.

What is out of reach of the API objects and so of this module: the caller's own
egress policies, whether the network plugin enforces NetworkPolicy at all, and
source NAT (traffic from outside the cluster often arrives from a node's address).
Whether an ``ipBlock`` also matches Pod IPs is left to the plugin by the API; it is
applied here to any peer whose IP is known, and the reason says when only an
``ipBlock`` admitted a Pod.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, final

import attrs

from kdisco._k8s.objects import Json, bad_field, get_list, get_object, get_str

#: Every namespace carries its own name as this label (Kubernetes 1.21+), so a
#: namespace selector can pick namespaces by name.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# A container port name (IANA service name): a quoted "8080" in a rule is no name.
_PORT_NAME = re.compile(r"(?!.*--)(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")

# The facts about a peer that may be unknown, as the reason names them.
_POD_LABELS = "pod labels"
_NAMESPACE_LABELS = "namespace labels"
_IP = "IP address"
# Not an unknown: a marker carried with a match made only by an ipBlock for a Pod.
_BY_IP_BLOCK = "ipBlock"


def _string_map(value: object, where: str) -> dict[str, str]:
    """A copy of ``value`` checked to map strings to strings."""
    if not isinstance(value, Mapping):
        raise bad_field(where, value, "a map of strings to strings")
    copied = dict(value)
    for key, item in copied.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise bad_field(f"{where}[{key!r}]", item, "a string (of a string key)")
    return copied


@final
class FrozenLabels(Mapping[str, str]):
    """An immutable, hashable copy of a label map (so frozen values stay hashable).

    Args:
        labels: the labels, copied.
        where: what the labels are, for the error raised on a key or value that is
            not a string.
    """

    __slots__ = ("_labels",)

    def __init__(self, labels: Mapping[str, str], where: str = "labels") -> None:
        self._labels = _string_map(labels, where)

    def __getitem__(self, key: str) -> str:
        return self._labels[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __hash__(self) -> int:
        return hash(frozenset(self._labels.items()))

    def __repr__(self) -> str:
        return f"FrozenLabels({self._labels!r})"


def _labels(value: Mapping[str, str]) -> FrozenLabels:
    return FrozenLabels(value)


def _optional_labels(value: Mapping[str, str] | None) -> FrozenLabels | None:
    return None if value is None else FrozenLabels(value)


_NON_EMPTY: Callable[[Any, attrs.Attribute[Any], Any], None] = attrs.validators.min_len(1)


def _check_ip(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise bad_field(attribute.name, value, "an IP address") from None


def _check_protocol(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in PROTOCOLS:
        raise bad_field(attribute.name, value, " or ".join(PROTOCOLS))


def _check_port(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    _port_number(value, attribute.name)


def _port_number(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise bad_field(where, value, "a port number 1-65535")
    return value


@attrs.frozen(kw_only=True)
class Peer:
    """Who connects: a Pod (``namespace`` set) or a client outside the cluster.

    Args:
        namespace: the caller Pod's namespace; ``None`` for a caller outside the
            cluster, which only ``ipBlock`` peers can admit.
        namespace_labels: the labels of the caller's namespace (``None``: unknown;
            ``kubernetes.io/metadata.name`` is known from ``namespace`` either way).
        pod_labels: the caller Pod's labels (``None``: unknown).
        ip: the caller's IP address as the target sees it (``None``: unknown).
    """

    namespace: str | None = attrs.field(validator=attrs.validators.optional(_NON_EMPTY))
    namespace_labels: Mapping[str, str] | None = attrs.field(
        default=None, converter=_optional_labels
    )
    pod_labels: Mapping[str, str] | None = attrs.field(default=None, converter=_optional_labels)
    ip: str | None = attrs.field(default=None, validator=_check_ip)


@attrs.frozen(kw_only=True)
class Target:
    """The Pod connected to, and the port and protocol on its side.

    Args:
        namespace: the Pod's namespace (only its policies count).
        pod_labels: the Pod's labels.
        port: the Pod-side port number (a Service's ``targetPort`` resolved).
        port_name: the name of the container port, matched by named ports in rules.
        protocol: ``TCP``, ``UDP`` or ``SCTP``.
    """

    namespace: str = attrs.field(validator=_NON_EMPTY)
    pod_labels: Mapping[str, str] = attrs.field(converter=_labels)
    port: int = attrs.field(validator=_check_port)
    port_name: str | None = None
    protocol: str = attrs.field(default="TCP", validator=_check_protocol)


@attrs.frozen(kw_only=True)
class Verdict:
    """Whether the NetworkPolicies of the target's namespace let the peer in.

    Args:
        allowed: ``True`` or ``False``; ``None`` when the answer depends on something
            unknown about the peer (``reason`` says what).
        isolated: some policy selects the Pod for ingress.
        selecting: names of the policies selecting the Pod for ingress.
        admitting: names of the selecting policies with a rule admitting the peer.
        reason: one line for a user.
    """

    allowed: bool | None
    isolated: bool
    selecting: tuple[str, ...]
    admitting: tuple[str, ...]
    reason: str


# -- three-valued logic --------------------------------------------------------------


@attrs.frozen
class _Maybe:
    """True, False, or unknown (``value`` None) with the peer facts it waits on.

    ``facts`` of a known value carry only markers (``_BY_IP_BLOCK``) for the reason.
    """

    value: bool | None
    facts: frozenset[str] = frozenset()


_TRUE = _Maybe(True)
_FALSE = _Maybe(False)


def _unknown(fact: str) -> _Maybe:
    return _Maybe(None, frozenset({fact}))


def _all(parts: Iterable[_Maybe]) -> _Maybe:
    """Kleene AND: one False decides; otherwise unknown if any part is."""
    parts = list(parts)
    if any(p.value is False for p in parts):
        return _FALSE
    return _Maybe(
        None if any(p.value is None for p in parts) else True,
        frozenset().union(*(p.facts for p in parts)),
    )


def _any(parts: Iterable[_Maybe]) -> _Maybe:
    """Kleene OR: one True decides; otherwise unknown if any part is.

    Of several True parts the one without markers wins: a Pod admitted both by a
    podSelector and an ipBlock needs no ipBlock caveat.
    """
    parts = list(parts)
    true = [p for p in parts if p.value is True]
    if true:
        return min(true, key=lambda p: len(p.facts))
    unknown = [p for p in parts if p.value is None]
    if unknown:
        return _Maybe(None, frozenset().union(*(p.facts for p in unknown)))
    return _FALSE


# -- label selectors -----------------------------------------------------------------


@attrs.frozen
class _Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def test(self, labels: Mapping[str, str], complete: bool) -> bool | None:
        if self.key not in labels:
            if not complete:
                return None
            return self.operator in ("NotIn", "DoesNotExist")
        value = labels[self.key]
        if self.operator == "In":
            return value in self.values
        if self.operator == "NotIn":
            return value not in self.values
        return self.operator == "Exists"


@attrs.frozen
class _Selector:
    """A parsed label selector; no requirements selects everything."""

    requirements: tuple[_Requirement, ...]

    def test(self, labels: Mapping[str, str], complete: bool, fact: str) -> _Maybe:
        """Against ``labels``; when not ``complete``, a missing key is unknown."""
        results = [r.test(labels, complete) for r in self.requirements]
        if False in results:
            return _FALSE
        return _unknown(fact) if None in results else _TRUE


def _parse_selector(value: object, where: str) -> _Selector:
    if not isinstance(value, dict):
        raise bad_field(where, value, "a label selector (an object)")
    requirements: list[_Requirement] = []
    match_labels = _string_map(get_object(value, "matchLabels", where), f"{where}.matchLabels")
    for key, label in match_labels.items():
        requirements.append(_Requirement(key, "In", frozenset({label})))
    for i, expression in enumerate(get_list(value, "matchExpressions", where)):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(expression, dict):
            raise bad_field(at, expression, "an object")
        label_key = get_str(expression, "key", at)
        if not label_key:
            raise bad_field(f"{at}.key", expression.get("key"), "a label key")
        operator = get_str(expression, "operator", at)
        if operator not in _OPERATORS:
            raise bad_field(f"{at}.operator", operator, ", ".join(_OPERATORS))
        values = get_list(expression, "values", at)
        for j, item in enumerate(values):
            if not isinstance(item, str):
                raise bad_field(f"{at}.values[{j}]", item, "a string")
        # The API refuses these; a selector that cannot mean anything is not guessed at.
        if operator in ("In", "NotIn") and not values:
            raise bad_field(f"{at}.values", values, f"a non-empty list (operator {operator})")
        if operator in ("Exists", "DoesNotExist") and values:
            raise bad_field(f"{at}.values", values, f"empty (operator {operator})")
        requirements.append(_Requirement(label_key, operator, frozenset(values)))
    return _Selector(tuple(requirements))


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``matchLabels``, ``matchExpressions``) selects ``labels``.

    As in Kubernetes, the empty selector ``{}`` selects everything and a missing one
    (``None``) selects nothing.

    Args:
        selector: the selector as the API writes it, or ``None``.
        labels: the labels of the object tested.

    Raises:
        ValueError: the selector is malformed (the message names the field).
    """
    if selector is None:
        return False
    given: object = selector  # untyped callers pass anything; the parser says what is wrong
    parsed = _parse_selector(dict(given) if isinstance(given, Mapping) else given, "selector")
    return parsed.test(labels, True, _POD_LABELS).value is True


# -- policies ------------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class _IpBlock:
    cidr: _Network
    excepts: tuple[_Network, ...]

    def test(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return address in self.cidr and not any(address in e for e in self.excepts)


@attrs.frozen
class _From:
    """One ``from`` peer: pods by selectors (in the policy's namespace by default) or an ipBlock."""

    pods: _Selector | None
    namespaces: _Selector | None
    block: _IpBlock | None

    def test(self, peer: Peer, policy_namespace: str) -> _Maybe:
        if self.block is not None:
            if peer.ip is None:
                return _unknown(_IP)
            if not self.block.test(peer.ip):
                return _FALSE
            return _Maybe(True, frozenset({_BY_IP_BLOCK}) if peer.namespace else frozenset())
        if peer.namespace is None:
            return _FALSE  # selectors pick Pods; a client outside the cluster is none
        if self.namespaces is None:
            in_namespace = _TRUE if peer.namespace == policy_namespace else _FALSE
        elif peer.namespace_labels is None:
            known = {NAMESPACE_NAME_LABEL: peer.namespace}
            in_namespace = self.namespaces.test(known, False, _NAMESPACE_LABELS)
        else:
            labels = {NAMESPACE_NAME_LABEL: peer.namespace, **peer.namespace_labels}
            in_namespace = self.namespaces.test(labels, True, _NAMESPACE_LABELS)
        if self.pods is None:
            return in_namespace
        if peer.pod_labels is None:
            return _all([in_namespace, self.pods.test({}, False, _POD_LABELS)])
        return _all([in_namespace, self.pods.test(peer.pod_labels, True, _POD_LABELS)])


@attrs.frozen
class _Ports:
    """One ``ports`` entry: a protocol and a port, a range, a name, or every port."""

    protocol: str
    first: int | None
    last: int | None
    name: str | None

    def test(self, target: Target) -> bool:
        if self.protocol != target.protocol:
            return False
        if self.name is not None:
            return self.name == target.port_name
        if self.first is None:
            return True
        last = self.first if self.last is None else self.last
        return self.first <= target.port <= last


@attrs.frozen
class _Rule:
    """An ingress rule; no peers admits every source, no ports every port."""

    peers: tuple[_From, ...]
    ports: tuple[_Ports, ...]

    def test(self, target: Target, peer: Peer, policy_namespace: str) -> _Maybe:
        if self.ports and not any(p.test(target) for p in self.ports):
            return _FALSE
        if not self.peers:
            return _TRUE
        return _any(p.test(peer, policy_namespace) for p in self.peers)


@attrs.frozen
class _Policy:
    name: str
    namespace: str | None
    pod_selector: _Selector
    isolates_ingress: bool
    rules: tuple[_Rule, ...]


def _parse_ports(entry: object, where: str) -> _Ports:
    if not isinstance(entry, dict):
        raise bad_field(where, entry, "an object")
    protocol = get_str(entry, "protocol", where, default="TCP")
    if protocol not in PROTOCOLS:
        raise bad_field(f"{where}.protocol", protocol, " or ".join(PROTOCOLS))
    port = entry.get("port")
    end = entry.get("endPort")
    if isinstance(port, str):
        if not _PORT_NAME.fullmatch(port):
            raise bad_field(f"{where}.port", port, "a port number or a port name")
        if end is not None:
            raise bad_field(f"{where}.endPort", end, "absent with a named port")
        return _Ports(protocol, None, None, port)
    if port is None:
        if end is not None:
            raise bad_field(f"{where}.endPort", end, "absent without a port")
        return _Ports(protocol, None, None, None)
    first = _port_number(port, f"{where}.port")
    if end is None:
        return _Ports(protocol, first, None, None)
    last = _port_number(end, f"{where}.endPort")
    if last < first:
        raise bad_field(f"{where}.endPort", end, f"a port number at least port ({first})")
    return _Ports(protocol, first, last, None)


def _parse_network(value: object, where: str) -> _Network:
    if isinstance(value, str) and "/" in value:
        try:
            # strict=False: the API accepts host bits set, as Go's net.ParseCIDR does.
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
    raise bad_field(where, value, "a CIDR such as 10.0.0.0/8")


def _parse_from(entry: object, where: str) -> _From:
    if not isinstance(entry, dict):
        raise bad_field(where, entry, "an object")
    pods = entry.get("podSelector")
    namespaces = entry.get("namespaceSelector")
    block = entry.get("ipBlock")
    if block is not None:
        if pods is not None or namespaces is not None:
            raise bad_field(where, entry, "an ipBlock alone or selectors alone")
        if not isinstance(block, dict):
            raise bad_field(f"{where}.ipBlock", block, "an object")
        cidr = _parse_network(block.get("cidr"), f"{where}.ipBlock.cidr")
        excepts = tuple(
            _parse_network(e, f"{where}.ipBlock.except[{i}]")
            for i, e in enumerate(get_list(block, "except", f"{where}.ipBlock"))
        )
        return _From(None, None, _IpBlock(cidr, excepts))
    if pods is None and namespaces is None:
        raise bad_field(where, entry, "a podSelector, a namespaceSelector or an ipBlock")
    return _From(
        None if pods is None else _parse_selector(pods, f"{where}.podSelector"),
        None if namespaces is None else _parse_selector(namespaces, f"{where}.namespaceSelector"),
        None,
    )


def _parse_rule(rule: object, where: str) -> _Rule:
    if not isinstance(rule, dict):
        raise bad_field(where, rule, "an object")
    peers = get_list(rule, "from", where)
    ports = get_list(rule, "ports", where)
    return _Rule(
        tuple(_parse_from(p, f"{where}.from[{i}]") for i, p in enumerate(peers)),
        tuple(_parse_ports(p, f"{where}.ports[{i}]") for i, p in enumerate(ports)),
    )


def _parse_policy(policy: object, index: int, target_namespace: str) -> _Policy | None:
    """The policy parsed, or None when it belongs to another namespace than the target's."""
    if not isinstance(policy, Mapping):
        raise bad_field(f"policies[{index}]", policy, "a NetworkPolicy object")
    obj: Json = dict(policy)
    meta = get_object(obj, "metadata", f"policies[{index}]")
    name = get_str(meta, "name", f"policies[{index}].metadata")
    if not name:
        raise bad_field(f"policies[{index}].metadata.name", meta.get("name"), "a name")
    namespace = get_str(meta, "namespace", f"NetworkPolicy '{name}' metadata")
    if namespace not in (None, target_namespace):
        return None  # not looked into: another namespace's policy cannot fail this check
    where = (
        f"NetworkPolicy '{namespace}/{name}' spec" if namespace else f"NetworkPolicy '{name}' spec"
    )
    spec = get_object(obj, "spec", where.removesuffix(" spec"))
    if spec.get("podSelector") is None:
        raise bad_field(f"{where}.podSelector", None, "a label selector ({} selects every Pod)")
    pod_selector = _parse_selector(spec["podSelector"], f"{where}.podSelector")
    types = get_list(spec, "policyTypes", where)
    for i, kind in enumerate(types):
        if kind not in ("Ingress", "Egress"):
            raise bad_field(f"{where}.policyTypes[{i}]", kind, "Ingress or Egress")
    # Defaulted by the API server; written out here for objects that skipped it.
    isolates_ingress = "Ingress" in types if types else True
    rules = get_list(spec, "ingress", where)
    get_list(spec, "egress", where)  # only checked: egress is not this module's question
    return _Policy(
        name,
        namespace,
        pod_selector,
        isolates_ingress,
        tuple(_parse_rule(r, f"{where}.ingress[{i}]") for i, r in enumerate(rules)),
    )


# -- the verdict ---------------------------------------------------------------------


def _names(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    if len(quoted) == 1:
        return f"policy {quoted[0]}"
    return f"policies {', '.join(quoted[:-1])} and {quoted[-1]}"


def _shown_labels(labels: Mapping[str, str] | None) -> str:
    if labels is None:
        return "unknown labels"
    if not labels:
        return "no labels"
    return "labels " + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def describe_peer(peer: Peer) -> str:
    """The peer as a reason names it: ``pods from namespace 'shop' with labels app=web``.

    Args:
        peer: the caller.
    """
    if peer.namespace is None:
        return f"clients outside the cluster at {peer.ip or 'an unknown address'}"
    shown = f"pods from namespace '{peer.namespace}' with {_shown_labels(peer.pod_labels)}"
    return f"{shown} (IP {peer.ip})" if peer.ip else shown


def describe_port(target: Target) -> str:
    """The target port as a reason names it: ``TCP 8080`` or ``TCP 8080 (port 'http')``.

    Args:
        target: the Pod connected to.
    """
    shown = f"{target.protocol} {target.port}"
    return f"{shown} (port '{target.port_name}')" if target.port_name else shown


def ingress_verdict(policies: Sequence[Mapping[str, Any]], target: Target, peer: Peer) -> Verdict:
    """Whether the NetworkPolicies let ``peer`` connect to ``target`` (ingress side only).

    Args:
        policies: NetworkPolicy objects as the API lists them (items of a
            NetworkPolicyList); those of other namespaces than the target's are
            ignored, and one without ``metadata.namespace`` is taken as the target's.
        target: the Pod connected to.
        peer: who connects.

    Raises:
        ValueError: a policy of the target's namespace is malformed (the message
            names the policy and the field), or an object is no policy at all.
    """
    parsed = (_parse_policy(p, i, target.namespace) for i, p in enumerate(policies))
    mine = [p for p in parsed if p is not None]
    selecting = [
        p
        for p in mine
        if p.isolates_ingress and p.pod_selector.test(target.pod_labels, True, "").value
    ]
    names = tuple(dict.fromkeys(p.name for p in selecting))
    who, where = describe_peer(peer), describe_port(target)
    if not selecting:
        return Verdict(
            allowed=True,
            isolated=False,
            selecting=(),
            admitting=(),
            reason=(
                f"no NetworkPolicy in namespace '{target.namespace}' selects the pod for "
                f"ingress, so {who} may connect on {where}"
            ),
        )
    outcomes = [
        (p.name, _any(r.test(target, peer, target.namespace) for r in p.rules)) for p in selecting
    ]
    admitting = tuple(dict.fromkeys(name for name, o in outcomes if o.value is True))
    overall = _any(o for _, o in outcomes)
    if overall.value is True:
        caveat = (
            " (by ipBlock only; whether an ipBlock matches Pod IPs depends on the network plugin)"
            if _BY_IP_BLOCK in overall.facts
            else ""
        )
        verb = "admits" if len(admitting) == 1 else "admit"
        reason = f"{_names(admitting)} {verb} {who} on {where}{caveat}"
    elif overall.value is None:
        facts = " and ".join(f for f in (_POD_LABELS, _NAMESPACE_LABELS, _IP) if f in overall.facts)
        reason = (
            f"isolated by {_names(names)}; whether a rule admits {who} on {where} "
            f"depends on the peer's {facts} (unknown)"
        )
    else:
        reason = f"isolated by {_names(names)} and no rule admits {who} on {where}"
    return Verdict(
        allowed=overall.value,
        isolated=True,
        selecting=names,
        admitting=admitting,
        reason=reason,
    )
