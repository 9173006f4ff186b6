"""Credentials never reach a message: one redactor every error and reason passes through.

Errors from the kubernetes package's kubeconfig loader quote whole ``users`` entries
(client keys, OIDC client secrets, tokens), and servers echo what they were sent.
``DiscoveryError`` redacts its message and ``Attempt`` its reason, so whatever ends up
in an exception, a log line, ``kdisco resolve --json`` or stderr has been through here.
A leaf module: it imports nothing of kdisco.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

#: Keys whose values are secrets, as kubeconfigs, exec plugins and OIDC spell them.
_SECRET_KEYS = (
    r"client[-_]?key[-_]?data|client[-_]?key|client[-_]?secret|client[-_]?certificate[-_]?data|"
    r"id[-_]?token|refresh[-_]?token|access[-_]?token|token|password|passwd|secret|"
    r"api[-_]?key|authorization|auth[-_]?provider[-_]?config"
)
# key: value, "key": "value", 'key': 'value', key=value (YAML, JSON, Python reprs, URLs).
_KEY_VALUE = re.compile(
    rf"""(?P<key>["']?(?:{_SECRET_KEYS})["']?\s*[:=]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;}}\]]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<scheme>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)", re.DOTALL)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?")
# Key material: long runs of base64 / base64url text. DNS names are lower-case and
# file paths are split by '/', so a run must mix upper, lower and digits, and must not
# contain '/', to count (in YAML, JSON and reprs key material sits behind a secret key,
# which _KEY_VALUE catches whatever it contains).
_BLOB = re.compile(r"[A-Za-z0-9+_-]{40,}={0,2}")


def _blob(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed = (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    )
    return REDACTED if mixed else run


def redact(text: str) -> str:
    """``text`` with secret values, bearer tokens, JWTs, PEM blocks and key-like blobs
    removed."""
    if not text:
        return text
    text = _PEM.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group("scheme") + REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: m.group("key") + REDACTED, text)
    return _BLOB.sub(_blob, text)
