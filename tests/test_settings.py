"""``Settings``: every setting resolved once, with where each value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdisco
from kdisco import ConfigurationError, Settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config unless a test writes one
    return tmp_path


def pod(tmp_path: Path, namespace: str = "shop") -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "namespace").write_text(namespace)
    (sa / "token").write_text("t")
    return sa


def resolv(tmp_path: Path, namespace: str = "shop", zone: str = "corp.local") -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(
        f"nameserver 10.96.0.10\nsearch {namespace}.svc.{zone} svc.{zone} {zone}\noptions ndots:5\n"
    )
    return path


def test_in_a_pod_everything_is_detected(home: Path, tmp_path: Path) -> None:
    sa = pod(tmp_path)
    s = Settings.load(
        environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        serviceaccount_dir=sa,
        resolv_conf=resolv(tmp_path),
    )
    assert (s.namespace, s.pod_namespace, s.cluster_domain) == ("shop", "shop", "corp.local")
    assert [str(t) for t in s.dns_servers] == ["10.96.0.10:53"]
    assert s.strategies == ("dns", "env", "api")
    assert s.in_pod()
    assert s.sources["namespace"] == str(sa / "namespace")
    assert s.sources["cluster_domain"] == str(tmp_path / "resolv.conf")
    assert s.sources["dns_servers"] == str(tmp_path / "resolv.conf")
    assert s.sources["strategies"] == "default"
    assert s.sources["timeout"] == "default"


def test_arguments_win_over_variables_which_win_over_detection(home: Path, tmp_path: Path) -> None:
    sa = pod(tmp_path)
    env = {
        "KDISCO_NAMESPACE": "billing",
        "KDISCO_TIMEOUT": "2.5",
        "KDISCO_CLUSTER_DOMAIN": "env.local",
        "KDISCO_STRATEGIES": "api, dns",
        "KDISCO_DNS_SERVER": "127.0.0.1:5353",
    }
    s = Settings.load(environ=env, serviceaccount_dir=sa, resolv_conf=resolv(tmp_path))
    assert (s.namespace, s.timeout, s.cluster_domain) == ("billing", 2.5, "env.local")
    assert s.strategies == ("api", "dns")
    assert [str(t) for t in s.dns_servers] == ["127.0.0.1:5353"]
    assert s.pod_namespace == "shop"  # where the pod runs, whatever is searched
    assert {k: s.sources[k] for k in ("namespace", "timeout", "strategies")} == {
        "namespace": "KDISCO_NAMESPACE",
        "timeout": "KDISCO_TIMEOUT",
        "strategies": "KDISCO_STRATEGIES",
    }
    s = Settings.load(
        environ=env, serviceaccount_dir=sa, namespace="orders", timeout=1, strategies=["env"]
    )
    assert (s.namespace, s.timeout, s.strategies) == ("orders", 1.0, ("env",))
    assert s.sources["namespace"] == s.sources["timeout"] == "argument"


def test_the_kubeconfig_context_namespace_outside_a_pod(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\ncontexts:\n"
        "- name: a\n  context: {cluster: c, user: u, namespace: alpha}\n"
        "- name: b\n  context: {cluster: c, user: u, namespace: beta}\n"
    )
    s = Settings.load(environ={"KUBECONFIG": str(config)}, serviceaccount_dir=tmp_path / "none")
    assert s.namespace == "alpha"
    assert s.kubeconfig == (str(config),)
    assert s.sources["namespace"].startswith("kubeconfig context 'a'")
    s = Settings.load(
        environ={"KUBECONFIG": str(config)}, context="b", serviceaccount_dir=tmp_path / "none"
    )
    assert (s.namespace, s.context) == ("beta", "b")
    s = Settings.load(environ={}, serviceaccount_dir=tmp_path / "none")
    assert (s.namespace, s.sources["namespace"], s.kubeconfig) == ("default", "default", ())


def test_outside_a_cluster_dns_says_why_it_cannot_apply(home: Path, tmp_path: Path) -> None:
    plain = tmp_path / "resolv.conf"
    plain.write_text("nameserver 192.0.2.53\nsearch example.org\n")
    s = Settings.load(environ={}, resolv_conf=plain, serviceaccount_dir=tmp_path / "none")
    assert s.dns_servers == ()
    assert s.dns_unavailable is not None
    assert "not in a cluster" in s.dns_unavailable


@pytest.mark.parametrize(
    ("kwargs", "environ", "message"),
    [
        ({}, {"KDISCO_TIMEOUT": "soon"}, "KDISCO_TIMEOUT='soon' is not a number"),
        ({}, {"KDISCO_TIMEOUT": "1e10"}, "KDISCO_TIMEOUT='1e10' is over a year"),
        ({"timeout": 0}, {}, "timeout must be a positive"),
        ({}, {"KDISCO_NAMESPACE": "Bad_Name"}, "KDISCO_NAMESPACE"),
        ({}, {"KDISCO_CLUSTER_DOMAIN": "a..b"}, "KDISCO_CLUSTER_DOMAIN"),
        ({}, {"KDISCO_DNS_SERVER": "dns.example:53"}, "KDISCO_DNS_SERVER"),
        ({}, {"KDISCO_STRATEGIES": "dns,dns"}, "named twice"),
        ({"strategies": "dns"}, {}, "not a str"),
        ({"context": ""}, {}, "context must be a non-empty str"),
        ({"cache": "yes"}, {}, "cache must be a bool or a CachePolicy"),
        ({"api_watch": 1}, {}, "api_watch must be a bool or a WatchCachePolicy"),
    ],
)
def test_bad_settings_name_the_setting_and_its_source(
    home: Path, kwargs: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Settings.load(environ=environ, **kwargs)  # type: ignore[arg-type]


def test_a_discoverer_exposes_its_settings(home: Path, tmp_path: Path) -> None:
    with kdisco.Discoverer(environ={"KDISCO_NAMESPACE": "shop"}, resolv_conf="/nonexistent") as d:
        assert d.settings.namespace == d.namespace == "shop"
        assert d.settings.sources["namespace"] == "KDISCO_NAMESPACE"
        assert "KDISCO_NAMESPACE" in repr(d)


def test_unknown_strategy_names_are_errors_before_any_lookup(home: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"KDISCO_STRATEGIES: unknown strategy 'consul'"):
        kdisco.Discoverer(environ={"KDISCO_STRATEGIES": "dns,consul"}, resolv_conf="/nonexistent")


# -- hostile input never escapes as anything but a DiscoveryError (issue 10, item 7) ----


@pytest.mark.parametrize("server", ["127.0.0.1:²", "127.0.0.1:" + "9" * 5000, "127.0.0.1:٨٠"])
def test_a_bad_dns_server_port_is_a_configuration_error(home: Path, server: str) -> None:
    with pytest.raises(ConfigurationError, match="KDISCO_DNS_SERVER"):
        kdisco.Discoverer(environ={"KDISCO_DNS_SERVER": server}, resolv_conf="/nonexistent")


def test_a_static_file_that_is_not_utf8_is_a_configuration_error(
    home: Path, tmp_path: Path
) -> None:
    static = tmp_path / "static.toml"
    static.write_bytes(b'[services]\npayments = ["\xff\xfe:1"]\n')
    with pytest.raises(ConfigurationError, match="static file"):
        kdisco.Discoverer(environ={"KDISCO_STATIC": str(static)}, resolv_conf="/nonexistent")


def test_a_static_file_nested_too_deep_is_a_configuration_error(home: Path, tmp_path: Path) -> None:
    static = tmp_path / "static.toml"
    static.write_text("[services]\nx = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigurationError, match="static file"):
        kdisco.Discoverer(environ={"KDISCO_STATIC": str(static)}, resolv_conf="/nonexistent")


def test_a_namespace_file_that_is_not_utf8_is_a_configuration_error(
    home: Path, tmp_path: Path
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "namespace").write_bytes(b"\xff\xfeshop")
    with pytest.raises(ConfigurationError, match=r"namespace file.*not UTF-8"):
        kdisco.Discoverer(serviceaccount_dir=sa, environ={}, resolv_conf="/nonexistent")


def test_a_resolv_conf_that_is_not_utf8_means_no_cluster_dns(home: Path, tmp_path: Path) -> None:
    garbled = tmp_path / "resolv.conf"
    garbled.write_bytes(b"nameserver 10.96.0.10\nsearch \xff.svc.cluster.local\n")
    with kdisco.Discoverer(environ={}, resolv_conf=garbled) as d:
        assert d.settings.dns_servers == ()
        assert d.settings.dns_unavailable is not None


def test_a_kubeconfig_that_is_garbage_leaves_the_namespace_default(
    home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_bytes(b"\xff\xfe" + b"[" * 5000)
    s = Settings.load(environ={"KUBECONFIG": str(config)}, serviceaccount_dir=tmp_path / "none")
    assert s.namespace == "default"
