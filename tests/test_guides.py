"""Every code block of the README and of the docs pages is run or checked.

pytest collects ``>>>`` examples in docs/*.md itself (``--doctest-glob=*.md``). The
other blocks are found here, by their language:

- ``python``: compiled, then run in order, one namespace per page (as doctest does),
  against a ``FakeResolver`` whose every Service is a local HTTP server this module
  starts. A block preceded by ``<!-- not run: <reason> -->`` (it needs a cluster, or
  never ends) is only compiled.
- ``console``: ``$ export`` lines set variables, ``$ kdisco ...`` commands run, and their
  output must be what the page shows.
- ``sh``: each command is one a reader can run here: a ``nox`` session of the
  noxfile, a path that exists, a ``kdisco`` command the CLI accepts, a variable kdisco
  reads, ``kubectl auth can-i`` asking for what the page's manifests grant.
- ``yaml``: Kubernetes manifests, checked for shape here and applied to the lab by
  tests/integration/test_guides_lab.py.
- ``toml``: parsed; a static map is loaded by a ``Discoverer`` and answers.
- ``text`` and unlabelled blocks are drawings; ``{directive}`` blocks are Sphinx's.

A block in any other language fails: a new kind of block needs a check here.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import http.server
import inspect
import io
import os
import re
import shlex
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import kdisco
import kdisco.aio
import kdisco.grpc
import kdisco.httpx
import kdisco.requests
from kdisco._cli import _parser
from kdisco._cli import main as cli_main
from kdisco.testing import FakeResolver, override

ROOT = Path(__file__).resolve().parents[1]
#: The pages whose blocks are checked: the README and the docs, except the generated
#: performance page and the API reference (autodoc directives only).
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in ("performance.md", "api.md")),
]

_FENCE = re.compile(
    r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<why>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    info: str
    body: str
    not_run: str | None

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _NOT_RUN.search(before)
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, m.start()) + 1,
                info=m["info"].strip(),
                body=m["body"],
                not_run=marker["why"] if marker else None,
            )
        )
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def of(lang: str) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in ALL if b.lang == lang]


def test_every_block_has_a_check() -> None:
    known = {"python", "console", "sh", "yaml", "toml", "text", ""}
    unknown = [
        f"{b.id}: ```{b.info}" for b in ALL if b.lang not in known and not b.lang.startswith("{")
    ]
    assert not unknown, "blocks in a language nothing checks:\n" + "\n".join(unknown)
    # Doctests are collected by pytest under docs/ only.
    outside = [b.id for b in ALL if ">>>" in b.body and b.page.parent != ROOT / "docs"]
    assert not outside, f">>> examples that pytest does not collect: {outside}"
    assert len(ALL) > 50, "the fence pattern stopped matching"


# -- python: run in order, one namespace per page, against fakes ------------------------


class _Pod(http.server.BaseHTTPRequestHandler):
    """Every Service of the fakes below: answers any request with 200 and its path."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = f"{self.command} {self.path} Host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815 (http.server's names)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pod_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pod)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


#: The Services the pages' code asks for. A bare name answers in every namespace.
SERVICES = ("payments", "db", "cart", "web", "orders-db", "search")


def fake_cluster(port: int) -> FakeResolver:
    named = dict.fromkeys(("http", "grpc", "postgres", "https"), port)
    return FakeResolver({name: {"endpoints": ["127.0.0.1"], "ports": named} for name in SERVICES})


class _Pool:
    """``pool`` in the pages' snippets: a connection pool that can be resized."""

    def __init__(self) -> None:
        self.sizes: list[list[str]] = []

    def resize(self, addresses: list[str]) -> None:
        self.sizes.append(addresses)


def page_namespace() -> dict[str, Any]:
    import logging

    import grpc
    import httpx
    import requests

    return {
        "__name__": "guide",
        "kdisco": kdisco,
        "httpx": httpx,
        "requests": requests,
        "grpc": grpc,
        "log": logging.getLogger("guide"),
        "pool": _Pool(),
    }


def compiled(block: Block) -> Any:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return compile(block.body, block.id, "exec", flags=flags, dont_inherit=True)


def run_block(block: Block, ns: dict[str, Any]) -> None:
    code = compiled(block)
    result = eval(code, ns)  # top-level await makes it a coroutine
    if inspect.iscoroutine(result):
        asyncio.run(result)


def close_all(ns: dict[str, Any]) -> None:
    """Close what the page's code opened (clients, channels), so nothing leaks."""
    for value in list(ns.values()):
        aclose = getattr(value, "aclose", None)
        close = getattr(value, "close", None)
        if isinstance(value, type) or inspect.ismodule(value):
            continue
        if callable(aclose) and inspect.iscoroutinefunction(aclose):
            asyncio.run(aclose())
        elif callable(close):
            close()


#: After a page's blocks ran: what their definitions must do (page -> check).
def _check_readme(ns: dict[str, Any], port: int) -> None:
    assert ns["database"]() == ("127.0.0.1", port)


def _check_in_a_pod(ns: dict[str, Any], port: int) -> None:
    assert ns["cart_address"]() == f"127.0.0.1:{port}"
    assert ns["charge"]("o-1") == 200


AFTER = {"README.md": _check_readme, "in-a-pod.md": _check_in_a_pod}

PYTHON_PAGES = sorted(
    {b.page for b in ALL if b.lang == "python" and ">>>" not in b.body}, key=lambda p: p.name
)


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: p.name)
def test_python_blocks_run(page: Path, pod_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    ns = page_namespace()
    ran = 0
    with (
        override(fake_cluster(pod_port), namespace="shop"),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            for block in blocks(page):
                if block.lang != "python" or ">>>" in block.body:
                    continue
                if block.not_run is not None:
                    compiled(block)  # still valid Python
                    continue
                run_block(block, ns)
                ran += 1
            check = AFTER.get(page.name)
            if check is not None:
                check(ns, pod_port)
        finally:
            close_all(ns)
    reasons = [b.not_run for b in blocks(page) if b.lang == "python" and b.not_run]
    assert ran or reasons, "nothing was run"


def test_the_not_run_marker_is_read() -> None:
    marked = [b for b in ALL if b.not_run is not None]
    assert marked, "no block says why it is not run"
    assert all(b.lang == "python" for b in marked), [b.id for b in marked if b.lang != "python"]


# -- console: the commands run, with the output shown ------------------------------------


@pytest.mark.parametrize("block", of("console"))
def test_console_blocks_print_what_they_show(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The page's files (a ```toml block whose first line is "# <name>") in a fresh
    # directory, and no cluster: no kubeconfig, no service account, no kubelet variables.
    for other in blocks(block.page):
        first = other.body.split("\n", 1)[0]
        if other.lang == "toml" and first.startswith("# "):
            (tmp_path / first[2:].strip()).write_text(other.body)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("KDISCO_") or name.endswith("_SERVICE_HOST"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("KDISCO_SERVICEACCOUNT_DIR", str(tmp_path / "no-serviceaccount"))
    # Run each command, collecting output until the next prompt.
    steps: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{block.id}: output before any command"
            steps[-1][1].append(line)
    assert steps
    for command, shown in steps:
        argv = shlex.split(command)
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            monkeypatch.setenv(name, value)
            assert not shown, f"{block.id}: export prints nothing"
            continue
        assert argv[0] == "kdisco", f"{block.id}: only export and kdisco run here: {command}"
        kdisco.reset_default_discoverer()
        status = cli_main(argv[1:])
        out = capsys.readouterr().out
        assert status == 0, f"{command}: exit {status}"
        assert out.splitlines() == shown, f"{block.id}: {command}"


# -- sh: commands a reader can run -------------------------------------------------------

NOX_SESSIONS = set(re.findall(r"^def (\w+)\(session", (ROOT / "noxfile.py").read_text(), re.M))
KUBECTL = {"apply", "auth", "port-forward", "get", "describe", "logs", "rollout", "create"}


def commands(body: str) -> Iterator[list[str]]:
    for line in body.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(line)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
            argv = argv[1:]  # VAR=value before a command
        yield argv


def read_variables() -> set[str]:
    """The variables the configuration page lists."""
    return set(
        re.findall(r"^\| `([A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text(), re.M)
    )


def granted(page: Path) -> set[tuple[str, str]]:
    """(verb, resource[.group]) pairs the page's manifests grant."""
    pairs: set[tuple[str, str]] = set()
    for block in blocks(page):
        if block.lang != "yaml":
            continue
        for doc in yaml.safe_load_all(block.body):
            for rule in (doc or {}).get("rules", []):
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        name = f"{resource}.{group}" if group else resource
                        pairs |= {(verb, name) for verb in rule["verbs"]}
    return pairs


def check_command(block: Block, argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    where = f"{block.id}: {shlex.join(argv)}"
    if program == "nox":
        sessions = [args[i + 1] for i, a in enumerate(args) if a == "-s"]
        assert sessions or args == ["-l"], where
        assert set(sessions) <= NOX_SESSIONS, where
    elif program in ("python", "python3"):
        if args[:1] == ["-m"]:
            return  # a module: pytest, bench, or the reader's own application
        paths = [a for a in args if a.endswith(".py") or "/" in a]
        assert all((ROOT / p).exists() for p in paths if not p.startswith("-")), where
    elif program == "pip":
        assert args[0] == "install", where
        local = [a for a in args[1:] if a.startswith(".")]
        assert all((ROOT / a.split("[")[0].strip('"')).exists() for a in local), where
    elif program == "kdisco":
        try:
            _parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"the kdisco CLI refuses {where}")
    elif program == "export":
        name = args[0].split("=", 1)[0]
        assert name in read_variables() or name.startswith("KDISCO_HOSTS"), where
    elif program == "kubectl":
        assert args[0] in KUBECTL or args[0].startswith("-"), where
        if args[:2] == ["auth", "can-i"]:
            verb, resource = args[2], args[3]
            assert (verb, resource) in granted(block.page), f"{where}: not granted on the page"
    else:
        pytest.fail(f"{where}: {program} is not a command this test knows")


@pytest.mark.parametrize("block", of("sh"))
def test_shell_commands_are_ones_a_reader_can_run(block: Block) -> None:
    found = list(commands(block.body))
    assert found
    for argv in found:
        check_command(block, argv)


# -- yaml: Kubernetes manifests ------------------------------------------------------------

KINDS = {
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Deployment": "apps/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}


def manifests(page: Path) -> list[dict[str, Any]]:
    return [
        doc
        for block in blocks(page)
        if block.lang == "yaml"
        for doc in yaml.safe_load_all(block.body)
        if doc
    ]


@pytest.mark.parametrize("block", of("yaml"))
def test_yaml_blocks_are_manifests(block: Block) -> None:
    for doc in yaml.safe_load_all(block.body):
        assert KINDS.get(doc["kind"]) == doc["apiVersion"], f"{block.id}: {doc['kind']}"
        assert doc["metadata"]["name"]
        cluster_wide = doc["kind"].startswith("Cluster")
        assert ("namespace" in doc["metadata"]) != cluster_wide, block.id


def test_the_pod_guide_fits_together() -> None:
    docs = manifests(ROOT / "docs" / "in-a-pod.md")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (account,) = by_kind["ServiceAccount"]
    (deployment,) = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert deployment["metadata"]["namespace"] == account["metadata"]["namespace"]
    # Every variable the Deployment sets is one kdisco reads.
    env = {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}
    assert set(env) <= read_variables()
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Each binding names a role of the page, in its namespace, for the ServiceAccount.
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    for binding in by_kind["RoleBinding"] + by_kind["ClusterRoleBinding"]:
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace")
        assert (ref["kind"], ns, ref["name"]) in roles, binding["metadata"]
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"],
            }
        ]
    # The Role grants what docs/configuration.md says discovery with the watch cache needs.
    assert {
        ("get", "services"),
        ("list", "services"),
        ("watch", "services"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "endpointslices.discovery.k8s.io"),
        ("get", "nodes"),
    } <= granted(ROOT / "docs" / "in-a-pod.md")


# -- toml ----------------------------------------------------------------------------------


@pytest.mark.parametrize("block", of("toml"))
def test_toml_blocks_parse_and_static_maps_answer(block: Block, tmp_path: Path) -> None:
    data = tomllib.loads(block.body)
    if "services" not in data:
        assert "project" in data, block.id  # a pyproject.toml excerpt
        return
    path = tmp_path / "map.toml"
    path.write_text(block.body)
    with kdisco.Discoverer(strategies=["static"], static=str(path), environ={}) as d:
        for key in data["services"]:
            assert d.discover(key).first().host
