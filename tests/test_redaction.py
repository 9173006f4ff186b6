"""No credential reaches a message: errors, attempts, the CLI and the logs.

Every message passes through one redactor (kdisco._redact); these tests feed it the
secrets a broken kubeconfig carries and look for them everywhere a user could see.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import traceback
from pathlib import Path

import pytest

import kdisco
from kdisco import Attempt, Outcome
from kdisco._cli import main
from kdisco._redact import REDACTED, redact

SECRETS = ("TOPSECRETKEYDATA0123456789", "TOPSECRET-oidc", "TOPSECRET-refresh", "tok3nVALUE")

BROKEN = """apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: lab
  context: {cluster: lab, user: dev, namespace: shop}
current-context: lab
users:
- name: dev
  user:
    client-key-data: TOPSECRETKEYDATA0123456789
    token: tok3nVALUE
    auth-provider:
      name: oidc
      config:
        client-secret: TOPSECRET-oidc
        refresh-token: TOPSECRET-refresh
"""


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config"
    path.write_text(BROKEN)
    for var in list(os.environ):
        if var.startswith("KDISCO_") or var in ("KUBECONFIG", "POD_NAMESPACE"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    return path


def test_the_kubeconfig_loader_error_is_redacted_everywhere(broken: Path) -> None:
    d = kdisco.Discoverer(strategies=["api"], kubeconfig=broken, environ={})
    with d, pytest.raises(kdisco.DiscoveryError) as info:
        d.discover("web")
    err = info.value
    assert "cannot load kubeconfig" in str(err)  # the error still says what is wrong
    assert REDACTED in str(err)
    assert leaks(str(err)) == []
    assert leaks(err.message) == []
    assert leaks(" ".join(a.reason for a in err.attempts)) == []
    # Nothing in the chained causes either: a logged traceback shows those too.
    assert leaks("".join(traceback.format_exception(err))) == []
    assert leaks(repr(pickle.loads(pickle.dumps(err)))) == []


def test_the_cli_prints_no_secret(
    broken: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(broken))
    code = main(["resolve", "web", "--strategies", "api", "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "cannot load kubeconfig" in out + err
    assert leaks(out + err) == []


def test_watch_warnings_log_no_secret(broken: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = kdisco.Discoverer(strategies=["api"], kubeconfig=broken, environ={}, timeout=0.5)
    logged = threading.Event()

    class Flag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.set()

    flag = Flag()
    logging.getLogger("kdisco").addHandler(flag)
    try:
        with caplog.at_level(logging.WARNING, logger="kdisco"), d, d.watch("web", callback=print):
            assert logged.wait(10)  # the watch's default on_error logs the failure
    finally:
        logging.getLogger("kdisco").removeHandler(flag)
    assert "cannot load kubeconfig" in caplog.text
    assert leaks(caplog.text) == []


def test_attempt_reasons_are_redacted_as_they_are_made() -> None:
    a = Attempt(strategy="api", outcome=Outcome.FAILED, reason="got Bearer abc.def-ghi")
    assert a.reason == f"got Bearer {REDACTED}"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("NXDOMAIN for web.default.svc.cluster.local.", True),
        ("forbidden: needs 'get' on 'services' in namespace 'shop'", True),
        ("my-very-long-service-name-that-is-over-forty-chars.shop", True),
        ("HTTPSConnectionPool(host='127.0.0.1', port=6443): Read timed out", True),
        ("token: abc", False),
        ('"password": "hunter2"', False),
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", False),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", False),
        ("key LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo0123456789AbC", False),
    ],
)
def test_redact_keeps_ordinary_text_and_removes_secrets(text: str, kept: bool) -> None:
    assert (redact(text) == text) is kept


@pytest.mark.parametrize(
    "path",
    [
        "/var/folders/7d/k3x4lmq95n1b2z8x0000gn/T/pytest-of-Alice/pytest-12/test_bad0/hosts",
        "/tmp/pytest-of-Alice/pytest-12/test_a_static_file_that_is_not_utf0/static.toml",
        "C:/Users/Alice/AppData/Local/Temp/pytest-of-Alice/kdisco/static.toml",
    ],
)
def test_file_paths_survive_redaction(path: str) -> None:
    # Errors name the file that is wrong; a path is not key material.
    assert redact(f"cannot read static file {path!r}") == f"cannot read static file {path!r}"


def test_a_kubeconfig_over_plain_http_with_credentials_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kdisco._k8s.client import KubeClient
    from tests._helpers_api import write_kubeconfig

    config = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:9", token="tok3nVALUE")
    with caplog.at_level(logging.WARNING, logger="kdisco"):
        KubeClient.from_kubeconfig([str(config)], None).close()
        KubeClient.from_kubeconfig([str(config)], None).close()
    warnings = [r for r in caplog.records if "plain http://127.0.0.1:9" in r.getMessage()]
    assert len(warnings) == 1
    assert leaks(caplog.text) == []
