"""Every discovery path against the real servers: CoreDNS and kube-apiserver.

Addresses are TEST-NET and the lab's service range: resolved and compared, never
connected to. The only connections are to the lab's own 127.0.0.1 ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import kdisco
from kdisco import Outcome, ServiceKind
from lab.objects import Cluster, kubelet_env, port

from .conftest import BIG_ENDPOINTS, DB_NOT_READY, DB_READY, MOVING, big_address, eventually


def api_port(lab_info: Any) -> str:
    return str(urlsplit(lab_info.apiserver_url).port)


def dns(lab_info: Any, ns: str, **kw: Any) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=["dns"],
        dns_server=f"{lab_info.dns_host}:{lab_info.dns_port}",
        cluster_domain=lab_info.cluster_domain,
        namespace=ns,
        environ={},
        **kw,
    )


def api(lab_info: Any, ns: str, **kw: Any) -> kdisco.Discoverer:
    """The api strategy with the lab's kubeconfig, answering as it does in a pod
    (``reach="cluster"``: test_reach_lab.py has the view from outside)."""
    kw.setdefault("reach", "cluster")
    return kdisco.Discoverer(
        strategies=["api"], kubeconfig=str(lab_info.kubeconfig), namespace=ns, environ={}, **kw
    )


def pod_environ(lab_info: Any, cluster: Cluster, ns: str) -> dict[str, str]:
    """What a pod in ``ns`` would see: kubelet's variables for the namespace's Services."""
    env = kubelet_env(cluster.services(ns))
    env.update(
        KUBERNETES_SERVICE_HOST="127.0.0.1",
        KUBERNETES_SERVICE_PORT=api_port(lab_info),
        POD_NAMESPACE=ns,  # the downward API, as the pod spec would set it
    )
    return env


def env_discoverer(lab_info: Any, cluster: Cluster, ns: str) -> kdisco.Discoverer:
    return kdisco.Discoverer(
        strategies=["env"], namespace=ns, environ=pod_environ(lab_info, cluster, ns)
    )


def endpoints(res: kdisco.Resolution) -> set[tuple[str, int | None]]:
    return {(ep.host, ep.port) for ep in res}


# -- dns against CoreDNS ------------------------------------------------------------


class TestDns:
    def test_cluster_ip_a_record_is_the_cluster_ip(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        cluster_ip = cluster.read_service(app, "single")["spec"]["clusterIP"]
        with dns(lab_info, app) as d:
            res = eventually(lambda: d.discover("single"))
        assert endpoints(res) == {(cluster_ip, None)}
        assert res.source == "dns"

    def test_named_port_from_srv(self, lab_info: Any, cluster: Cluster, app: str) -> None:
        cluster_ip = cluster.read_service(app, "web")["spec"]["clusterIP"]
        with dns(lab_info, app) as d:
            http = eventually(lambda: d.discover("web", port="http"))
            metrics = d.discover(f"web.{app}.svc.cluster.local.:metrics")
        assert endpoints(http) == {(cluster_ip, 80)}
        assert http.kind is ServiceKind.CLUSTER_IP
        assert http.port is not None
        assert (http.port.name, http.port.port) == ("http", 80)
        assert endpoints(metrics) == {(cluster_ip, 9090)}

    def test_a_port_number_the_service_does_not_declare(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        # web declares 80 (targetPort 8080) and 9090. CoreDNS's bare-name SRV lists
        # the declared ports, so DNS tells 8080 is not one, as the api strategy does.
        with dns(lab_info, app) as d:
            eventually(lambda: d.discover("web", port="http"))
            with pytest.raises(kdisco.PortNotFound) as info:
                d.discover("web", port=8080)
            assert "80, 9090" in str(info.value)
            assert {ep.port for ep in d.discover("web", port=9090)} == {9090}

    def test_dual_stack_a_and_aaaa(self, lab_info: Any, cluster: Cluster, app: str) -> None:
        ips = cluster.read_service(app, "dual")["spec"]["clusterIPs"]
        assert len(ips) == 2
        assert ":" in ips[1]
        with dns(lab_info, app) as d:
            plain = eventually(lambda: _check_len(d.discover("dual"), 2))
            http = d.discover("dual", port="http")
        assert endpoints(plain) == {(ips[0], None), (ips[1], None)}
        assert endpoints(http) == {(ips[0], 80), (ips[1], 80)}
        assert http.kind is ServiceKind.CLUSTER_IP

    def test_udp_named_port(self, lab_info: Any, cluster: Cluster, app: str) -> None:
        cluster_ip = cluster.read_service(app, "dns-like")["spec"]["clusterIP"]
        with dns(lab_info, app) as d:
            res = eventually(lambda: d.discover("dns-like", port="dns"))
        assert endpoints(res) == {(cluster_ip, 53)}
        assert res.port is not None
        assert res.port.protocol == "UDP"

    def test_unknown_port_name(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d:
            eventually(lambda: d.discover("web"))
            with pytest.raises(kdisco.PortNotFound) as info:
                d.discover("web", port="grpc")
        assert info.value.attempts[0].outcome is Outcome.NO_SUCH_PORT

    def test_headless_ready_endpoints_with_hostnames(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d:
            res = eventually(lambda: _check_len(d.discover("db", port="postgres"), len(DB_READY)))
        assert res.kind is ServiceKind.HEADLESS
        assert {(ep.host, ep.hostname) for ep in res} == DB_READY
        assert {ep.port for ep in res} == {5433}  # the target port, from SRV

    def test_headless_addresses_without_port(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d:
            res = eventually(lambda: _check_len(d.discover("db"), len(DB_READY)))
        assert {ep.host for ep in res} == {host for host, _ in DB_READY}
        assert res.kind is ServiceKind.HEADLESS

    def test_headless_nothing_ready_is_nxdomain(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d:
            eventually(lambda: d.discover("db"))  # CoreDNS has synced this namespace
            with pytest.raises(kdisco.ServiceNotFound) as info:
                d.discover("idle")
        assert "NXDOMAIN" in info.value.attempts[0].reason
        assert info.value.attempts[0].tries == 1  # a definitive answer: never retried

    def test_external_name_is_a_cname(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d:
            res = eventually(lambda: d.discover("outside"))
        assert res.kind is ServiceKind.EXTERNAL_NAME
        assert res.external_name == "db.example.test"
        assert [ep.host for ep in res] == ["db.example.test"]

    def test_external_name_into_the_cluster_is_followed(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        cluster_ip = cluster.read_service(app, "web")["spec"]["clusterIP"]
        with dns(lab_info, app) as d:
            res = eventually(lambda: d.discover("alias", port="http"))
        assert endpoints(res) == {(cluster_ip, 80)}
        assert res.service.name == "web"
        assert [v.name for v in res.via] == ["alias"]

    def test_large_headless_answer_over_tcp(self, lab_info: Any, app: str) -> None:
        # 120 A records cannot fit a 512-byte UDP answer: CoreDNS truncates, dnspython
        # asks again over TCP, and every endpoint comes back.
        with dns(lab_info, app) as d:
            res = eventually(lambda: _check_len(d.discover("big"), BIG_ENDPOINTS))
        assert {ep.host for ep in res} == {big_address(i) for i in range(1, BIG_ENDPOINTS + 1)}

    def test_unknown_service(self, lab_info: Any, app: str) -> None:
        with dns(lab_info, app) as d, pytest.raises(kdisco.ServiceNotFound):
            d.discover("no-such-service")


def _check_len(res: kdisco.Resolution, n: int) -> kdisco.Resolution:
    assert len(res) == n, [ep.address for ep in res]
    return res


# -- env from kubelet's rules -----------------------------------------------------------


class TestEnv:
    @pytest.mark.parametrize("name", ["web", "single", "dns-like", "np", "lb"])
    def test_same_host_and_ports_as_the_api(
        self, lab_info: Any, cluster: Cluster, app: str, name: str
    ) -> None:
        with api(lab_info, app) as a, env_discoverer(lab_info, cluster, app) as e:
            from_api = a.discover(name)
            from_env = e.discover(name)
        assert endpoints(from_env) == endpoints(from_api)
        assert {(p.name, p.port, p.protocol) for p in from_env.ports} == {
            (p.name, p.port, p.protocol) for p in from_api.ports
        }
        assert from_env.snapshot is True

    def test_headless_and_external_name_get_no_variables(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        with env_discoverer(lab_info, cluster, app) as e:
            for name in ("db", "outside"):
                with pytest.raises(kdisco.ServiceNotFound):
                    e.discover(name)


# -- api: kubeconfig and in-cluster ------------------------------------------------------


class TestApi:
    def test_cluster_ip_kinds(self, lab_info: Any, cluster: Cluster, app: str) -> None:
        with api(lab_info, app) as a:
            assert a.discover("web").kind is ServiceKind.CLUSTER_IP
            assert a.discover("np").kind is ServiceKind.NODE_PORT
            lb = a.discover("lb")
        assert lb.kind is ServiceKind.LOAD_BALANCER
        assert endpoints(lb) == {(cluster.read_service(app, "lb")["spec"]["clusterIP"], 443)}

    def test_first_declared_port_by_default(self, lab_info: Any, app: str) -> None:
        with api(lab_info, app) as a:
            res = a.discover("web")
        assert res.port is not None
        assert res.port.name == "http"
        assert res.first().port == 80
        assert res.url() == f"http://{res.first().host}:80"  # appProtocol http

    def test_headless_merges_families(self, lab_info: Any, app: str) -> None:
        # The controller's IPv4 and IPv6 slices: db-0 is in both, once per address.
        with api(lab_info, app) as a:
            res = a.discover("db", port="postgres")
        assert {(ep.host, ep.hostname) for ep in res} == DB_READY
        by_host = {ep.host: ep for ep in res}
        for host in ("192.0.2.11", "2001:db8::11"):
            db0 = by_host[host]
            # The zone is the Node's label; the port the Pod's named container port.
            assert (db0.pod, db0.node, db0.zone, db0.port) == ("db-0", "node-1", "zone-a", 5433)
        v6 = by_host["2001:db8::13"]
        assert (v6.pod, v6.node, v6.zone) == ("db-2", "node-3", "zone-c")

    def test_headless_merges_hand_written_slices(self, lab_info: Any, app: str) -> None:
        # "moving" has hand-written slices: shapes the controller does not make.
        with api(lab_info, app) as a:
            res = a.discover("moving", port="postgres")
        assert {(ep.host, ep.hostname) for ep in res} == MOVING
        assert len(res) == 3  # 192.0.2.82 sits in two slices, listed once
        by_host = {ep.host: ep for ep in res}
        m0 = by_host["192.0.2.81"]
        assert (m0.pod, m0.node, m0.zone, m0.port) == ("m-0", "node-1", "zone-a", 5433)
        v6 = by_host["2001:db8::83"]
        assert (v6.pod, v6.node) == (None, "node-3")  # no targetRef

    def test_include_not_ready(self, lab_info: Any, app: str) -> None:
        with api(lab_info, app) as a:
            res = a.discover("db", include_not_ready=True)
        by_host = {ep.host: ep for ep in res}
        assert set(by_host) == {h for h, _ in DB_READY} | {DB_NOT_READY[0]}
        nr = by_host[DB_NOT_READY[0]]
        assert (nr.ready, nr.serving, nr.terminating) == (False, False, True)
        assert res.first().ready  # first() prefers a ready endpoint

    def test_nothing_ready(self, lab_info: Any, app: str) -> None:
        with api(lab_info, app) as a:
            with pytest.raises(kdisco.NoReadyEndpoints) as info:
                a.discover("idle")
            assert [ep.host for ep in a.discover("idle", include_not_ready=True)] == ["192.0.2.21"]
        assert "none ready" in str(info.value)

    def test_external_name_followed_into_the_cluster(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        with api(lab_info, app) as a:
            res = a.discover("alias")
            named = a.discover("alias", port="http")  # the alias declares no ports itself
            outside = a.discover("outside", port="pg")
        assert res.service.name == "web"
        assert [v.name for v in res.via] == ["alias"]
        assert endpoints(res) == {(cluster.read_service(app, "web")["spec"]["clusterIP"], 80)}
        assert (outside.external_name, outside.first().port) == ("db.example.test", 5432)
        assert endpoints(named) == endpoints(res)

    def test_external_name_loop_is_detected(self, lab_info: Any, app: str) -> None:
        with api(lab_info, app) as a, pytest.raises(kdisco.DiscoveryUnavailable) as info:
            a.discover("loop-a")
        assert "loop" in str(info.value)

    def test_unknown_service_is_404(self, lab_info: Any, app: str) -> None:
        with api(lab_info, app) as a, pytest.raises(kdisco.ServiceNotFound):
            a.discover("no-such-service")


class TestInCluster:
    def in_cluster(self, lab_info: Any, creds: Path) -> kdisco.Discoverer:
        environ = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port(lab_info),
            "KDISCO_SERVICEACCOUNT_DIR": str(creds),
        }
        return kdisco.Discoverer(strategies=["api"], environ=environ)

    def test_namespace_from_the_credentials_and_allowed_reads(
        self, lab_info: Any, creds: Path, app: str
    ) -> None:
        with self.in_cluster(lab_info, creds) as d:
            assert d.namespace == app
            res = d.discover("db", port="postgres")
        assert {(ep.host, ep.hostname) for ep in res} == DB_READY

    def test_other_namespace_is_access_denied_naming_the_permission(
        self, lab_info: Any, cluster: Cluster, creds: Path
    ) -> None:
        other = cluster.namespace("other")
        cluster.service(other, "web", ports=[port(80, "http")])
        with self.in_cluster(lab_info, creds) as d, pytest.raises(kdisco.AccessDenied) as info:
            d.discover(f"web.{other}")
        err = info.value
        assert (err.verb, err.resource, err.namespace) == ("get", "services", other)
        assert "forbidden" in str(err)
        assert other in str(err)

    @pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
    def test_in_a_pod_nothing_of_the_kubernetes_package_is_imported(
        self, lab_info: Any, creds: Path, app: str, tmp_path: Path, watch: bool
    ) -> None:
        # In-cluster credentials are a token file, a CA and two variables: urllib3
        # does the rest (issue 13). A fresh interpreter proves what a pod would load.
        script = (
            "import json, sys, kdisco\n"
            f"d = kdisco.Discoverer(strategies=['api'], api_watch={watch})\n"
            "res = d.discover('db', port='postgres')\n"
            "again = d.discover('web')\n"
            "d.close()\n"
            "print(json.dumps({'hosts': sorted(ep.host for ep in res),"
            " 'modules': sorted(sys.modules)}))\n"
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),  # no ~/.kube/config to fall back on
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": api_port(lab_info),
            "KDISCO_SERVICEACCOUNT_DIR": str(creds),
        }
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        found = json.loads(out.splitlines()[-1])
        assert found["hosts"] == sorted(host for host, _ in DB_READY)
        assert [m for m in found["modules"] if m.split(".")[0] == "kubernetes"] == []
        assert "urllib3" in found["modules"]

    def test_rewritten_token_file_is_picked_up(
        self, lab_info: Any, cluster: Cluster, creds: Path, app: str
    ) -> None:
        with self.in_cluster(lab_info, creds) as d:
            d.discover("web")
            (creds / "token").write_text("not-a-valid-token")
            with pytest.raises(kdisco.AccessDenied) as info:
                d.discover("web")
            assert info.value.status == 401
            (creds / "token").write_text(cluster.token(app, "kdisco"))
            assert d.discover("web").source == "api"


# -- the chain ------------------------------------------------------------------------


class TestChain:
    def full(self, lab_info: Any, cluster: Cluster, ns: str, **kw: Any) -> kdisco.Discoverer:
        environ = pod_environ(lab_info, cluster, ns)
        environ["KUBECONFIG"] = str(lab_info.kubeconfig)
        return kdisco.Discoverer(
            dns_server=f"{lab_info.dns_host}:{lab_info.dns_port}",
            cluster_domain=lab_info.cluster_domain,
            namespace=ns,
            environ=environ,
            **kw,
        )

    def test_dns_answers_first(self, lab_info: Any, cluster: Cluster, app: str) -> None:
        with self.full(lab_info, cluster, app) as d:
            res = eventually(lambda: d.discover("web", port="http"))
        assert res.source == "dns"
        assert res.attempts == ()

    def test_headless_nothing_ready_falls_through_to_the_api(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        with self.full(lab_info, cluster, app) as d:
            eventually(lambda: d.discover("db"))
            with pytest.raises(kdisco.NoReadyEndpoints) as info:
                d.discover("idle")
        assert [a.strategy for a in info.value.attempts] == ["dns", "env", "api"]

    def test_coredns_stopped_env_and_api_still_answer_within_the_deadline(
        self, lab_info: Any, cluster: Cluster, app: str
    ) -> None:
        lab_info.stop_dns()
        try:
            with self.full(lab_info, cluster, app, timeout=3.0) as d:
                res = d.discover("web", port="http")
                headless = d.discover("db", port="postgres")
        finally:
            lab_info.start_dns()
        assert res.source == "env"
        assert headless.source == "api"
        dns_attempt = headless.attempts[0]
        assert dns_attempt.strategy == "dns"
        assert dns_attempt.outcome in (Outcome.FAILED, Outcome.TIMED_OUT)
        assert "refused" in dns_attempt.reason.lower() or "timed out" in dns_attempt.reason


# -- agreement ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "port_name"),
    [
        ("web", "http"),
        ("web", "metrics"),
        ("dns-like", "dns"),
        ("np", "https"),
        ("lb", "https"),
        ("dual", "http"),
        ("db", "postgres"),
        ("moving", "postgres"),
        ("big", "http"),
    ],
)
def test_strategies_agree(
    lab_info: Any, cluster: Cluster, app: str, name: str, port_name: str
) -> None:
    with dns(lab_info, app) as d, api(lab_info, app) as a:
        from_api = a.discover(name, port=port_name)
        from_dns = eventually(lambda: _check_len(d.discover(name, port=port_name), len(from_api)))
        assert endpoints(from_dns) == endpoints(from_api)
        api_hostnames = {(ep.host, ep.hostname) for ep in from_api if ep.hostname}
        assert api_hostnames <= {(ep.host, ep.hostname) for ep in from_dns}
    svc = cluster.read_service(app, name)
    primary = svc["spec"].get("clusterIP")
    if primary not in (None, "None"):
        # kubelet exports only the primary ClusterIP; the API lists every family.
        with env_discoverer(lab_info, cluster, app) as e:
            assert endpoints(e.discover(name, port=port_name)) == {
                (host, p) for host, p in endpoints(from_api) if host == primary
            }
