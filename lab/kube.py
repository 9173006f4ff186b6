"""Tiny stdlib client for the lab apiserver (admin token), plus in-cluster helpers.

Only talks to the lab's own 127.0.0.1 apiserver.  Meant for test set-up
(RBAC objects, ServiceAccount tokens) without depending on the code under
test or on the ``kubernetes`` package.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab._runner import LabError, LabInfo, _is_loopback_url, _open, _ssl_context


class KubeError(LabError):
    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status, self.body = status, body
        super().__init__(f"{method} {path} -> {status}: {body}")


def request(
    info: LabInfo,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    content_type: str = "application/json",
    ok_statuses: tuple[int, ...] = (),
    timeout: float = 10.0,
) -> Any:
    """One API call; returns decoded JSON.  Raises KubeError on HTTP errors
    unless the status is in *ok_statuses* (then the error body is returned)."""
    url = info.apiserver_url + path
    if not _is_loopback_url(url):
        raise LabError(f"refusing non-loopback URL {url}")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or info.token}")
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with _open(req, timeout=timeout, context=_ssl_context(info.ca_path)) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            err = json.loads(raw)
        except ValueError:
            err = raw.decode(errors="replace")
        if e.code in ok_statuses:
            return err
        raise KubeError(e.code, err, method, path) from None
    return json.loads(raw) if raw else None


def apply(info: LabInfo, path: str, obj: dict[str, Any]) -> Any:
    """Create *obj* at collection *path*; if it exists, return it unchanged."""
    return request(info, "POST", path, obj, ok_statuses=(409,))


def serviceaccount_dir(
    info: LabInfo,
    dest: Path | str,
    namespace: str,
    name: str,
    *,
    rules: list[dict[str, Any]] | None = None,
    expiration_seconds: int = 3600,
) -> Path:
    """Create namespace/ServiceAccount (+ a Role/RoleBinding with *rules*), get a
    bound token via the TokenRequest API and write ``token``, ``ca.crt`` and
    ``namespace`` into *dest* as kubelet would mount them.

    Point the code under test at it with ``KUBERNETES_SERVICE_HOST=127.0.0.1``
    and ``KUBERNETES_SERVICE_PORT=<info.apiserver_url port>``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    apply(
        info,
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    apply(
        info,
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    if rules is not None:
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        apply(
            info,
            f"{rbac}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name},
                "rules": rules,
            },
        )
        apply(
            info,
            f"{rbac}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
    tr = request(
        info,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        },
    )
    (dest / "token").write_text(tr["status"]["token"])
    (dest / "ca.crt").write_bytes(Path(info.ca_path).read_bytes())
    (dest / "namespace").write_text(namespace)
    return dest


def incluster_env(info: LabInfo) -> dict[str, str]:
    """``KUBERNETES_SERVICE_HOST``/``_PORT`` that point at the lab apiserver."""
    hostport = info.apiserver_url.split("://", 1)[1]
    host, _, port = hostport.rpartition(":")
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
