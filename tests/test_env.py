"""The ``env`` strategy against environments built by the kubelet's rules."""

from __future__ import annotations

import pytest

import kdisco
from kdisco import Deadline, Endpoint, Miss, Outcome, Resolution, ServiceKind, ServicePort, Strategy
from kdisco._names import Query, parse_query
from kdisco._strategies.env import EnvStrategy, env_prefix
from tests._helpers_env import KUBERNETES, Port, Service, pod_environ, service_variables

PAYMENTS = Service(
    "payments", "10.96.5.5", (Port(80, "http"), Port(9090, "metrics"), Port(8443, "https"))
)


def query(name: str, port: int | str | None = None, namespace: str = "shop") -> Query:
    return parse_query(
        name,
        namespace=None,
        default_namespace=namespace,
        cluster_domain="cluster.local",
        port=port,
    )


def look(environ: dict[str, str], name: str, port: int | str | None = None) -> Resolution | Miss:
    return EnvStrategy(environ, namespace="shop").lookup(query(name, port), Deadline(1.0))


def found(environ: dict[str, str], name: str, port: int | str | None = None) -> Resolution:
    result = look(environ, name, port)
    assert isinstance(result, Resolution), result
    return result


def missed(environ: dict[str, str], name: str, port: int | str | None = None) -> Miss:
    result = look(environ, name, port)
    assert isinstance(result, Miss), result
    return result


# -- the helper follows the kubelet ---------------------------------------------------


def test_helper_writes_what_the_kubelet_writes() -> None:
    # The exact variables kubelet writes for the kubernetes Service in every pod.
    assert dict(service_variables(KUBERNETES)) == {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
    }
    assert service_variables(Service("db", "None", (Port(5432),))) == []


# -- answers ---------------------------------------------------------------------------


def test_host_and_first_port() -> None:
    res = found(pod_environ(PAYMENTS), "payments")
    assert res.source == "env"
    assert res.kind is ServiceKind.CLUSTER_IP
    assert res.endpoints == (Endpoint(host="10.96.5.5", port=80),)
    assert res.port == ServicePort(name="http", port=80)
    # The variables keep which port is first, not the order of the others.
    assert res.ports[0] == ServicePort(name="http", port=80)
    assert set(res.ports) == {
        ServicePort(name="http", port=80),
        ServicePort(name="metrics", port=9090),
        ServicePort(name="https", port=8443),
    }
    assert str(res.service) == "payments.shop"


def test_answers_are_a_snapshot_from_container_start() -> None:
    assert found(pod_environ(PAYMENTS), "payments").snapshot is True


def test_named_port() -> None:
    res = found(pod_environ(PAYMENTS), "payments", "metrics")
    assert res.endpoints == (Endpoint(host="10.96.5.5", port=9090),)
    assert res.port == ServicePort(name="metrics", port=9090)


def test_port_by_number() -> None:
    res = found(pod_environ(PAYMENTS), "payments", 8443)
    assert res.endpoints == (Endpoint(host="10.96.5.5", port=8443),)
    assert res.port is not None
    assert res.port.name == "https"
    assert res.url() == "https://10.96.5.5:8443"


def test_name_with_port_in_it() -> None:
    res = found(pod_environ(PAYMENTS), "payments:metrics")
    assert res.first().port == 9090


@pytest.mark.parametrize("port", ["grpc", 5000])
def test_unknown_port_is_no_such_port(port: int | str) -> None:
    miss = missed(pod_environ(PAYMENTS), "payments", port)
    assert miss.outcome is Outcome.NO_SUCH_PORT
    # The reason lists what the Service does declare, so the fix is obvious.
    assert "http=80" in miss.reason
    assert "metrics=9090" in miss.reason


def test_unnamed_single_port() -> None:
    environ = pod_environ(Service("cache", "10.96.7.7", (Port(6379),)))
    res = found(environ, "cache")
    assert res.endpoints == (Endpoint(host="10.96.7.7", port=6379),)
    assert res.ports == (ServicePort(port=6379),)
    assert found(environ, "cache", 6379).port == ServicePort(port=6379)
    assert missed(environ, "cache", "redis").outcome is Outcome.NO_SUCH_PORT


def test_kubernetes_service_itself() -> None:
    environ = pod_environ()
    res = EnvStrategy(environ, namespace="default").lookup(
        query("kubernetes", "https", namespace="default"), Deadline(1.0)
    )
    assert isinstance(res, Resolution)
    assert res.endpoints == (Endpoint(host="10.96.0.1", port=443),)


# -- misses ------------------------------------------------------------------------------


def test_other_namespace_is_not_applicable() -> None:
    result = EnvStrategy(pod_environ(PAYMENTS), namespace="shop").lookup(
        query("payments.billing"), Deadline(1.0)
    )
    assert isinstance(result, Miss)
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert "'shop'" in result.reason
    assert "'billing'" in result.reason


def test_not_in_a_pod_is_not_applicable() -> None:
    # Variables that look like a Service's but no KUBERNETES_SERVICE_HOST: not a pod
    # (someone's shell), so they are not the kubelet's and must not be trusted.
    environ = {k: v for k, v in pod_environ(PAYMENTS).items() if not k.startswith("KUBERNETES")}
    miss = missed(environ, "payments")
    assert miss.outcome is Outcome.NOT_APPLICABLE
    assert "KUBERNETES_SERVICE_HOST" in miss.reason


def test_missing_service_is_not_found() -> None:
    miss = missed(pod_environ(PAYMENTS), "orders")
    assert miss.outcome is Outcome.NOT_FOUND
    assert "ORDERS_SERVICE_HOST" in miss.reason


def test_headless_services_get_no_variables() -> None:
    environ = pod_environ(Service("db", "None", (Port(5432, "pg"),)))
    assert not any(key.startswith("DB_") for key in environ)
    assert missed(environ, "db").outcome is Outcome.NOT_FOUND


def test_env_strategy_meets_the_strategy_contract() -> None:
    strategy = EnvStrategy({}, namespace="shop")
    assert isinstance(strategy, Strategy)
    assert strategy.name == "env"


# -- names and addresses ---------------------------------------------------------------


def test_ipv6_cluster_ip() -> None:
    environ = pod_environ(Service("payments", "fd00:10:96::5", (Port(80, "http"),)))
    assert environ["PAYMENTS_PORT_80_TCP"] == "tcp://[fd00:10:96::5]:80"
    res = found(environ, "payments")
    assert res.endpoints == (Endpoint(host="fd00:10:96::5", port=80),)
    assert res.first().is_ipv6
    assert res.url() == "http://[fd00:10:96::5]:80"


def test_service_and_port_names_with_dashes() -> None:
    svc = Service(
        "my-payments-api", "10.96.8.8", (Port(8080, "http-alt"), Port(9464, "otel-metrics"))
    )
    environ = pod_environ(svc)
    assert env_prefix("my-payments-api") == "MY_PAYMENTS_API"
    assert environ["MY_PAYMENTS_API_SERVICE_PORT_HTTP_ALT"] == "8080"
    res = found(environ, "my-payments-api", "otel-metrics")
    assert res.endpoints == (Endpoint(host="10.96.8.8", port=9464),)
    assert [p.name for p in res.ports] == ["http-alt", "otel-metrics"]


FOO = Service("foo", "10.96.1.1", (Port(8080, "http"), Port(80, "legacy")))
FOO_SERVICE = Service("foo-service", "10.96.2.2", (Port(7000, "admin"),))


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param(pod_environ(FOO, FOO_SERVICE), id="foo-service-written-last"),
        pytest.param(pod_environ(FOO_SERVICE, FOO), id="foo-written-last"),
    ],
)
def test_prefix_collision_between_foo_and_foo_service(environ: dict[str, str]) -> None:
    # "foo-service"'s Docker-link FOO_SERVICE_PORT=tcp://... and "foo"'s first port
    # FOO_SERVICE_PORT=8080 share a name; whichever the kubelet wrote last survives.
    foo = found(environ, "foo")
    assert foo.endpoints == (Endpoint(host="10.96.1.1", port=8080),)
    assert foo.ports == (ServicePort(name="http", port=8080), ServicePort(name="legacy", port=80))
    assert found(environ, "foo", "legacy").first().port == 80
    foo_service = found(environ, "foo-service")
    assert foo_service.endpoints == (Endpoint(host="10.96.2.2", port=7000),)
    assert foo_service.ports == (ServicePort(name="admin", port=7000),)
    assert missed(environ, "foo", "admin").outcome is Outcome.NO_SUCH_PORT
    assert missed(environ, "foo-service", 8080).outcome is Outcome.NO_SUCH_PORT


def test_udp_port() -> None:
    environ = pod_environ(Service("syslog", "10.96.9.9", (Port(514, "syslog", "UDP"),)))
    res = found(environ, "syslog")
    assert res.port == ServicePort(name="syslog", port=514, protocol="UDP")
    assert res.endpoints == (Endpoint(host="10.96.9.9", port=514),)


@pytest.mark.parametrize("reverse", [False, True])
def test_same_number_over_udp_and_tcp(reverse: bool) -> None:
    # kube-dns: 53/UDP "dns" and 53/TCP "dns-tcp". The variables do not say which
    # name goes with which protocol, but the name does; the answer must not depend on
    # the order the variables happen to be in.
    kube_dns = Service(
        "kube-dns",
        "10.96.0.10",
        (Port(53, "dns", "UDP"), Port(53, "dns-tcp", "TCP"), Port(9153, "metrics", "TCP")),
    )
    items = list(pod_environ(kube_dns).items())
    environ = dict(reversed(items) if reverse else items)
    res = EnvStrategy(environ, namespace="kube-system").lookup(
        query("kube-dns", namespace="kube-system"), Deadline(1.0)
    )
    assert isinstance(res, Resolution)
    assert res.endpoints == (Endpoint(host="10.96.0.10", port=53),)
    assert set(res.ports) == {
        ServicePort(name="dns", port=53, protocol="UDP"),
        ServicePort(name="dns-tcp", port=53, protocol="TCP"),
        ServicePort(name="metrics", port=9153, protocol="TCP"),
    }


def test_through_a_discoverer() -> None:
    environ = pod_environ(PAYMENTS, extra=[("POD_NAMESPACE", "shop")])
    discoverer = kdisco.Discoverer(strategies=["env"], environ=environ)
    res = discoverer.discover("payments", port="https")
    assert (res.source, res.first().address) == ("env", "10.96.5.5:8443")
    with pytest.raises(kdisco.ServiceNotFound):
        discoverer.discover("orders")
    with pytest.raises(kdisco.PortNotFound):
        discoverer.discover("payments", port="grpc")


# -- hostile or confusing variables (issue 10, item 10) ------------------------------------


def test_a_chosen_namespace_is_not_taken_for_the_pods_own() -> None:
    # KDISCO_NAMESPACE says where to search, not where the pod runs: without
    # POD_NAMESPACE or a service-account file the variables match no namespace.
    environ = pod_environ(PAYMENTS, extra=[("KDISCO_NAMESPACE", "billing")])
    d = kdisco.Discoverer(strategies=["env"], environ=environ)
    with d, pytest.raises(kdisco.DiscoveryUnavailable) as info:
        d.discover("payments")
    assert "namespace is unknown" in str(info.value)


@pytest.mark.parametrize("value", ["0", "70000", "-1", "٨٠", "9" * 5000])
def test_impossible_port_values_are_ignored(value: str) -> None:
    environ = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "WEB_SERVICE_HOST": "10.96.0.20",
        "WEB_SERVICE_PORT": value,
        "WEB_SERVICE_PORT_HTTP": "80",
    }
    res = EnvStrategy(environ, namespace="shop").lookup(query("web"), Deadline(1.0))
    assert isinstance(res, Resolution)
    assert [(p.name, p.port) for p in res.ports] == [("http", 80)]


def test_a_neighbouring_service_does_not_lend_its_ports() -> None:
    # Service "web-service-port" writes WEB_SERVICE_PORT_SERVICE_PORT(_HTTP), which
    # read like ports of "web" named "service-port" and "service-port-http".
    environ = pod_environ(
        Service("web", "10.96.0.20", (Port(80, "http"),)),
        Service("web-service-port", "10.96.0.30", (Port(9000, "http"),)),
    )
    res = EnvStrategy(environ, namespace="shop").lookup(query("web"), Deadline(1.0))
    assert isinstance(res, Resolution)
    assert [(p.name, p.port) for p in res.ports] == [("http", 80)]
