"""End-to-end smoke check of a lab: ``python -m lab.smoke`` (needs dnspython).

Uses a running lab (``python -m lab up`` / env) or starts a private one.
Creates a namespace, a ClusterIP Service with a named port, a headless
Service with a hand-made EndpointSlice (TEST-NET-1 addresses, never
contacted), then asks CoreDNS for A/AAAA/SRV records and prints what it
answered, including TTLs and the rcode for an empty headless Service.
Exits non-zero if a checked answer is wrong.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from lab import LabInfo, ensure_lab, kube

MANAGED_BY = "kdisco-lab"


def query(info: LabInfo, name: str, rdtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, info.dns_host, port=info.dns_port, timeout=2)


def wait_answer(
    info: LabInfo,
    name: str,
    rdtype: str,
    want: Callable[[dns.message.Message], bool],
    timeout: float = 10.0,
) -> dns.message.Message:
    """Poll until *want* holds (CoreDNS sees changes through its watch)."""
    deadline = time.monotonic() + timeout
    while True:
        r = query(info, name, rdtype)
        if want(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def values(r: dns.message.Message) -> list[str]:
    return sorted(str(x) for rr in r.answer for x in rr)


def show(r: dns.message.Message) -> str:
    ans = "; ".join(
        f"{rr.name} {rr.ttl} {dns.rdatatype.to_text(rr.rdtype)} " + ",".join(str(x) for x in rr)
        for rr in r.answer
    )
    return f"rcode={dns.rcode.to_text(r.rcode())} aa={bool(r.flags & dns.flags.AA)} [{ans}]"


def _svc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def _slice(svc: str, name: str, endpoints: list[dict[str, Any]], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def run(info: LabInfo) -> int:
    ns = f"smoke-{uuid.uuid4().hex[:6]}"
    zone = info.cluster_domain
    api = f"/api/v1/namespaces/{ns}"
    slices = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    failures = 0

    def check(label: str, ok: bool, r: dns.message.Message) -> None:
        nonlocal failures
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {show(r)}")
        failures += 0 if ok else 1

    def info_line(label: str, r: dns.message.Message) -> None:
        print(f"info {label}: {show(r)}")

    kube.request(info, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    try:
        spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        if info.dual_stack:
            spec["ipFamilyPolicy"] = "PreferDualStack"
        svc = kube.request(info, "POST", f"{api}/services", _svc("web", spec))
        ips = svc["spec"]["clusterIPs"]
        print(f"web clusterIPs={ips} ipFamilies={svc['spec']['ipFamilies']}")
        fq = f"web.{ns}.svc.{zone}."
        r = wait_answer(info, fq, "A", lambda r: bool(r.answer))
        check("ClusterIP A", values(r) == [ips[0]], r)
        if len(ips) > 1:
            r = wait_answer(info, fq, "AAAA", lambda r: bool(r.answer))
            check("ClusterIP AAAA", values(r) == [ips[1]], r)
        r = query(info, f"_http._tcp.{fq}", "SRV")
        check("ClusterIP SRV", values(r) == [f"0 100 80 {fq}"] or values(r) == [f"0 50 80 {fq}"], r)
        info_line("SRV unknown port name", query(info, f"_nope._tcp.{fq}", "SRV"))

        kube.request(
            info,
            "POST",
            f"{api}/services",
            _svc("db", {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        )
        hq = f"db.{ns}.svc.{zone}."
        time.sleep(1.0)  # let CoreDNS's watch see the Service itself
        r = query(info, hq, "A")
        check("headless, no slices -> NXDOMAIN", r.rcode() == dns.rcode.NXDOMAIN, r)
        eps = [
            {"addresses": ["192.0.2.10"], "hostname": "db-0", "conditions": {"ready": True}},
            {"addresses": ["192.0.2.11"], "hostname": "db-1", "conditions": {"ready": True}},
            {"addresses": ["192.0.2.12"], "conditions": {"ready": True}},
            {"addresses": ["192.0.2.13"], "hostname": "db-3", "conditions": {"ready": False}},
        ]
        kube.request(info, "POST", slices, _slice("db", "db-1", eps, 5432))
        t0 = time.monotonic()
        r = wait_answer(info, hq, "A", lambda r: len(values(r)) >= 3)
        print(f"info slice created -> in DNS after {time.monotonic() - t0:.2f}s")
        check(
            "headless A = ready endpoints",
            values(r) == ["192.0.2.10", "192.0.2.11", "192.0.2.12"],
            r,
        )
        r = query(info, f"_pg._tcp.{hq}", "SRV")
        want = sorted(f"0 33 5432 {h}.{hq}" for h in ("db-0", "db-1", "192-0-2-12"))
        check("headless SRV targets", values(r) == want, r)
        r = query(info, f"db-0.{hq}", "A")
        check("per-endpoint hostname A", values(r) == ["192.0.2.10"], r)
        r = query(info, f"db-3.{hq}", "A")
        check("not-ready endpoint hostname -> NXDOMAIN", r.rcode() == dns.rcode.NXDOMAIN, r)
        kube.request(
            info,
            "PATCH",
            f"{slices}/db-1",
            {"endpoints": [{"addresses": ["192.0.2.10"], "conditions": {"ready": False}}]},
            content_type="application/merge-patch+json",
        )
        r = wait_answer(info, hq, "A", lambda r: not r.answer, 5)
        check("headless, only not-ready endpoints -> NXDOMAIN", r.rcode() == dns.rcode.NXDOMAIN, r)

        kube.request(
            info,
            "PATCH",
            f"{api}/services/db",
            {"spec": {"publishNotReadyAddresses": True}},
            content_type="application/merge-patch+json",
        )
        eps2: list[dict[str, Any]] = [
            {"addresses": ["192.0.2.20"], "conditions": {"ready": False}},
            {"addresses": ["192.0.2.21"]},
        ]
        kube.request(info, "POST", slices, _slice("db", "db-2", eps2, 5432))
        r = wait_answer(info, hq, "A", lambda r: bool(r.answer), 5)
        info_line("publishNotReadyAddresses + ready=false & ready=nil", r)
        info_line("headless AAAA with only IPv4 endpoints", query(info, hq, "AAAA"))
        info_line("ClusterIP TXT", query(info, fq, "TXT"))

        kube.request(info, "POST", f"{api}/services", _svc("v4only", {"ports": [{"port": 81}]}))
        v4 = f"v4only.{ns}.svc.{zone}."
        info_line(
            "single-stack, unnamed port A", wait_answer(info, v4, "A", lambda r: bool(r.answer))
        )
        info_line("single-stack AAAA", query(info, v4, "AAAA"))
        info_line("SRV on the bare name, unnamed port", query(info, v4, "SRV"))
        kube.request(
            info,
            "POST",
            f"{api}/services",
            _svc("ext", {"type": "ExternalName", "externalName": "db.example.org"}),
        )
        ext = f"ext.{ns}.svc.{zone}."
        info_line("ExternalName, A query", wait_answer(info, ext, "A", lambda r: bool(r.answer)))
        info_line("namespace name", query(info, f"{ns}.svc.{zone}.", "A"))
        info_line("missing Service", query(info, f"nosuch.{ns}.svc.{zone}.", "A"))
        info_line("kubernetes.default", query(info, f"kubernetes.default.svc.{zone}.", "A"))
        info_line("out-of-zone name", query(info, "example.com.", "A"))
    finally:
        kube.request(info, "DELETE", f"/api/v1/namespaces/{ns}")
    print(f"{failures} failed")
    return 1 if failures else 0


def main() -> int:
    with ensure_lab() as info:
        return run(info)


if __name__ == "__main__":
    sys.exit(main())
