"""docs/troubleshooting.md's outputs, made in the lab: ``python -m lab.troubleshooting``.

Each case of the page is built in the lab (namespaces literally named ``shop`` and
``billing``, deleted first), then ``kdisco resolve`` (its error headline) and ``kdisco
doctor`` run as the page says, in a pod (the kubelet's variables, a service-account
directory, a pod's resolv.conf) or on a laptop (the lab's kubeconfig). The page's blocks
between ``<!-- doctor:CASE -->`` (or ``resolve:CASE``) and ``<!-- /doctor -->`` are
rewritten with the output, its volatile parts normalised (`Normaliser`), so the page is
the same on every run and tests/integration/test_troubleshooting_lab.py can compare.

Addresses the lab hands out are resolved and compared, never connected to; no case
probes. A "stopped CoreDNS" is a UDP port on 127.0.0.1 that nobody reads. The names are
fixed (they are on the page), so two runs against one lab at once collide; other tests
use namespaces with random suffixes and other Service names, so they do not.
"""

from __future__ import annotations

import argparse
import functools
import re
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import yaml

from kdisco import Discoverer, DiscoveryError
from kdisco._cli import summary
from kdisco._doctor import command
from kdisco._doctor.report import Report, Status
from kdisco._settings import Settings
from lab import LabInfo, ensure_lab, kube
from lab.objects import Cluster, port

PAGE = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"
ZONE = "cluster.local"
#: The client's namespace, and the server's.
SHOP, BILLING = "shop", "billing"
#: Pod addresses (TEST-NET: never connected to).
INVOICES_POD, LEDGER_POD, CHECKOUT_POD = "192.0.2.171", "192.0.2.172", "192.0.2.173"
NODE = ("node-1", "192.0.2.231", "203.0.113.231", "zone-a")
#: What the page shows for the lab's volatile values: a cluster's usual addresses and
#: paths (the lab's CoreDNS and kube-apiserver listen on 127.0.0.1 ports).
SHOWN_DNS = "10.96.0.10:53"
SHOWN_API = "10.96.0.1:443"
SHOWN_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SHOWN_RESOLV = "/etc/resolv.conf"
SHOWN_KUBECONFIG = "~/.kube/config"
SHOWN_CLUSTER_IPS = {
    (BILLING, "invoices"): "10.96.140.21",
    (BILLING, "ledger"): "10.96.140.22",
    (SHOP, "checkout"): "10.96.150.10",
}

#: The Role of docs/in-a-pod.md: what kdisco itself reads.
KDISCO_RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]
#: The page's manifests that give ``checkout`` what the doctor reads besides kdisco's:
#: Pods and NetworkPolicies in ``billing``, its own Pod in ``shop``.
DOCTOR_MANIFESTS = ("kdisco-doctor", "kdisco-doctor-self")
#: kdisco's Role without ``list`` on EndpointSlices.
NO_LIST_RULES = [
    KDISCO_RULES[0],
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["watch"]},
]


@attrs.frozen(kw_only=True)
class Case:
    """One case of the page.

    Attributes:
        key: Its marker name (``<!-- doctor:KEY -->``).
        argv: ``kdisco doctor`` arguments, as the page shows them.
        where: ``pod:ACCOUNT`` (in a pod of ``shop`` running as that ServiceAccount) or
            ``laptop``.
        resolve: ``kdisco resolve`` arguments for the symptom, or None.
        setup: Called before the case runs (objects only this case needs).
        settings: Settings besides the place's (``strategies``, a silent DNS server).
        settled: True once the lab has caught up (RBAC bindings take a moment to
            apply); the case reruns until then.
    """

    key: str
    argv: tuple[str, ...]
    where: str
    resolve: tuple[str, ...] | None = None
    settled: Callable[[Report], bool] | None = None
    setup: Callable[[Cluster], None] | None = None
    settings: Mapping[str, Any] = attrs.field(factory=dict)


DENY_ALL = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all", "namespace": BILLING},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
#: A policy for invoices that admits shop's Pods labelled app=admin, and nobody else.
ADMINS_ONLY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "invoices-ingress", "namespace": BILLING},
    "spec": {
        "podSelector": {"matchLabels": {"app": "invoices"}},
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SHOP}},
                        "podSelector": {"matchLabels": {"app": "admin"}},
                    }
                ],
                "ports": [{"port": 8080}],
            }
        ],
    },
}


def deny_all(cluster: Cluster) -> None:
    """Isolate every Pod of ``billing``, admitting nothing.

    Args:
        cluster: The lab.
    """
    apply(cluster, DENY_ALL)


def admins_only(cluster: Cluster) -> None:
    """Replace ``deny-all`` by `ADMINS_ONLY`.

    Args:
        cluster: The lab.
    """
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.networking.delete_namespaced_network_policy("deny-all", BILLING)
    except ApiException as exc:
        if exc.status != 404:
            raise
    apply(cluster, ADMINS_ONLY)


CALLER = ("--from-namespace", SHOP, "--from-labels", "app=checkout")

#: The page's cases, in the order they run (the NetworkPolicy ones last: they isolate
#: billing's Pods).
CASES = (
    Case(
        key="healthy",
        argv=("invoices.billing", "--port", "http"),
        where="pod:checkout",
        settled=lambda report: (
            report.would_connect and "labels are unknown: needs" not in report.text()
        ),
    ),
    Case(
        key="typo",
        argv=("invocies.billing", "--port", "http"),
        where="pod:checkout",
        resolve=("invocies.billing", "--port", "http"),
    ),
    Case(
        key="namespace",
        argv=("invoices", "--port", "http"),
        where="laptop",
        resolve=("invoices", "--port", "http"),
    ),
    Case(
        key="not-ready",
        argv=("ledger.billing", "--port", "http"),
        where="pod:checkout",
        resolve=("ledger.billing", "--port", "http", "--strategies", "api"),
    ),
    Case(
        key="target-port",
        argv=("invoices.billing", "--port", "8080"),
        where="pod:checkout",
        resolve=("invoices.billing", "--port", "8080"),
    ),
    Case(
        key="rbac-list",
        argv=("invoices.billing", "--port", "http"),
        where="pod:reports",
        settled=lambda report: _passed(report, "service"),
        resolve=("invoices.billing", "--port", "http", "--strategies", "api"),
    ),
    Case(
        key="rbac-namespace",
        argv=("invoices.billing", "--port", "http"),
        where="pod:orders",
        resolve=("invoices.billing", "--port", "http", "--strategies", "api"),
    ),
    Case(
        key="dns-down",
        argv=("invoices.billing", "--port", "http"),
        where="pod:checkout",
        resolve=("invoices.billing", "--port", "http", "--strategies", "dns"),
        settings={"dns_server": "silent"},
    ),
    Case(
        key="deny-all",
        argv=("invoices.billing", "--port", "http", *CALLER),
        where="laptop",
        setup=deny_all,
    ),
    Case(
        key="other-labels",
        argv=("invoices.billing", "--port", "http", *CALLER),
        where="laptop",
        setup=admins_only,
    ),
)


# -- the lab objects -------------------------------------------------------------------


def reset_namespaces(cluster: Cluster, *, timeout: float = 90.0) -> None:
    """Delete ``shop`` and ``billing`` if a previous run left them, wait until they are
    gone, and create them empty."""
    for ns in (SHOP, BILLING):
        if cluster.namespace_exists(ns):
            cluster.delete_namespace(ns)
    deadline = time.monotonic() + timeout
    while any(cluster.namespace_exists(ns) for ns in (SHOP, BILLING)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespaces {SHOP}, {BILLING} still terminating")
        time.sleep(0.5)
    for ns in (SHOP, BILLING):
        cluster.core.create_namespace({"metadata": {"name": ns}})


def wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until true (controllers and CoreDNS work from watch events)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _has_endpoint(cluster: Cluster, ns: str, service: str, address: str) -> bool:
    return any(
        address in ep["addresses"]
        for s in cluster.slices(ns, service)
        for ep in s.get("endpoints") or []
    )


def build(cluster: Cluster, info: LabInfo, sa_root: Path, page: str) -> dict[str, Path]:
    """The objects every case reads; returns each ServiceAccount's credentials directory.

    ``billing``: ``invoices`` (port http 80 → targetPort 8080, one ready Pod) and
    ``ledger`` (the same, its one Pod crash-looping). ``shop``: the ``checkout``
    Service and Pod (the caller), and three ServiceAccounts: ``checkout`` (kdisco's
    Role in ``billing``, and the doctor's Roles as ``page`` has them), ``reports`` (a
    Role in ``billing`` without ``list`` on EndpointSlices), ``orders`` (kdisco's Role
    in ``shop`` only).
    """
    name, internal, external, zone = NODE
    cluster.node(name, internal_ip=internal, external_ip=external, zone=zone)
    http = [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]
    for svc, address, ns in (
        ("invoices", INVOICES_POD, BILLING),
        ("ledger", LEDGER_POD, BILLING),
        ("checkout", CHECKOUT_POD, SHOP),
    ):
        labels = {"app": svc}
        cluster.service(ns, svc, ports=[port(80, "http", target=8080)], selector=labels)
        ready = svc != "ledger"
        cluster.pod(ns, f"{svc}-0", labels=labels, node=name, ip=address, ports=http, ready=ready)
    cluster.set_pod_waiting(BILLING, "ledger-0", reason="CrashLoopBackOff")
    for ns, svc, address in (
        (BILLING, "invoices", INVOICES_POD),
        (BILLING, "ledger", LEDGER_POD),
        (SHOP, "checkout", CHECKOUT_POD),
    ):
        wait(functools.partial(_has_endpoint, cluster, ns, svc, address), f"{svc}'s slice")
    ca = str(info.ca_path)
    accounts = {
        "checkout": cluster.serviceaccount_credentials(
            SHOP, sa_root / "checkout", ca, name="checkout", rules=KDISCO_RULES
        ),
        "reports": cluster.serviceaccount_credentials(
            SHOP, sa_root / "reports", ca, name="reports", rules=[]
        ),
        "orders": cluster.serviceaccount_credentials(
            SHOP, sa_root / "orders", ca, name="orders", rules=KDISCO_RULES
        ),
    }
    for account, rules in (("checkout", KDISCO_RULES), ("reports", NO_LIST_RULES)):
        cluster.grant(
            BILLING,
            f"{account}-kdisco",
            rules,
            serviceaccount=account,
            serviceaccount_namespace=SHOP,
        )
    for doc in manifests(page):
        if doc["metadata"]["name"].removeprefix("checkout-") in DOCTOR_MANIFESTS:
            apply(cluster, doc)
    return accounts


# -- running a case -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Normaliser:
    """Turns the lab's volatile values into the page's: ClusterIPs the apiserver
    allocated, 127.0.0.1 ports, temporary paths.

    Attributes:
        replacements: Literal text to replace, longest first.
    """

    replacements: tuple[tuple[str, str], ...]

    def __call__(self, text: str) -> str:
        """``text`` with every replacement made.

        Args:
            text: Output from the lab.

        Returns:
            str: The page's text.
        """
        for old, new in self.replacements:
            text = text.replace(old, new)
        return text


def normaliser(
    cluster: Cluster, info: LabInfo, paths: Mapping[str, str], silent: str
) -> Normaliser:
    """The replacements for this lab run.

    Args:
        cluster: To read the Services' ClusterIPs.
        info: The lab (its DNS and apiserver addresses).
        paths: Temporary paths to the path shown instead.
        silent: The silent DNS server's address.

    Returns:
        Normaliser: Ready to apply.
    """
    pairs = dict(paths)
    for (ns, svc), shown in SHOWN_CLUSTER_IPS.items():
        pairs[cluster.read_service(ns, svc)["spec"]["clusterIP"]] = shown
    pairs[info.dns_server] = SHOWN_DNS
    pairs[silent] = SHOWN_DNS  # the same server, stopped
    pairs[info.apiserver_url.split("://", 1)[1]] = SHOWN_API
    return Normaliser(replacements=tuple(sorted(pairs.items(), key=lambda p: -len(p[0]))))


@contextmanager
def silent_dns() -> Iterator[str]:
    """A UDP port on 127.0.0.1 that nobody reads: a cluster DNS server that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@attrs.frozen(kw_only=True)
class Places:
    """Where cases run: the lab, the ServiceAccounts' directories, the files a pod and a
    laptop read.

    Attributes:
        info: The lab.
        accounts: ServiceAccount name to its credentials directory.
        pod_resolv: A pod of ``shop``'s resolv.conf.
        laptop_resolv: A laptop's resolv.conf.
        kubeconfig: The lab's kubeconfig with ``shop`` as its context's namespace.
        silent: A DNS server that does not answer.
    """

    info: LabInfo
    accounts: Mapping[str, Path]
    pod_resolv: Path
    laptop_resolv: Path
    kubeconfig: Path
    silent: str

    def settings(self, case: Case) -> dict[str, Any]:
        """``Settings.load`` keyword arguments for ``case``.

        Args:
            case: The case.

        Returns:
            dict: As the CLI's common flags would give them.
        """
        extra = dict(case.settings)
        if extra.get("dns_server") == "silent":
            extra["dns_server"] = self.silent
        if case.where == "laptop":
            return {
                "kubeconfig": str(self.kubeconfig),
                "resolv_conf": str(self.laptop_resolv),
                "serviceaccount_dir": str(self.pod_resolv.parent / "no-serviceaccount"),
                "environ": {},
                **extra,
            }
        account = case.where.removeprefix("pod:")
        return {
            "serviceaccount_dir": str(self.accounts[account]),
            "resolv_conf": str(self.pod_resolv),
            # A resolv.conf nameserver line has no port: the lab's CoreDNS's comes
            # from the setting, as KDISCO_DNS_SERVER would give it.
            "dns_server": self.info.dns_server,
            "environ": {**kube.incluster_env(self.info), "HOSTNAME": "checkout-0"},
            **extra,
        }


def _passed(report: Report, name: str) -> bool:
    return any(c.name == name and c.status is Status.PASSED for c in report.checks)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    if prog == "doctor":
        command.add_arguments(parser)
    else:
        parser.add_argument("name")
        parser.add_argument("--port")
        parser.add_argument("--strategies")
    return parser


def doctor(case: Case, settings: Mapping[str, Any]) -> Report:
    """``kdisco doctor`` for ``case``: its report (``report.text()`` is what it prints).

    Args:
        case: The case.
        settings: ``Settings.load`` keyword arguments.

    Returns:
        Report: Every check.
    """
    args = _parser("doctor").parse_args(case.argv)
    loaded = Settings.load(**settings)
    return command.diagnose(command.build_context(args, loaded, str(settings["resolv_conf"])))


def resolve(case: Case, settings: Mapping[str, Any], width: int = 100) -> str:
    """What ``kdisco resolve`` prints first for ``case``: its error's headline (as the
    CLI wraps it), or the answer's first line.

    Args:
        case: The case (its ``resolve`` arguments).
        settings: ``Settings.load`` keyword arguments.
        width: The terminal's width.

    Returns:
        str: The lines.
    """
    assert case.resolve is not None
    args = _parser("resolve").parse_args(case.resolve)
    kwargs = dict(settings)
    if args.strategies:
        kwargs["strategies"] = args.strategies.split(",")
    try:
        with Discoverer(**kwargs) as d:
            res = d.discover(args.name, port=args.port)
    except DiscoveryError as exc:
        wrapped = textwrap.wrap(
            f"kdisco: {type(exc).__name__}: {exc.message}",
            width,
            subsequent_indent="  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        return "\n".join(wrapped) + "\n"
    return summary(res) + "\n"


def normalised(report: Report, normal: Normaliser) -> Report:
    """``report`` with the lab's volatile values replaced in every line, before it is
    wrapped (so the page's lines wrap as the command would wrap them).

    Args:
        report: The doctor's report.
        normal: The replacements.

    Returns:
        Report: The report the page shows.
    """
    checks = tuple(
        attrs.evolve(
            c,
            summary=normal(c.summary),
            details=tuple(map(normal, c.details)),
            hint=None if c.hint is None else normal(c.hint),
        )
        for c in report.checks
    )
    return Report(target=normal(report.target), checks=checks)


@attrs.frozen(kw_only=True)
class Lab:
    """The page's cases built in a lab, ready to run.

    Attributes:
        cluster: Writes the lab's objects.
        places: Where cases run.
        normal: The lab's volatile values to the page's.
    """

    cluster: Cluster
    places: Places
    normal: Normaliser

    def doctor(self, case: Case, timeout: float = 30.0) -> Report:
        """Run ``kdisco doctor`` for ``case`` (again, until it has settled).

        Args:
            case: The case.
            timeout: Seconds to wait for it to settle.

        Returns:
            Report: Normalised.

        Raises:
            TimeoutError: It did not settle.
        """
        settings = self.places.settings(case)
        deadline = time.monotonic() + timeout
        report = doctor(case, settings)
        while case.settled is not None and not case.settled(report):
            if time.monotonic() > deadline:
                raise TimeoutError(f"case {case.key} did not settle:\n{report.text()}")
            time.sleep(0.3)
            report = doctor(case, settings)
        return normalised(report, self.normal)

    def blocks(self, case: Case) -> dict[str, str]:
        """Set ``case`` up and run it.

        Args:
            case: The case.

        Returns:
            dict: ``resolve:KEY`` (when it has one) and ``doctor:KEY`` to the block's
            text: the command line, then its output, normalised.
        """
        if case.setup is not None:
            case.setup(self.cluster)
        found: dict[str, str] = {}
        if case.resolve is not None:
            out = resolve(case, self.places.settings(case))
            found[f"resolve:{case.key}"] = f"$ kdisco resolve {' '.join(case.resolve)}\n" + (
                self.normal(out)
            )
        text = self.doctor(case).text()
        found[f"doctor:{case.key}"] = f"$ kdisco doctor {' '.join(case.argv)}\n{text}"
        return found


@contextmanager
def built(info: LabInfo, tmp: Path, page: str) -> Iterator[Lab]:
    """The page's namespaces built afresh in the lab; deleted when done.

    Args:
        info: The lab.
        tmp: A directory for credentials and resolv.conf files.
        page: docs/troubleshooting.md (the doctor's Roles are applied as it has them).

    Yields:
        Lab: Ready to run the cases, in order.
    """
    cluster = Cluster(str(info.kubeconfig))
    with ExitStack() as stack:
        stack.callback(cluster.close)
        reset_namespaces(cluster)
        for ns in (SHOP, BILLING):
            stack.callback(cluster.delete_namespace, ns)
        accounts = build(cluster, info, tmp / "sa", page)
        places = Places(
            info=info,
            accounts=accounts,
            pod_resolv=_write(
                tmp / "pod-resolv.conf",
                f"search {SHOP}.svc.{ZONE} svc.{ZONE} {ZONE}\nnameserver 10.96.0.10\n"
                "options ndots:5\n",
            ),
            laptop_resolv=_write(tmp / "laptop-resolv.conf", "nameserver 192.168.1.1\n"),
            kubeconfig=_kubeconfig(info, tmp / "kubeconfig"),
            silent=stack.enter_context(silent_dns()),
        )
        paths = {str(d): SHOWN_SA_DIR for d in accounts.values()}
        paths |= {str(places.pod_resolv): SHOWN_RESOLV, str(places.laptop_resolv): SHOWN_RESOLV}
        paths[str(places.kubeconfig)] = SHOWN_KUBECONFIG
        normal = normaliser(cluster, info, paths, places.silent)
        yield Lab(cluster=cluster, places=places, normal=normal)


def generate(info: LabInfo, tmp: Path, page: str) -> dict[str, str]:
    """Build every case in the lab and run it.

    Args:
        info: The lab.
        tmp: A directory for credentials and resolv.conf files.
        page: docs/troubleshooting.md's text.

    Returns:
        dict: ``doctor:KEY`` and ``resolve:KEY`` to the block's text.
    """
    blocks: dict[str, str] = {}
    with built(info, tmp, page) as lab:
        for case in CASES:
            blocks |= lab.blocks(case)
    return blocks


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _kubeconfig(info: LabInfo, path: Path) -> Path:
    """The lab's kubeconfig, its current context's namespace ``shop``."""
    config = yaml.safe_load(Path(info.kubeconfig).read_text())
    for entry in config["contexts"]:
        if entry["name"] == config["current-context"]:
            entry["context"]["namespace"] = SHOP
    return _write(path, yaml.safe_dump(config))


# -- the page ---------------------------------------------------------------------------

_BLOCK = re.compile(
    r"^<!-- (?P<key>(?:doctor|resolve):[\w-]+) -->\n```text\n(?P<body>.*?)^```\n"
    r"<!-- /(?:doctor|resolve) -->$",
    re.M | re.S,
)


_YAML = re.compile(r"^```yaml\n(?P<body>.*?)^```$", re.M | re.S)


def manifests(text: str) -> list[dict[str, Any]]:
    """Every manifest in the page's ``yaml`` blocks.

    Args:
        text: The page.

    Returns:
        list: The manifests, in order.
    """
    return [doc for m in _YAML.finditer(text) for doc in yaml.safe_load_all(m["body"]) if doc]


#: The clients (``Cluster`` attribute) and method suffix of each kind the page holds.
_KINDS = {
    "Role": ("rbac", "namespaced_role"),
    "RoleBinding": ("rbac", "namespaced_role_binding"),
    "NetworkPolicy": ("networking", "namespaced_network_policy"),
}


def apply(cluster: Cluster, doc: dict[str, Any]) -> None:
    """Create a manifest of the page, or replace the object of that name.

    Args:
        cluster: The lab.
        doc: A Role, RoleBinding or NetworkPolicy.
    """
    from kubernetes.client.exceptions import ApiException

    attr, what = _KINDS[doc["kind"]]
    client = getattr(cluster, attr)
    ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
    try:
        getattr(client, f"create_{what}")(ns, doc)
    except ApiException as exc:
        if exc.status != 409:
            raise
        getattr(client, f"replace_{what}")(name, ns, doc)


def page_blocks(text: str) -> dict[str, str]:
    """The generated blocks of a page: ``doctor:KEY`` (or ``resolve:KEY``) to the text.

    Args:
        text: The page.

    Returns:
        dict: Each marked block's text.
    """
    return {m["key"]: m["body"] for m in _BLOCK.finditer(text)}


def rewrite(text: str, blocks: Mapping[str, str]) -> str:
    """``text`` with every marked block replaced by its new text.

    Args:
        text: The page.
        blocks: ``doctor:KEY`` to the new text.

    Returns:
        str: The page.

    Raises:
        KeyError: The page marks a block nothing generated, or lacks one.
    """
    marked = set(page_blocks(text))
    if marked != set(blocks):
        raise KeyError(
            f"the page marks {sorted(marked - set(blocks))} that no case makes, and lacks "
            f"{sorted(set(blocks) - marked)}"
        )

    def body(m: re.Match[str]) -> str:
        key = m["key"]
        kind = key.partition(":")[0]
        return f"<!-- {key} -->\n```text\n{blocks[key]}```\n<!-- /{kind} -->"

    return _BLOCK.sub(body, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate docs/troubleshooting.md's outputs (``--check``: only compare).

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        int: 0, or 1 when ``--check`` finds the page out of date.
    """
    parser = argparse.ArgumentParser(prog="python -m lab.troubleshooting")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--print", action="store_true", help="print every block")
    args = parser.parse_args(argv)
    text = PAGE.read_text()
    with ensure_lab() as info, tempfile.TemporaryDirectory() as tmp:
        blocks = generate(info, Path(tmp), text)
    if args.print:
        for key, block in blocks.items():
            print(f"==== {key}\n{block}")
    new = rewrite(text, blocks)
    if args.check:
        return 0 if new == text else 1
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
