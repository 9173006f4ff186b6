"""The name parser: what ``discover()`` accepts, and what it refuses before any I/O.

Rules (issue 2): ``svc``, ``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.<domain>`` (trailing
dot allowed on the full form only), each optionally ``:port``; case folded; everything
else raises ``kdisco.InvalidServiceName`` (a ``ValueError``) naming the bad part.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import kdisco
from kdisco import Deadline, Discoverer, InvalidServiceName, Miss, Outcome, Resolution
from kdisco._names import Query, check_cluster_domain, check_namespace, check_port, parse_query
from kdisco.testing import FakeResolver


def parse(name: object, *, namespace: str | None = None, port: object = None) -> Query:
    return parse_query(
        name,
        namespace=namespace,
        default_namespace="home",
        cluster_domain="cluster.local",
        port=port,
    )


class RecordingStrategy:
    """Answers nothing, but remembers every query it was asked."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[Query] = []

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        self.calls.append(query)
        return Miss(Outcome.NOT_FOUND, "recorder never knows anything")


def hermetic(*strategies: object) -> Discoverer:
    # environ={} and no resolv.conf: nothing from this machine leaks into the test.
    return Discoverer(
        strategies=list(strategies),  # type: ignore[arg-type]
        namespace="home",
        environ={},
        resolv_conf="/nonexistent",
    )


# -- the accepted forms -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "svc", "ns", "domain", "port"),
    [
        ("payments", "payments", "home", "cluster.local", None),
        ("payments.billing", "payments", "billing", "cluster.local", None),
        ("payments.billing.svc", "payments", "billing", "cluster.local", None),
        ("payments.billing.svc.cluster.local", "payments", "billing", "cluster.local", None),
        ("payments.billing.svc.cluster.local.", "payments", "billing", "cluster.local", None),
        ("payments.billing.svc.corp.example.", "payments", "billing", "corp.example", None),
        ("payments.billing.svc.k8s", "payments", "billing", "k8s", None),
        ("payments:8080", "payments", "home", "cluster.local", 8080),
        ("payments:http", "payments", "home", "cluster.local", "http"),
        ("payments.billing:http", "payments", "billing", "cluster.local", "http"),
        ("payments.billing.svc:grpc-web", "payments", "billing", "cluster.local", "grpc-web"),
        ("payments.billing.svc.cluster.local.:443", "payments", "billing", "cluster.local", 443),
        ("a:1", "a", "home", "cluster.local", 1),
        ("a:65535", "a", "home", "cluster.local", 65535),
        ("a:08080", "a", "home", "cluster.local", 8080),
        ("my-svc.0ns", "my-svc", "0ns", "cluster.local", None),
    ],
)
def test_accepted_forms(name: str, svc: str, ns: str, domain: str, port: int | str | None) -> None:
    q = parse(name)
    assert (q.service.name, q.service.namespace, q.service.cluster_domain) == (svc, ns, domain)
    assert q.port == port
    assert q.service.fqdn == f"{svc}.{ns}.svc.{domain}."


def test_case_is_folded_in_every_part() -> None:
    q = parse("PayMents.BILLING.Svc.Cluster.LOCAL.:HTTP")
    assert q.service.name == "payments"
    assert q.service.namespace == "billing"
    assert q.service.cluster_domain == "cluster.local"
    assert q.port == "http"
    assert parse("db", namespace="Billing", port="GRPC").service.namespace == "billing"
    assert parse("db", port="GRPC").port == "grpc"


def test_port_keyword_by_number_and_name() -> None:
    assert parse("db", port=5432).port == 5432
    assert parse("db", port="5432").port == 5432  # a numeric string is a number
    assert parse("db", port="postgres").port == "postgres"


def test_port_in_name_and_keyword_may_agree() -> None:
    assert parse("db:5432", port=5432).port == 5432
    assert parse("db:5432", port="5432").port == 5432
    assert parse("db:http", port="HTTP").port == "http"


def test_port_in_name_and_keyword_conflict() -> None:
    with pytest.raises(InvalidServiceName, match=r"two ports given.*'http'.*8080"):
        parse("db:http", port=8080)


def test_namespace_keyword_fills_and_agrees() -> None:
    assert parse("db", namespace="billing").service.namespace == "billing"
    assert parse("db.billing", namespace="billing").service.namespace == "billing"
    assert parse("db.billing.svc.cluster.local", namespace="BILLING").service.namespace == (
        "billing"
    )


def test_namespace_keyword_conflict_names_both() -> None:
    with pytest.raises(InvalidServiceName, match=r"'billing'.*namespace='shop'"):
        parse("db.billing", namespace="shop")


def test_default_namespace_and_domain_come_from_the_caller() -> None:
    q = parse_query("db", namespace=None, default_namespace="team-a", cluster_domain="corp.example")
    assert q.service.namespace == "team-a"
    assert q.service.fqdn == "db.team-a.svc.corp.example."


def test_include_not_ready_is_carried_and_checked() -> None:
    q = parse_query(
        "db", namespace=None, default_namespace="x", cluster_domain="c", include_not_ready=True
    )
    assert q.include_not_ready is True
    with pytest.raises(InvalidServiceName, match="include_not_ready"):
        parse_query(
            "db",
            namespace=None,
            default_namespace="x",
            cluster_domain="c",
            include_not_ready="yes",  # type: ignore[arg-type]
        )


def test_longest_labels_are_accepted() -> None:
    svc, ns = "s" * 63, "n" * 63
    q = parse(f"{svc}.{ns}")
    assert (q.service.name, q.service.namespace) == (svc, ns)


# -- every invalid class -----------------------------------------------------------------

LONG = "a" * 64


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("", {}, "empty service name"),
        (".", {}, "empty label"),
        ("db..billing", {}, "empty label"),
        (".db", {}, "empty label"),
        ("db_main", {}, "service name 'db_main'"),
        ("db main", {}, "service name 'db main'"),
        ("db/x", {}, "service name 'db/x'"),
        ("-db", {}, "service name '-db'"),
        ("db-", {}, "service name 'db-'"),
        ("9db", {}, "service name '9db'"),  # Service names are RFC 1035: start with a letter
        ("db.bill_ing", {}, "namespace 'bill_ing'"),
        ("db.-ns", {}, "namespace '-ns'"),
        (f"{LONG}", {}, "service name 'aaaaaaaaaaaaaaaaaaaa'... is 64 characters, over 63"),
        (f"db.{LONG}", {}, "namespace 'aaaaaaaaaaaaaaaaaaaa'... is 64 characters"),
        (f"db.ns.svc.{LONG}.local", {}, "cluster-domain label .* is 64 characters"),
        ("db.ns.cluster.local", {}, "third label must be 'svc'.*not 'cluster'"),
        ("db.ns.pod", {}, "third label must be 'svc'.*not 'pod'"),
        ("db.ns.svc.bad_domain", {}, "cluster-domain label 'bad_domain'"),
        ("dé", {}, "only ASCII"),
        ("db.billing\u00e9", {}, "only ASCII"),
        ("db.billing:\uff48ttp", {}, "only ASCII"),  # FULLWIDTH LATIN SMALL LETTER H
        ("db:0", {}, "port 0 is outside 1-65535"),
        ("db:65536", {}, "port 65536 is outside 1-65535"),
        ("db:80:81", {}, "two ports given"),
        ("db:", {}, "empty port"),
        ("db:http_x", {}, "port name 'http_x'"),
        ("db:-http", {}, "port name '-http'"),
        ("db.", {}, "trailing dot"),
        ("db.ns.", {}, "trailing dot"),
        ("db.ns.svc.", {}, "trailing dot"),
        ("db", {"port": 0}, "port 0 is outside"),
        ("db", {"port": 65536}, "port 65536 is outside"),
        ("db", {"port": -1}, "port -1 is outside"),
        ("db", {"port": "0"}, "port 0 is outside"),
        ("db", {"port": ""}, "empty port"),
        ("db", {"port": True}, "port must be an int or a str, not bool"),
        ("db", {"port": 80.0}, "port must be an int or a str, not float"),
        ("db", {"namespace": ""}, "empty namespace"),
        ("db", {"namespace": "Bad_NS"}, "namespace 'bad_ns'"),
        ("db", {"namespace": "ns\u00e9"}, "only ASCII"),
        # The domain alone fits (252 characters); with svc.ns.svc. in front, the name does not.
        ("db.ns.svc." + ".".join(["abcdefghij"] * 23), {}, "name is over 253 characters"),
        ("db.ns.svc." + ".".join(["abcdefghij"] * 24), {}, "cluster domain is over 253"),
    ],
)
def test_invalid_names_are_refused_with_the_bad_part_named(
    name: str, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidServiceName, match=message) as info:
        parse(name, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, kdisco.DiscoveryError)


@pytest.mark.parametrize("name", [None, 42, b"db", ["db"]])
def test_non_str_name_is_refused(name: object) -> None:
    with pytest.raises(InvalidServiceName, match=f"must be a str, not {type(name).__name__}"):
        parse(name)


def test_non_str_namespace_keyword_is_refused() -> None:
    with pytest.raises(InvalidServiceName, match="namespace must be a str, not int"):
        parse("db", namespace=5)  # type: ignore[arg-type]


def test_invalid_service_name_is_catchable_as_value_error() -> None:
    # Callers that already handle ValueError for bad input need no kdisco-specific clause.
    with pytest.raises(ValueError, match="third label"):
        parse("db.ns.cluster")


# Unicode characters whose lower() is ASCII (KELVIN SIGN -> "k") must not slip past the
# ASCII check by being folded first.
@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "db", "namespace": "\u212aube"},
        {"name": "db", "port": "\u212a8s"},
        {"name": "\u212aube"},
        {"name": "db:\u212a8s"},
    ],
)
def test_non_ascii_that_folds_to_ascii_is_refused(kwargs: dict[str, object]) -> None:
    name = kwargs.pop("name")
    with pytest.raises(InvalidServiceName, match="only ASCII"):
        parse(name, **kwargs)  # type: ignore[arg-type]


def test_non_ascii_cluster_domain_that_folds_to_ascii_is_refused() -> None:
    with pytest.raises(InvalidServiceName, match="only ASCII"):
        check_cluster_domain("cluster.\u212a8s")
    with pytest.raises(InvalidServiceName, match="only ASCII"):
        check_namespace("\u212aube")


# Python refuses int() on strings over 4300 digits with a plain ValueError; the parser
# must still answer with InvalidServiceName naming the port.
@pytest.mark.parametrize("digits", ["1" * 5000, "9" * 20])
def test_huge_port_numbers_are_invalid_service_names(digits: str) -> None:
    with pytest.raises(InvalidServiceName, match="outside 1-65535"):
        parse(f"db:{digits}")
    with pytest.raises(InvalidServiceName, match="outside 1-65535"):
        check_port(digits, "db")


# -- refused before any strategy is asked ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("", {}),
        ("db.ns.cluster", {}),
        ("db:0", {}),
        ("db", {"port": 70000}),
        ("db.a", {"namespace": "b"}),
        ("db:http", {"port": 80}),
        ("dé", {}),
    ],
)
def test_discover_refuses_before_calling_any_strategy(name: str, kwargs: dict[str, object]) -> None:
    recorder = RecordingStrategy()
    d = hermetic(recorder)
    with pytest.raises(InvalidServiceName):
        d.discover(name, **kwargs)  # type: ignore[arg-type]
    assert recorder.calls == []


def test_recorder_is_called_for_a_valid_name() -> None:
    # The control for the test above: a valid name does reach the strategy, parsed.
    recorder = RecordingStrategy()
    with pytest.raises(kdisco.ServiceNotFound):
        hermetic(recorder).discover("DB.Billing:HTTP")
    assert [(q.service.name, q.service.namespace, q.port) for q in recorder.calls] == [
        ("db", "billing", "http")
    ]


def test_discover_with_fake_resolver_uses_the_parsed_name() -> None:
    fake = FakeResolver(
        {
            "db": ["192.0.2.1:5432"],
            "db.billing": {"endpoints": ["192.0.2.2"], "ports": {"pg": 5433}},
        }
    )
    d = hermetic(fake)
    assert [ep.address for ep in d.discover("db")] == ["192.0.2.1:5432"]
    assert d.discover("DB").service.namespace == "home"
    res = d.discover("db.billing.svc.cluster.local.:pg")
    assert [ep.address for ep in res] == ["192.0.2.2:5433"]
    assert res.service.fqdn == "db.billing.svc.cluster.local."
    assert [ep.address for ep in d.discover("db", namespace="billing", port="pg")] == [
        "192.0.2.2:5433"
    ]


# -- property tests ----------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _label(first: str, max_size: int = 63) -> st.SearchStrategy[str]:
    """An RFC 1035 (first=letters) or RFC 1123 (first=alnum) label."""

    def build(parts: tuple[str, str, str]) -> str:
        head, middle, tail = parts
        return head + middle + tail if middle or tail else head

    return st.tuples(
        st.sampled_from(first),
        st.text(_ALNUM + "-", max_size=max_size - 2),
        st.sampled_from(_ALNUM),
    ).map(build) | st.sampled_from(first)


service_labels = _label("abcdefghijklmnopqrstuvwxyz")
rfc1123_labels = _label(_ALNUM)
domains = st.lists(_label(_ALNUM, max_size=20), min_size=1, max_size=4).map(".".join)
port_names = _label("abcdefghijklmnopqrstuvwxyz", max_size=15)
ports: st.SearchStrategy[int | str | None] = st.none() | st.integers(1, 65535) | port_names


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def valid_names(draw: st.DrawFn) -> tuple[str, str, str | None, str | None, int | str | None]:
    svc = draw(service_labels)
    form = draw(st.integers(1, 4))
    ns = draw(rfc1123_labels) if form >= 2 else None
    domain = draw(domains) if form == 4 else None
    port = draw(ports)
    parts = (
        [svc] + ([ns] if ns else []) + (["svc"] if form >= 3 else []) + ([domain] if domain else [])
    )
    text = ".".join(parts)
    if form == 4 and draw(st.booleans()):
        text += "."
    if port is not None:
        text += f":{port}"
    return _random_case(draw, text), svc, ns, domain, port


@given(valid_names())
@example(("A.B.SVC.C.:1", "a", "b", "c", 1))
def test_valid_generated_names_round_trip(
    case: tuple[str, str, str | None, str | None, int | str | None],
) -> None:
    text, svc, ns, domain, port = case
    q = parse(text)
    assert q.service.name == svc
    assert q.service.namespace == (ns if ns is not None else "home")
    assert q.service.cluster_domain == (domain if domain is not None else "cluster.local")
    assert q.port == port


@given(st.text())
@example("db:" + "1" * 5000)
@example("\u212aube")
@example("db.ns.svc.")
def test_arbitrary_text_parses_or_raises_invalid_service_name(text: str) -> None:
    try:
        q = parse(text)
    except InvalidServiceName:
        return
    # Whatever was accepted is a name the API server could hold.
    assert text.isascii()
    assert q.service.fqdn.endswith(".")
    assert len(q.service.name) <= 63


@given(st.text(), st.one_of(st.none(), st.text(), st.integers()))
def test_arbitrary_keywords_parse_or_raise_invalid_service_name(
    namespace: str, port: str | int | None
) -> None:
    try:
        q = parse("db", namespace=namespace, port=port)
    except InvalidServiceName:
        return
    assert q.service.namespace.isascii()
    assert q.port is None or isinstance(q.port, str) or 1 <= q.port <= 65535
