"""The whole kdisco workflow: `nox -l` lists it.

nox -s demo        see kdisco find Services in a real local cluster (the lab)
nox -s tests       unit tests, doc examples, and integration tests against the lab
nox -s lint        ruff check + ruff format --check
nox -s typecheck   mypy --strict
nox -s docs        Sphinx build, warnings are errors
nox -s lab -- up|down|status
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
LAB_ENV = {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit tests, executable docs, and integration tests against the lab.

    The lab (kube-apiserver, etcd, CoreDNS built from source on first use) is started
    by the test suite. Under CI=true a lab that cannot start fails the run.
    """
    session.install("-e", ".[test]")
    # tests/test_plugins.py needs an out-of-tree strategy installed the way users install one.
    session.install("./examples/kdisco-hosts")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.11", "types-PyYAML", "types-grpcio")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    # The extras too: the reference documents kdisco.httpx, kdisco.requests and kdisco.grpc.
    session.install("-e", ".[httpx,requests,grpc]", "sphinx>=7", "myst-parser>=3")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def lab(session: nox.Session) -> None:
    """`nox -s lab -- up|down|status`: a real local cluster for people and tools."""
    if not session.posargs or session.posargs[0] not in ("up", "down", "status"):
        session.error("usage: nox -s lab -- up|down|status")
    session.install("-e", ".[test]")
    session.run("python", "-m", "lab", *session.posargs, env=LAB_ENV)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Bring the lab up, create the example app's Services, resolve each, tear down."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "examples.demo", *session.posargs, env=LAB_ENV)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against the lab (not tests): writes the figures to docs/performance.md."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs, env=LAB_ENV)
