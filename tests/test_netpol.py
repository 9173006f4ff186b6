"""NetworkPolicy ingress evaluation (issue 12): the rules evaluated, not only listed.

Each case is a set of policies, a target Pod port and a peer, and the verdict
Kubernetes' semantics give: isolation by selecting policies with Ingress in their
(defaulted) policyTypes, rules admitting by ``from`` peers and ``ports``, additive
policies. Unknown facts about the peer give ``None`` only where a rule depends on them.
"""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdisco._k8s.netpol import (
    FrozenLabels,
    Peer,
    Target,
    Verdict,
    ingress_verdict,
    selector_matches,
)

Json = dict[str, Any]


def policy(
    name: str,
    *,
    namespace: str | None = "shop",
    select: Json | None = None,
    ingress: list[Json] | None = None,
    egress: list[Json] | None = None,
    types: list[str] | None = None,
) -> Json:
    spec: Json = {"podSelector": {} if select is None else select}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    meta: Json = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": spec}


def ns_name(name: str) -> Json:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


DENY_ALL = policy("deny-all", types=["Ingress"])
API = Target(namespace="shop", pod_labels={"app": "api"}, port=8080, port_name="http")
WEB = Peer(namespace="shop", pod_labels={"app": "web"}, namespace_labels={}, ip="10.1.0.5")
OTHER_NS_WEB = Peer(namespace="billing", pod_labels={"app": "web"}, namespace_labels={"team": "b"})
OUTSIDE = Peer(namespace=None, ip="203.0.113.7")
FROM_WEB = {"podSelector": {"matchLabels": {"app": "web"}}}
# The classic pitfall: one peer with both selectors is an AND, two peers an OR.
AND = policy("and", ingress=[{"from": [{"namespaceSelector": ns_name("billing"), **FROM_WEB}]}])
OR = policy("or", ingress=[{"from": [{"namespaceSelector": ns_name("billing")}, FROM_WEB]}])

# (id, policies, target, peer, allowed, isolated, selecting, admitting)
CASES: list[
    tuple[str, list[Json], Target, Peer, bool | None, bool, tuple[str, ...], tuple[str, ...]]
] = [
    ("no policy", [], API, WEB, True, False, (), ()),
    ("deny-all", [DENY_ALL], API, WEB, False, True, ("deny-all",), ()),
    (
        "deny-all, policyTypes omitted",
        [policy("deny-all")],
        API,
        WEB,
        False,
        True,
        ("deny-all",),
        (),
    ),
    (
        "deny-all selects other pods only",
        [policy("deny-db", select={"matchLabels": {"app": "db"}}, types=["Ingress"])],
        API,
        WEB,
        True,
        False,
        (),
        (),
    ),
    (
        "same-namespace podSelector admits",
        [DENY_ALL, policy("allow-web", ingress=[{"from": [FROM_WEB]}])],
        API,
        WEB,
        True,
        True,
        ("deny-all", "allow-web"),
        ("allow-web",),
    ),
    (
        "podSelector alone is the policy's namespace only",
        [policy("allow-web", ingress=[{"from": [FROM_WEB]}])],
        API,
        OTHER_NS_WEB,
        False,
        True,
        ("allow-web",),
        (),
    ),
    (
        "podSelector alone: other labels refused",
        [policy("allow-web", ingress=[{"from": [FROM_WEB]}])],
        API,
        attrs.evolve(WEB, pod_labels={"app": "batch"}),
        False,
        True,
        ("allow-web",),
        (),
    ),
    (
        "namespaceSelector by metadata.name admits every pod there",
        [policy("from-billing", ingress=[{"from": [{"namespaceSelector": ns_name("billing")}]}])],
        API,
        attrs.evolve(OTHER_NS_WEB, namespace_labels=None, pod_labels=None),
        True,
        True,
        ("from-billing",),
        ("from-billing",),
    ),
    (
        "namespaceSelector by metadata.name refuses another namespace",
        [policy("from-billing", ingress=[{"from": [{"namespaceSelector": ns_name("billing")}]}])],
        API,
        WEB,
        False,
        True,
        ("from-billing",),
        (),
    ),
    (
        "namespaceSelector {} admits pods of every namespace, not outside",
        [policy("from-cluster", ingress=[{"from": [{"namespaceSelector": {}}]}])],
        API,
        OUTSIDE,
        False,
        True,
        ("from-cluster",),
        (),
    ),
    (
        "both in one peer (AND): web pods of billing, but this web pod is in shop",
        [AND],
        API,
        WEB,
        False,
        True,
        ("and",),
        (),
    ),
    (
        "both in one peer (AND): a billing pod that is no web pod",
        [AND],
        API,
        attrs.evolve(OTHER_NS_WEB, pod_labels={"app": "cron"}),
        False,
        True,
        ("and",),
        (),
    ),
    (
        "both in one peer (AND): a web pod of billing",
        [AND],
        API,
        OTHER_NS_WEB,
        True,
        True,
        ("and",),
        ("and",),
    ),
    (
        "two peers (OR): any pod of billing",
        [OR],
        API,
        attrs.evolve(OTHER_NS_WEB, pod_labels={"app": "cron"}),
        True,
        True,
        ("or",),
        ("or",),
    ),
    (
        "two peers (OR): a web pod of the policy's namespace",
        [OR],
        API,
        WEB,
        True,
        True,
        ("or",),
        ("or",),
    ),
    (
        "ipBlock admits an outside client",
        [
            policy(
                "edge",
                ingress=[
                    {
                        "from": [
                            {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}
                        ]
                    }
                ],
            )
        ],
        API,
        OUTSIDE,
        True,
        True,
        ("edge",),
        ("edge",),
    ),
    (
        "ipBlock except refuses",
        [
            policy(
                "edge",
                ingress=[
                    {
                        "from": [
                            {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.0/29"]}}
                        ]
                    }
                ],
            )
        ],
        API,
        OUTSIDE,
        False,
        True,
        ("edge",),
        (),
    ),
    (
        "ipBlock of another family refuses",
        [policy("edge", ingress=[{"from": [{"ipBlock": {"cidr": "2001:db8::/32"}}]}])],
        API,
        OUTSIDE,
        False,
        True,
        ("edge",),
        (),
    ),
    (
        "outside client: selectors never admit it",
        [policy("web", ingress=[{"from": [FROM_WEB, {"namespaceSelector": {}}]}])],
        API,
        OUTSIDE,
        False,
        True,
        ("web",),
        (),
    ),
    (
        "rule without from admits every source, outside too",
        [policy("open-8080", ingress=[{"ports": [{"port": 8080}]}])],
        API,
        OUTSIDE,
        True,
        True,
        ("open-8080",),
        ("open-8080",),
    ),
    (
        "empty rule admits everything",
        [policy("open", ingress=[{}])],
        API,
        Peer(namespace=None),
        True,
        True,
        ("open",),
        ("open",),
    ),
    (
        "named port matches the container port's name",
        [policy("named", ingress=[{"ports": [{"port": "http"}]}])],
        API,
        WEB,
        True,
        True,
        ("named",),
        ("named",),
    ),
    (
        "named port of another name refuses",
        [policy("named", ingress=[{"ports": [{"port": "metrics"}]}])],
        API,
        WEB,
        False,
        True,
        ("named",),
        (),
    ),
    (
        "named port against an unnamed container port refuses",
        [policy("named", ingress=[{"ports": [{"port": "http"}]}])],
        attrs.evolve(API, port_name=None),
        WEB,
        False,
        True,
        ("named",),
        (),
    ),
    (
        "named port with digits and hyphens",
        [policy("named", ingress=[{"ports": [{"port": "grpc-2"}]}])],
        attrs.evolve(API, port_name="grpc-2"),
        WEB,
        True,
        True,
        ("named",),
        ("named",),
    ),
    (
        "number against a named container port: the number counts",
        [policy("number", ingress=[{"ports": [{"port": 8080}]}])],
        API,
        WEB,
        True,
        True,
        ("number",),
        ("number",),
    ),
    (
        "endPort range includes the port",
        [policy("range", ingress=[{"ports": [{"port": 8000, "endPort": 8080}]}])],
        API,
        WEB,
        True,
        True,
        ("range",),
        ("range",),
    ),
    (
        "endPort range stops short of the port",
        [policy("range", ingress=[{"ports": [{"port": 8000, "endPort": 8079}]}])],
        API,
        WEB,
        False,
        True,
        ("range",),
        (),
    ),
    (
        "port without endPort is that port only",
        [policy("one", ingress=[{"ports": [{"port": 8081}]}])],
        API,
        WEB,
        False,
        True,
        ("one",),
        (),
    ),
    (
        "protocol mismatch: UDP rule, TCP target",
        [policy("udp", ingress=[{"ports": [{"protocol": "UDP", "port": 8080}]}])],
        API,
        WEB,
        False,
        True,
        ("udp",),
        (),
    ),
    (
        "protocol only: every UDP port",
        [policy("udp", ingress=[{"ports": [{"protocol": "UDP"}]}])],
        attrs.evolve(API, protocol="UDP"),
        WEB,
        True,
        True,
        ("udp",),
        ("udp",),
    ),
    (
        "protocol defaults to TCP",
        [policy("tcp", ingress=[{"ports": [{"port": 53}]}])],
        attrs.evolve(API, protocol="UDP", port=53, port_name=None),
        WEB,
        False,
        True,
        ("tcp",),
        (),
    ),
    (
        "egress-only policy does not isolate ingress",
        [policy("egress-only", types=["Egress"])],
        API,
        WEB,
        True,
        False,
        (),
        (),
    ),
    (
        "policyTypes omitted with only egress rules: still isolates ingress",
        [policy("egress-rules", egress=[{"to": [{"podSelector": {}}]}])],
        API,
        WEB,
        False,
        True,
        ("egress-rules",),
        (),
    ),
    (
        "ingress rules of a policy typed Egress only are not applied",
        [DENY_ALL, policy("typed-egress", ingress=[{}], types=["Egress"])],
        API,
        WEB,
        False,
        True,
        ("deny-all",),
        (),
    ),
    (
        "policies of another namespace ignored",
        [policy("deny-all", namespace="billing", types=["Ingress"])],
        API,
        WEB,
        True,
        False,
        (),
        (),
    ),
    (
        "another namespace's allow does not admit",
        [DENY_ALL, policy("allow-all", namespace="billing", ingress=[{}])],
        API,
        WEB,
        False,
        True,
        ("deny-all",),
        (),
    ),
    (
        "additive: one admitting policy is enough",
        [
            DENY_ALL,
            policy("web-only", ingress=[{"from": [FROM_WEB]}]),
            policy("udp-only", ingress=[{"ports": [{"protocol": "UDP"}]}]),
        ],
        API,
        WEB,
        True,
        True,
        ("deny-all", "web-only", "udp-only"),
        ("web-only",),
    ),
    (
        "unknown pod labels: a podSelector rule depends on them",
        [policy("allow-web", ingress=[{"from": [FROM_WEB]}])],
        API,
        attrs.evolve(WEB, pod_labels=None),
        None,
        True,
        ("allow-web",),
        (),
    ),
    (
        "unknown pod labels: no matter for another namespace's pod",
        [policy("allow-web", ingress=[{"from": [FROM_WEB]}])],
        API,
        attrs.evolve(OTHER_NS_WEB, pod_labels=None),
        False,
        True,
        ("allow-web",),
        (),
    ),
    (
        "unknown pod labels: no matter for podSelector {}",
        [policy("same-ns", ingress=[{"from": [{"podSelector": {}}]}])],
        API,
        attrs.evolve(WEB, pod_labels=None),
        True,
        True,
        ("same-ns",),
        ("same-ns",),
    ),
    (
        "unknown pod labels: no matter when another rule admits",
        [
            policy("allow-web", ingress=[{"from": [FROM_WEB]}]),
            policy("allow-ns", ingress=[{"from": [{"namespaceSelector": ns_name("shop")}]}]),
        ],
        API,
        attrs.evolve(WEB, pod_labels=None),
        True,
        True,
        ("allow-web", "allow-ns"),
        ("allow-ns",),
    ),
    (
        "unknown pod labels: no matter when the port is not covered",
        [policy("allow-web", ingress=[{"from": [FROM_WEB], "ports": [{"port": 9090}]}])],
        API,
        attrs.evolve(WEB, pod_labels=None),
        False,
        True,
        ("allow-web",),
        (),
    ),
    (
        "unknown namespace labels: a team selector depends on them",
        [
            policy(
                "team", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]
            )
        ],
        API,
        attrs.evolve(OTHER_NS_WEB, namespace_labels=None),
        None,
        True,
        ("team",),
        (),
    ),
    (
        "known namespace labels: a team selector decides",
        [
            policy(
                "team", ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]
            )
        ],
        API,
        OTHER_NS_WEB,
        True,
        True,
        ("team",),
        ("team",),
    ),
    (
        "namespace labels given without metadata.name: the name label is implied",
        [policy("by-name", ingress=[{"from": [{"namespaceSelector": ns_name("billing")}]}])],
        API,
        OTHER_NS_WEB,
        True,
        True,
        ("by-name",),
        ("by-name",),
    ),
    (
        "unknown IP: an ipBlock rule depends on it",
        [policy("edge", ingress=[{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}])],
        API,
        Peer(namespace=None),
        None,
        True,
        ("edge",),
        (),
    ),
    (
        "matchExpressions: NotIn admits a pod without the key",
        [
            policy(
                "not-batch",
                ingress=[
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "tier", "operator": "NotIn", "values": ["batch"]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            )
        ],
        API,
        WEB,
        True,
        True,
        ("not-batch",),
        ("not-batch",),
    ),
    (
        "policy without metadata.namespace counts as the target's",
        [policy("deny-all", namespace=None, types=["Ingress"])],
        API,
        WEB,
        False,
        True,
        ("deny-all",),
        (),
    ),
]


@pytest.mark.parametrize(
    ("policies", "target", "peer", "allowed", "isolated", "selecting", "admitting"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_verdicts(
    policies: list[Json],
    target: Target,
    peer: Peer,
    allowed: bool | None,
    isolated: bool,
    selecting: tuple[str, ...],
    admitting: tuple[str, ...],
) -> None:
    verdict = ingress_verdict(policies, target, peer)
    assert (verdict.allowed, verdict.isolated) == (allowed, isolated)
    assert (verdict.selecting, verdict.admitting) == (selecting, admitting)
    assert verdict.reason
    assert "\n" not in verdict.reason


def test_reason_denied_names_the_policy_peer_and_port() -> None:
    verdict = ingress_verdict([DENY_ALL], API, attrs.evolve(WEB, ip=None))
    assert verdict.reason == (
        "isolated by policy 'deny-all' and no rule admits pods from namespace 'shop' "
        "with labels app=web on TCP 8080 (port 'http')"
    )


def test_reason_allowed_names_the_admitting_policy() -> None:
    allow = policy("allow-web", ingress=[{"from": [FROM_WEB]}])
    verdict = ingress_verdict([DENY_ALL, allow], API, WEB)
    assert verdict.reason.startswith("policy 'allow-web' admits pods from namespace 'shop'")
    assert "(IP 10.1.0.5)" in verdict.reason


def test_reason_not_isolated() -> None:
    verdict = ingress_verdict([], API, OUTSIDE)
    assert "no NetworkPolicy in namespace 'shop' selects the pod" in verdict.reason
    assert "203.0.113.7" in verdict.reason


def test_reason_says_what_was_unknown() -> None:
    rules = [{"from": [FROM_WEB, {"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]
    peer = Peer(namespace="shop")
    verdict = ingress_verdict([policy("mixed", ingress=rules)], API, peer)
    assert verdict.allowed is None
    assert verdict.reason.endswith(
        "depends on the peer's pod labels and namespace labels (unknown)"
    )
    assert "with unknown labels" in verdict.reason


def test_reason_unknown_names_only_the_fact_that_matters() -> None:
    # The AND peer fails on the namespace (billing, known by name), so the unknown pod
    # labels do not matter there; only the ipBlock's unknown IP does.
    rules = [
        {
            "from": [
                {"namespaceSelector": ns_name("billing"), **FROM_WEB},
                {"ipBlock": {"cidr": "10.0.0.0/8"}},
            ]
        }
    ]
    verdict = ingress_verdict([policy("p", ingress=rules)], API, Peer(namespace="shop"))
    assert verdict.allowed is None
    assert verdict.reason.endswith("depends on the peer's IP address (unknown)")


def test_ip_block_alone_admitting_a_pod_carries_a_caveat() -> None:
    edge = policy("edge", ingress=[{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}])
    verdict = ingress_verdict([edge], API, WEB)
    assert verdict.allowed is True
    assert "depends on the network plugin" in verdict.reason
    both = policy("web", ingress=[{"from": [FROM_WEB]}])
    assert "network plugin" not in ingress_verdict([edge, both], API, WEB).reason
    assert "network plugin" not in ingress_verdict([edge], API, OUTSIDE).reason


def test_duplicate_policy_names_listed_once() -> None:
    verdict = ingress_verdict([DENY_ALL, DENY_ALL], API, WEB)
    assert verdict.selecting == ("deny-all",)


# -- malformed policies --------------------------------------------------------------

BAD_FIELDS = [
    (
        {"matchExpressions": [{"key": "app", "operator": "Is", "values": ["web"]}]},
        "spec.podSelector.matchExpressions[0].operator",
    ),
    ({"matchExpressions": [{"key": "app", "operator": "In"}]}, "matchExpressions[0].values"),
    (
        {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
        "matchExpressions[0].values",
    ),
    ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key"),
    ({"matchExpressions": "app=web"}, "spec.podSelector.matchExpressions"),
    ({"matchLabels": {"app": 1}}, "spec.podSelector.matchLabels['app']"),
    ({"matchLabels": ["app=web"]}, "spec.podSelector.matchLabels"),
    ("app=web", "spec.podSelector"),
]


@pytest.mark.parametrize(("selector", "field"), BAD_FIELDS)
def test_malformed_selector_names_policy_and_field(selector: object, field: str) -> None:
    bad = policy("broken")
    bad["spec"]["podSelector"] = selector
    with pytest.raises(ValueError, match="NetworkPolicy 'shop/broken'") as caught:
        ingress_verdict([bad], API, WEB)
    assert field in str(caught.value)


BAD_RULES: list[tuple[Json, str]] = [
    ({"from": [{}]}, "spec.ingress[0].from[0]"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, **FROM_WEB}]}, "spec.ingress[0].from[0]"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}, "ipBlock.cidr"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.1"}}]}, "ipBlock.cidr"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["x"]}}]}, "ipBlock.except[0]"),
    ({"from": [{"namespaceSelector": {"matchLabels": {"a": None}}}]}, "namespaceSelector"),
    ({"from": FROM_WEB}, "spec.ingress[0].from"),
    ({"ports": [{"port": 0}]}, "spec.ingress[0].ports[0].port"),
    ({"ports": [{"port": True}]}, "spec.ingress[0].ports[0].port"),
    ({"ports": [{"port": 8080, "endPort": 80}]}, "ports[0].endPort"),
    ({"ports": [{"port": "http", "endPort": 90}]}, "ports[0].endPort"),
    ({"ports": [{"endPort": 90}]}, "ports[0].endPort"),
    ({"ports": [{"protocol": "ICMP"}]}, "ports[0].protocol"),
    ({"ports": [{"port": ""}]}, "ports[0].port"),
    ({"ports": [{"port": "8080"}]}, "ports[0].port"),
    ({"ports": [{"port": "Http"}]}, "ports[0].port"),
    ({"ports": [{"port": "a-very-long-port-name"}]}, "ports[0].port"),
    ({"ports": "8080"}, "spec.ingress[0].ports"),
]


@pytest.mark.parametrize(("rule", "field"), BAD_RULES)
def test_malformed_rule_names_policy_and_field(rule: Json, field: str) -> None:
    with pytest.raises(ValueError, match="NetworkPolicy 'shop/broken'") as caught:
        ingress_verdict([policy("broken", ingress=[rule])], API, WEB)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"podSelector": {}, "policyTypes": ["ingress"]}, "spec.policyTypes[0]"),
        ({"podSelector": {}, "ingress": {}}, "spec.ingress"),
        ({"podSelector": {}, "ingress": ["all"]}, "spec.ingress[0]"),
        ({}, "spec.podSelector"),
    ],
)
def test_malformed_spec_names_policy_and_field(spec: Json, field: str) -> None:
    bad = {"metadata": {"name": "broken", "namespace": "shop"}, "spec": spec}
    with pytest.raises(ValueError, match="NetworkPolicy 'shop/broken'") as caught:
        ingress_verdict([bad], API, WEB)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    "item",
    [
        "deny-all",
        {"spec": {"podSelector": {}}},
        {"metadata": {"name": 3}, "spec": {}},
    ],
)
def test_not_a_policy_raises(item: Any) -> None:
    with pytest.raises(ValueError, match=r"policies\[0\]"):
        ingress_verdict([item], API, WEB)


def test_malformed_policy_of_another_namespace_is_not_looked_into() -> None:
    other = {"metadata": {"name": "broken", "namespace": "billing"}, "spec": {"podSelector": 5}}
    assert ingress_verdict([other], API, WEB).allowed is True


# -- values ----------------------------------------------------------------------------


def test_values_are_frozen_hashable_and_pickle() -> None:
    labels = {"app": "web"}
    peer = Peer(namespace="shop", pod_labels=labels, namespace_labels={"team": "a"})
    labels["app"] = "changed"  # the caller's dict is copied, not held
    assert peer.pod_labels == {"app": "web"}
    assert isinstance(peer.pod_labels, FrozenLabels)
    assert hash(peer) == hash(
        Peer(namespace="shop", pod_labels={"app": "web"}, namespace_labels={"team": "a"})
    )
    assert pickle.loads(pickle.dumps(peer)) == peer
    assert hash(API) == hash(attrs.evolve(API))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        peer.namespace = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        peer.pod_labels["app"] = "x"  # type: ignore[index]
    verdict = ingress_verdict([DENY_ALL], API, peer)
    assert isinstance(verdict, Verdict)
    assert hash(verdict) == hash(ingress_verdict([DENY_ALL], API, peer))


NOT_LABELS: Any = {"app": 1}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Peer(namespace="shop", ip="10.0.0.300"), "ip"),
        (lambda: Peer(namespace="shop", pod_labels=NOT_LABELS), "labels"),
        (lambda: Target(namespace="shop", pod_labels={}, port=0), "port"),
        (lambda: Target(namespace="", pod_labels={}, port=80), "namespace"),
        (lambda: Peer(namespace=""), "namespace"),
        (lambda: Target(namespace="shop", pod_labels={}, port=80, protocol="tcp"), "protocol"),
    ],
)
def test_bad_values_refused(make: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


# -- selector_matches ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({}, {"a": "1"}, True),
        (None, {"a": "1"}, False),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchLabels": {"a": "1"}}, {}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
        (
            {
                "matchLabels": {"a": "1"},
                "matchExpressions": [{"key": "b", "operator": "Exists"}],
            },
            {"a": "1"},
            False,
        ),
    ],
)
def test_selector_matches(selector: Json | None, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_selector_matches_refuses_malformed() -> None:
    with pytest.raises(ValueError, match=r"selector\.matchExpressions\[0\]\.operator"):
        selector_matches(
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, {}
        )


# -- properties: unknown facts are reasoned about soundly ------------------------------

KEYS = st.sampled_from(["app", "tier", "team"])
VALUES = st.sampled_from(["web", "api", "b"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)
EXPRESSIONS = st.builds(
    lambda key, op, values: (
        {"key": key, "operator": op} | ({"values": values} if op in ("In", "NotIn") else {})
    ),
    KEYS,
    st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
    st.lists(VALUES, min_size=1, max_size=2),
)
SELECTORS = st.builds(
    lambda labels, expressions: {"matchLabels": labels, "matchExpressions": expressions},
    st.dictionaries(KEYS, VALUES, max_size=2),
    st.lists(EXPRESSIONS, max_size=2),
)
FROM_PEERS = st.one_of(
    st.builds(lambda s: {"podSelector": s}, SELECTORS),
    st.builds(lambda s: {"namespaceSelector": s}, SELECTORS),
    st.builds(lambda p, n: {"podSelector": p, "namespaceSelector": n}, SELECTORS, SELECTORS),
    st.builds(lambda c: {"ipBlock": {"cidr": c}}, st.sampled_from(["10.0.0.0/8", "192.0.2.0/24"])),
)
RULES = st.builds(
    lambda peers, ports: (
        ({"from": peers} if peers is not None else {})
        | ({"ports": ports} if ports is not None else {})
    ),
    st.none() | st.lists(FROM_PEERS, max_size=3),
    st.none()
    | st.lists(st.builds(lambda p: {"port": p}, st.sampled_from([80, 8080, "http"])), max_size=2),
)
POLICIES = st.lists(
    st.builds(
        lambda i, select, rules, ns: policy(f"p{i}", namespace=ns, select=select, ingress=rules),
        st.integers(0, 3),
        SELECTORS,
        st.lists(RULES, max_size=2),
        st.sampled_from(["shop", "billing"]),
    ),
    max_size=4,
)
PEERS = st.builds(
    lambda ns, ns_labels, pod_labels, ip: Peer(
        namespace=ns, namespace_labels=ns_labels, pod_labels=pod_labels, ip=ip
    ),
    st.sampled_from(["shop", "billing"]) | st.none(),
    LABELS,
    LABELS,
    st.sampled_from(["10.1.2.3", "192.0.2.9", "198.51.100.1"]),
)
TARGETS = st.builds(
    lambda labels, port: Target(
        namespace="shop", pod_labels=labels, port=port[0], port_name=port[1]
    ),
    LABELS,
    st.sampled_from([(80, None), (8080, "http"), (9090, "metrics")]),
)


@given(POLICIES, TARGETS, PEERS, st.sets(st.sampled_from(["pod_labels", "namespace_labels", "ip"])))
def test_unknown_facts_never_contradict_the_known_answer(
    policies: list[Json], target: Target, peer: Peer, hidden: set[str]
) -> None:
    known = ingress_verdict(policies, target, peer)
    assert known.allowed is not None  # everything about the peer is known
    partial = ingress_verdict(policies, target, attrs.evolve(peer, **dict.fromkeys(hidden)))
    assert partial.isolated == known.isolated
    assert partial.selecting == known.selecting
    if partial.allowed is not None:
        assert partial.allowed == known.allowed
        assert set(partial.admitting) <= set(known.admitting)
    if not hidden:
        assert partial == known


@given(POLICIES, TARGETS, PEERS, POLICIES)
def test_adding_policies_to_an_isolated_pod_never_takes_access_away(
    policies: list[Json], target: Target, peer: Peer, more: list[Json]
) -> None:
    before = ingress_verdict(policies, target, peer)
    after = ingress_verdict(policies + more, target, peer)
    if before.isolated and before.allowed:
        assert after.allowed is True
    if not after.isolated:
        assert after.allowed is True
