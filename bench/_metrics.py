"""Request counts from kube-apiserver's own /metrics (admin token, lab CA)."""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections import Counter

_LINE = re.compile(r"^(apiserver_request_total|apiserver_longrunning_requests)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
RESOURCES = ("services", "endpointslices")


def scrape(lab: object) -> tuple[Counter[str], Counter[str]]:
    """(requests served so far, long-running requests open now) by verb, for Services
    and EndpointSlices only."""
    ctx = ssl.create_default_context(cafile=str(lab.ca_path))  # type: ignore[attr-defined]
    req = urllib.request.Request(
        f"{lab.apiserver_url}/metrics",  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {lab.token}"},  # type: ignore[attr-defined]
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        text = resp.read().decode()
    total: Counter[str] = Counter()
    open_now: Counter[str] = Counter()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        if labels.get("resource") not in RESOURCES or labels.get("subresource"):
            continue
        key = f"{labels.get('verb')} {labels['resource']}"
        value = int(float(m.group(3)))
        if m.group(1) == "apiserver_request_total":
            total[key] += value
        else:
            open_now[key] += value
    return total, open_now


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for key in set(after) | set(before):
        diff = after[key] - before[key]
        if diff:
            out[key] = diff
    return out
