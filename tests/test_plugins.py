"""Out-of-tree strategies: the example plugin in examples/kdisco-hosts, installed with pip.

The plugin is used only through what kdisco offers (a strategy name, the
``kdisco.strategies`` entry point group, the public ``kdisco`` names), never imported
here: a strategy installed the way users install one must work exactly that way. The
package must be installed into the test environment (``nox -s tests`` does it). Under
CI=true a missing or outdated install fails these tests; elsewhere they skip with
the command that fixes it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import kdisco

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kdisco-hosts"
INSTALL = "pip install ./examples/kdisco-hosts"
GROUP = "kdisco.strategies"

HOSTS = """\
# kdisco-hosts test file: TEST-NET addresses only
192.0.2.10     payments                 # bare name: any namespace
198.51.100.7   payments.billing         # namespace-specific: wins in billing
192.0.2.20     web  web-canary
192.0.2.21     web                      # a second line adds an endpoint
192.0.2.30     Search.Shop.             # names are case-insensitive, a final dot ignored

127.0.0.1      localhost                # not a Service name anyone asks for
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _sha256_record(path: Path) -> str:
    """A file's hash as a wheel's RECORD writes it (urlsafe base64, unpadded)."""
    digest = hashlib.sha256(path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _plugin_problem() -> str | None:
    """Why the installed example cannot be tested, or None when it can."""
    if not any(ep.name == "hosts" for ep in importlib.metadata.entry_points(group=GROUP)):
        return f"the example strategy 'hosts' is not installed: run `{INSTALL}`"
    try:
        dist = importlib.metadata.distribution("kdisco-hosts")
    except importlib.metadata.PackageNotFoundError:
        return f"'hosts' comes from another package than kdisco-hosts: run `{INSTALL}`"
    # A regular install is a copy: after an edit of the example, these tests would
    # quietly check the old code. (An editable install records no module file.)
    source = EXAMPLE / "kdisco_hosts" / "__init__.py"
    for file in dist.files or ():
        if (
            file.as_posix() == "kdisco_hosts/__init__.py"
            and file.hash is not None
            and file.hash.mode == "sha256"
            and file.hash.value != _sha256_record(source)
        ):
            shown = source.relative_to(ROOT)
            return f"the installed kdisco-hosts differs from {shown}: run `{INSTALL}`"
    return None


@pytest.fixture(scope="module", autouse=True)
def _plugin_installed() -> None:
    problem = _plugin_problem()
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI=true: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture
def hosts_file(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    return path


def environ(hosts_file: Path | None, **extra: str) -> dict[str, str]:
    """A whole environment for a Discoverer, so no variable of this process leaks in."""
    env = {
        "KDISCO_NAMESPACE": "shop",
        "KDISCO_CLUSTER_DOMAIN": "cluster.local",
        **extra,
    }
    if hosts_file is not None:
        env["KDISCO_HOSTS_FILE"] = str(hosts_file)
    return env


def hosts_discoverer(hosts_file: Path | None) -> kdisco.Discoverer:
    return kdisco.Discoverer(strategies=["hosts"], environ=environ(hosts_file))


def lookup(
    d: kdisco.Discoverer, name: str, namespace: str = "shop", port: int | str | None = None
) -> kdisco.Resolution | kdisco.Miss:
    """Ask the strategy itself, as the chain does, to see its Miss outcomes."""
    query = kdisco.Query(
        service=kdisco.ServiceRef(name=name, namespace=namespace, cluster_domain="cluster.local"),
        port=port,
    )
    return d.strategies[0].lookup(query, kdisco.Deadline(1.0))


def addresses(res: kdisco.Resolution) -> list[str]:
    return [ep.address for ep in res]


# -- installed and found by name ---------------------------------------------------


def test_entry_point_is_listed() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == "hosts"]
    assert ep.value == "kdisco_hosts:from_settings"
    assert ep.dist is not None
    assert ep.dist.name == "kdisco-hosts"


def test_by_name_in_discoverer(hosts_file: Path) -> None:
    d = kdisco.Discoverer(strategies=["hosts"], environ=environ(hosts_file))
    assert [s.name for s in d.strategies] == ["hosts"]
    res = d.discover("payments")
    assert res.source == "hosts"
    assert res.kind is kdisco.ServiceKind.UNKNOWN
    assert res.service == kdisco.ServiceRef(name="payments", namespace="shop")
    assert addresses(res) == ["192.0.2.10"]
    assert res.port is None
    assert res.first().port is None  # a hosts file knows no ports
    # Short, so that kdisco's cache re-reads the file soon after an edit.
    assert res.ttl is not None
    assert 0 < res.ttl <= 10


def test_by_name_in_kdisco_strategies(hosts_file: Path) -> None:
    # The kubelet's variables stand in for the cluster behind the hosts file: env
    # answers what the file does not name, without any network.
    env = environ(
        hosts_file,
        KDISCO_STRATEGIES="hosts,env",
        POD_NAMESPACE="shop",
        KDISCO_SERVICEACCOUNT_DIR=str(hosts_file.parent / "no-serviceaccount"),
        KUBERNETES_SERVICE_HOST="192.0.2.1",
        CART_SERVICE_HOST="198.51.100.40",
        CART_SERVICE_PORT="8080",
    )
    d = kdisco.Discoverer(environ=env)
    assert d.settings.sources["strategies"] == "KDISCO_STRATEGIES"
    assert [s.name for s in d.strategies] == ["hosts", "env"]

    assert d.discover("payments").source == "hosts"
    res = d.discover("cart")
    assert (res.source, addresses(res)) == ("env", ["198.51.100.40:8080"])
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("hosts", kdisco.Outcome.NOT_FOUND)]


def test_unset_file_steps_aside_in_a_chain() -> None:
    # The same KDISCO_STRATEGIES works where no hosts file is configured (in the cluster).
    d = kdisco.Discoverer(environ=environ(None, KDISCO_STRATEGIES="hosts"))
    assert lookup(d, "payments") == kdisco.Miss(
        kdisco.Outcome.NOT_APPLICABLE, "KDISCO_HOSTS_FILE is unset"
    )
    with pytest.raises(kdisco.DiscoveryUnavailable) as info:
        d.discover("payments")
    assert [(a.strategy, a.outcome) for a in info.value.attempts] == [
        ("hosts", kdisco.Outcome.NOT_APPLICABLE)
    ]


def _cli_env(hosts_file: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KDISCO_") and k not in ("KUBECONFIG", "POD_NAMESPACE")
    }
    env.update(environ(hosts_file))
    return env


def run_cli(hosts_file: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdisco", "resolve", *argv],
        env=_cli_env(hosts_file),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_by_name_in_the_cli(hosts_file: Path) -> None:
    proc = run_cli(hosts_file, "payments.billing", "--port", "5432", "--strategies", "hosts")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "payments.billing (payments.billing.svc.cluster.local.) found by hosts: Unknown",
        "  198.51.100.7:5432",
    ]

    proc = run_cli(hosts_file, "web", "--strategies", "hosts", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["source"] == "hosts"
    assert [(ep["host"], ep["port"]) for ep in data["endpoints"]] == [
        ("192.0.2.20", None),
        ("192.0.2.21", None),
    ]

    proc = run_cli(hosts_file, "nowhere", "--strategies", "hosts")
    assert proc.returncode == 1
    assert "ServiceNotFound" in proc.stderr
    assert "hosts: not found" in proc.stderr


def test_unknown_strategy_lists_the_plugin() -> None:
    with pytest.raises(kdisco.ConfigurationError) as info:
        kdisco.Discoverer(strategies=["hostz"], environ=environ(None))
    message = str(info.value)
    assert "'hostz'" in message
    known = re.search(r"known: ([^;)]*)", message)
    assert known is not None, message
    assert {"static", "dns", "env", "api", "hosts"} <= set(known.group(1).split(", "))


def test_unknown_strategy_in_the_cli_lists_the_plugin(hosts_file: Path) -> None:
    proc = run_cli(hosts_file, "payments", "--strategies", "hosts,hostz")
    assert proc.returncode == 2
    assert "unknown strategy 'hostz'" in proc.stderr
    assert "hosts" in proc.stderr.split("known:", 1)[1]


# -- what the example strategy answers ----------------------------------------------


def test_namespace_specific_line_wins(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    assert addresses(d.discover("payments.billing")) == ["198.51.100.7"]
    # The bare name still answers in every other namespace.
    assert addresses(d.discover("payments.shop")) == ["192.0.2.10"]
    assert addresses(d.discover("payments.other")) == ["192.0.2.10"]


def test_every_line_naming_a_service_is_an_endpoint(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    assert addresses(d.discover("web")) == ["192.0.2.20", "192.0.2.21"]
    assert addresses(d.discover("web-canary")) == ["192.0.2.20"]
    assert addresses(d.discover("search.shop")) == ["192.0.2.30"]


def test_port_number_is_given_to_every_endpoint(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    res = d.discover("web", port=8080)
    assert addresses(res) == ["192.0.2.20:8080", "192.0.2.21:8080"]
    assert d.discover("payments:5432").url() == "tcp://192.0.2.10:5432"


def test_named_port_cannot_be_answered(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    miss = lookup(d, "payments", port="postgres")
    assert isinstance(miss, kdisco.Miss)
    assert miss.outcome is kdisco.Outcome.NO_SUCH_PORT
    assert "'postgres'" in miss.reason
    with pytest.raises(kdisco.PortNotFound) as info:
        d.discover("payments", port="postgres")
    assert [(a.strategy, a.outcome) for a in info.value.attempts] == [
        ("hosts", kdisco.Outcome.NO_SUCH_PORT)
    ]


def test_absent_name_is_not_found(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    miss = lookup(d, "orders", namespace="billing")
    assert isinstance(miss, kdisco.Miss)
    assert miss.outcome is kdisco.Outcome.NOT_FOUND
    assert "'orders.billing'" in miss.reason
    assert str(hosts_file) in miss.reason
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("orders.billing")
    # "search.shop" names search in shop only, not search everywhere.
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("search.billing")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: None, id="missing"),
        pytest.param(lambda p: p.mkdir(), id="directory"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe 192.0.2.1 x\n"), id="not-utf8"),
    ],
)
def test_unreadable_file_is_a_configuration_error(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    path = tmp_path / "hosts"
    make(path)
    # Found when the Discoverer is built, before any lookup, like kdisco's own settings.
    with pytest.raises(kdisco.ConfigurationError, match="cannot read hosts file") as info:
        hosts_discoverer(path)
    assert str(path) in str(info.value)


def test_file_gone_after_start_fails_the_lookup(hosts_file: Path) -> None:
    d = hosts_discoverer(hosts_file)
    hosts_file.unlink()
    with pytest.raises(kdisco.ConfigurationError, match=re.escape(str(hosts_file))):
        lookup(d, "payments")
    # The chain records it as this strategy's failure and says so.
    with pytest.raises(kdisco.DiscoveryUnavailable) as info:
        d.discover("payments")
    (attempt,) = info.value.attempts
    assert attempt.outcome is kdisco.Outcome.FAILED
    assert str(hosts_file) in attempt.reason


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("192.0.2.300 payments", "'192.0.2.300' is not an IP address"),
        ("payments 192.0.2.10", "'payments' is not an IP address"),
        ("192.0.2.10", "192.0.2.10 is given no name"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(f"# first line\n{line}\n")
    with pytest.raises(kdisco.ConfigurationError) as info:
        hosts_discoverer(path)
    assert str(info.value) == f"hosts file {str(path)!r}, line 2: {problem}"


def test_edits_are_seen_once_the_answer_expires(hosts_file: Path) -> None:
    now = [1000.0]
    d = kdisco.Discoverer(strategies=["hosts"], environ=environ(hosts_file), clock=lambda: now[0])
    first = d.discover("payments")
    assert addresses(first) == ["192.0.2.10"]
    hosts_file.write_text("192.0.2.11 payments\n")
    assert d.discover("payments") is first  # cached: the file is not re-read
    assert first.ttl is not None
    now[0] += first.ttl + 0.5
    assert addresses(d.discover("payments")) == ["192.0.2.11"]
