"""The ``static`` strategy: a map from code or a TOML file, and how Discoverer wires it in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import kdisco
from kdisco import (
    ConfigurationError,
    Deadline,
    Discoverer,
    Endpoint,
    Miss,
    Outcome,
    Resolution,
    ServiceKind,
    ServicePort,
)
from kdisco._names import Query, parse_query
from kdisco._strategies.static import StaticEntry, StaticStrategy, parse_address


def query(name: str, *, port: int | str | None = None, default_ns: str = "home") -> Query:
    return parse_query(
        name,
        namespace=None,
        default_namespace=default_ns,
        cluster_domain="cluster.local",
        port=port,
    )


def answer(strategy: StaticStrategy, name: str, **kw: object) -> Resolution:
    result = strategy.lookup(query(name, **kw), Deadline(5.0))  # type: ignore[arg-type]
    assert isinstance(result, Resolution), result
    return result


def miss(strategy: StaticStrategy, name: str, **kw: object) -> Miss:
    result = strategy.lookup(query(name, **kw), Deadline(5.0))  # type: ignore[arg-type]
    assert isinstance(result, Miss), result
    return result


def addresses(res: Resolution) -> list[str]:
    return [ep.address for ep in res]


def hermetic(**kw: object) -> Discoverer:
    # environ={} unless given, and no resolv.conf: nothing from this machine leaks in.
    kw.setdefault("environ", {})
    return Discoverer(namespace="home", resolv_conf="/nonexistent", **kw)  # type: ignore[arg-type]


# -- matching --------------------------------------------------------------------------


def test_bare_key_matches_any_namespace() -> None:
    s = StaticStrategy({"db": ["192.0.2.1:5432"]})
    for name in ("db", "db.home", "db.billing", "db.other.svc.cluster.local."):
        res = answer(s, name)
        assert addresses(res) == ["192.0.2.1:5432"], name
    assert answer(s, "db.billing").service.namespace == "billing"


def test_qualified_key_wins_over_bare_key_and_only_in_its_namespace() -> None:
    s = StaticStrategy({"db": ["192.0.2.1:5432"], "db.billing": ["192.0.2.2:5432"]})
    assert addresses(answer(s, "db.billing")) == ["192.0.2.2:5432"]
    assert addresses(answer(s, "db.billing.svc")) == ["192.0.2.2:5432"]
    assert addresses(answer(s, "db")) == ["192.0.2.1:5432"]  # home namespace: bare key
    assert addresses(answer(s, "db.shop")) == ["192.0.2.1:5432"]


def test_qualified_key_alone_does_not_match_other_namespaces() -> None:
    s = StaticStrategy({"db.billing": ["192.0.2.2:5432"]})
    m = miss(s, "db")
    assert m.outcome is Outcome.NOT_FOUND
    assert "db.home" in m.reason
    assert addresses(answer(s, "db", default_ns="billing")) == ["192.0.2.2:5432"]


def test_keys_are_case_folded_and_may_be_fully_qualified() -> None:
    s = StaticStrategy({"DB.Billing.svc.cluster.local.": ["192.0.2.2:5432"]})
    assert addresses(answer(s, "db.billing")) == ["192.0.2.2:5432"]


def test_answer_shape() -> None:
    s = StaticStrategy({"db": ["192.0.2.1:5432"]}, name="laptop")
    res = answer(s, "db.billing")
    assert res.source == "laptop"
    assert res.kind is ServiceKind.UNKNOWN
    assert res.service.fqdn == "db.billing.svc.cluster.local."
    assert res.endpoints == (Endpoint(host="192.0.2.1", port=5432),)
    assert s.name == "laptop"
    assert repr(s) == "StaticStrategy(1 services)"


def test_unknown_service_is_not_found_with_reason() -> None:
    m = miss(StaticStrategy({"db": ["192.0.2.1:5432"]}), "cache")
    assert m == Miss(Outcome.NOT_FOUND, "no static entry for cache.home")


def test_endpoint_objects_are_taken_as_they_are() -> None:
    ep = Endpoint(host="192.0.2.9", port=7000, hostname="db-0", zone="z1")
    res = answer(StaticStrategy({"db": [ep, "192.0.2.1:7000"]}), "db")
    assert res.endpoints == (ep, Endpoint(host="192.0.2.1", port=7000))


NOT_READY = Endpoint(host="192.0.2.9", port=7000, ready=False, terminating=True)


def test_not_ready_endpoints_are_left_out_unless_asked_for() -> None:
    s = StaticStrategy({"db": [NOT_READY, "192.0.2.1:7000"]})
    assert addresses(answer(s, "db")) == ["192.0.2.1:7000"]
    q = parse_query(
        "db", namespace=None, default_namespace="x", cluster_domain="c", include_not_ready=True
    )
    res = s.lookup(q, Deadline(5.0))
    assert isinstance(res, Resolution)
    assert res.endpoints == (NOT_READY, Endpoint(host="192.0.2.1", port=7000))


def test_nothing_ready_is_a_no_ready_endpoints_miss() -> None:
    m = miss(StaticStrategy({"db": [NOT_READY]}), "db")
    assert m == Miss(
        Outcome.NO_READY_ENDPOINTS, "static entry for db.home: 1 endpoints, none ready"
    )
    with pytest.raises(kdisco.NoReadyEndpoints, match="none ready"):
        hermetic(static={"db": [NOT_READY]}, strategies=["static"]).discover("db")


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("192.0.2.1:5432", "192.0.2.1", 5432),
        ("192.0.2.1", "192.0.2.1", None),
        ("db.example.com:443", "db.example.com", 443),
        ("localhost", "localhost", None),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("[2001:db8::1]", "2001:db8::1", None),
        ("2001:db8::1", "2001:db8::1", None),  # a bare IPv6 literal has no port
        ("::1", "::1", None),
        ("127.0.0.1:65535", "127.0.0.1", 65535),
    ],
)
def test_addresses(text: str, host: str, port: int | None) -> None:
    assert parse_address(text, where="w") == Endpoint(host=host, port=port)


def test_ipv6_addresses_are_bracketed_in_output() -> None:
    s = StaticStrategy({"search": ["[2001:db8::1]:9200", "192.0.2.1:9200"]})
    res = answer(s, "search")
    assert [ep.host for ep in res] == ["2001:db8::1", "192.0.2.1"]
    assert addresses(res) == ["[2001:db8::1]:9200", "192.0.2.1:9200"]
    assert res.url("http") == "http://[2001:db8::1]:9200"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is not a 'host:port' address"),
        (" 192.0.2.1:80", "is not a 'host:port' address"),
        ("192.0.2.1:", "has an empty port"),
        (":80", "has an empty host"),
        ("[2001:db8::1]:", "has an empty port"),
        ("[2001:db8::1", "is not '\\[ipv6\\]:port'"),
        ("[2001:db8::1]x", "is not '\\[ipv6\\]:port'"),
        ("[192.0.2.1]:80", "is not an IPv6 address"),
        ("2001:db8::zz", "is not an IPv6 address"),
        ("192.0.2.1:http", "port 'http' is not a number"),
        ("192.0.2.1:0", "port 0 is outside 1-65535"),
        ("192.0.2.1:65536", "port 65536 is outside 1-65535"),
        # Non-ASCII digits: str.isdigit() says yes and int() would even read some of them.
        ("192.0.2.1:\u0668\u0660", "is not a number"),
        ("192.0.2.1:\u00b2", "is not a number"),
        # Past int()'s 4300-digit limit, which raises a bare ValueError.
        ("192.0.2.1:" + "1" * 5000, "is outside 1-65535"),
        ("db host:80", "is not a host name or IP address"),
        ("db\t:80", "is not a host name or IP address"),
        ("d\u00e9.example:80", "is not a host name or IP address"),
        ("a/b:80", "is not a host name or IP address"),
    ],
)
def test_malformed_addresses_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        StaticStrategy({"db.billing": [text]})
    assert str(info.value).startswith("static entry 'db.billing': ")


# -- ports -------------------------------------------------------------------------------

WEB_PORTS = {"http": 8080, "grpc": 9090}
WEB: dict[str, StaticEntry] = {
    "web": {"endpoints": ["192.0.2.20", "192.0.2.21:9999"], "ports": {"http": 8080, "grpc": 9090}}
}


def test_named_port_fills_endpoints_without_a_port() -> None:
    res = answer(StaticStrategy(WEB), "web", port="http")
    assert addresses(res) == ["192.0.2.20:8080", "192.0.2.21:9999"]
    assert res.port == ServicePort(name="http", port=8080)
    assert res.ports == (ServicePort(name="http", port=8080), ServicePort(name="grpc", port=9090))
    assert res.url() == "http://192.0.2.20:8080"


def test_named_port_from_the_name_itself() -> None:
    res = answer(StaticStrategy(WEB), "web:GRPC")
    assert addresses(res) == ["192.0.2.20:9090", "192.0.2.21:9999"]
    assert res.port == ServicePort(name="grpc", port=9090)


def test_unknown_named_port_lists_the_declared_ones() -> None:
    m = miss(StaticStrategy(WEB), "web", port="admin")
    assert m.outcome is Outcome.NO_SUCH_PORT
    assert m.reason == "static entry for web.home has no port 'admin' (ports: http=8080, grpc=9090)"


def test_named_port_on_an_entry_without_declared_ports_keeps_its_addresses() -> None:
    res = answer(StaticStrategy({"db": ["192.0.2.1:5432"]}), "db", port="postgres")
    assert addresses(res) == ["192.0.2.1:5432"]
    assert res.port is None


def test_no_port_asked_uses_the_first_declared_port() -> None:
    # Issue 2: with no port asked, the Service's first declared port where the source
    # knows it; a static entry with `ports` knows it.
    res = answer(StaticStrategy(WEB), "web")
    assert addresses(res) == ["192.0.2.20:8080", "192.0.2.21:9999"]
    assert res.port == ServicePort(name="http", port=8080)
    assert res.url() == "http://192.0.2.20:8080"


def test_no_port_asked_without_declared_ports_keeps_addresses() -> None:
    res = answer(StaticStrategy({"db": ["192.0.2.1:5432", "192.0.2.2"]}), "db")
    assert [ep.port for ep in res] == [5432, None]
    assert res.port is None


def test_number_must_match_the_listed_ports() -> None:
    s = StaticStrategy({"db": ["192.0.2.1:5432", "192.0.2.2"]})
    res = answer(s, "db", port=5432)
    assert addresses(res) == ["192.0.2.1:5432", "192.0.2.2:5432"]  # unported ones take it
    m = miss(s, "db:6432")
    assert m.outcome is Outcome.NO_SUCH_PORT
    assert "6432" in m.reason


def test_number_matching_a_declared_port_picks_it() -> None:
    res = answer(
        StaticStrategy({"web": {"endpoints": ["192.0.2.20"], "ports": WEB_PORTS}}), "web:9090"
    )
    assert addresses(res) == ["192.0.2.20:9090"]
    assert res.port == ServicePort(name="grpc", port=9090)


def test_number_not_among_declared_ports_is_no_such_port() -> None:
    s = StaticStrategy({"web": {"endpoints": ["192.0.2.20"], "ports": WEB_PORTS}})
    m = miss(s, "web", port=1234)
    assert m.outcome is Outcome.NO_SUCH_PORT
    assert "1234" in m.reason
    assert "http=8080" in m.reason


def test_number_on_entry_without_ports_or_declarations_is_taken() -> None:
    res = answer(StaticStrategy({"db": ["192.0.2.1"]}), "db", port=5432)
    assert addresses(res) == ["192.0.2.1:5432"]


# -- malformed maps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"db": "192.0.2.1:80"}, "static entry 'db': expected a list"),
        ({"db": 5}, "static entry 'db': expected a list"),
        ({"db": []}, "static entry 'db': no addresses"),
        ({"db": [5]}, "static entry 'db': 5 is not a 'host:port' address"),
        ({"db": {"endpoints": ["192.0.2.1"], "extra": 1}}, "static entry 'db': unknown keys"),
        ({"db": {"ports": {"http": 80}}}, "static entry 'db': no addresses"),
        ({"db": {"endpoints": ["192.0.2.1"], "ports": [80]}}, "static entry 'db': 'ports' must"),
        (
            {"db": {"endpoints": ["192.0.2.1"], "ports": {"http": "x"}}},
            "static entry 'db': ports must map a name to a number",
        ),
        (
            {"db": {"endpoints": ["192.0.2.1"], "ports": {"80": 80}}},
            "static entry 'db': ports must map a name to a number",
        ),
        (
            {"db": {"endpoints": ["192.0.2.1"], "ports": {"http": 0}}},
            "static entry 'db': .*port 0 is outside",
        ),
        (
            {"db": {"endpoints": ["192.0.2.1"], "ports": {"bad_name": 80}}},
            "static entry 'db': .*port name 'bad_name'",
        ),
        ({"db:80": ["192.0.2.1"]}, "static key 'db:80': put ports in the addresses"),
        ({"Bad_Key": ["192.0.2.1"]}, "static key 'Bad_Key': .*service name 'bad_key'"),
        ({"db.ns.cluster": ["192.0.2.1"]}, "static key 'db.ns.cluster': .*third label"),
        ({5: ["192.0.2.1"]}, "static key 5 is not a str"),
    ],
)
def test_malformed_entries_raise_configuration_error_naming_the_key(
    mapping: dict[object, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        StaticStrategy(mapping)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_map_must_be_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="not list"):
        StaticStrategy([("db", ["192.0.2.1"])])  # type: ignore[arg-type]


# -- TOML file ---------------------------------------------------------------------------

TOML = """\
[services]
payments = ["192.0.2.10:5432"]
"search.shop" = ["[2001:db8::9]:9200", "192.0.2.9:9200"]

[services.web]            # named ports
endpoints = ["192.0.2.20"]
ports = { http = 8080, grpc = 9090 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "static.toml"
    path.write_text(text)
    return path


def test_toml_file(tmp_path: Path) -> None:
    s = StaticStrategy.from_file(write(tmp_path, TOML))
    assert s.name == "static"
    assert addresses(answer(s, "payments.anywhere")) == ["192.0.2.10:5432"]
    assert addresses(answer(s, "search.shop")) == ["[2001:db8::9]:9200", "192.0.2.9:9200"]
    assert miss(s, "search").outcome is Outcome.NOT_FOUND  # qualified key: shop only
    assert addresses(answer(s, "web", port="grpc")) == ["192.0.2.20:9090"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services\n", "is not TOML"),
        ("[other]\nx = 1\n", "has no \\[services\\] table"),
        ("services = 5\n", "has no \\[services\\] table"),
        ('[services]\n"db" = "192.0.2.1"\n', "static entry 'db': expected a list"),
        ('[services]\ndb = ["192.0.2.1:99999"]\n', "static entry 'db': .*outside 1-65535"),
    ],
)
def test_bad_toml_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as info:
        StaticStrategy.from_file(path)
    if "entry" not in message:
        assert str(path) in str(info.value)


def test_missing_toml_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match="cannot read static file") as info:
        StaticStrategy.from_file(missing)
    assert str(missing) in str(info.value)


# -- through Discoverer ------------------------------------------------------------------


def test_discoverer_static_map_goes_first() -> None:
    d = hermetic(static={"db": ["192.0.2.1:5432"]})
    assert [s.name for s in d.strategies] == ["static", "dns", "env", "api"]
    res = d.discover("db")
    assert res.source == "static"
    assert res.attempts == ()  # nothing was tried before it
    assert addresses(res) == ["192.0.2.1:5432"]


def test_discoverer_without_static_has_no_static_strategy() -> None:
    assert [s.name for s in hermetic().strategies] == ["dns", "env", "api"]


def test_discoverer_static_file_path(tmp_path: Path) -> None:
    d = hermetic(static=write(tmp_path, TOML), strategies=["static"])
    assert addresses(d.discover("web:http")) == ["192.0.2.20:8080"]


def test_kdisco_static_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    d = hermetic(environ={"KDISCO_STATIC": str(path)})
    assert [s.name for s in d.strategies] == ["static", "dns", "env", "api"]
    res = d.discover("payments")
    assert (res.source, addresses(res)) == ("static", ["192.0.2.10:5432"])


def test_kdisco_static_env_var_with_strategies_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    d = hermetic(environ={"KDISCO_STATIC": str(path), "KDISCO_STRATEGIES": "static"})
    assert [s.name for s in d.strategies] == ["static"]
    with pytest.raises(kdisco.ServiceNotFound, match=r"no static entry for orders\.home"):
        d.discover("orders")


def test_static_argument_wins_over_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, TOML)
    d = hermetic(static={"payments": ["192.0.2.77:1"]}, environ={"KDISCO_STATIC": str(path)})
    assert addresses(d.discover("payments")) == ["192.0.2.77:1"]


def test_bad_kdisco_static_file_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read static file"):
        hermetic(environ={"KDISCO_STATIC": str(tmp_path / "missing.toml")})


def test_static_strategy_name_without_a_map_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="strategy 'static' needs a map"):
        hermetic(strategies=["static"])


def test_static_miss_falls_through_to_the_next_strategy() -> None:
    other = StaticStrategy({"cache": ["192.0.2.50:6379"]}, name="other")
    d = hermetic(static={"db": ["192.0.2.1:5432"]}, strategies=["static", other])
    res = d.discover("cache")
    assert res.source == "other"
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("static", Outcome.NOT_FOUND)]


def test_static_answers_even_with_an_expired_deadline() -> None:
    # It answers from memory, so a deadline spent by earlier strategies costs nothing.
    s = StaticStrategy({"db": ["192.0.2.1:5432"]})
    res = s.lookup(query("db"), Deadline(0.0, clock=time.monotonic))
    assert isinstance(res, Resolution)
