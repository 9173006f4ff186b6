"""Discoverer configuration from arguments, environment and files; the default instance.

Every test hands the Discoverer its own environ, resolv.conf and service-account
directory, and points HOME at an empty directory so a developer's ~/.kube/config
cannot leak in. Nothing here sends a packet except to the 127.0.0.1 server of
tests/_helpers_api.py.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3

import kdisco
from kdisco import (
    ConfigurationError,
    Deadline,
    Discoverer,
    DiscoveryUnavailable,
    Endpoint,
    Miss,
    Outcome,
    Query,
    Resolution,
    ServiceNotFound,
)
from kdisco._k8s.client import KubeClient
from kdisco._settings import DnsTarget
from kdisco._strategies.api import ApiStrategy
from kdisco._strategies.dns import DnsStrategy
from kdisco._strategies.env import EnvStrategy
from kdisco._strategies.static import StaticStrategy
from kdisco.testing import FakeResolver
from tests._helpers_api import fake_apiserver, load, write_kubeconfig

POD_RESOLV = """\
search billing.svc.corp.example svc.corp.example corp.example eu-west-1.compute.internal
nameserver 10.96.0.10
options ndots:5
"""
LAPTOP_RESOLV = "search example.com\nnameserver 192.0.2.53\n"


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    kdisco.reset_default_discoverer()
    yield
    kdisco.reset_default_discoverer()


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    """An empty service-account directory (as on a laptop)."""
    path = tmp_path / "serviceaccount"
    path.mkdir()
    return path


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(LAPTOP_RESOLV)
    return path


def make(
    sa_dir: Path, resolv: Path, environ: dict[str, str] | None = None, **kwargs: Any
) -> Discoverer:
    return Discoverer(
        environ=environ or {}, resolv_conf=resolv, serviceaccount_dir=sa_dir, **kwargs
    )


def names(d: Discoverer) -> list[str]:
    return [s.name for s in d.strategies]


def write_static(path: Path, host: str) -> Path:
    path.write_text(f'[services]\n"payments" = ["{host}:5432"]\n')
    return path


# -- strategies ----------------------------------------------------------------------


def test_default_order_is_dns_env_api(sa_dir: Path, resolv: Path) -> None:
    d = make(sa_dir, resolv)
    assert names(d) == ["dns", "env", "api"]
    assert isinstance(d.strategies[0], DnsStrategy)
    assert isinstance(d.strategies[1], EnvStrategy)
    assert isinstance(d.strategies[2], ApiStrategy)


def test_static_file_goes_first_by_default(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    static = write_static(tmp_path / "static.toml", "127.0.0.1")
    d = make(sa_dir, resolv, {"KDISCO_STATIC": str(static)})
    assert names(d) == ["static", "dns", "env", "api"]


def test_kdisco_strategies_sets_the_order(sa_dir: Path, resolv: Path) -> None:
    d = make(sa_dir, resolv, {"KDISCO_STRATEGIES": " API , Env"})
    assert names(d) == ["api", "env"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("dns,consul", "unknown strategy 'consul'"),
        (" , ", "no strategies named"),
        ("dns,env,dns", "named twice"),
        ("static", "needs a map"),  # static without KDISCO_STATIC
    ],
)
def test_bad_kdisco_strategies(sa_dir: Path, resolv: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        make(sa_dir, resolv, {"KDISCO_STRATEGIES": value})
    assert isinstance(caught.value, ValueError)


def test_strategies_argument_beats_the_environment(sa_dir: Path, resolv: Path) -> None:
    d = make(sa_dir, resolv, {"KDISCO_STRATEGIES": "api"}, strategies=["env"])
    assert names(d) == ["env"]


def test_strategy_objects_and_names_mix_in_order(sa_dir: Path, resolv: Path) -> None:
    fake = FakeResolver({"payments": ["192.0.2.10:5432"]})
    d = make(sa_dir, resolv, strategies=["env", fake])
    assert names(d) == ["env", "fake"]
    assert d.strategies[1] is fake


@pytest.mark.parametrize(
    "strategies",
    [
        [FakeResolver(name="x"), FakeResolver(name="x")],
        ["env", FakeResolver(name="env")],
    ],
)
def test_duplicate_strategy_names_are_rejected(
    sa_dir: Path, resolv: Path, strategies: list[Any]
) -> None:
    with pytest.raises(ConfigurationError, match="named twice"):
        make(sa_dir, resolv, strategies=strategies)


@pytest.mark.parametrize("strategies", ["dns", [42], [object()], ["consul"]])
def test_bad_strategy_items(sa_dir: Path, resolv: Path, strategies: Any) -> None:
    with pytest.raises(ConfigurationError):
        make(sa_dir, resolv, strategies=strategies)


# -- namespace ----------------------------------------------------------------------


def test_namespace_detection_order(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig")
    (sa_dir / "namespace").write_text("from-sa-file\n")
    env = {
        "KDISCO_NAMESPACE": "from-kdisco",
        "POD_NAMESPACE": "from-pod",
        "KUBECONFIG": str(kubeconfig),
    }
    seen = []
    for drop in ("KDISCO_NAMESPACE", "POD_NAMESPACE", "sa file", "KUBECONFIG", None):
        seen.append(make(sa_dir, resolv, env).namespace)
        if drop == "sa file":
            (sa_dir / "namespace").unlink()
        elif drop is not None:
            del env[drop]
    assert seen == ["from-kdisco", "from-pod", "from-sa-file", "from-kubeconfig", "default"]


def test_namespace_argument_beats_everything(sa_dir: Path, resolv: Path) -> None:
    (sa_dir / "namespace").write_text("from-sa-file")
    d = make(sa_dir, resolv, {"KDISCO_NAMESPACE": "from-kdisco"}, namespace="Explicit")
    assert d.namespace == "explicit"  # folded, like every name
    assert "(argument)" in repr(d)


def test_namespace_from_kubeconfig_argument(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig")
    assert make(sa_dir, resolv, kubeconfig=str(kubeconfig)).namespace == "from-kubeconfig"


def test_namespace_follows_the_chosen_kubeconfig_context(
    sa_dir: Path, resolv: Path, tmp_path: Path
) -> None:
    # kubectl --context other uses that context's namespace, not current-context's.
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig")
    d = make(sa_dir, resolv, {"KUBECONFIG": str(kubeconfig)}, context="other")
    assert d.namespace == "other-context"


def test_namespace_from_home_kubeconfig(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    kube = tmp_path / "home" / ".kube"
    kube.mkdir()
    write_kubeconfig(kube / "config")
    assert make(sa_dir, resolv).namespace == "from-kubeconfig"


def test_serviceaccount_dir_from_environment(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-sa"
    other.mkdir()
    (other / "namespace").write_text("from-env-dir")
    (sa_dir / "namespace").write_text("from-arg-dir")
    env = {"KDISCO_SERVICEACCOUNT_DIR": str(other)}
    assert Discoverer(environ=env, resolv_conf=resolv).namespace == "from-env-dir"
    assert make(sa_dir, resolv, env).namespace == "from-arg-dir"


@pytest.mark.parametrize("var", ["KDISCO_NAMESPACE", "POD_NAMESPACE"])
def test_invalid_namespace_in_environment(sa_dir: Path, resolv: Path, var: str) -> None:
    with pytest.raises(ConfigurationError, match=var):
        make(sa_dir, resolv, {var: "not_a_namespace"})


def test_env_strategy_gets_the_detected_namespace(sa_dir: Path, resolv: Path) -> None:
    env = {
        "POD_NAMESPACE": "billing",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "PAYMENTS_SERVICE_HOST": "10.96.5.5",
        "PAYMENTS_SERVICE_PORT": "80",
    }
    d = make(sa_dir, resolv, env, strategies=["env"])
    res = d.discover("payments")
    assert (res.source, str(res.service), res.first().host) == (
        "env",
        "payments.billing",
        "10.96.5.5",
    )
    # Another namespace's Service is not in this pod's variables.
    with pytest.raises(DiscoveryUnavailable):
        d.discover("payments.shop")


# -- cluster domain and DNS -------------------------------------------------------------


def test_cluster_domain_from_resolv_conf(sa_dir: Path, tmp_path: Path) -> None:
    pod = tmp_path / "pod-resolv.conf"
    pod.write_text(POD_RESOLV)
    d = make(sa_dir, pod)
    assert d.cluster_domain == "corp.example"
    dns = d.strategies[0]
    assert isinstance(dns, DnsStrategy)
    assert dns.nameservers == (DnsTarget("10.96.0.10", 53),)


def test_cluster_domain_precedence(sa_dir: Path, tmp_path: Path) -> None:
    pod = tmp_path / "pod-resolv.conf"
    pod.write_text(POD_RESOLV)
    env = {"KDISCO_CLUSTER_DOMAIN": "Env.Example."}
    assert make(sa_dir, pod, env).cluster_domain == "env.example"
    assert make(sa_dir, pod, env, cluster_domain="arg.example").cluster_domain == "arg.example"


def test_cluster_domain_default(sa_dir: Path, resolv: Path) -> None:
    assert make(sa_dir, resolv).cluster_domain == "cluster.local"
    res = make(sa_dir, resolv, strategies=[FakeResolver({"db": ["192.0.2.1:5432"]})]).discover("db")
    assert res.service.fqdn == "db.default.svc.cluster.local."


@pytest.mark.parametrize("bad", ["under_score.local", "bad..local", "ünïcode.local"])
def test_invalid_cluster_domain(sa_dir: Path, resolv: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match="KDISCO_CLUSTER_DOMAIN"):
        make(sa_dir, resolv, {"KDISCO_CLUSTER_DOMAIN": bad})
    with pytest.raises(ConfigurationError, match="cluster_domain"):
        make(sa_dir, resolv, cluster_domain=bad)


def test_dns_outside_a_cluster_is_not_applicable_at_once(sa_dir: Path, resolv: Path) -> None:
    d = make(sa_dir, resolv, strategies=["dns"])
    with pytest.raises(DiscoveryUnavailable) as caught:
        d.discover("payments")
    (attempt,) = caught.value.attempts
    assert attempt.outcome is Outcome.NOT_APPLICABLE
    assert "KDISCO_DNS_SERVER" in attempt.reason


@pytest.mark.parametrize(
    ("value", "targets"),
    [
        ("127.0.0.1:5353", (DnsTarget("127.0.0.1", 5353),)),
        ("192.0.2.53", (DnsTarget("192.0.2.53", 53),)),
        ("[::1]:5353", (DnsTarget("::1", 5353),)),
        ("2001:db8::53", (DnsTarget("2001:db8::53", 53),)),
        ("127.0.0.1:5353, [::1]:5354", (DnsTarget("127.0.0.1", 5353), DnsTarget("::1", 5354))),
    ],
)
def test_kdisco_dns_server(
    sa_dir: Path, resolv: Path, value: str, targets: tuple[DnsTarget, ...]
) -> None:
    d = make(sa_dir, resolv, {"KDISCO_DNS_SERVER": value}, strategies=["dns"])
    dns = d.strategies[0]
    assert isinstance(dns, DnsStrategy)
    assert dns.nameservers == targets


@pytest.mark.parametrize(
    "value", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:99999", "[::1", "1.2.3.4:"]
)
def test_bad_kdisco_dns_server(sa_dir: Path, resolv: Path, value: str) -> None:
    with pytest.raises(ConfigurationError, match="KDISCO_DNS_SERVER"):
        make(sa_dir, resolv, {"KDISCO_DNS_SERVER": value}, strategies=["dns"])


# -- timeout ------------------------------------------------------------------------


def test_timeout_sources(sa_dir: Path, resolv: Path) -> None:
    assert make(sa_dir, resolv).timeout == 5.0
    assert make(sa_dir, resolv, {"KDISCO_TIMEOUT": "2.5"}).timeout == 2.5
    assert make(sa_dir, resolv, {"KDISCO_TIMEOUT": "2.5"}, timeout=1).timeout == 1.0


BAD_TIMEOUTS: list[Any] = [0, -1, 0.0, math.nan, math.inf, -math.inf, True, False, "soon", [1]]


@pytest.mark.parametrize("bad", BAD_TIMEOUTS)
def test_bad_timeout_argument(sa_dir: Path, resolv: Path, bad: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(sa_dir, resolv, timeout=bad)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("bad", ["0", "-2", "nan", "inf", "five"])
def test_bad_kdisco_timeout(sa_dir: Path, resolv: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match="KDISCO_TIMEOUT"):
        make(sa_dir, resolv, {"KDISCO_TIMEOUT": bad})


class Recording:
    """A strategy that remembers the deadline each lookup got."""

    name = "rec"

    def __init__(self) -> None:
        self.remaining: list[float] = []

    def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
        self.remaining.append(deadline.remaining())
        return Miss(Outcome.NOT_FOUND, "nothing here")


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True])
def test_bad_per_call_timeout_fails_before_any_lookup(sa_dir: Path, resolv: Path, bad: Any) -> None:
    rec = Recording()
    d = make(sa_dir, resolv, strategies=[rec])
    with pytest.raises(ConfigurationError):
        d.discover("payments", timeout=bad)
    assert rec.remaining == []


def test_per_call_timeout_sets_the_deadline(sa_dir: Path, resolv: Path) -> None:
    now = [50.0]
    rec = Recording()
    d = make(sa_dir, resolv, strategies=[rec], timeout=3.0, clock=lambda: now[0])
    with pytest.raises(ServiceNotFound):
        d.discover("payments")
    with pytest.raises(ServiceNotFound):
        d.discover("payments", timeout=0.5)
    assert rec.remaining == [3.0, 0.5]


# -- api strategy wiring and closing -------------------------------------------------------


def test_api_strategy_uses_in_cluster_credentials_from_the_serviceaccount_dir(
    sa_dir: Path, resolv: Path
) -> None:
    (sa_dir / "token").write_text("t")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    api = make(sa_dir, resolv, env, strategies=["api"]).strategies[0]
    assert isinstance(api, ApiStrategy)
    assert api.mode == "in-cluster"


class SpyClient(KubeClient):
    closed = 0

    def close(self) -> None:
        SpyClient.closed += 1
        super().close()


def spy_factory(url: str) -> KubeClient:
    return SpyClient(url, urllib3.PoolManager(retries=False))


def test_close_and_context_manager_close_api_clients(sa_dir: Path, resolv: Path) -> None:
    SpyClient.closed = 0
    with fake_apiserver() as server:
        server.serve_service(load("service-clusterip.json"), ready_pod=True)
        api = ApiStrategy(client_factory=lambda: spy_factory(server.url))
        with make(sa_dir, resolv, strategies=[api]) as d:
            res = d.discover("payments.billing")
            assert res.endpoints == (Endpoint(host="10.96.12.34", port=80),)
            assert SpyClient.closed == 0
        assert SpyClient.closed == 1
        # A closed discoverer's strategy builds a fresh client if used again.
        d.discover("payments.billing")
        d.close()
        assert SpyClient.closed == 2


def test_kubeconfig_api_discovery_end_to_end(sa_dir: Path, resolv: Path, tmp_path: Path) -> None:
    with fake_apiserver() as server:
        server.serve_service(load("service-clusterip.json"), ready_pod=True)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        with make(sa_dir, resolv, {"KUBECONFIG": str(kubeconfig)}, strategies=["api"]) as d:
            res = d.discover("payments.billing", port="grpc")
    assert (res.source, res.first().address) == ("api", "10.96.12.34:9090")
    assert server.requests[0].headers.get("authorization") == "Bearer kubeconfig-token"


# -- the module-level default ------------------------------------------------------------


def test_discover_uses_the_lazily_built_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    static = write_static(tmp_path / "a.toml", "192.0.2.10")
    monkeypatch.setenv("KDISCO_STRATEGIES", "static")
    monkeypatch.setenv("KDISCO_STATIC", str(static))
    monkeypatch.setenv("KDISCO_NAMESPACE", "billing")
    monkeypatch.setenv("KDISCO_SERVICEACCOUNT_DIR", str(tmp_path / "no-sa"))

    res = kdisco.discover("payments")
    assert (res.source, str(res.service), res.first().address) == (
        "static",
        "payments.billing",
        "192.0.2.10:5432",
    )
    default = kdisco.get_default_discoverer()
    assert kdisco.get_default_discoverer() is default

    # The default is built once: a changed environment is seen only after a reset.
    monkeypatch.setenv("KDISCO_STATIC", str(write_static(tmp_path / "b.toml", "192.0.2.20")))
    assert kdisco.discover("payments").first().host == "192.0.2.10"
    closed: list[bool] = []
    monkeypatch.setattr(default, "close", lambda: closed.append(True))
    kdisco.reset_default_discoverer()
    assert closed == [True]
    assert kdisco.discover("payments").first().host == "192.0.2.20"
    assert kdisco.get_default_discoverer() is not default


def test_default_is_built_once_under_concurrency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KDISCO_STRATEGIES", "static")
    monkeypatch.setenv("KDISCO_STATIC", str(write_static(tmp_path / "a.toml", "192.0.2.10")))
    monkeypatch.setenv("KDISCO_SERVICEACCOUNT_DIR", str(tmp_path / "no-sa"))
    barrier = threading.Barrier(16)

    def grab(_: int) -> int:
        barrier.wait()
        return id(kdisco.get_default_discoverer())

    with ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(grab, range(16)))
    assert len(ids) == 1


def test_many_threads_share_one_discoverer(sa_dir: Path, resolv: Path) -> None:
    mapping = {f"svc{i}.ns{i % 3}": [f"192.0.2.{i}:{8000 + i}"] for i in range(1, 40)}
    d = make(sa_dir, resolv, strategies=[FakeResolver(mapping)])
    barrier = threading.Barrier(12)

    def worker(seed: int) -> list[tuple[str, str]]:
        barrier.wait()
        out = []
        for n in range(200):
            i = (seed * 7 + n) % 39 + 1
            res = d.discover(f"svc{i}.ns{i % 3}")
            out.append((f"svc{i}.ns{i % 3}", res.first().address))
        return out

    with ThreadPoolExecutor(12) as pool:
        results = [pair for chunk in pool.map(worker, range(12)) for pair in chunk]
    assert len(results) == 12 * 200
    for name, address in results:
        i = int(name.split(".")[0][3:])
        assert address == f"192.0.2.{i}:{8000 + i}"


def test_static_strategy_from_argument_mapping(sa_dir: Path, resolv: Path) -> None:
    d = make(sa_dir, resolv, static={"payments": ["127.0.0.1:5432"]}, strategies=["static"])
    assert isinstance(d.strategies[0], StaticStrategy)
    assert d.discover("payments").first().address == "127.0.0.1:5432"


class TestReviewFindings:
    """Behaviour pinned after a review found it wrong."""

    def test_env_reads_the_pods_namespace_not_the_search_namespace(self) -> None:
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "POD_NAMESPACE": "shop",
            "KDISCO_NAMESPACE": "billing",
            "PAYMENTS_SERVICE_HOST": "10.96.7.7",
            "PAYMENTS_SERVICE_PORT": "5432",
        }
        d = kdisco.Discoverer(strategies=["env"], environ=environ)
        assert d.namespace == "billing"
        # payments.billing is not in the pod's namespace: shop's variables must not answer.
        with pytest.raises(kdisco.DiscoveryUnavailable) as info:
            d.discover("payments")
        assert "'shop'" in info.value.attempts[0].reason
        assert d.discover("payments.shop").first().address == "10.96.7.7:5432"

    def test_env_namespace_from_the_serviceaccount_file(self, tmp_path: Path) -> None:
        (tmp_path / "namespace").write_text("shop\n")
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KDISCO_NAMESPACE": "billing",
            "KDISCO_SERVICEACCOUNT_DIR": str(tmp_path),
            "PAYMENTS_SERVICE_HOST": "10.96.7.7",
            "PAYMENTS_SERVICE_PORT": "5432",
        }
        d = kdisco.Discoverer(strategies=["env"], environ=environ)
        assert d.discover("payments.shop").first().host == "10.96.7.7"

    def test_dns_leaves_include_not_ready_to_a_strategy_that_knows(self) -> None:
        fake = FakeResolver({"db": ["192.0.2.1:5432"]})
        dns_strategy = kdisco.Discoverer(
            strategies=["dns"], dns_server="127.0.0.1:1", environ={}
        ).strategies[0]
        d = kdisco.Discoverer(
            strategies=[dns_strategy, fake], environ={}, namespace="default", reach="cluster"
        )
        res = d.discover("db", include_not_ready=True, timeout=0.5)
        assert res.source == "fake"
        assert res.attempts[0].outcome is kdisco.Outcome.NOT_APPLICABLE
        assert "only ready" in res.attempts[0].reason

    def test_watch_rejects_a_bad_timeout_at_once(self) -> None:
        d = kdisco.Discoverer(strategies=[FakeResolver({"web": ["192.0.2.1:80"]})], environ={})
        with pytest.raises(kdisco.ConfigurationError):
            d.watch("web", timeout=-1)
        d.close()
