"""``kdisco resolve``: output, JSON shape and exit codes, against a static file only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kdisco
from kdisco._cli import EXIT_FAILED, EXIT_FOUND, EXIT_USAGE, main

STATIC = """\
[services]
payments = ["192.0.2.10:5432", "[2001:db8::10]:5432"]
"search.shop" = ["192.0.2.30:9200"]

[services.web]
endpoints = ["192.0.2.20"]
ports = { http = 8080, grpc = 9090 }
"""

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def static_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A static file via KDISCO_STATIC, and nothing else tried or read from this machine."""
    path = tmp_path / "static.toml"
    path.write_text(STATIC)
    for var in list(os.environ):
        if var.startswith("KDISCO_") or var in ("KUBECONFIG", "POD_NAMESPACE"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KDISCO_STATIC", str(path))
    monkeypatch.setenv("KDISCO_STRATEGIES", "static")
    monkeypatch.setenv("KDISCO_NAMESPACE", "shop")
    # Pinned so the output does not depend on this machine's resolv.conf.
    monkeypatch.setenv("KDISCO_CLUSTER_DOMAIN", "cluster.local")
    # Errors are wrapped to the terminal: a fixed width, whatever runs the tests.
    monkeypatch.setenv("COLUMNS", "100")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["resolve", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_human_output_names_the_strategy(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "payments")
    assert code == EXIT_FOUND == 0
    assert err == ""
    assert out.splitlines() == [
        "payments.shop (payments.shop.svc.cluster.local.) found by static: Unknown",
        "  192.0.2.10:5432",
        "  [2001:db8::10]:5432",
    ]


def test_human_output_with_named_ports(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "web.dev", "--port", "grpc")
    assert code == 0
    assert out.splitlines() == [
        "web.dev (web.dev.svc.cluster.local.) found by static: Unknown",
        "  ports: http=8080/TCP, grpc=9090/TCP",
        "  192.0.2.20:9090",
    ]


def test_json_shape(static_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "web:http", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert {"source", "kind", "service", "endpoints"} <= set(data)
    assert data["source"] == "static"
    assert data["kind"] == "Unknown"
    assert data["service"] == {
        "name": "web",
        "namespace": "shop",
        "cluster_domain": "cluster.local",
        "fqdn": "web.shop.svc.cluster.local.",
    }
    assert data["endpoints"] == [
        {
            "host": "192.0.2.20",
            "port": 8080,
            "ready": True,
            "serving": True,
            "terminating": False,
            "hostname": None,
            "pod": None,
            "node": None,
            "zone": None,
            "scheme": None,
            "path": None,
        }
    ]
    http = {"name": "http", "port": 8080, "protocol": "TCP", "app_protocol": None}
    assert data["ports"] == [
        {**http, "node_port": None},
        {"name": "grpc", "port": 9090, "protocol": "TCP", "app_protocol": None, "node_port": None},
    ]
    assert data["port"] == {**http, "node_port": None}
    assert data["reach"] is None  # a static map's addresses are what was written
    assert data["attempts"] == []


def test_json_ipv6_host_is_unbracketed(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # JSON carries the address itself; brackets belong to URLs and host:port text only.
    _, out, _ = run(capsys, "payments", "--json")
    assert [(ep["host"], ep["port"]) for ep in json.loads(out)["endpoints"]] == [
        ("192.0.2.10", 5432),
        ("2001:db8::10", 5432),
    ]


def test_namespace_option(static_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "search", "--namespace", "shop", "--json")
    assert code == 0
    assert json.loads(out)["endpoints"][0]["host"] == "192.0.2.30"
    code, _, _ = run(capsys, "search", "-n", "other")
    assert code == EXIT_FAILED


def test_namespace_option_is_the_services_not_the_pods(
    static_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pod in "shop" has PAYMENTS_* variables for shop's payments only. Asking for
    # payments in "billing" must not answer with shop's ClusterIP: --namespace names the
    # Service's namespace, as discover(namespace=) does, not the pod's.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("POD_NAMESPACE", "shop")  # the downward API, as in a real pod
    monkeypatch.setenv("PAYMENTS_SERVICE_HOST", "10.96.0.12")
    monkeypatch.setenv("PAYMENTS_SERVICE_PORT", "5432")
    code, out, _ = run(capsys, "payments", "--strategies", "env", "--json")
    assert code == 0
    assert json.loads(out)["endpoints"][0]["host"] == "10.96.0.12"
    code, out, err = run(capsys, "payments", "--strategies", "env", "--namespace", "billing")
    assert code == EXIT_FAILED, out
    assert "pod's own namespace 'shop', not 'billing'" in err


def test_not_found_exits_1_and_says_what_was_tried(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "orders")
    assert code == EXIT_FAILED == 1
    assert out == ""
    assert err == (
        "kdisco: ServiceNotFound: orders.shop (orders.shop.svc.cluster.local.) not found\n"
        "  tried:\n"
        "    static: not found (no static entry for orders.shop)\n"
    )


def test_not_found_json(static_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "orders", "--json")
    assert code == 1
    assert json.loads(out) == {
        "error": "ServiceNotFound",
        "message": "orders.shop (orders.shop.svc.cluster.local.) not found",
        "attempts": [
            {
                "strategy": "static",
                "outcome": "not found",
                "reason": "no static entry for orders.shop",
                "tries": 1,
            }
        ],
    }
    assert "ServiceNotFound" in err


def test_port_not_found_exits_1(static_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "web", "--port", "admin")
    assert code == 1
    assert err.startswith("kdisco: PortNotFound: ")
    # Wrapped to the terminal (COLUMNS=100 here), the ports on the attempt's lines.
    assert "(ports: http=8080,\n      grpc=9090))" in err
    assert all(len(line) <= 100 for line in err.splitlines())


def test_strategy_not_applicable_exits_1(
    static_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a pod the env strategy does not apply: a failure to find, not bad input.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run(capsys, "payments", "--strategies", "env")
    assert code == 1
    assert err.startswith("kdisco: DiscoveryUnavailable: ")
    assert "env: not applicable" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["web.shop.cluster"], "third label must be 'svc'"),
        (["web:0"], "port 0 is outside 1-65535"),
        (["web", "--port", "70000"], "port 70000 is outside"),
        (["web.a", "--namespace", "b"], "names namespace 'a' but namespace='b'"),
        (["web", "--namespace", "Bad_NS"], "namespace 'bad_ns'"),
        (["web", "--strategies", "dns,carrier-pigeon"], "unknown strategy 'carrier-pigeon'"),
        (["web", "--timeout", "0"], "timeout must be a positive"),
        (["web", "--cluster-domain", "bad_domain"], "cluster_domain"),
        (["web", "--strategies", "dns", "--dns-server", "nope"], "is not an IP address"),
    ],
)
def test_invalid_input_exits_2(
    static_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE == 2
    assert out == ""
    assert err.startswith("kdisco: ")
    assert message in err


def test_bad_static_file_exits_2(static_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    static_env.write_text('[services]\nweb = ["192.0.2.1:99999"]\n')
    code, _, err = run(capsys, "web")
    assert code == 2
    assert "static entry 'web'" in err


@pytest.mark.parametrize("argv", [[], ["resolve"], ["resolve", "web", "--bogus"], ["frobnicate"]])
def test_usage_errors_exit_2(
    static_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: kdisco" in capsys.readouterr().err


def test_python_dash_m(static_env: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "kdisco", "resolve", "web", "--port", "grpc", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["source"], data["endpoints"][0]["port"]) == ("static", 9090)

    proc = subprocess.run(
        [sys.executable, "-m", "kdisco", "resolve", "web.shop.cluster"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "third label" in proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"kdisco {kdisco.__version__}\n"


def test_help_has_examples_and_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "kdisco resolve payments.billing" in out
    assert "kdisco doctor payments.billing --probe" in out
    for flag in ("--kubeconfig", "--context", "--static", "--timeout", "--json", "--version"):
        assert flag in out
    with pytest.raises(SystemExit):
        main(["resolve", "--help"])
    assert "--explain" in capsys.readouterr().out


@pytest.mark.parametrize("before", [True, False], ids=["before-command", "after-command"])
def test_static_kubeconfig_and_context_flags(
    static_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    before: bool,
) -> None:
    # No KDISCO_STATIC: the file comes from --static. The kubeconfig's context "eu"
    # says namespace "billing", so "payments" is looked up as payments.billing.
    monkeypatch.delenv("KDISCO_STATIC")
    monkeypatch.delenv("KDISCO_NAMESPACE")
    static = tmp_path / "flags.toml"
    static.write_text('[services]\n"payments.billing" = ["192.0.2.40:5432"]\n')
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: us\n"
        "clusters:\n- name: c\n  cluster: {server: 'https://192.0.2.1:6443'}\n"
        "users:\n- name: u\n  user: {}\n"
        "contexts:\n"
        "- name: us\n  context: {cluster: c, user: u, namespace: shop}\n"
        "- name: eu\n  context: {cluster: c, user: u, namespace: billing}\n"
    )
    flags = ["--static", str(static), "--kubeconfig", str(config), "--context", "eu"]
    argv = [*flags, "resolve", "payments"] if before else ["resolve", "payments", *flags]
    assert main(argv) == EXIT_FOUND
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("payments.billing (")
    assert "192.0.2.40:5432" in out


def test_explain_prints_each_turn_as_a_table(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "payments", "--explain")
    assert code == EXIT_FOUND
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["STRATEGY", "OUTCOME", "TRIES", "WHY"]
    assert table[1].split()[:2] == ["static", "answered"]
    code, _, err = run(capsys, "orders", "--explain")
    assert code == EXIT_FAILED
    assert "static    not found  1      no static entry for orders.shop" in err


def test_bad_input_with_json_is_json_too(
    static_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "Not_A_Name", "--json")
    assert code == EXIT_USAGE
    assert json.loads(out)["error"] == "InvalidServiceName"
    assert err.startswith("kdisco: InvalidServiceName: ")
