"""``kdisco doctor``'s local checks, report and exit codes, without a cluster.

DNS answers come from tests/_dnsserver.py (an in-process responder on 127.0.0.1), a
"stopped CoreDNS" is a UDP socket that never answers, and the probe connects only to
127.0.0.1 ports this module opened. The lab's half is tests/integration/test_doctor_lab.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdisco._doctor import command, local
from kdisco._doctor.report import Check, Report, Status
from kdisco._k8s.netpol import Peer
from kdisco._settings import ResolvConf, Settings
from tests._dnsserver import DnsResponder, rrset

POD_RESOLV = (
    "nameserver 10.96.0.10\n"
    "search app.svc.cluster.local svc.cluster.local cluster.local\n"
    "options ndots:5\n"
)


def parser() -> argparse.ArgumentParser:
    """The doctor's flags plus the common ones the CLI adds (those used here)."""
    p = argparse.ArgumentParser(prog="kdisco doctor")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float)
    command.add_arguments(p)
    return p


@pytest.fixture
def hermetic(tmp_path: Path) -> dict[str, Any]:
    """Settings arguments that read nothing of this machine: no environment, no
    kubeconfig, no resolv.conf, no service account."""
    return {
        "environ": {"KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        "resolv_conf": str(tmp_path / "no-resolv.conf"),
        "serviceaccount_dir": str(tmp_path / "no-serviceaccount"),
    }


def run(
    argv: list[str], settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    code = command.run(parser().parse_args(argv), settings)
    return code, capsys.readouterr().out


def report_for(argv: list[str], settings: dict[str, Any]) -> Report:
    args = parser().parse_args(argv)
    settings_obj = Settings.load(**settings)
    return command.diagnose(
        command.build_context(args, settings_obj, str(settings.get("resolv_conf", "")))
    )


def check(report: Report, name: str) -> Check:
    (found,) = [c for c in report.checks if c.name == name]
    return found


def names(report: Report) -> list[str]:
    return [c.name for c in report.checks]


@pytest.fixture
def tcp_server() -> Iterator[socket.socket]:
    """A listening 127.0.0.1 socket (the kernel completes connects to it)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port that was bound and closed: connecting to it is refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_dns() -> Iterator[str]:
    """A "stopped CoreDNS": a bound UDP port nobody reads."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def accepted(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


# -- the report -------------------------------------------------------------------------


def sample() -> Report:
    return Report(
        target="web.app.svc.cluster.local:http",
        checks=(
            Check(name="name", status=Status.PASSED, summary="Service 'web'"),
            Check(
                name="dns server",
                status=Status.FAILED,
                summary="no answer",
                details=("x " * 80,),
                hint="is CoreDNS running?",
                blocking=False,
            ),
            Check(name="rbac", status=Status.UNKNOWN, summary="no credentials", hint="log in"),
        ),
    )


def test_text_has_the_target_first_one_block_per_check_and_the_verdict() -> None:
    text = sample().text()
    blocks = text.rstrip("\n").split("\n\n")
    assert blocks[0] == "kdisco doctor: web.app.svc.cluster.local:http"
    assert blocks[1] == "✔ passed  name: Service 'web'"
    assert blocks[2].startswith("! warning  dns server: no answer\n    x x")
    assert blocks[2].endswith("\n    → is CoreDNS running?")
    assert blocks[3] == "? could not check  rbac: no credentials\n    → log in"
    assert blocks[4] == "verdict: would connect as far as checked (could not check: rbac)"
    assert max(len(line) for line in text.splitlines()) <= 100
    assert len(blocks[2].splitlines()) > 3  # the long detail was wrapped, not cut


def test_a_blocking_failure_stops_the_connection_a_warning_does_not() -> None:
    report = sample()
    assert report.would_connect
    failed = Check(name="discover", status=Status.FAILED, summary="ServiceNotFound", hint="h")
    worse = Report(target=report.target, checks=(*report.checks, failed))
    assert not worse.would_connect
    assert worse.verdict == "would not connect: discover failed"
    assert "✘ FAILED  discover: ServiceNotFound" in worse.text()


def test_json_shape() -> None:
    data = json.loads(json.dumps(sample().to_json()))
    assert set(data) == {"target", "would_connect", "verdict", "checks"}
    assert data["would_connect"] is True
    assert data["checks"][1] == {
        "name": "dns server",
        "status": "failed",
        "summary": "no answer",
        "details": ["x " * 80],
        "hint": "is CoreDNS running?",
        "blocking": False,
    }
    assert [c["status"] for c in data["checks"]] == ["passed", "failed", "could not check"]


# -- exit codes and output ------------------------------------------------------------


def test_an_invalid_name_is_a_failed_check_and_exit_1(
    hermetic: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(["Web_1"], hermetic, capsys)
    assert code == 1
    assert out.startswith("kdisco doctor: 'Web_1'\n")
    assert "✘ FAILED  name: 'Web_1': service name 'web_1' must be lower-case" in out
    report = report_for(["Web_1"], hermetic)
    assert check(report, "name").status is Status.FAILED
    for later in ("namespace", "dns answer", "discover"):
        assert check(report, later).status is Status.UNKNOWN


def test_bad_settings_are_exit_2_before_any_check(
    hermetic: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = command.run(parser().parse_args(["web"]), {**hermetic, "dns_server": "dns.local"})
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "dns_server='dns.local': 'dns.local' is not an IP address" in captured.err


def test_bad_from_labels_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["web", "--from-labels", "app"])
    assert info.value.code == 2
    assert command.parse_labels("app=web, tier = db") == {"app": "web", "tier": "db"}


def test_healthy_is_exit_0_and_json_when_asked(
    hermetic: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {**hermetic, "strategies": ["static"], "static": {"web.app": ["192.0.2.5:80"]}}
    code, out = run(["web.app", "--json"], settings, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["target"] == "web.app.svc.cluster.local"
    assert data["would_connect"] is True
    discover = next(c for c in data["checks"] if c["name"] == "discover")
    assert (discover["status"], discover["summary"]) == (
        "passed",
        "found by static: 192.0.2.5:80",
    )
    # Outside a cluster with no DNS server given, DNS cannot be checked: not a failure.
    dns_server = next(c for c in data["checks"] if c["name"] == "dns server")
    assert dns_server["status"] == "could not check"
    assert "--dns-server" in dns_server["hint"]


def test_failing_discover_gives_its_headline_and_exit_1(
    hermetic: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {**hermetic, "strategies": ["static"], "static": {"web.app": ["192.0.2.5:80"]}}
    code, out = run(["wbe.app"], settings, capsys)
    assert code == 1
    found = check(report_for(["wbe.app"], settings), "discover")
    assert found.status is Status.FAILED
    assert found.summary.startswith("ServiceNotFound: ")
    assert found.details == ("static: not found (no static entry for wbe.app)",)
    assert found.hint == "no Service 'wbe' in namespace 'app': see the service check"
    assert "✘ FAILED  discover: ServiceNotFound" in out


def test_a_check_that_breaks_is_reported_not_raised(
    hermetic: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: object) -> Iterator[Check]:
        yield from ()
        raise RuntimeError("boom")

    monkeypatch.setattr(local, "after", broken)
    report = report_for(["web"], {**hermetic, "strategies": ["static"], "static": {}})
    last = report.checks[-1]
    assert (last.status, last.summary) == (
        Status.UNKNOWN,
        "the doctor failed here: RuntimeError: boom",
    )


# -- name and namespace -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (["web.shop"], "the name"),
        (["web", "-n", "shop"], "--namespace"),
        (["web", "--namespace", "shop"], "--namespace"),
    ],
)
def test_namespace_from_the_name_or_the_flag(
    hermetic: dict[str, Any], argv: list[str], where: str
) -> None:
    found = check(report_for(argv, hermetic), "namespace")
    assert (found.status, found.summary) == (Status.PASSED, f"'shop', from {where}")


def test_namespace_from_the_pod(hermetic: dict[str, Any], tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "namespace").write_text("shop\n")
    (sa / "token").write_text("t")
    settings = {**hermetic, "serviceaccount_dir": str(sa)}
    found = check(report_for(["web"], settings), "namespace")
    assert found.summary == f"'shop', from the pod's service account ({sa / 'namespace'})"
    downward = {**settings, "environ": {**hermetic["environ"], "POD_NAMESPACE": "billing"}}
    found = check(report_for(["web.shop"], downward), "namespace")
    assert found.summary == "'shop', from the name"
    assert found.details == (
        "this pod runs in 'billing': service environment variables cover only that "
        "namespace, so the env strategy cannot answer for this one",
    )
    found = check(report_for(["web"], downward), "namespace")
    assert found.summary == "'billing', from the pod's POD_NAMESPACE (downward API)"


def test_namespace_from_kubeconfig_and_default(hermetic: dict[str, Any], tmp_path: Path) -> None:
    found = check(report_for(["web"], hermetic), "namespace")
    assert found.summary.startswith("'default', from the default (no namespace given")
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "contexts:\n- name: lab\n  context: {cluster: lab, user: lab, namespace: shop}\n"
    )
    settings = {**hermetic, "environ": {"KUBECONFIG": str(config)}}
    found = check(report_for(["web"], settings), "namespace")
    assert found.summary == f"'shop', from the kubeconfig context 'lab' ({config})"


def test_name_parsed_with_port(hermetic: dict[str, Any]) -> None:
    found = check(report_for(["web.shop", "-p", "http"], hermetic), "name")
    assert found.summary == "Service 'web' in namespace 'shop', port 'http'"
    assert found.details == ("fully qualified: web.shop.svc.cluster.local.",)
    two = check(report_for(["web.shop:80", "-p", "http"], hermetic), "name")
    assert two.status is Status.FAILED
    assert "two ports given" in two.summary


# -- resolv.conf ------------------------------------------------------------------------


def test_pod_resolv_conf_with_search_and_ndots(hermetic: dict[str, Any], tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(POD_RESOLV)
    found = check(report_for(["web.app"], {**hermetic, "resolv_conf": str(conf)}), "resolv.conf")
    assert found.status is Status.PASSED
    assert found.summary == (
        f"{conf}: nameserver 10.96.0.10; search app.svc.cluster.local svc.cluster.local "
        "cluster.local; ndots:5"
    )
    assert found.details == (
        "a pod's: cluster domain 'cluster.local' from the search list",
        "ndots:5: 'web.app' has 1 dot, so a system resolver tries the search list first "
        "(web.app.app.svc.cluster.local, ...); kdisco asks web.app.svc.cluster.local. directly",
    )
    fqdn = check(
        report_for(["web.app.svc.cluster.local."], {**hermetic, "resolv_conf": str(conf)}),
        "resolv.conf",
    )
    assert not any("ndots" in d for d in fqdn.details)


def test_laptop_resolv_conf_and_none(hermetic: dict[str, Any], tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.168.1.1\nsearch home.lan\n")
    found = check(report_for(["web"], {**hermetic, "resolv_conf": str(conf)}), "resolv.conf")
    assert (found.status, found.summary) == (
        Status.PASSED,
        f"{conf}: nameserver 192.168.1.1; search home.lan; ndots:1",
    )
    assert found.details == (
        "not a pod's: no <ns>.svc.<zone> search domain, so this is outside a cluster",
    )
    absent = check(report_for(["web"], hermetic), "resolv.conf")
    assert (absent.status, absent.summary) == (
        Status.PASSED,
        f"{hermetic['resolv_conf']}: missing or empty (this machine's)",
    )


def test_in_a_pod_a_resolv_conf_without_cluster_search_is_a_warning(
    hermetic: dict[str, Any], tmp_path: Path
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 8.8.8.8\n")
    pod = {
        **hermetic,
        "environ": {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
        "serviceaccount_dir": str(sa),
        "resolv_conf": str(conf),
        "strategies": ["static"],
        "static": {"web": ["192.0.2.5:80"]},
    }
    found = check(report_for(["web"], pod), "resolv.conf")
    assert (found.status, found.blocking) == (Status.FAILED, False)
    assert found.hint is not None
    assert "dnsPolicy is not ClusterFirst" in found.hint
    assert report_for(["web"], pod).would_connect
    missing = check(report_for(["web"], {**pod, "resolv_conf": str(tmp_path / "x")}), "resolv.conf")
    assert (missing.status, missing.blocking) == (Status.FAILED, False)


@pytest.mark.parametrize(
    ("text", "ndots"),
    [
        ("nameserver 10.0.0.1\n", 1),
        ("options ndots:5\n", 5),
        ("options timeout:1 ndots:2 attempts:3\n", 2),
        ("options ndots:5\noptions ndots:3 # later wins\n", 3),
        ("options ndots:99\n", 15),
        ("options ndots:x\n", 1),
        ("# options ndots:4\n", 1),
    ],
)
def test_read_ndots(tmp_path: Path, text: str, ndots: int) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(text)
    assert ResolvConf.read(conf).ndots == ndots
    assert ResolvConf.read(tmp_path / "absent").ndots == 1


def test_a_dns_server_given_overrides_resolv_conf(hermetic: dict[str, Any], tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(POD_RESOLV)
    settings = {
        **hermetic,
        "resolv_conf": str(conf),
        "dns_server": "127.0.0.1:1",
        "strategies": ["static"],
        "static": {},
    }
    found = check(report_for(["web", "--timeout", "0.2"], settings), "resolv.conf")
    assert found.details[0] == ("the DNS server is set by argument (127.0.0.1:1), not by this file")


# -- DNS --------------------------------------------------------------------------------


@pytest.fixture
def coredns() -> Iterator[DnsResponder]:
    with DnsResponder() as server:
        server.answer(
            "kubernetes.default.svc.cluster.local.",
            "A",
            rrset("kubernetes.default.svc.cluster.local.", "A", "10.96.0.1"),
        )
        server.answer(
            "web.app.svc.cluster.local.", "A", rrset("web.app.svc.cluster.local.", "A", "10.96.0.5")
        )
        yield server


def dns_settings(hermetic: dict[str, Any], server: str, **kw: Any) -> dict[str, Any]:
    return {**hermetic, "dns_server": server, "strategies": ["dns"], **kw}


def test_dns_server_answers_and_the_name_is_found(
    hermetic: dict[str, Any], coredns: DnsResponder, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dns_settings(hermetic, f"127.0.0.1:{coredns.port}")
    report = report_for(["web.app"], settings)
    server = check(report, "dns server")
    assert (server.status, server.summary) == (Status.PASSED, f"127.0.0.1:{coredns.port} answers")
    answer = check(report, "dns answer")
    assert (answer.status, answer.summary) == (
        Status.PASSED,
        "web.app.svc.cluster.local. -> 10.96.0.5",
    )
    # Outside a cluster (no KUBERNETES_SERVICE_HOST), a ClusterIP is a warning.
    discover = check(report, "discover")
    assert (discover.status, discover.blocking) == (Status.FAILED, False)
    assert discover.summary == "found by dns: 10.96.0.5"
    assert discover.details[-1].startswith("WARNING: cluster-internal addresses")
    assert discover.hint == (
        "these addresses work only from the cluster's network: run this in a pod, or set "
        "KDISCO_REACH=external to look for a way in from outside"
    )
    assert "kubernetes.default.svc.cluster.local." in coredns.asked("A")
    code, _ = run(["web.app"], settings, capsys)
    assert code == 0


def test_nxdomain_for_a_typo(hermetic: dict[str, Any], coredns: DnsResponder) -> None:
    report = report_for(["wbe.app"], dns_settings(hermetic, f"127.0.0.1:{coredns.port}"))
    answer = check(report, "dns answer")
    assert answer.status is Status.FAILED
    assert answer.blocking
    assert answer.summary.startswith("NXDOMAIN for wbe.app.svc.cluster.local.")
    assert answer.hint == (
        "no Service with that name in namespace app (or a headless one with no ready "
        "endpoints): check the name and namespace (see the service check below)"
    )
    assert check(report, "dns server").status is Status.PASSED
    assert not report.would_connect


def test_a_silent_dns_server(hermetic: dict[str, Any], silent_dns: str) -> None:
    report = report_for(["web.app", "--timeout", "0.3"], dns_settings(hermetic, silent_dns))
    server = check(report, "dns server")
    assert server.status is Status.FAILED
    assert server.summary == f"no answer from {silent_dns}"
    assert server.hint == (
        f"the cluster DNS server at {silent_dns} does not answer: is CoreDNS running "
        "(kubectl -n kube-system get pods -l k8s-app=kube-dns)? is a NetworkPolicy "
        "blocking egress to port 53?"
    )
    assert check(report, "dns answer").status is Status.FAILED
    assert not report.would_connect


def test_dns_failures_are_warnings_when_kdisco_answers_another_way(
    hermetic: dict[str, Any], silent_dns: str
) -> None:
    settings = dns_settings(
        hermetic, silent_dns, strategies=["dns", "static"], static={"web.app": ["192.0.2.5:80"]}
    )
    report = report_for(["web.app", "--timeout", "0.3"], settings)
    for name in ("dns server", "dns answer"):
        found = check(report, name)
        assert (found.status, found.blocking) == (Status.FAILED, False)
        assert found.details[-1] == "kdisco still answers (from static), see discover"
    assert report.would_connect


def test_a_port_the_service_does_not_declare(
    hermetic: dict[str, Any], coredns: DnsResponder
) -> None:
    fqdn = "web.app.svc.cluster.local."
    coredns.answer(fqdn, "SRV", rrset(fqdn, "SRV", f"0 100 80 {fqdn}"))
    report = report_for(["web.app:8080"], dns_settings(hermetic, f"127.0.0.1:{coredns.port}"))
    answer = check(report, "dns answer")
    assert answer.status is Status.FAILED
    assert answer.summary == f"{fqdn} declares no port 8080 (SRV lists 80)"
    assert answer.hint is not None
    assert "kubectl -n app get service web" in answer.hint


def test_no_dns_outside_a_cluster_is_unknown(hermetic: dict[str, Any]) -> None:
    report = report_for(["web.app"], {**hermetic, "strategies": ["static"], "static": {}})
    for name in ("dns server", "dns answer"):
        found = check(report, name)
        assert found.status is Status.UNKNOWN
        assert found.summary.startswith("not in a cluster")


# -- ExternalName -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"), [("localhost", Status.PASSED), ("db.kdisco-test.invalid", Status.FAILED)]
)
def test_external_name_target(
    hermetic: dict[str, Any], coredns: DnsResponder, target: str, status: Status
) -> None:
    fqdn = "ext.app.svc.cluster.local."
    coredns.answer(fqdn, "A", rrset(fqdn, "CNAME", f"{target}."))
    report = report_for(["ext.app"], dns_settings(hermetic, f"127.0.0.1:{coredns.port}"))
    assert check(report, "dns answer").summary == f"{fqdn} -> ExternalName {target}"
    found = check(report, "externalname")
    assert found.status is status
    if status is Status.PASSED:
        assert found.summary.startswith(f"target {target} -> ")
        assert "127.0.0.1" in found.summary or "::1" in found.summary
    else:
        assert found.summary.startswith(f"target {target} does not resolve: ")
        assert found.hint is not None
        assert "spec.externalName" in found.hint
        assert not report.would_connect


def test_no_externalname_check_for_other_services(
    hermetic: dict[str, Any], coredns: DnsResponder
) -> None:
    report = report_for(["web.app"], dns_settings(hermetic, f"127.0.0.1:{coredns.port}"))
    assert "externalname" not in names(report)


# -- probe ------------------------------------------------------------------------------


def static_to(port: int, hermetic: dict[str, Any]) -> dict[str, Any]:
    return {**hermetic, "strategies": ["static"], "static": {"web.app": [f"127.0.0.1:{port}"]}}


def test_probe_connects_only_when_asked(
    hermetic: dict[str, Any], tcp_server: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = tcp_server.getsockname()[1]
    settings = static_to(port, hermetic)
    code, out = run(["web.app"], settings, capsys)
    assert code == 0
    assert "  probe: " not in out
    assert accepted(tcp_server) == 0
    code, out = run(["web.app", "--probe"], settings, capsys)
    assert code == 0
    assert f"✔ passed  probe: TCP connect to 127.0.0.1:{port} works" in out
    assert accepted(tcp_server) == 1


def test_probe_refused(hermetic: dict[str, Any], closed_port: int) -> None:
    report = report_for(["web.app", "--probe"], static_to(closed_port, hermetic))
    found = check(report, "probe")
    assert (found.status, found.blocking) == (Status.FAILED, True)
    assert found.details == (f"127.0.0.1:{closed_port}: refused",)
    assert found.hint == "nothing listens there: is targetPort the port the container listens on?"
    assert not report.would_connect


def test_probe_without_a_port_or_an_answer(hermetic: dict[str, Any]) -> None:
    settings = {**hermetic, "strategies": ["static"], "static": {"web.app": ["127.0.0.1"]}}
    found = check(report_for(["web.app", "--probe"], settings), "probe")
    assert (found.status, found.summary) == (
        Status.UNKNOWN,
        "the answer has no port: give one (NAME:PORT or --port)",
    )
    found = check(report_for(["nope.app", "--probe"], settings), "probe")
    assert found.status is Status.UNKNOWN
    assert found.summary.startswith("nothing to connect to")


def test_probe_prefers_the_cluster_checks_targets(
    hermetic: dict[str, Any], tcp_server: socket.socket, closed_port: int
) -> None:
    args = parser().parse_args(["web.app", "--probe"])
    settings = Settings.load(**static_to(closed_port, hermetic))
    ctx = command.build_context(args, settings)
    ctx.findings["probe_targets"] = [("127.0.0.1", tcp_server.getsockname()[1])]
    assert local.probe_check(ctx).status is Status.PASSED


def test_step_timeout_and_caller_from_flags(hermetic: dict[str, Any]) -> None:
    settings = Settings.load(**hermetic)
    ctx = command.build_context(parser().parse_args(["web", "--timeout", "0.5"]), settings)
    assert (ctx.step_timeout, ctx.caller, ctx.probe) == (0.5, None, False)
    default = command.build_context(parser().parse_args(["web"]), settings)
    assert default.step_timeout == 2.0
    assert os.fspath(default.resolv_conf) == "/etc/resolv.conf"


def test_caller_from_flags(hermetic: dict[str, Any]) -> None:
    settings = Settings.load(**hermetic)

    def caller(*flags: str) -> Peer | None:
        return command.build_context(parser().parse_args(["web.shop", *flags]), settings).caller

    assert caller("--from-namespace", "front") == Peer(namespace="front")
    assert caller("--from-namespace", "front", "--from-labels", "app=ui") == Peer(
        namespace="front", pod_labels={"app": "ui"}
    )
    # Labels alone: a Pod outside any pod here, so in the target's namespace.
    assert caller("--from-labels", "app=ui") == Peer(namespace="shop", pod_labels={"app": "ui"})
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["web", "--from-namespace", "Front_End"])
    assert info.value.code == 2


def test_namespace_from_kdisco_namespace(hermetic: dict[str, Any]) -> None:
    settings = {**hermetic, "environ": {**hermetic["environ"], "KDISCO_NAMESPACE": "shop"}}
    assert check(report_for(["web"], settings), "namespace").summary == (
        "'shop', from KDISCO_NAMESPACE"
    )
