"""``kdisco doctor``'s local checks against the lab: every check passing and failing, as
a pod sees the cluster (in-cluster credentials, a pod's resolv.conf, the lab CoreDNS)
and as a laptop does (the lab's kubeconfig, no cluster DNS).

Service and endpoint addresses are resolved and compared, never connected to: the
probe runs only against 127.0.0.1 ports this module opened (through a static map), and
a guard fails any connect elsewhere. A "stopped CoreDNS" is a UDP port nobody reads.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdisco._doctor import command
from lab import kube
from lab.objects import Cluster
from tests.test_doctor import parser

from .conftest import eventually

ZONE = "cluster.local"


Doctor = Callable[..., tuple[int, dict[str, dict[str, Any]]]]


@pytest.fixture
def doctor(capsys: pytest.CaptureFixture[str]) -> Doctor:
    """Run ``kdisco doctor ARGV --json`` with these settings: (exit code, checks by name)."""

    def run(argv: list[str], settings: dict[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
        code = command.run(parser().parse_args([*argv, "--json"]), settings)
        out = json.loads(capsys.readouterr().out)
        assert out["would_connect"] is (code == 0)
        return code, {c["name"]: c for c in out["checks"]}

    return run


@pytest.fixture(autouse=True)
def connects_only_to_loopback(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connect the doctor's probe makes, refused unless to 127.0.0.1."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append(address)
        if address[0] != "127.0.0.1":
            raise AssertionError(f"the doctor tried to connect to {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return made


def pod(lab_info: Any, creds: Path, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """Settings as a pod in the ``app`` namespace sees them: the kubelet's variables, a
    service-account directory, a ClusterFirst resolv.conf (its nameserver line cannot
    carry the lab CoreDNS's port, so that comes as the DNS server setting)."""
    ns = (creds / "namespace").read_text().strip()
    conf = tmp_path / "pod-resolv.conf"
    conf.write_text(
        f"search {ns}.svc.{ZONE} svc.{ZONE} {ZONE}\nnameserver 127.0.0.1\noptions ndots:5\n"
    )
    return {
        "serviceaccount_dir": str(creds),
        "dns_server": lab_info.dns_server,
        "resolv_conf": str(conf),
        "environ": kube.incluster_env(lab_info),
        **kw,
    }


def laptop(lab_info: Any, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """Settings as a laptop with the lab's kubeconfig sees them: no pod, no cluster DNS."""
    conf = tmp_path / "laptop-resolv.conf"
    conf.write_text("nameserver 192.168.1.1\nsearch home.lan\n")
    return {
        "kubeconfig": str(lab_info.kubeconfig),
        "resolv_conf": str(conf),
        "serviceaccount_dir": str(tmp_path / "no-serviceaccount"),
        "environ": {},
        **kw,
    }


@pytest.fixture
def silent_dns() -> Iterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# -- name and namespace -----------------------------------------------------------------


def test_a_valid_name_in_a_pod_is_healthy_as_far_as_the_local_checks_go(
    lab_info: Any, cluster: Cluster, app: str, creds: Path, tmp_path: Path, doctor: Doctor
) -> None:
    cluster_ip = cluster.read_service(app, "web")["spec"]["clusterIP"]
    _, checks = doctor(["web:http"], pod(lab_info, creds, tmp_path))
    assert checks["name"]["status"] == "passed"
    assert checks["name"]["summary"] == f"Service 'web' in namespace '{app}', port 'http'"
    assert checks["namespace"]["summary"] == (
        f"'{app}', from the pod's service account ({creds / 'namespace'})"
    )
    resolv = checks["resolv.conf"]
    assert resolv["status"] == "passed"
    assert resolv["summary"].endswith(f"search {app}.svc.{ZONE} svc.{ZONE} {ZONE}; ndots:5")
    assert resolv["details"] == [
        f"the DNS server is set by argument ({lab_info.dns_server}), not by this file",
        f"a pod's: cluster domain '{ZONE}' from the search list",
        f"ndots:5: 'web' has 0 dots, so a system resolver tries the search list first "
        f"(web.{app}.svc.{ZONE}, ...); kdisco asks web.{app}.svc.{ZONE}. directly",
    ]
    assert checks["dns server"] == {
        "name": "dns server",
        "status": "passed",
        "summary": f"{lab_info.dns_server} answers",
        "details": ["servers from argument"],
        "hint": None,
        "blocking": True,
    }
    assert checks["dns answer"]["status"] == "passed"
    assert checks["dns answer"]["summary"] == f"web.{app}.svc.{ZONE}. -> ClusterIP {cluster_ip}:80"
    assert checks["discover"]["status"] == "passed"
    assert checks["discover"]["summary"] == f"found by dns: ClusterIP {cluster_ip}:80"
    assert "probe" not in checks


def test_an_invalid_name_is_a_finding(
    lab_info: Any, app: str, creds: Path, tmp_path: Path, doctor: Doctor
) -> None:
    code, checks = doctor(["Web_1:http"], pod(lab_info, creds, tmp_path))
    assert code == 1
    assert checks["name"]["status"] == "failed"
    assert "'Web_1:http': service name 'web_1' must be lower-case" in checks["name"]["summary"]
    for later in ("namespace", "dns answer", "discover", "service"):
        assert checks[later]["status"] == "could not check"
    # What needs no name still ran.
    assert checks["dns server"]["status"] == "passed"


def test_namespace_from_the_name_and_the_flag(
    lab_info: Any, app: str, tmp_path: Path, doctor: Doctor
) -> None:
    settings = laptop(lab_info, tmp_path)
    _, checks = doctor([f"web.{app}"], settings)
    assert checks["namespace"]["summary"] == f"'{app}', from the name"
    _, checks = doctor(["web", "-n", app], settings)
    assert checks["namespace"]["summary"] == f"'{app}', from --namespace"
    assert checks["discover"]["summary"].startswith("found by api: ClusterIP ")
    # Without either, outside a pod, with no namespace in the kubeconfig: "default".
    _, checks = doctor(["web"], settings)
    current = yaml.safe_load(Path(lab_info.kubeconfig).read_text())["current-context"]
    assert checks["namespace"]["summary"] == (
        f"'default', from the kubeconfig context {current!r} ({lab_info.kubeconfig})"
    )
    assert checks["discover"]["status"] == "failed"
    assert checks["discover"]["summary"].startswith("ServiceNotFound: ")


def test_namespace_from_the_kubeconfig_context(
    lab_info: Any, app: str, tmp_path: Path, doctor: Doctor
) -> None:
    config = yaml.safe_load(Path(lab_info.kubeconfig).read_text())
    current = config["current-context"]
    for entry in config["contexts"]:
        if entry["name"] == current:
            entry["context"]["namespace"] = app
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    _, checks = doctor(["web:http"], laptop(lab_info, tmp_path, kubeconfig=str(path)))
    assert (
        checks["namespace"]["summary"]
        == f"'{app}', from the kubeconfig context {current!r} ({path})"
    )
    assert checks["discover"]["summary"].startswith("found by api: ClusterIP ")


# -- resolv.conf and cluster DNS --------------------------------------------------------


def test_from_a_laptop_resolv_conf_is_not_a_pods_and_dns_cannot_be_checked(
    lab_info: Any, cluster: Cluster, app: str, tmp_path: Path, doctor: Doctor
) -> None:
    _, checks = doctor([f"web.{app}:http"], laptop(lab_info, tmp_path))
    assert checks["resolv.conf"]["status"] == "passed"
    assert checks["resolv.conf"]["details"] == [
        "not a pod's: no <ns>.svc.<zone> search domain, so this is outside a cluster"
    ]
    for name in ("dns server", "dns answer"):
        assert checks[name]["status"] == "could not check"
        assert checks[name]["summary"].startswith("not in a cluster")
    # A ClusterIP given to a laptop: kdisco answers, and the doctor warns.
    discover = checks["discover"]
    assert (discover["status"], discover["blocking"]) == ("failed", False)
    assert discover["details"][-1].startswith("WARNING: cluster-internal addresses")
    assert discover["hint"].startswith("these addresses work only from the cluster's network")
    assert checks["discover"]["summary"].startswith("found by api: ")
    absent = laptop(lab_info, tmp_path, resolv_conf=str(tmp_path / "none"))
    _, checks = doctor([f"web.{app}"], absent)
    assert checks["resolv.conf"]["status"] == "passed"
    assert (
        checks["resolv.conf"]["summary"]
        == f"{tmp_path / 'none'}: missing or empty (this machine's)"
    )


def test_a_stopped_coredns_is_a_silent_port(
    lab_info: Any, app: str, creds: Path, tmp_path: Path, silent_dns: str, doctor: Doctor
) -> None:
    settings = pod(lab_info, creds, tmp_path, dns_server=silent_dns)
    _, checks = doctor(["web:http", "--timeout", "0.5"], settings)
    server = checks["dns server"]
    assert (server["status"], server["summary"]) == (
        "failed",
        f"no answer from {silent_dns}",
    )
    assert server["hint"] == (
        f"the cluster DNS server at {silent_dns} does not answer: is CoreDNS running "
        "(kubectl -n kube-system get pods -l k8s-app=kube-dns)? is a NetworkPolicy "
        "blocking egress to port 53?"
    )
    assert checks["dns answer"]["status"] == "failed"
    # The api strategy still answers: DNS failing is then a warning, not the verdict.
    assert checks["discover"]["status"] == "passed"
    assert checks["discover"]["summary"].startswith("found by api: ")
    for name in ("dns server", "dns answer"):
        assert checks[name]["blocking"] is False
        assert checks[name]["details"][-1] == "kdisco still answers (from api), see discover"
    # With DNS the only way, the silence decides.
    code, checks = doctor(
        ["web:http", "--timeout", "0.5"],
        pod(lab_info, creds, tmp_path, dns_server=silent_dns, strategies=["dns"]),
    )
    assert code == 1
    assert checks["dns server"]["blocking"] is True
    assert checks["discover"]["summary"].startswith("DiscoveryTimeout: ")
    assert checks["discover"]["hint"] == (
        "every way to ask was too slow: see the dns server check, and --timeout"
    )


def test_a_typo_is_nxdomain_and_discover_says_not_found(
    lab_info: Any, app: str, creds: Path, tmp_path: Path, doctor: Doctor
) -> None:
    code, checks = doctor(["wbe:http"], pod(lab_info, creds, tmp_path))
    assert code == 1
    answer = checks["dns answer"]
    assert answer["status"] == "failed"
    assert answer["blocking"] is True
    assert answer["summary"].startswith(f"NXDOMAIN for wbe.{app}.svc.{ZONE}. ")
    assert answer["hint"] == (
        f"no Service with that name in namespace {app} (or a headless one with no ready "
        "endpoints): check the name and namespace (see the service check below)"
    )
    discover = checks["discover"]
    assert discover["status"] == "failed"
    assert discover["summary"].startswith("ServiceNotFound: ")
    assert discover["hint"] == f"no Service 'wbe' in namespace '{app}': see the service check"


# -- ExternalName -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def aliases(cluster: Cluster) -> Iterator[str]:
    """A namespace with ExternalName Services whose targets resolve (localhost) or not
    (a name under .invalid, which no DNS answers)."""
    ns = cluster.namespace("doctor")
    cluster.service(ns, "here", external_name="localhost")
    cluster.service(ns, "gone", external_name="db.kdisco-doctor.invalid")
    yield ns
    cluster.delete_namespace(ns)


@pytest.mark.parametrize(
    ("service", "target", "status"),
    [("here", "localhost", "passed"), ("gone", "db.kdisco-doctor.invalid", "failed")],
)
def test_external_name_target(
    lab_info: Any,
    aliases: str,
    tmp_path: Path,
    doctor: Doctor,
    service: str,
    target: str,
    status: str,
) -> None:
    settings = laptop(lab_info, tmp_path, dns_server=lab_info.dns_server)

    def asked() -> tuple[int, dict[str, dict[str, Any]]]:
        code, checks = doctor([f"{service}.{aliases}"], settings)
        assert checks["dns answer"]["status"] == "passed", checks["dns answer"]
        return code, checks

    code, checks = eventually(asked)
    assert checks["dns answer"]["summary"] == (
        f"{service}.{aliases}.svc.{ZONE}. -> ExternalName {target}"
    )
    found = checks["externalname"]
    assert found["status"] == status
    if status == "passed":
        assert found["summary"].startswith(f"target {target} -> ")
    else:
        assert found["summary"].startswith(f"target {target} does not resolve: ")
        assert found["blocking"] is True
        assert code == 1


def test_external_name_to_a_service_is_asked_of_cluster_dns(
    lab_info: Any, cluster: Cluster, app: str, tmp_path: Path, doctor: Doctor
) -> None:
    # "alias" names web.<app>.svc.cluster.local: its target is a Service, asked of CoreDNS.
    cluster_ip = cluster.read_service(app, "web")["spec"]["clusterIP"]
    _, checks = doctor([f"alias.{app}"], laptop(lab_info, tmp_path, dns_server=lab_info.dns_server))
    assert checks["externalname"]["status"] == "passed"
    assert checks["externalname"]["summary"] == (
        f"target web.{app}.svc.{ZONE} (a Service) -> {cluster_ip}"
    )


# -- probe ------------------------------------------------------------------------------


def probe_settings(lab_info: Any, tmp_path: Path, app: str, port: int) -> dict[str, Any]:
    """The lab's kubeconfig (so the cluster checks run), and a static map sending a name
    no lab Service has to a 127.0.0.1 port of this test's."""
    return laptop(
        lab_info,
        tmp_path,
        strategies=["static"],
        static={f"probe-me.{app}": [f"127.0.0.1:{port}"]},
    )


def test_probe_connects_only_when_asked(
    lab_info: Any,
    app: str,
    tmp_path: Path,
    doctor: Doctor,
    connects_only_to_loopback: list[tuple[str, int]],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0)
        port = server.getsockname()[1]
        settings = probe_settings(lab_info, tmp_path, app, port)
        _, checks = doctor([f"probe-me.{app}"], settings)
        assert "probe" not in checks
        assert connects_only_to_loopback == []
        with pytest.raises(BlockingIOError):
            server.accept()
        _, checks = doctor([f"probe-me.{app}", "--probe"], settings)
        assert checks["probe"]["status"] == "passed"
        assert checks["probe"]["summary"] == f"TCP connect to 127.0.0.1:{port} works"
        assert connects_only_to_loopback == [("127.0.0.1", port)]
        conn, _ = server.accept()
        conn.close()


def test_probe_refused(
    lab_info: Any,
    app: str,
    tmp_path: Path,
    doctor: Doctor,
    connects_only_to_loopback: list[tuple[str, int]],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    code, checks = doctor(
        [f"probe-me.{app}", "--probe"], probe_settings(lab_info, tmp_path, app, port)
    )
    assert code == 1
    probe = checks["probe"]
    assert (probe["status"], probe["blocking"]) == ("failed", True)
    assert probe["details"] == [f"127.0.0.1:{port}: refused"]
    assert probe["hint"] == (
        "nothing listens there: is targetPort the port the container listens on?"
    )
    assert connects_only_to_loopback == [("127.0.0.1", port)]
