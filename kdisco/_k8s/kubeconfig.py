"""Reading kubeconfig files for what settings need, without the kubernetes package.

The namespace of the current context is read with PyYAML alone: importing
``kubernetes.config`` costs half a second, which a DNS-only user on a laptop should
not pay to learn a default namespace. Credentials still come from the kubernetes
package's loader (exec plugins, OIDC, client certificates): see ``client``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_KUBECONFIG = "~/.kube/config"


def kubeconfig_paths(value: str | None) -> tuple[str, ...]:
    """The kubeconfig files in effect: ``value`` (a ``KUBECONFIG``-style list of paths)
    or ``~/.kube/config`` when it exists; () when there is none."""
    if value:
        return tuple(p for p in value.split(os.pathsep) if p)
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    return (str(default),) if default.is_file() else ()


def _load(path: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            doc = yaml.load(f, Loader=loader)
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def kubeconfig_namespace(paths: Sequence[str], context: str | None) -> tuple[str, str] | None:
    """(namespace, where it came from) of ``context`` (else the current context).

    Files are merged as kubectl merges them: the first file that sets a value wins.
    None when no file names a namespace for that context, or the files are unreadable
    (the api strategy reports bad kubeconfigs when it loads credentials).
    """
    current: str | None = context
    contexts: dict[str, Any] = {}
    for path in paths:
        doc = _load(path)
        if current is None and isinstance(doc.get("current-context"), str):
            current = doc["current-context"]
        for entry in doc.get("contexts") or ():
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                contexts.setdefault(entry["name"], (entry.get("context") or {}, path))
    if not current or current not in contexts:
        return None
    body, path = contexts[current]
    ns = body.get("namespace") if isinstance(body, dict) else None
    if isinstance(ns, str) and ns:
        return ns, f"kubeconfig context {current!r} ({path})"
    return None
