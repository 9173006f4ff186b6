"""What a fresh process loads: only what it uses (cold start, issue 13).

Each check runs in a new interpreter, so nothing this test session imported counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._helpers_api import FakeApiServer, FakeNamespace, eps_slice, svc, write_kubeconfig

ROOT = Path(__file__).resolve().parents[1]

#: Machinery that only some strategies need: never loaded by ``import kdisco``.
HEAVY = ("dns", "kubernetes", "urllib3", "yaml", "tomllib", "tenacity", "importlib.metadata")

#: kubernetes' generated code: 0.7 s to import, never needed (kdisco requests by path).
GENERATED = ("kubernetes.client.api.", "kubernetes.client.models.")


def loaded_after(code: str, env: dict[str, str] | None = None) -> list[str]:
    """The modules present at the end of ``code`` run in a fresh interpreter."""
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    modules = json.loads(out.splitlines()[-1])
    assert isinstance(modules, list)
    return modules


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_kdisco_loads_only_the_core() -> None:
    modules = loaded_after("import kdisco")
    assert heavy(modules) == []
    ours = [m for m in modules if m.startswith("kdisco")]
    # The strategies are loaded by the registry when used, the API layer with them.
    assert "kdisco._strategies.base" in ours
    assert not [m for m in ours if m.startswith("kdisco._k8s.") and m != "kdisco._k8s.kubeconfig"]
    assert not {
        "kdisco._strategies.dns",
        "kdisco._strategies.env",
        "kdisco._strategies.static",
        "kdisco._strategies.api",
    } & set(ours)


def test_a_static_only_discoverer_loads_no_dns_or_kubernetes(tmp_path: Path) -> None:
    static = tmp_path / "static.toml"
    static.write_text('[services]\npayments = ["127.0.0.1:5432"]\n')
    modules = loaded_after(
        "import kdisco\n"
        f"d = kdisco.Discoverer(strategies=['static'], static={str(static)!r}, environ={{}})\n"
        "assert d.discover('payments').first().port == 5432\n"
    )
    assert [m for m in heavy(modules) if not m.startswith("tomllib")] == []
    assert "tomllib" in modules  # the file's own parser, loaded because it was used


def test_the_cli_help_loads_no_strategy_machinery() -> None:
    modules = loaded_after(
        "import sys\nfrom kdisco._cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    assert heavy(modules) == []


@pytest.fixture
def api_url(server: FakeApiServer) -> str:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    return server.url


@pytest.mark.parametrize("watch", [False, True], ids=["direct", "watch-cache"])
def test_api_lookups_never_import_the_generated_client(
    api_url: str, tmp_path: Path, watch: bool
) -> None:
    # With a kubeconfig the kubernetes package loads it (exec plugins, OIDC...), but
    # none of its ~250 generated model classes or API classes are ever imported.
    config = write_kubeconfig(tmp_path / "kubeconfig", api_url, namespace="billing")
    modules = loaded_after(
        "import kdisco\n"
        f"d = kdisco.Discoverer(strategies=['api'], api_watch={watch}, kubeconfig={str(config)!r},"
        " environ={})\n"
        "res = d.discover('db')\n"
        "assert {ep.host for ep in res} == {'192.0.2.1', '192.0.2.2'}, res\n"
        # the watch cache has synced: a second answer comes from memory
        "assert d.discover('db', port=80).source == 'api'\n"
        "d.close()\n",
        env={"HOME": str(tmp_path)},
    )
    assert "kubernetes.config.kube_config" in modules  # it did read the kubeconfig
    assert [m for m in modules if m.startswith(GENERATED)] == []
